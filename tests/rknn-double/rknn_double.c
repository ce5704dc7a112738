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
 *  - fails any named call with a chosen RKNN_ERR_* code (rknn_double_fail);
 *  - implements the zero-copy API (rknn_create_mem, rknn_set_io_mem,
 *    rknn_destroy_mem, rknn_query NATIVE_INPUT_ATTR / NATIVE_OUTPUT_ATTR) with its
 *    contract: a mem belongs to the context that created it, its size covers the
 *    native attribute's size_with_stride, the attribute given to rknn_set_io_mem
 *    is one rknn_query returned (name, index, native format, type, dims, strides,
 *    quantization unchanged), every input and output is bound before rknn_run,
 *    the copy and zero-copy input APIs are not mixed, no mem is used or destroyed
 *    after rknn_destroy_mem, every mem is destroyed before rknn_destroy;
 *  - presents native layouts chosen by rknn_double_set_native: 0 the plain NCHW
 *    layout of INPUT_ATTR/OUTPUT_ATTR; 1 RK3588-like: 4-D inputs NHWC with rows
 *    padded to a multiple of 8 (w_stride), 4-D outputs NC1HWC2 (C2 16 for int8,
 *    4 for float32) with W padded to a multiple of 8, padding of outputs filled
 *    with garbage so a conversion that reads it shows; 2 outputs of type INT16
 *    (a type Strix does not map: its backend must use the copy API).
 * Built three ways (build.rs): full; -DRKNN_DOUBLE_NO_MEM (no zero-copy symbols,
 * like older librknnrt releases); -DRKNN_DOUBLE_NO_COPY (no rknn_inputs_set /
 * rknn_outputs_get / rknn_outputs_release, like RV1106's librknnmrt); the static
 * library for the aarch64 tests with -DRKNN_DOUBLE_NO_DLOPEN (no libstrix stand-in).
 * Single-threaded by contract (the tests serialise).
 *
 * In a process the tests do not control (strixd, which dlopens this file as
 * librknnrt.so), three environment variables stand in for the control API; the
 * double reads them, Strix's own code never does:
 *  - RKNN_DOUBLE_LIBSTRIX: the path of libstrix (strix-runtime's C library).
 *    With no compute callback registered, rknn_run runs the payload through its
 *    C ABI (strix_model_load_buffer .. strix_get_output_f32), one model and
 *    context per rknn context, freed at rknn_destroy;
 *  - RKNN_DOUBLE_NATIVE: the native layout mode at load (as rknn_double_set_native);
 *  - RKNN_DOUBLE_REPORT: a file to which each unload of the double (dlclose or
 *    process exit) appends one line: "rknn-double: inits=N runs=N violations=N
 *    live=N last=<last violation>", so the tests can require a clean contract.
 */
#ifndef RKNN_DOUBLE_NO_DLOPEN
#include <dlfcn.h>
#endif
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

enum { Q_IN_OUT_NUM = 0, Q_INPUT_ATTR = 1, Q_OUTPUT_ATTR = 2, Q_NATIVE_INPUT_ATTR = 8, Q_NATIVE_OUTPUT_ATTR = 9 };
enum { T_FLOAT32 = 0, T_FLOAT16 = 1, T_INT8 = 2, T_UINT8 = 3, T_INT16 = 4 };
enum { F_NCHW = 0, F_NHWC = 1, F_NC1HWC2 = 2 };

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
typedef struct {
    void *virt_addr;
    uint64_t phys_addr;
    int32_t fd, offset;
    uint32_t size, flags;
    void *priv_data;
} rknn_tensor_mem;

/* Layouts as in rknn_api.h on LP64 (checked against rknpu-sys's bindings). */
_Static_assert(sizeof(rknn_tensor_attr) == 376, "rknn_tensor_attr layout");
_Static_assert(sizeof(rknn_input) == 32, "rknn_input layout");
_Static_assert(sizeof(rknn_output) == 24, "rknn_output layout");
_Static_assert(sizeof(rknn_tensor_mem) == 40, "rknn_tensor_mem layout");

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
    int in_mem[MAXT], out_mem[MAXT]; /* bound mems: table index + 1, 0 = none */
    int n_mems;                      /* mems created and not destroyed */
    void *strix_model, *strix_ctx;   /* the libstrix stand-in's handles (RKNN_DOUBLE_LIBSTRIX) */
} ctx_t;

/* A mem handed out by rknn_create_mem. Records live in a static table and are
 * reused round-robin, so a destroyed mem stays recognisable (use after
 * rknn_destroy_mem is caught) until MAXMEM more mems have been created. */
#define MAXMEM 256
enum { MEM_FREE = 0, MEM_LIVE = 1, MEM_DEAD = 2 };
typedef struct {
    rknn_tensor_mem m;
    int state;
    rknn_context owner;
    void *buf;
    uint32_t size;
} memrec;
static memrec mems[MAXMEM];
__attribute__((unused)) static int next_mem;
static uint32_t native_mode;

/* Where a tensor's elements sit in its native buffer. */
typedef struct {
    uint32_t fmt, type, n_dims, dims[5], w_stride, elt;
    size_t n, c, h, w, hs, ws, c1, c2, bytes;
} native_t;

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

__attribute__((unused)) static int violate2(int code, const char *fmt, const char *a, const char *b, long n) {
    violations++;
    snprintf(last_violation, sizeof last_violation, fmt, a, b, n);
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
/* Mems created and not destroyed, over all contexts. */
int rknn_double_live_mems(void) {
    int n = 0;
    for (int i = 0; i < MAXMEM; i++) n += mems[i].state == MEM_LIVE;
    return n;
}
/* Live contexts, output sets not released and mems not destroyed: 0 after a clean shutdown. */
int rknn_double_live(void) {
    int n = 0;
    for (int i = 0; i < MAXCTX; i++) n += ctxs[i].live + (ctxs[i].live ? ctxs[i].outputs_held : 0);
    return n + rknn_double_live_mems();
}
long rknn_double_calls(void) { return calls; }
uint32_t rknn_double_core_mask(void) { return last_core_mask; }
/* Native layouts rknn_query(NATIVE_*) reports (see the header); reset: 0. */
void rknn_double_set_native(uint32_t mode) { native_mode = mode; }
void rknn_double_reset(void) {
    native_mode = 0;
    violations = 0;
    last_violation[0] = 0;
    fail_call[0] = 0;
    calls = 0;
    last_core_mask = 0;
}

/* ---- the libstrix stand-in and the report (see the header) ---- */
typedef int (*strix_load_fn)(const uint8_t *, size_t, void **);
typedef int (*strix_ctx_new_fn)(void *, void **);
typedef int (*strix_free_fn)(void *);
typedef int (*strix_set_in_fn)(void *, size_t, const float *, size_t);
typedef int (*strix_run_fn)(void *);
typedef int (*strix_get_out_fn)(void *, size_t, float *, size_t);
typedef const char *(*strix_err_fn)(void);
static struct {
    int tried;
    strix_load_fn load;
    strix_ctx_new_fn ctx_new;
    strix_free_fn ctx_free, model_free;
    strix_set_in_fn set_in;
    strix_run_fn run;
    strix_get_out_fn get_out;
    strix_err_fn err;
} libstrix;
static long inits, strix_runs;

/* Opens libstrix once (never closed: a Rust library's thread-local state does
 * not survive unloading). Returns 0 when RKNN_DOUBLE_LIBSTRIX is unset or the
 * library or a symbol is missing (said on stderr). */
static int libstrix_open(void) {
    if (libstrix.tried) return libstrix.load != NULL;
    libstrix.tried = 1;
    const char *path = getenv("RKNN_DOUBLE_LIBSTRIX");
    if (!path || !*path) return 0;
#ifdef RKNN_DOUBLE_NO_DLOPEN /* the statically linked build: no dlopen there */
    fprintf(stderr, "rknn double: RKNN_DOUBLE_LIBSTRIX: this build cannot dlopen\n");
    return 0;
#else
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "rknn double: RKNN_DOUBLE_LIBSTRIX: %s\n", dlerror()); return 0; }
    void *f[8];
    const char *names[8] = {"strix_model_load_buffer", "strix_context_new", "strix_context_free", "strix_model_free",
                            "strix_set_input_f32",     "strix_run",         "strix_get_output_f32", "strix_last_error"};
    for (int i = 0; i < 8; i++)
        if (!(f[i] = dlsym(h, names[i]))) { fprintf(stderr, "rknn double: %s: no %s\n", path, names[i]); return 0; }
    /* Object to function pointers through memcpy (ISO C has no direct cast). */
    memcpy(&libstrix.ctx_new, &f[1], sizeof f[1]);
    memcpy(&libstrix.ctx_free, &f[2], sizeof f[2]);
    memcpy(&libstrix.model_free, &f[3], sizeof f[3]);
    memcpy(&libstrix.set_in, &f[4], sizeof f[4]);
    memcpy(&libstrix.run, &f[5], sizeof f[5]);
    memcpy(&libstrix.get_out, &f[6], sizeof f[6]);
    memcpy(&libstrix.err, &f[7], sizeof f[7]);
    memcpy(&libstrix.load, &f[0], sizeof f[0]);
    return 1;
#endif
}

static void strix_free(ctx_t *c) {
    if (c->strix_ctx) libstrix.ctx_free(c->strix_ctx);
    if (c->strix_model) libstrix.model_free(c->strix_model);
    c->strix_ctx = c->strix_model = NULL;
}

/* Runs the payload (a .strix file) on libstrix's CPU path: float inputs in,
 * float outputs out. Non-zero (said on stderr) on any libstrix error. */
static int strix_compute_c(ctx_t *c) {
    const char *what = "strix_model_load_buffer";
    int st = 0;
    if (!c->strix_model && (st = libstrix.load(c->payload, c->payload_len, &c->strix_model))) goto fail;
    what = "strix_context_new";
    if (!c->strix_ctx && (st = libstrix.ctx_new(c->strix_model, &c->strix_ctx))) goto fail;
    what = "strix_set_input_f32";
    for (uint32_t i = 0; i < c->n_in; i++)
        if ((st = libstrix.set_in(c->strix_ctx, i, c->in_data[i], c->in[i].n))) goto fail;
    what = "strix_run";
    if ((st = libstrix.run(c->strix_ctx))) goto fail;
    what = "strix_get_output_f32";
    for (uint32_t i = 0; i < c->n_out; i++)
        if ((st = libstrix.get_out(c->strix_ctx, i, c->out_data[i], c->out[i].n))) goto fail;
    strix_runs++;
    return 0;
fail:
    fprintf(stderr, "rknn double: libstrix stand-in: %s: status %d: %s\n", what, st, libstrix.err());
    return 1;
}

__attribute__((constructor)) static void double_from_env(void) {
    const char *n = getenv("RKNN_DOUBLE_NATIVE");
    if (n && *n) native_mode = (uint32_t)atoi(n);
}

int rknn_double_live(void);
__attribute__((destructor)) static void double_report(void) {
    const char *path = getenv("RKNN_DOUBLE_REPORT");
    if (!path || !*path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "rknn-double: inits=%ld runs=%ld violations=%d live=%d last=%s\n", inits, strix_runs, violations,
            rknn_double_live(), last_violation);
    fclose(f);
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

static size_t up8(size_t v) { return (v + 7) / 8 * 8; }
static uint32_t elt_size(uint32_t type) { return type == T_FLOAT32 ? 4 : type == T_INT16 ? 2 : 1; }

/* The native layout of tensor t (an input when is_in) in the current mode. */
static void native_of(const tdesc *t, int is_in, native_t *nd) {
    memset(nd, 0, sizeof *nd);
    nd->type = t->type;
    if (native_mode == 2 && !is_in) nd->type = T_INT16;
    nd->elt = elt_size(nd->type);
    int four = t->n_dims == 4;
    nd->n = four ? t->dims[0] : 1;
    nd->c = four ? t->dims[1] : t->n;
    nd->h = four ? t->dims[2] : 1;
    nd->w = four ? t->dims[3] : 1;
    nd->hs = nd->h;
    nd->ws = nd->w;
    nd->fmt = F_NCHW;
    nd->n_dims = t->n_dims;
    memcpy(nd->dims, t->dims, sizeof t->dims);
    if (native_mode == 1 && four && is_in) {
        nd->fmt = F_NHWC;
        nd->ws = up8(nd->w);
        nd->w_stride = (uint32_t)nd->ws;
        uint32_t d[4] = {(uint32_t)nd->n, (uint32_t)nd->h, (uint32_t)nd->w, (uint32_t)nd->c};
        memcpy(nd->dims, d, sizeof d);
    } else if (native_mode == 1 && four) {
        nd->fmt = F_NC1HWC2;
        nd->c2 = nd->type == T_INT8 ? 16 : 4;
        nd->c1 = (nd->c + nd->c2 - 1) / nd->c2;
        nd->ws = up8(nd->w);
        nd->n_dims = 5;
        uint32_t d[5] = {(uint32_t)nd->n, (uint32_t)nd->c1, (uint32_t)nd->hs, (uint32_t)nd->ws, (uint32_t)nd->c2};
        memcpy(nd->dims, d, sizeof d);
    }
    size_t elems = nd->fmt == F_NC1HWC2 ? nd->n * nd->c1 * nd->hs * nd->ws * nd->c2 : nd->n * nd->c * nd->hs * nd->ws;
    nd->bytes = elems * nd->elt;
}

/* Element offset of NCHW element (b, ch, y, x) in the native buffer. */
static size_t native_off(const native_t *nd, size_t b, size_t ch, size_t y, size_t x) {
    if (nd->fmt == F_NHWC) return ((b * nd->hs + y) * nd->ws + x) * nd->c + ch;
    if (nd->fmt == F_NC1HWC2) return (((b * nd->c1 + ch / nd->c2) * nd->hs + y) * nd->ws + x) * nd->c2 + ch % nd->c2;
    return ((b * nd->c + ch) * nd->h + y) * nd->w + x;
}

static long round_sat(float v, long lo, long hi) {
    long r = (long)(v < 0 ? v - 0.5f : v + 0.5f);
    return r < lo ? lo : r > hi ? hi : r;
}

/* Native buffer -> float NCHW (inputs of a zero-copy run). */
static void native_to_float(const native_t *nd, const tdesc *t, const uint8_t *src, float *dst) {
    size_t i = 0;
    for (size_t b = 0; b < nd->n; b++)
        for (size_t ch = 0; ch < nd->c; ch++)
            for (size_t y = 0; y < nd->h; y++)
                for (size_t x = 0; x < nd->w; x++, i++) {
                    size_t o = native_off(nd, b, ch, y, x);
                    if (nd->type == T_FLOAT32) memcpy(&dst[i], src + 4 * o, 4);
                    else if (nd->type == T_INT16) { int16_t q; memcpy(&q, src + 2 * o, 2); dst[i] = (q - t->zp) * t->scale; }
                    else dst[i] = ((int8_t)src[o] - t->zp) * t->scale;
                }
}

/* Float NCHW -> native buffer (outputs of a zero-copy run). Padding gets
 * garbage first: a reader that takes padding for data gets wrong numbers. */
static void float_to_native(const native_t *nd, const tdesc *t, const float *src, uint8_t *dst) {
    memset(dst, 0x5a, nd->bytes);
    size_t i = 0;
    for (size_t b = 0; b < nd->n; b++)
        for (size_t ch = 0; ch < nd->c; ch++)
            for (size_t y = 0; y < nd->h; y++)
                for (size_t x = 0; x < nd->w; x++, i++) {
                    size_t o = native_off(nd, b, ch, y, x);
                    if (nd->type == T_FLOAT32) memcpy(dst + 4 * o, &src[i], 4);
                    else if (nd->type == T_INT16) {
                        int16_t q = (int16_t)round_sat(src[i] / t->scale + (float)t->zp, -32768, 32767);
                        memcpy(dst + 2 * o, &q, 2);
                    } else dst[o] = (uint8_t)(int8_t)round_sat(src[i] / t->scale + (float)t->zp, -128, 127);
                }
}

/* Fills attr a (index already set) for tensor t, native or not. */
static void fill_attr(rknn_tensor_attr *a, const tdesc *t, int is_in, int native) {
    uint32_t idx = a->index;
    native_t nd;
    native_of(t, is_in, &nd);
    if (!native) { /* INPUT_ATTR / OUTPUT_ATTR: the model's own NCHW view */
        native_t plain = nd;
        uint32_t keep = native_mode;
        native_mode = 0;
        native_of(t, is_in, &plain);
        native_mode = keep;
        nd = plain;
    }
    memset(a, 0, sizeof *a);
    a->index = idx;
    a->n_dims = nd.n_dims;
    memcpy(a->dims, nd.dims, sizeof nd.dims);
    snprintf(a->name, sizeof a->name, "%s%u", is_in ? "in" : "out", idx);
    a->n_elems = (uint32_t)t->n;
    a->type = nd.type;
    a->size = (uint32_t)(t->n * nd.elt);
    a->fmt = nd.fmt;
    a->qnt_type = nd.type == T_FLOAT32 ? 0 : 2;
    a->zp = t->zp;
    a->scale = t->scale;
    a->w_stride = nd.w_stride;
    a->size_with_stride = (uint32_t)nd.bytes;
}

__attribute__((unused)) static memrec *find_mem(const rknn_tensor_mem *m) {
    for (int i = 0; i < MAXMEM; i++)
        if (&mems[i].m == m) return &mems[i];
    return NULL;
}

static void strix_free(ctx_t *c);

static void free_ctx(ctx_t *c) {
    strix_free(c);
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
    inits++;
    *context = (rknn_context)(slot + 1);
    return RKNN_SUCC;
}

int rknn_destroy(rknn_context context) {
    int e = injected("rknn_destroy");
    ctx_t *c = get(context, "rknn_destroy");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (c->outputs_held) violate(0, "%s with outputs not released (leak) %ld", "rknn_destroy", 0);
    if (c->n_mems) violate(0, "%s with %ld mems not destroyed by rknn_destroy_mem (leak)", "rknn_destroy", c->n_mems);
    for (int i = 0; i < MAXMEM; i++) /* freed anyway: valgrind then shows only the backend's own leaks */
        if (mems[i].state == MEM_LIVE && mems[i].owner == context) { free(mems[i].buf); mems[i].state = MEM_DEAD; }
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
    if (cmd == Q_INPUT_ATTR || cmd == Q_OUTPUT_ATTR || cmd == Q_NATIVE_INPUT_ATTR || cmd == Q_NATIVE_OUTPUT_ATTR) {
        if (size != sizeof(rknn_tensor_attr))
            return violate(RKNN_ERR_PARAM_INVALID, "%s ATTR: size %ld", "rknn_query", (long)size);
        rknn_tensor_attr *a = info;
        int is_in = cmd == Q_INPUT_ATTR || cmd == Q_NATIVE_INPUT_ATTR;
        uint32_t n = is_in ? c->n_in : c->n_out;
        if (a->index >= n) return violate(RKNN_ERR_PARAM_INVALID, "%s ATTR: index %ld out of range", "rknn_query", (long)a->index);
        fill_attr(a, is_in ? &c->in[a->index] : &c->out[a->index], is_in, cmd >= Q_NATIVE_INPUT_ATTR);
        return RKNN_SUCC;
    }
    return violate(RKNN_ERR_PARAM_INVALID, "%s: command %ld not in the subset", "rknn_query", (long)cmd);
}

#ifndef RKNN_DOUBLE_NO_COPY
int rknn_inputs_set(rknn_context context, uint32_t n_inputs, rknn_input *inputs) {
    int e = injected("rknn_inputs_set");
    ctx_t *c = get(context, "rknn_inputs_set");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (!c->queried) violate(0, "%s before rknn_query(IN_OUT_NUM) %ld", "rknn_inputs_set", 0);
    if (c->outputs_held) return violate(RKNN_ERR_PARAM_INVALID, "%s while outputs are held %ld", "rknn_inputs_set", 0);
    for (uint32_t i = 0; i < c->n_in; i++)
        if (c->in_mem[i])
            return violate(RKNN_ERR_PARAM_INVALID, "%s on input %ld, already bound by rknn_set_io_mem (the two input APIs mixed)", "rknn_inputs_set", (long)i);
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

#endif /* RKNN_DOUBLE_NO_COPY */

/* A zero-copy run: every input and output bound to a live mem of this context. */
static int run_bound(ctx_t *c) {
    for (uint32_t i = 0; i < c->n_in + c->n_out; i++) {
        int is_in = i < c->n_in;
        uint32_t k = is_in ? i : i - c->n_in;
        int b = is_in ? c->in_mem[k] : c->out_mem[k];
        if (!b)
            return violate(is_in ? RKNN_ERR_INPUT_INVALID : RKNN_ERR_OUTPUT_INVALID,
                           "%s: tensor %ld not bound by rknn_set_io_mem (bind every input and output)", "rknn_run", (long)i);
        if (mems[b - 1].state != MEM_LIVE)
            return violate(RKNN_ERR_PARAM_INVALID, "%s: tensor %ld is bound to a mem destroyed by rknn_destroy_mem (use after free)", "rknn_run", (long)i);
    }
    for (uint32_t i = 0; i < c->n_in; i++) {
        native_t nd;
        native_of(&c->in[i], 1, &nd);
        native_to_float(&nd, &c->in[i], mems[c->in_mem[i] - 1].buf, c->in_data[i]);
    }
    return RKNN_SUCC;
}

int rknn_run(rknn_context context, void *extend) {
    int e = injected("rknn_run");
    ctx_t *c = get(context, "rknn_run");
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (extend) return violate(RKNN_ERR_PARAM_INVALID, "%s: unexpected extend %ld", "rknn_run", 0);
    int bound = 0;
    for (uint32_t i = 0; i < c->n_in; i++) bound |= c->in_mem[i] != 0;
    for (uint32_t i = 0; i < c->n_out; i++) bound |= c->out_mem[i] != 0;
    if (!bound && !c->inputs_set)
        return violate(RKNN_ERR_INPUT_INVALID, "%s before rknn_inputs_set or rknn_set_io_mem %ld", "rknn_run", 0);
    if (c->outputs_held) return violate(RKNN_ERR_PARAM_INVALID, "%s while outputs are held %ld", "rknn_run", 0);
    if (bound) {
        int r = run_bound(c);
        if (r) return r;
    }
    if (e) return e;
    if (compute_fn) {
        size_t in_lens[MAXT], out_lens[MAXT];
        for (uint32_t i = 0; i < c->n_in; i++) in_lens[i] = c->in[i].n;
        for (uint32_t i = 0; i < c->n_out; i++) out_lens[i] = c->out[i].n;
        if (compute_fn(compute_user, c->payload, c->payload_len, (const float *const *)c->in_data, in_lens,
                       c->n_in, c->out_data, out_lens, c->n_out))
            return RKNN_ERR_FAIL;
    } else if (libstrix_open()) {
        if (strix_compute_c(c)) return RKNN_ERR_FAIL;
    } else
        return violate(RKNN_ERR_FAIL, "%s: no compute stand-in registered %ld", "rknn_run", 0);
    if (bound)
        for (uint32_t i = 0; i < c->n_out; i++) {
            native_t nd;
            native_of(&c->out[i], 0, &nd);
            float_to_native(&nd, &c->out[i], c->out_data[i], mems[c->out_mem[i] - 1].buf);
        }
    c->ran = 1;
    c->inputs_set = 0; /* each run needs fresh inputs (Strix sets them every run) */
    return RKNN_SUCC;
}

#ifndef RKNN_DOUBLE_NO_COPY
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
#endif /* RKNN_DOUBLE_NO_COPY */

#ifndef RKNN_DOUBLE_NO_MEM
rknn_tensor_mem *rknn_create_mem(rknn_context context, uint32_t size) {
    int e = injected("rknn_create_mem");
    ctx_t *c = get(context, "rknn_create_mem");
    if (!c) return NULL;
    if (size == 0) { violate(0, "%s: size %ld", "rknn_create_mem", 0); return NULL; }
    if (e) return NULL; /* the real call reports failure by NULL only */
    int slot = -1;
    for (int k = 0; k < MAXMEM; k++) {
        int i = (next_mem + k) % MAXMEM;
        if (mems[i].state != MEM_LIVE) { slot = i; break; }
    }
    if (slot < 0) return NULL;
    next_mem = (slot + 1) % MAXMEM;
    memrec *r = &mems[slot];
    memset(r, 0, sizeof *r);
    r->buf = malloc(size);
    if (!r->buf) return NULL;
    memset(r->buf, 0xa5, size); /* not zeroed, as DMA memory need not be */
    r->size = size;
    r->state = MEM_LIVE;
    r->owner = context;
    r->m.virt_addr = r->buf;
    r->m.fd = -1;
    r->m.size = size;
    r->m.flags = 1; /* RKNN_TENSOR_MEMORY_FLAGS_ALLOC_INSIDE */
    c->n_mems++;
    return &r->m;
}

/* The checks shared by rknn_set_io_mem and rknn_destroy_mem. */
static memrec *check_mem(rknn_context context, rknn_tensor_mem *m, const char *call) {
    memrec *r = m ? find_mem(m) : NULL;
    if (!r || r->state == MEM_FREE) { violate(0, "%s: not a mem from rknn_create_mem (%ld)", call, 0); return NULL; }
    if (r->state == MEM_DEAD) { violate(0, "%s: mem used after rknn_destroy_mem (%ld)", call, 0); return NULL; }
    if (r->owner != context) { violate(0, "%s: mem of context %ld used with another context", call, (long)r->owner); return NULL; }
    if (m->virt_addr != r->buf || m->size != r->size) { violate(0, "%s: the mem's virt_addr/size were altered (%ld)", call, 0); return NULL; }
    return r;
}

int rknn_set_io_mem(rknn_context context, rknn_tensor_mem *mem, rknn_tensor_attr *attr) {
    int e = injected("rknn_set_io_mem");
    ctx_t *c = get(context, "rknn_set_io_mem");
    if (!c) return RKNN_ERR_CTX_INVALID;
    memrec *r = check_mem(context, mem, "rknn_set_io_mem");
    if (!r) return RKNN_ERR_PARAM_INVALID;
    if (!attr) return violate(RKNN_ERR_PARAM_INVALID, "%s: null attr %ld", "rknn_set_io_mem", 0);
    if (e) return e;
    /* The attribute must be one rknn_query returned: its name says which tensor. */
    char want[RKNN_MAX_NAME_LEN];
    int is_in = strncmp(attr->name, "in", 2) == 0;
    uint32_t n = is_in ? c->n_in : c->n_out;
    snprintf(want, sizeof want, "%s%u", is_in ? "in" : "out", attr->index);
    if (attr->index >= n || strncmp(attr->name, want, sizeof want) != 0)
        return violate2(RKNN_ERR_PARAM_INVALID, "%s: attr %s (index %ld) is not one rknn_query returned", "rknn_set_io_mem", attr->name, (long)attr->index);
    tdesc *t = is_in ? &c->in[attr->index] : &c->out[attr->index];
    rknn_tensor_attr native = {.index = attr->index};
    fill_attr(&native, t, is_in, 1);
    if (attr->fmt != native.fmt || attr->type != native.type || attr->n_dims != native.n_dims ||
        memcmp(attr->dims, native.dims, sizeof native.dims) != 0 || attr->n_elems != native.n_elems ||
        attr->w_stride != native.w_stride || attr->size_with_stride != native.size_with_stride ||
        attr->zp != native.zp || attr->scale != native.scale || attr->qnt_type != native.qnt_type)
        return violate2(RKNN_ERR_PARAM_INVALID, "%s: attr of %s is not the native attribute (format, type, dims, strides or quantization changed; the double binds native layouts only) %ld", "rknn_set_io_mem", attr->name, 0);
    if (mem->size < native.size_with_stride)
        return violate2(RKNN_ERR_PARAM_INVALID, "%s: mem for %s has %ld bytes, less than the native size_with_stride", "rknn_set_io_mem", attr->name, (long)mem->size);
    if (is_in && !attr->pass_through)
        return violate2(RKNN_ERR_PARAM_INVALID, "%s: input %s without pass_through (the double takes native input bytes only) %ld", "rknn_set_io_mem", attr->name, 0);
    (is_in ? c->in_mem : c->out_mem)[attr->index] = (int)(r - mems) + 1;
    return RKNN_SUCC;
}

int rknn_destroy_mem(rknn_context context, rknn_tensor_mem *mem) {
    int e = injected("rknn_destroy_mem");
    ctx_t *c = get(context, "rknn_destroy_mem");
    if (!c) return RKNN_ERR_CTX_INVALID;
    memrec *r = check_mem(context, mem, "rknn_destroy_mem");
    if (!r) return RKNN_ERR_PARAM_INVALID;
    free(r->buf);
    r->buf = NULL;
    r->state = MEM_DEAD; /* destroyed even when a failure is injected: nothing may leak */
    c->n_mems--;
    return e;
}
#endif /* RKNN_DOUBLE_NO_MEM */
