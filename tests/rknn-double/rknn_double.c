/*
 * A test double of the librknnrt API subset Strix calls (runtime/src/npu/rknn.rs).
 *
 * It is NOT an NPU and does not read real .rknn files. It:
 *  - checks every call's contract as rknn_api.h (RKNN SDK 2.x) states it: struct
 *    sizes passed to rknn_query, tensor counts, indices (each once), types, formats,
 *    buffer sizes, call order (init -> [set_core_mask] -> query -> inputs_set -> run
 *    -> outputs_get -> outputs_release ... -> destroy) and memory ownership (inputs
 *    are copied at rknn_inputs_set; outputs it allocates are freed at
 *    rknn_outputs_release; destroy with outputs still held is a leak). A broken
 *    contract is recorded (rknn_double_violations) and the call fails with
 *    RKNN_ERR_PARAM_INVALID / RKNN_ERR_CTX_INVALID;
 *  - takes a "double blob" instead of an .rknn: magic "RKDBL1\0\0", the input and
 *    output tensor descriptions, then a payload (in Strix's tests: a .strix file of
 *    the same subgraph). Any other blob makes rknn_init return RKNN_ERR_MODEL_INVALID,
 *    as a real runtime does with a foreign file;
 *  - computes outputs with a stand-in: the compute callback registered with
 *    rknn_double_set_compute gets the payload and the float inputs and fills the
 *    float outputs (Strix's tests run the payload with Strix's own CPU runtime), so
 *    the numbers prove the plumbing around the NPU, not NPU numerics;
 *  - fails any named call with a chosen RKNN_ERR_* code (rknn_double_fail).
 * Single-threaded by contract (the tests serialise).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

typedef uint64_t rknn_context;
#define RKNN_MAX_DIMS 16
#define RKNN_MAX_NAME_LEN 256
#define RKNN_SUCC 0
#define RKNN_ERR_FAIL -1
#define RKNN_ERR_PARAM_INVALID -5
#define RKNN_ERR_MODEL_INVALID -6
#define RKNN_ERR_CTX_INVALID -7
#define RKNN_ERR_INPUT_INVALID -8
#define RKNN_ERR_OUTPUT_INVALID -9

enum { Q_IN_OUT_NUM = 0, Q_INPUT_ATTR = 1, Q_OUTPUT_ATTR = 2 };
enum { T_FLOAT32 = 0, T_FLOAT16 = 1, T_INT8 = 2, T_UINT8 = 3 };
enum { F_NCHW = 0, F_NHWC = 1 };

typedef struct { uint32_t n_input, n_output; } rknn_input_output_num;
typedef struct {
    uint32_t index, n_dims, dims[RKNN_MAX_DIMS];
    char name[RKNN_MAX_NAME_LEN];
    uint32_t n_elems, size, fmt, type, qnt_type;
    int8_t fl;
    int32_t zp;
    float scale;
    uint32_t w_stride, size_with_stride;
    uint8_t pass_through;
    uint32_t h_stride;
} rknn_tensor_attr;
typedef struct { uint32_t index; void *buf; uint32_t size; uint8_t pass_through; uint32_t type, fmt; } rknn_input;
typedef struct { uint8_t want_float, is_prealloc; uint32_t index; void *buf; uint32_t size; } rknn_output;

/* Layouts as in rknn_api.h on LP64 (checked against rknpu-sys's bindings). */
_Static_assert(sizeof(rknn_tensor_attr) == 376, "rknn_tensor_attr layout");
_Static_assert(sizeof(rknn_input) == 32, "rknn_input layout");
_Static_assert(sizeof(rknn_output) == 24, "rknn_output layout");

typedef int (*rknn_double_compute_fn)(void *user, const uint8_t *payload, size_t payload_len,
                                      const float *const *ins, const size_t *in_lens, size_t n_in,
                                      float *const *outs, const size_t *out_lens, size_t n_out);

#define MAXT 8
typedef struct {
    uint32_t n_dims, dims[4], type;
    float scale;
    int32_t zp;
    size_t n;
} tdesc;

typedef struct {
    int live;
    tdesc in[MAXT], out[MAXT];
    uint32_t n_in, n_out;
    uint8_t *payload;
    size_t payload_len;
    float *in_data[MAXT];
    float *out_data[MAXT];
    int inputs_set, ran, outputs_held, queried;
    void *owned[MAXT]; /* output buffers the double allocated (is_prealloc = 0) */
} ctx_t;

#define MAXCTX 16
static ctx_t ctxs[MAXCTX];
static int violations;
static char last_violation[512];
static rknn_double_compute_fn compute_fn;
static void *compute_user;
static char fail_call[64];
static int fail_code;
static long calls;
static uint32_t last_core_mask;

static int violate(int code, const char *fmt, const char *a, long b) {
    violations++;
    snprintf(last_violation, sizeof last_violation, fmt, a, b);
    return code;
}

static int injected(const char *call) {
    calls++;
    return fail_call[0] && strcmp(fail_call, call) == 0 ? fail_code : 0;
}

static ctx_t *get(rknn_context c, const char *call) {
    if (c == 0 || c > MAXCTX || !ctxs[c - 1].live) {
        violate(0, "%s on a context that is not live (%ld)", call, (long)c);
        return NULL;
    }
    return &ctxs[c - 1];
}

/* ---- control API for the tests ---- */
void rknn_double_set_compute(rknn_double_compute_fn f, void *user) { compute_fn = f; compute_user = user; }
void rknn_double_fail(const char *call, int code) {
    snprintf(fail_call, sizeof fail_call, "%s", call ? call : "");
    fail_code = code;
}
int rknn_double_violations(void) { return violations; }
const char *rknn_double_last_violation(void) { return last_violation; }
/* Live contexts plus output sets not released: 0 after a clean shutdown. */
int rknn_double_live(void) {
    int n = 0;
    for (int i = 0; i < MAXCTX; i++) n += ctxs[i].live + (ctxs[i].live ? ctxs[i].outputs_held : 0);
    return n;
}
long rknn_double_calls(void) { return calls; }
uint32_t rknn_double_core_mask(void) { return last_core_mask; }
void rknn_double_reset(void) {
    violations = 0;
    last_violation[0] = 0;
    fail_call[0] = 0;
    calls = 0;
    last_core_mask = 0;
}

/* ---- the API ---- */
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static int parse_tensors(const uint8_t **p, const uint8_t *end, tdesc *t, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        if (end - *p < 8) return -1;
        t[i].n_dims = rd32(*p);
        t[i].type = rd32(*p + 4);
        *p += 8;
        if (t[i].n_dims == 0 || t[i].n_dims > 4 || end - *p < 4 * (long)t[i].n_dims + 8) return -1;
        t[i].n = 1;
        for (uint32_t d = 0; d < t[i].n_dims; d++) { t[i].dims[d] = rd32(*p + 4 * d); t[i].n *= t[i].dims[d]; }
        *p += 4 * t[i].n_dims;
        memcpy(&t[i].scale, *p, 4);
        memcpy(&t[i].zp, *p + 4, 4);
        *p += 8;
        if (t[i].type != T_FLOAT32 && t[i].type != T_INT8) return -1;
        if (t[i].type == T_INT8 && !(t[i].scale > 0)) return -1;
    }
    return 0;
}

static void free_ctx(ctx_t *c) {
    free(c->payload);
    for (uint32_t i = 0; i < MAXT; i++) { free(c->in_data[i]); free(c->out_data[i]); free(c->owned[i]); }
    memset(c, 0, sizeof *c);
}

int rknn_init(rknn_context *context, void *model, uint32_t size, uint32_t flag, void *extend) {
    int e = injected("rknn_init");
    if (!context || !model) return violate(RKNN_ERR_PARAM_INVALID, "%s: null context or model (%ld)", "rknn_init", 0);
    if (flag != 0 || extend != NULL)
        return violate(RKNN_ERR_PARAM_INVALID, "%s: unexpected flag %ld or extend", "rknn_init", (long)flag);
    if (e) return e;
    const uint8_t *p = model, *end = p + size;
    if (size < 16 || memcmp(p, "RKDBL1\0\0", 8) != 0) return RKNN_ERR_MODEL_INVALID;
    int slot = -1;
    for (int i = 0; i < MAXCTX; i++) if (!ctxs[i].live) { slot = i; break; }
    if (slot < 0) return RKNN_ERR_FAIL;
    ctx_t *c = &ctxs[slot];
    memset(c, 0, sizeof *c);
    c->n_in = rd32(p + 8);
    c->n_out = rd32(p + 12);
    p += 16;
    if (c->n_in == 0 || c->n_in > MAXT || c->n_out == 0 || c->n_out > MAXT ||
        parse_tensors(&p, end, c->in, c->n_in) || parse_tensors(&p, end, c->out, c->n_out))
        return RKNN_ERR_MODEL_INVALID;
    /* The runtime copies the model: the caller may free its buffer after init. */
    c->payload_len = (size_t)(end - p);
    c->payload = malloc(c->payload_len ? c->payload_len : 1);
    memcpy(c->payload, p, c->payload_len);
    for (uint32_t i = 0; i < c->n_in; i++) c->in_data[i] = calloc(c->in[i].n, sizeof(float));
    for (uint32_t i = 0; i < c->n_out; i++) c->out_data[i] = calloc(c->out[i].n, sizeof(float));
    c->live = 1;
    *context = (rknn_context)(slot + 1);
    return RKNN_SUCC;
}

int rknn_destroy(rknn_context context) {
    int e = injected("rknn_destroy");
    ctx_t *c = get(context, "rknn_destroy");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (c->outputs_held) violate(0, "%s with outputs not released (leak) %ld", "rknn_destroy", 0);
    free_ctx(c); /* destroyed even when a failure is injected: nothing may leak */
    return e;
}

int rknn_set_core_mask(rknn_context context, uint32_t mask) {
    int e = injected("rknn_set_core_mask");
    ctx_t *c = get(context, "rknn_set_core_mask");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (e) return e;
    if (c->ran) return violate(RKNN_ERR_PARAM_INVALID, "%s after rknn_run %ld", "rknn_set_core_mask", 0);
    if (!(mask == 0 || mask == 1 || mask == 2 || mask == 4 || mask == 3 || mask == 7))
        return violate(RKNN_ERR_PARAM_INVALID, "%s: bad mask %ld", "rknn_set_core_mask", (long)mask);
    last_core_mask = mask;
    return RKNN_SUCC;
}

int rknn_query(rknn_context context, uint32_t cmd, void *info, uint32_t size) {
    int e = injected("rknn_query");
    ctx_t *c = get(context, "rknn_query");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (!info) return violate(RKNN_ERR_PARAM_INVALID, "%s: null info (cmd %ld)", "rknn_query", (long)cmd);
    if (e) return e;
    if (cmd == Q_IN_OUT_NUM) {
        if (size != sizeof(rknn_input_output_num))
            return violate(RKNN_ERR_PARAM_INVALID, "%s IN_OUT_NUM: size %ld", "rknn_query", (long)size);
        rknn_input_output_num *n = info;
        n->n_input = c->n_in;
        n->n_output = c->n_out;
        c->queried = 1;
        return RKNN_SUCC;
    }
    if (cmd == Q_INPUT_ATTR || cmd == Q_OUTPUT_ATTR) {
        if (size != sizeof(rknn_tensor_attr))
            return violate(RKNN_ERR_PARAM_INVALID, "%s ATTR: size %ld", "rknn_query", (long)size);
        rknn_tensor_attr *a = info;
        uint32_t n = cmd == Q_INPUT_ATTR ? c->n_in : c->n_out;
        if (a->index >= n) return violate(RKNN_ERR_PARAM_INVALID, "%s ATTR: index %ld out of range", "rknn_query", (long)a->index);
        tdesc *t = cmd == Q_INPUT_ATTR ? &c->in[a->index] : &c->out[a->index];
        uint32_t idx = a->index;
        memset(a, 0, sizeof *a);
        a->index = idx;
        a->n_dims = t->n_dims;
        memcpy(a->dims, t->dims, sizeof t->dims);
        snprintf(a->name, sizeof a->name, "%s%u", cmd == Q_INPUT_ATTR ? "in" : "out", idx);
        a->n_elems = (uint32_t)t->n;
        a->type = t->type;
        a->size = (uint32_t)(t->n * (t->type == T_FLOAT32 ? 4 : 1));
        a->fmt = F_NCHW;
        a->qnt_type = t->type == T_INT8 ? 2 : 0;
        a->zp = t->zp;
        a->scale = t->scale;
        a->size_with_stride = a->size;
        return RKNN_SUCC;
    }
    return violate(RKNN_ERR_PARAM_INVALID, "%s: command %ld not in the subset", "rknn_query", (long)cmd);
}

int rknn_inputs_set(rknn_context context, uint32_t n_inputs, rknn_input *inputs) {
    int e = injected("rknn_inputs_set");
    ctx_t *c = get(context, "rknn_inputs_set");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (!c->queried) violate(0, "%s before rknn_query(IN_OUT_NUM) %ld", "rknn_inputs_set", 0);
    if (c->outputs_held) return violate(RKNN_ERR_PARAM_INVALID, "%s while outputs are held %ld", "rknn_inputs_set", 0);
    if (n_inputs != c->n_in || !inputs)
        return violate(RKNN_ERR_INPUT_INVALID, "%s: %ld inputs", "rknn_inputs_set", (long)n_inputs);
    if (e) return e;
    uint32_t seen = 0;
    for (uint32_t i = 0; i < n_inputs; i++) {
        rknn_input *in = &inputs[i];
        if (in->index >= c->n_in || (seen >> in->index & 1))
            return violate(RKNN_ERR_INPUT_INVALID, "%s: index %ld missing or repeated", "rknn_inputs_set", (long)in->index);
        seen |= 1u << in->index;
        tdesc *t = &c->in[in->index];
        if (in->pass_through || in->type != T_FLOAT32 || in->fmt != F_NCHW || !in->buf)
            return violate(RKNN_ERR_INPUT_INVALID, "%s: input %ld is not a float32 NCHW buffer", "rknn_inputs_set", (long)in->index);
        if (in->size != t->n * sizeof(float))
            return violate(RKNN_ERR_INPUT_INVALID, "%s: size %ld bytes", "rknn_inputs_set", (long)in->size);
        /* Copied now: the caller owns its buffer again when this returns. */
        memcpy(c->in_data[in->index], in->buf, in->size);
    }
    c->inputs_set = 1;
    return RKNN_SUCC;
}

int rknn_run(rknn_context context, void *extend) {
    int e = injected("rknn_run");
    ctx_t *c = get(context, "rknn_run");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (extend) return violate(RKNN_ERR_PARAM_INVALID, "%s: unexpected extend %ld", "rknn_run", 0);
    if (!c->inputs_set) return violate(RKNN_ERR_INPUT_INVALID, "%s before rknn_inputs_set %ld", "rknn_run", 0);
    if (c->outputs_held) return violate(RKNN_ERR_PARAM_INVALID, "%s while outputs are held %ld", "rknn_run", 0);
    if (e) return e;
    if (!compute_fn) return violate(RKNN_ERR_FAIL, "%s: no compute stand-in registered %ld", "rknn_run", 0);
    size_t in_lens[MAXT], out_lens[MAXT];
    for (uint32_t i = 0; i < c->n_in; i++) in_lens[i] = c->in[i].n;
    for (uint32_t i = 0; i < c->n_out; i++) out_lens[i] = c->out[i].n;
    if (compute_fn(compute_user, c->payload, c->payload_len, (const float *const *)c->in_data, in_lens,
                   c->n_in, c->out_data, out_lens, c->n_out))
        return RKNN_ERR_FAIL;
    c->ran = 1;
    c->inputs_set = 0; /* each run needs fresh inputs (Strix sets them every run) */
    return RKNN_SUCC;
}

int rknn_outputs_get(rknn_context context, uint32_t n_outputs, rknn_output *outputs, void *extend) {
    int e = injected("rknn_outputs_get");
    ctx_t *c = get(context, "rknn_outputs_get");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (!c->ran) return violate(RKNN_ERR_OUTPUT_INVALID, "%s before rknn_run %ld", "rknn_outputs_get", 0);
    if (c->outputs_held) return violate(RKNN_ERR_OUTPUT_INVALID, "%s twice without release %ld", "rknn_outputs_get", 0);
    if (n_outputs != c->n_out || !outputs || extend)
        return violate(RKNN_ERR_OUTPUT_INVALID, "%s: %ld outputs (or extend given)", "rknn_outputs_get", (long)n_outputs);
    if (e) return e;
    uint32_t seen = 0;
    for (uint32_t i = 0; i < n_outputs; i++) {
        rknn_output *o = &outputs[i];
        if (o->index >= c->n_out || (seen >> o->index & 1))
            return violate(RKNN_ERR_OUTPUT_INVALID, "%s: index %ld missing or repeated", "rknn_outputs_get", (long)o->index);
        seen |= 1u << o->index;
    }
    for (uint32_t i = 0; i < n_outputs; i++) {
        rknn_output *o = &outputs[i];
        tdesc *t = &c->out[o->index];
        size_t need = t->n * (o->want_float ? sizeof(float) : 1);
        if (o->is_prealloc) {
            if (!o->buf || o->size < need)
                return violate(RKNN_ERR_OUTPUT_INVALID, "%s: preallocated buffer too small (%ld bytes)", "rknn_outputs_get", (long)o->size);
        } else {
            o->buf = c->owned[i] = malloc(need);
            o->size = (uint32_t)need;
        }
        if (o->want_float) {
            memcpy(o->buf, c->out_data[o->index], need);
        } else {
            int8_t *q = o->buf;
            for (size_t k = 0; k < t->n; k++) {
                float v = c->out_data[o->index][k] / t->scale + (float)t->zp;
                long r = (long)(v < 0 ? v - 0.5f : v + 0.5f);
                q[k] = (int8_t)(r < -128 ? -128 : r > 127 ? 127 : r);
            }
        }
    }
    c->outputs_held = 1;
    return RKNN_SUCC;
}

int rknn_outputs_release(rknn_context context, uint32_t n_outputs, rknn_output *outputs) {
    int e = injected("rknn_outputs_release");
    ctx_t *c = get(context, "rknn_outputs_release");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (!c->outputs_held) return violate(RKNN_ERR_PARAM_INVALID, "%s without rknn_outputs_get %ld", "rknn_outputs_release", 0);
    if (n_outputs != c->n_out || !outputs)
        return violate(RKNN_ERR_PARAM_INVALID, "%s: %ld outputs", "rknn_outputs_release", (long)n_outputs);
    for (uint32_t i = 0; i < MAXT; i++) { free(c->owned[i]); c->owned[i] = NULL; }
    c->outputs_held = 0; /* released even when a failure is injected */
    return e;
}
