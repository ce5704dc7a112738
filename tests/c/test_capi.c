/*
 * C tests of the Strix C API: every error path and every status code.
 *
 *   test_capi DETECTOR.strix OTHER.strix FRAME.rgb WIDTH HEIGHT TMPDIR
 *
 * DETECTOR is an int8 detector with an image input (FastestDet), OTHER a
 * model that is neither an image model nor int8 (the f32 KWS model), FRAME a
 * packed RGB frame of WIDTH x HEIGHT, TMPDIR a writable scratch directory.
 * Ends with "N passed, N failed"; exit status 1 if anything failed. Meant to
 * run under valgrind (no leaks, no invalid accesses) as well.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strix.h"

#define N_STATUS 12

static int passed, failed;
static int seen[N_STATUS];

static void check(int ok, const char *file, int line, const char *what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", file, line, what, strix_last_error());
    }
}
#define CHECK(cond) check(!!(cond), __FILE__, __LINE__, #cond)

static void expect(strix_status got, strix_status want, const char *file, int line, const char *call) {
    if (got >= 0 && got < N_STATUS) seen[got] = 1;
    if (got == want && (want == STRIX_OK || strlen(strix_last_error()) > 0)) {
        passed++;
    } else {
        failed++;
        fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n", file, line, call,
                strix_status_name(got), strix_status_name(want), strix_last_error());
    }
}
#define EXPECT(call, want) expect((call), (want), __FILE__, __LINE__, #call)

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static void write_file(const char *path, const unsigned char *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    fclose(f);
}

static const char *det_path, *other_path;
static unsigned char *frame;
static size_t frame_size, width, height;

/* ---------------------------------------------------------------------- */

static void test_library(void) {
    CHECK(strix_version() != NULL && strlen(strix_version()) >= 5);
    CHECK(strix_abi_version() == STRIX_ABI_VERSION);
    CHECK(!strcmp(strix_status_name(STRIX_OK), "STRIX_OK"));
    CHECK(!strcmp(strix_status_name(STRIX_E_INTERNAL), "STRIX_E_INTERNAL"));
    CHECK(!strcmp(strix_status_name(-1), "unknown"));
    CHECK(!strcmp(strix_status_name(N_STATUS), "unknown"));
    /* A caught panic: STRIX_E_INTERNAL, and the library stays usable. */
    EXPECT(strix_selftest_panic(), STRIX_E_INTERNAL);
    CHECK(strstr(strix_last_error(), "panic") != NULL);
}

static void test_load_errors(const char *tmpdir) {
    strix_model *m = (strix_model *)&m; /* garbage: must be reset to NULL */
    EXPECT(strix_model_load_path(NULL, &m), STRIX_E_NULL);
    CHECK(m == NULL);
    EXPECT(strix_model_load_path(det_path, NULL), STRIX_E_NULL);
    EXPECT(strix_model_load_buffer(NULL, 100, &m), STRIX_E_NULL);
    EXPECT(strix_model_load_buffer((const uint8_t *)"x", 1, NULL), STRIX_E_NULL);

    char path[4096];
    snprintf(path, sizeof path, "%s/does-not-exist.strix", tmpdir);
    EXPECT(strix_model_load_path(path, &m), STRIX_E_IO);
    CHECK(strstr(strix_last_error(), "does-not-exist") != NULL);
    EXPECT(strix_model_load_path(tmpdir, &m), STRIX_E_IO); /* a directory */
    CHECK(m == NULL);

    size_t size;
    unsigned char *bytes = read_file(det_path, &size);
    CHECK(size > 4096);
    /* Not a model at all; shorter than the header; empty. */
    EXPECT(strix_model_load_buffer(frame, 1000, &m), STRIX_E_FORMAT);
    EXPECT(strix_model_load_buffer(bytes, 10, &m), STRIX_E_FORMAT);
    EXPECT(strix_model_load_buffer(bytes, 0, &m), STRIX_E_FORMAT);
    /* Truncated: in memory and as a file. */
    EXPECT(strix_model_load_buffer(bytes, size / 2, &m), STRIX_E_CORRUPT);
    EXPECT(strix_model_load_buffer(bytes, size - 1, &m), STRIX_E_CORRUPT);
    snprintf(path, sizeof path, "%s/truncated.strix", tmpdir);
    write_file(path, bytes, size - 100);
    EXPECT(strix_model_load_path(path, &m), STRIX_E_CORRUPT);
    CHECK(m == NULL);
    /* One flipped byte: magic, version, declared length, section table, a
     * section's body (the int8 weights fill the middle of the file). */
    unsigned char *copy = malloc(size);
    size_t flips[] = {0, 8, 16, 70, size / 2};
    strix_status want[] = {STRIX_E_FORMAT, STRIX_E_VERSION, STRIX_E_CORRUPT, STRIX_E_CORRUPT, STRIX_E_CORRUPT};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(copy, bytes, size);
        copy[flips[i]] ^= 0x01;
        m = NULL;
        EXPECT(strix_model_load_buffer(copy, size, &m), want[i]);
        CHECK(m == NULL);
    }
    /* The intact buffer loads, and the copy may be freed right away. */
    memcpy(copy, bytes, size);
    EXPECT(strix_model_load_buffer(copy, size, &m), STRIX_OK);
    free(copy);
    size_t n = 0;
    EXPECT(strix_model_input_count(m, &n), STRIX_OK);
    CHECK(n == 1);
    EXPECT(strix_model_free(m), STRIX_OK);
    free(bytes);
}

static void test_queries(void) {
    strix_model *m = NULL, *other = NULL;
    EXPECT(strix_model_load_path(det_path, &m), STRIX_OK);
    EXPECT(strix_model_load_path(other_path, &other), STRIX_OK);

    size_t n = 99;
    EXPECT(strix_model_input_count(NULL, &n), STRIX_E_NULL);
    EXPECT(strix_model_input_count(m, NULL), STRIX_E_NULL);
    EXPECT(strix_model_output_count(NULL, &n), STRIX_E_NULL);
    EXPECT(strix_model_output_count(m, NULL), STRIX_E_NULL);
    EXPECT(strix_model_output_count(m, &n), STRIX_OK);
    CHECK(n == 1);

    strix_tensor_info info;
    EXPECT(strix_model_input_info(NULL, 0, &info), STRIX_E_NULL);
    EXPECT(strix_model_input_info(m, 0, NULL), STRIX_E_NULL);
    EXPECT(strix_model_input_info(m, 1, &info), STRIX_E_ARGUMENT);
    EXPECT(strix_model_input_info(m, 0, &info), STRIX_OK);
    CHECK(info.name && strlen(info.name) > 0);
    CHECK(info.dtype == STRIX_DTYPE_F32 && info.rank == 4);
    CHECK(info.dims[0] == 1 && info.dims[1] == 3 && info.dims[2] == 352 && info.dims[3] == 352 && info.dims[4] == 0);
    CHECK(info.size == 3 * 352 * 352);
    CHECK(info.has_quant && info.scale > 0.0f);
    EXPECT(strix_model_output_info(NULL, 0, &info), STRIX_E_NULL);
    EXPECT(strix_model_output_info(m, 0, NULL), STRIX_E_NULL);
    EXPECT(strix_model_output_info(m, 1, &info), STRIX_E_ARGUMENT);
    EXPECT(strix_model_output_info(m, (size_t)-1, &info), STRIX_E_ARGUMENT);
    EXPECT(strix_model_output_info(m, 0, &info), STRIX_OK);
    CHECK(info.rank == 4 && info.dims[1] == 85 && info.size == 85 * 22 * 22);
    EXPECT(strix_model_input_info(other, 0, &info), STRIX_OK);
    CHECK(!info.has_quant && info.dtype == STRIX_DTYPE_F32);

    const char *json = NULL;
    EXPECT(strix_model_metadata_json(NULL, &json), STRIX_E_NULL);
    EXPECT(strix_model_metadata_json(m, NULL), STRIX_E_NULL);
    EXPECT(strix_model_metadata_json(m, &json), STRIX_OK);
    CHECK(json && strstr(json, "\"fastestdet\"") && strstr(json, "\"bgr\""));

    strix_image_spec spec;
    EXPECT(strix_model_image_input(NULL, &spec), STRIX_E_NULL);
    EXPECT(strix_model_image_input(m, NULL), STRIX_E_NULL);
    EXPECT(strix_model_image_input(other, &spec), STRIX_E_UNSUPPORTED);
    EXPECT(strix_model_image_input(m, &spec), STRIX_OK);
    CHECK(spec.width == 352 && spec.height == 352 && spec.channels == 3);
    CHECK(spec.color == STRIX_COLOR_BGR && spec.resize == STRIX_RESIZE_STRETCH);
    CHECK(spec.mean[0] == 0.0f && spec.scale[2] > 0.0039f && spec.scale[2] < 0.0040f);

    strix_decoder_kind kind = 99;
    EXPECT(strix_model_decoder(NULL, &kind), STRIX_E_NULL);
    EXPECT(strix_model_decoder(m, NULL), STRIX_E_NULL);
    EXPECT(strix_model_decoder(m, &kind), STRIX_OK);
    CHECK(kind == STRIX_DECODER_FASTESTDET);
    EXPECT(strix_model_decoder(other, &kind), STRIX_OK);
    CHECK(kind == STRIX_DECODER_CLASSIFY);

    const char *label = NULL;
    EXPECT(strix_model_label_count(NULL, &n), STRIX_E_NULL);
    EXPECT(strix_model_label_count(m, NULL), STRIX_E_NULL);
    EXPECT(strix_model_label_count(m, &n), STRIX_OK);
    CHECK(n == 80);
    EXPECT(strix_model_label(NULL, 0, &label), STRIX_E_NULL);
    EXPECT(strix_model_label(m, 0, NULL), STRIX_E_NULL);
    EXPECT(strix_model_label(m, 80, &label), STRIX_E_ARGUMENT);
    EXPECT(strix_model_label(m, 0, &label), STRIX_OK);
    CHECK(label && !strcmp(label, "person"));

    EXPECT(strix_model_free(other), STRIX_OK);
    EXPECT(strix_model_free(m), STRIX_OK);
}

static void test_handles(void) {
    strix_model *m = NULL;
    strix_context *c = NULL;
    EXPECT(strix_model_free(NULL), STRIX_OK);
    EXPECT(strix_context_free(NULL), STRIX_OK);
    /* A made-up pointer is not a handle. */
    int bogus[16] = {0};
    size_t n;
    EXPECT(strix_model_input_count((const strix_model *)bogus, &n), STRIX_E_HANDLE);
    EXPECT(strix_run((strix_context *)bogus), STRIX_E_HANDLE);

    EXPECT(strix_model_load_path(det_path, &m), STRIX_OK);
    /* A model is not a context and vice versa. */
    EXPECT(strix_run((strix_context *)m), STRIX_E_HANDLE);
    c = (strix_context *)&c;
    EXPECT(strix_context_new(NULL, &c), STRIX_E_NULL);
    CHECK(c == NULL);
    EXPECT(strix_context_new(m, NULL), STRIX_E_NULL);
    EXPECT(strix_context_new(m, &c), STRIX_OK);
    EXPECT(strix_model_input_count((const strix_model *)c, &n), STRIX_E_HANDLE);

    /* Freeing the model first is fine: the context keeps it alive. */
    EXPECT(strix_model_free(m), STRIX_OK);
    EXPECT(strix_model_input_count(m, &n), STRIX_E_HANDLE); /* use after free */
    EXPECT(strix_model_free(m), STRIX_E_HANDLE);            /* double free */
    strix_context *c2 = NULL;
    EXPECT(strix_context_new(m, &c2), STRIX_E_HANDLE);
    CHECK(c2 == NULL);
    EXPECT(strix_detect(c, frame, frame_size, width, height, 0, STRIX_FORMAT_RGB, NULL, 0, &n), STRIX_E_SIZE);
    CHECK(n > 0); /* the orphaned context still detects */

    EXPECT(strix_context_free(c), STRIX_OK);
    /* Use after free and double free of a context. */
    EXPECT(strix_run(c), STRIX_E_HANDLE);
    EXPECT(strix_set_threads(c, 1), STRIX_E_HANDLE);
    float x = 0;
    EXPECT(strix_set_input_f32(c, 0, &x, 1), STRIX_E_HANDLE);
    EXPECT(strix_get_output_f32(c, 0, &x, 1), STRIX_E_HANDLE);
    EXPECT(strix_detect(c, frame, frame_size, width, height, 0, STRIX_FORMAT_RGB, NULL, 0, &n), STRIX_E_HANDLE);
    EXPECT(strix_context_free(c), STRIX_E_HANDLE);

    /* New handles never take a freed handle's value (the allocator may hand
     * out the freed memory again): the stale handles stay refused and cannot
     * reach or free the new objects. */
    strix_model *m2 = NULL;
    EXPECT(strix_model_load_path(det_path, &m2), STRIX_OK);
    EXPECT(strix_context_new(m2, &c2), STRIX_OK);
    CHECK(m2 != m && c2 != c);
    EXPECT(strix_model_input_count(m, &n), STRIX_E_HANDLE);
    EXPECT(strix_model_free(m), STRIX_E_HANDLE);
    EXPECT(strix_run(c), STRIX_E_HANDLE);
    EXPECT(strix_context_free(c), STRIX_E_HANDLE);
    EXPECT(strix_run(c2), STRIX_OK);
    EXPECT(strix_context_free(c2), STRIX_OK);
    EXPECT(strix_model_free(m2), STRIX_OK);
}

/* Runs a context until its handle is freed by another thread. */
struct runner {
    strix_context *c;
    long runs; /* both accessed with the __atomic builtins */
    int last;
};

static void *run_until_freed(void *arg) {
    struct runner *r = arg;
    strix_status s;
    while ((s = strix_run(r->c)) == STRIX_OK) __atomic_fetch_add(&r->runs, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&r->last, (int)s, __ATOMIC_SEQ_CST);
    return NULL;
}

/* Freeing a context while another thread runs it is safe: the run finishes,
 * the following ones get STRIX_E_HANDLE, and the memory goes (valgrind checks
 * that nothing is touched after it is freed and nothing leaks). */
static void test_free_during_run(void) {
    strix_model *m = NULL;
    struct runner r = {NULL, 0, -1};
    EXPECT(strix_model_load_path(det_path, &m), STRIX_OK);
    EXPECT(strix_context_new(m, &r.c), STRIX_OK);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, run_until_freed, &r) == 0);
    while (__atomic_load_n(&r.runs, __ATOMIC_SEQ_CST) < 2 && __atomic_load_n(&r.last, __ATOMIC_SEQ_CST) == -1) sched_yield();
    EXPECT(strix_context_free(r.c), STRIX_OK);
    pthread_join(th, NULL);
    CHECK(__atomic_load_n(&r.runs, __ATOMIC_SEQ_CST) >= 2 && __atomic_load_n(&r.last, __ATOMIC_SEQ_CST) == STRIX_E_HANDLE);
    EXPECT(strix_model_free(m), STRIX_OK);
}

static int same_outputs(strix_context *c, const float *ref, size_t n, float tol) {
    float *out = malloc(n * sizeof *out);
    int ok = strix_get_output_f32(c, 0, out, n) == STRIX_OK;
    for (size_t i = 0; ok && i < n; i++) {
        float d = out[i] - ref[i];
        if (d > tol || d < -tol) ok = 0;
    }
    free(out);
    return ok;
}

static void test_run(void) {
    strix_model *m = NULL, *other = NULL;
    strix_context *c = NULL, *oc = NULL;
    EXPECT(strix_model_load_path(det_path, &m), STRIX_OK);
    EXPECT(strix_model_load_path(other_path, &other), STRIX_OK);
    EXPECT(strix_context_new(m, &c), STRIX_OK);
    EXPECT(strix_context_new(other, &oc), STRIX_OK);
    strix_tensor_info in, out;
    strix_image_spec spec;
    EXPECT(strix_model_input_info(m, 0, &in), STRIX_OK);
    EXPECT(strix_model_output_info(m, 0, &out), STRIX_OK);
    EXPECT(strix_model_image_input(m, &spec), STRIX_OK);

    EXPECT(strix_set_threads(NULL, 2), STRIX_E_NULL);
    EXPECT(strix_set_threads(c, 65), STRIX_E_ARGUMENT);
    EXPECT(strix_set_threads(c, 2), STRIX_OK);

    float *x = calloc(in.size + 1, sizeof *x);
    int8_t *q = calloc(in.size + 1, 1);
    uint8_t *p = calloc(in.size + 1, 1);
    float *ref = calloc(out.size + 1, sizeof *ref);

    /* Outputs before any run. */
    EXPECT(strix_get_output_f32(c, 0, ref, out.size), STRIX_E_STATE);
    EXPECT(strix_run(NULL), STRIX_E_NULL);

    /* f32 input: every argument. */
    EXPECT(strix_set_input_f32(NULL, 0, x, in.size), STRIX_E_NULL);
    EXPECT(strix_set_input_f32(c, 0, NULL, in.size), STRIX_E_NULL);
    EXPECT(strix_set_input_f32(c, 1, x, in.size), STRIX_E_ARGUMENT);
    EXPECT(strix_set_input_f32(c, 0, x, in.size - 1), STRIX_E_SIZE);
    EXPECT(strix_set_input_f32(c, 0, x, in.size + 1), STRIX_E_SIZE);
    EXPECT(strix_set_input_f32(c, 0, x, (size_t)-1), STRIX_E_SIZE);
    /* i8 and u8 inputs: every argument. */
    EXPECT(strix_set_input_i8(NULL, 0, q, in.size), STRIX_E_NULL);
    EXPECT(strix_set_input_i8(c, 0, NULL, in.size), STRIX_E_NULL);
    EXPECT(strix_set_input_i8(c, 1, q, in.size), STRIX_E_ARGUMENT);
    EXPECT(strix_set_input_i8(c, 0, q, in.size - 1), STRIX_E_SIZE);
    EXPECT(strix_set_input_u8(NULL, 0, p, in.size), STRIX_E_NULL);
    EXPECT(strix_set_input_u8(c, 0, NULL, in.size), STRIX_E_NULL);
    EXPECT(strix_set_input_u8(c, 1, p, in.size), STRIX_E_ARGUMENT);
    EXPECT(strix_set_input_u8(c, 0, p, in.size + 1), STRIX_E_SIZE);
    /* An f32 model has no input quantization. */
    strix_tensor_info oin;
    EXPECT(strix_model_input_info(other, 0, &oin), STRIX_OK);
    int8_t *oq = calloc(oin.size, 1);
    EXPECT(strix_set_input_i8(oc, 0, oq, oin.size), STRIX_E_UNSUPPORTED);
    free(oq);

    /* u8 = the model's normalisation of the same planar pixels. */
    for (size_t i = 0; i < in.size; i++) {
        size_t ch = i / (in.size / 3);
        p[i] = (uint8_t)((i * 7 + ch * 31) & 0xff);
        x[i] = ((float)p[i] - spec.mean[ch]) * spec.scale[ch];
    }
    EXPECT(strix_set_input_f32(c, 0, x, in.size), STRIX_OK);
    EXPECT(strix_get_output_f32(c, 0, ref, out.size), STRIX_E_STATE); /* set but not run */
    EXPECT(strix_run(c), STRIX_OK);
    EXPECT(strix_get_output_f32(NULL, 0, ref, out.size), STRIX_E_NULL);
    EXPECT(strix_get_output_f32(c, 0, NULL, out.size), STRIX_E_NULL);
    EXPECT(strix_get_output_f32(c, 1, ref, out.size), STRIX_E_ARGUMENT);
    EXPECT(strix_get_output_f32(c, 0, ref, out.size - 1), STRIX_E_SIZE);
    EXPECT(strix_get_output_f32(c, 0, ref, out.size + 1), STRIX_OK); /* larger is fine */
    EXPECT(strix_set_input_u8(c, 0, p, in.size), STRIX_OK);
    EXPECT(strix_run(c), STRIX_OK);
    CHECK(same_outputs(c, ref, out.size, 1e-6f));

    /* i8 = (q - zero_point) * scale, which the model quantizes back to q. */
    for (size_t i = 0; i < in.size; i++) {
        q[i] = (int8_t)(int)((i * 13) % 256 - 128);
        x[i] = (float)((int)q[i] - in.zero_point) * in.scale;
    }
    EXPECT(strix_set_input_f32(c, 0, x, in.size), STRIX_OK);
    EXPECT(strix_run(c), STRIX_OK);
    EXPECT(strix_get_output_f32(c, 0, ref, out.size), STRIX_OK);
    EXPECT(strix_set_input_i8(c, 0, q, in.size), STRIX_OK);
    EXPECT(strix_run(c), STRIX_OK);
    CHECK(same_outputs(c, ref, out.size, 0.0f));

    /* Thread counts: outputs are bit-identical for every count. */
    const unsigned counts[] = {1, 3, 0, 2};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        EXPECT(strix_set_threads(c, counts[k]), STRIX_OK);
        EXPECT(strix_set_input_i8(c, 0, q, in.size), STRIX_OK);
        EXPECT(strix_run(c), STRIX_OK);
        CHECK(same_outputs(c, ref, out.size, 0.0f));
    }

    /* A context of the f32 model runs too. */
    float *ox = calloc(oin.size, sizeof *ox);
    strix_tensor_info oout;
    EXPECT(strix_model_output_info(other, 0, &oout), STRIX_OK);
    float *oo = calloc(oout.size, sizeof *oo);
    EXPECT(strix_set_input_f32(oc, 0, ox, oin.size), STRIX_OK);
    EXPECT(strix_run(oc), STRIX_OK);
    EXPECT(strix_get_output_f32(oc, 0, oo, oout.size), STRIX_OK);
    float sum = 0;
    for (size_t i = 0; i < oout.size; i++) sum += oo[i];
    CHECK(sum > 0.99f && sum < 1.01f); /* softmax */
    free(ox);
    free(oo);

    free(x);
    free(q);
    free(p);
    free(ref);
    EXPECT(strix_context_free(oc), STRIX_OK);
    EXPECT(strix_context_free(c), STRIX_OK);
    EXPECT(strix_model_free(other), STRIX_OK);
    EXPECT(strix_model_free(m), STRIX_OK);
}

/* Kernel paths: chosen per model at load, reported back, bit-identical. */
static void test_kernel_paths(void) {
    static const char *names[] = {"scalar", "avx2", "neon", "dotprod", "i8mm", "armv7neon"};
    bool avail = false;
    EXPECT(strix_isa_available("scalar", &avail), STRIX_OK);
    CHECK(avail);
    EXPECT(strix_isa_available("sse9", &avail), STRIX_E_ARGUMENT);
    EXPECT(strix_isa_available(NULL, &avail), STRIX_E_NULL);
    EXPECT(strix_isa_available("scalar", NULL), STRIX_E_NULL);

    strix_model *best = NULL, *m = (strix_model *)&m;
    const char *isa = NULL;
    EXPECT(strix_model_load_path_isa(det_path, "sse9", &m), STRIX_E_ARGUMENT);
    CHECK(m == NULL && strstr(strix_last_error(), "not a kernel path") != NULL);
    EXPECT(strix_model_load_path_isa(det_path, NULL, &best), STRIX_OK);
    EXPECT(strix_model_isa(best, &isa), STRIX_OK);
    EXPECT(strix_model_isa(best, NULL), STRIX_E_NULL);
    EXPECT(strix_model_isa(NULL, &isa), STRIX_E_NULL);
    /* The default load picks the same (best) path. */
    const char *default_isa = NULL;
    EXPECT(strix_model_load_path(det_path, &m), STRIX_OK);
    EXPECT(strix_model_isa(m, &default_isa), STRIX_OK);
    CHECK(isa && default_isa && !strcmp(isa, default_isa));
    EXPECT(strix_model_free(m), STRIX_OK);

    size_t size;
    unsigned char *bytes = read_file(det_path, &size);
    strix_tensor_info in, out;
    EXPECT(strix_model_input_info(best, 0, &in), STRIX_OK);
    EXPECT(strix_model_output_info(best, 0, &out), STRIX_OK);
    int8_t *q = calloc(in.size, 1);
    for (size_t i = 0; i < in.size; i++) q[i] = (int8_t)(int)((i * 29) % 256 - 128);
    float *ref = calloc(out.size, sizeof *ref);
    strix_context *c = NULL;
    EXPECT(strix_context_new(best, &c), STRIX_OK);
    EXPECT(strix_set_input_i8(c, 0, q, in.size), STRIX_OK);
    EXPECT(strix_run(c), STRIX_OK);
    EXPECT(strix_get_output_f32(c, 0, ref, out.size), STRIX_OK);
    EXPECT(strix_context_free(c), STRIX_OK);

    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        EXPECT(strix_isa_available(names[k], &avail), STRIX_OK);
        m = (strix_model *)&m;
        if (!avail) {
            EXPECT(strix_model_load_buffer_isa(bytes, size, names[k], &m), STRIX_E_UNSUPPORTED);
            CHECK(m == NULL);
            continue;
        }
        EXPECT(strix_model_load_buffer_isa(bytes, size, names[k], &m), STRIX_OK);
        EXPECT(strix_model_isa(m, &isa), STRIX_OK);
        CHECK(isa && !strcmp(isa, names[k]));
        EXPECT(strix_context_new(m, &c), STRIX_OK);
        EXPECT(strix_set_input_i8(c, 0, q, in.size), STRIX_OK);
        EXPECT(strix_run(c), STRIX_OK);
        CHECK(same_outputs(c, ref, out.size, 0.0f));
        EXPECT(strix_context_free(c), STRIX_OK);
        EXPECT(strix_model_free(m), STRIX_OK);
    }
    free(q);
    free(ref);
    free(bytes);
    EXPECT(strix_model_free(best), STRIX_OK);
}

/* The backend report and the NPU switch on a model without an NPU part
 * (the NPU paths themselves: tests/rknn-double, against a librknnrt double). */
static void test_backend(void) {
    strix_model *m = NULL;
    strix_context *c = NULL;
    const char *b = NULL;
    EXPECT(strix_model_load_path(det_path, &m), STRIX_OK);
    EXPECT(strix_context_new(m, &c), STRIX_OK);
    EXPECT(strix_context_backend(c, &b), STRIX_OK);
    CHECK(b && !strcmp(b, "cpu"));
    EXPECT(strix_context_backend(c, NULL), STRIX_E_NULL);
    EXPECT(strix_context_backend(NULL, &b), STRIX_E_NULL);
    EXPECT(strix_set_npu(NULL, false), STRIX_E_NULL);
    EXPECT(strix_set_npu(c, false), STRIX_OK);
    EXPECT(strix_set_threads(c, 2), STRIX_OK);
    EXPECT(strix_context_backend(c, &b), STRIX_OK);
    CHECK(b && !strcmp(b, "cpu"));
    strix_context *stale = c;
    EXPECT(strix_context_free(c), STRIX_OK);
    EXPECT(strix_context_backend(stale, &b), STRIX_E_HANDLE);
    EXPECT(strix_set_npu(stale, true), STRIX_E_HANDLE);
    EXPECT(strix_model_free(m), STRIX_OK);
}

static void test_detect(void) {
    strix_model *m = NULL, *other = NULL;
    strix_context *c = NULL, *oc = NULL;
    EXPECT(strix_model_load_path(det_path, &m), STRIX_OK);
    EXPECT(strix_model_load_path(other_path, &other), STRIX_OK);
    EXPECT(strix_context_new(m, &c), STRIX_OK);
    EXPECT(strix_context_new(other, &oc), STRIX_OK);
    strix_detection d[64], d2[64];
    size_t n = 0, n2 = 0;
    const size_t w = width, h = height, sz = frame_size;

    EXPECT(strix_detect(NULL, frame, sz, w, h, 0, STRIX_FORMAT_RGB, d, 64, &n), STRIX_E_NULL);
    EXPECT(strix_detect(c, NULL, sz, w, h, 0, STRIX_FORMAT_RGB, d, 64, &n), STRIX_E_NULL);
    EXPECT(strix_detect(c, frame, sz, w, h, 0, STRIX_FORMAT_RGB, NULL, 64, &n), STRIX_E_NULL);
    EXPECT(strix_detect(c, frame, sz, w, h, 0, STRIX_FORMAT_RGB, d, 64, NULL), STRIX_E_NULL);
    EXPECT(strix_detect(c, frame, sz, w, h, 0, 42, d, 64, &n), STRIX_E_ARGUMENT);
    EXPECT(strix_detect(c, frame, sz, 0, h, 0, STRIX_FORMAT_RGB, d, 64, &n), STRIX_E_ARGUMENT);
    EXPECT(strix_detect(c, frame, sz, w, 0, 0, STRIX_FORMAT_RGB, d, 64, &n), STRIX_E_ARGUMENT);
    EXPECT(strix_detect(c, frame, sz, w, h, 3 * w - 1, STRIX_FORMAT_RGB, d, 64, &n), STRIX_E_ARGUMENT);
    EXPECT(strix_detect(c, frame, sz - 1, w, h, 0, STRIX_FORMAT_RGB, d, 64, &n), STRIX_E_SIZE);
    EXPECT(strix_detect(c, frame, sz, w, h, 3 * w + 1, STRIX_FORMAT_RGB, d, 64, &n), STRIX_E_SIZE);
    EXPECT(strix_detect(c, frame, w * h, w, h, 0, STRIX_FORMAT_NV12, d, 64, &n), STRIX_E_SIZE);
    EXPECT(strix_detect(oc, frame, sz, w, h, 0, STRIX_FORMAT_RGB, d, 64, &n), STRIX_E_UNSUPPORTED);
    CHECK(strstr(strix_last_error(), "decoder") != NULL);

    EXPECT(strix_detect(c, frame, sz, w, h, 0, STRIX_FORMAT_RGB, d, 64, &n), STRIX_OK);
    CHECK(n >= 2 && n <= 64);
    for (size_t i = 0; i < n; i++) {
        CHECK(d[i].x0 >= 0 && d[i].x0 <= d[i].x1 && d[i].x1 <= 1 && d[i].y0 >= 0 && d[i].y0 <= d[i].y1 &&
              d[i].y1 <= 1 && d[i].score > 0 && d[i].score <= 1 && d[i].class_id < 80);
        if (i) CHECK(d[i].score <= d[i - 1].score);
    }
    /* The raw outputs of the detect stay readable. */
    strix_tensor_info out;
    EXPECT(strix_model_output_info(m, 0, &out), STRIX_OK);
    float *o = malloc(out.size * sizeof *o);
    EXPECT(strix_get_output_f32(c, 0, o, out.size), STRIX_OK);
    free(o);

    /* Too little room: the best ones are written and the total is reported. */
    memset(d2, 0, sizeof d2);
    EXPECT(strix_detect(c, frame, sz, w, h, 0, STRIX_FORMAT_RGB, NULL, 0, &n2), STRIX_E_SIZE);
    CHECK(n2 == n);
    EXPECT(strix_detect(c, frame, sz, w, h, 0, STRIX_FORMAT_RGB, d2, 1, &n2), STRIX_E_SIZE);
    CHECK(n2 == n && !memcmp(&d2[0], &d[0], sizeof d[0]) && d2[1].score == 0);

    /* The same frame as BGR, and padded rows (stride), give the same boxes. */
    unsigned char *bgr = malloc(sz);
    for (size_t i = 0; i < sz; i += 3) {
        bgr[i] = frame[i + 2];
        bgr[i + 1] = frame[i + 1];
        bgr[i + 2] = frame[i];
    }
    EXPECT(strix_detect(c, bgr, sz, w, h, 0, STRIX_FORMAT_BGR, d2, 64, &n2), STRIX_OK);
    CHECK(n2 == n && !memcmp(d, d2, n * sizeof d[0]));
    free(bgr);
    size_t stride = 3 * w + 5;
    unsigned char *padded = calloc(stride * h, 1);
    for (size_t y = 0; y < h; y++) memcpy(padded + y * stride, frame + y * 3 * w, 3 * w);
    EXPECT(strix_detect(c, padded, stride * h, w, h, stride, STRIX_FORMAT_RGB, d2, 64, &n2), STRIX_OK);
    CHECK(n2 == n && !memcmp(d, d2, n * sizeof d[0]));
    free(padded);

    /* NV12 and grey frames (odd sizes) go through. */
    size_t nw = 33, nh = 17, nv = nw * nh + 2 * ((nw + 1) / 2) * ((nh + 1) / 2);
    unsigned char *yuv = malloc(nv);
    for (size_t i = 0; i < nv; i++) yuv[i] = (unsigned char)(i < nw * nh ? 16 + i % 200 : 128);
    EXPECT(strix_detect(c, yuv, nv, nw, nh, 0, STRIX_FORMAT_NV12, d2, 64, &n2), STRIX_OK);
    EXPECT(strix_detect(c, yuv, nv - 1, nw, nh, 0, STRIX_FORMAT_NV12, d2, 64, &n2), STRIX_E_SIZE);
    EXPECT(strix_detect(c, yuv, nw * nh, nw, nh, 0, STRIX_FORMAT_GRAY, d2, 64, &n2), STRIX_OK);
    free(yuv);

    EXPECT(strix_context_free(oc), STRIX_OK);
    EXPECT(strix_context_free(c), STRIX_OK);
    EXPECT(strix_model_free(other), STRIX_OK);
    EXPECT(strix_model_free(m), STRIX_OK);
}

/* One model shared by threads, one context each; errors stay per thread. */
struct job {
    const strix_model *model;
    strix_detection d[64];
    size_t n;
    strix_status s;
    int error_was_empty;
};

static void *worker(void *arg) {
    struct job *j = arg;
    strix_context *c = NULL;
    j->error_was_empty = strix_last_error()[0] == '\0';
    j->s = strix_context_new(j->model, &c);
    if (j->s == STRIX_OK) j->s = strix_detect(c, frame, frame_size, width, height, 0, STRIX_FORMAT_RGB, j->d, 64, &j->n);
    strix_context_free(c);
    return NULL;
}

static void test_threads(void) {
    strix_model *m = NULL;
    strix_context *c = NULL;
    EXPECT(strix_model_load_path(det_path, &m), STRIX_OK);
    EXPECT(strix_context_new(m, &c), STRIX_OK);
    strix_detection d[64];
    size_t n = 0;
    EXPECT(strix_detect(c, frame, frame_size, width, height, 0, STRIX_FORMAT_RGB, d, 64, &n), STRIX_OK);
    EXPECT(strix_run(NULL), STRIX_E_NULL); /* leaves a message on this thread only */
    enum { T = 3 };
    struct job jobs[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].model = m;
        CHECK(pthread_create(&th[i], NULL, worker, &jobs[i]) == 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].s == STRIX_OK && jobs[i].n == n && !memcmp(jobs[i].d, d, n * sizeof d[0]));
        CHECK(jobs[i].error_was_empty);
    }
    CHECK(strstr(strix_last_error(), "NULL") != NULL);
    EXPECT(strix_context_free(c), STRIX_OK);
    EXPECT(strix_model_free(m), STRIX_OK);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s DETECTOR.strix OTHER.strix FRAME.rgb WIDTH HEIGHT TMPDIR\n", argv[0]);
        return 2;
    }
    det_path = argv[1];
    other_path = argv[2];
    frame = read_file(argv[3], &frame_size);
    width = strtoul(argv[4], NULL, 10);
    height = strtoul(argv[5], NULL, 10);
    if (frame_size != width * height * 3) {
        fprintf(stderr, "%s: %zu bytes is not a %zux%zu RGB frame\n", argv[3], frame_size, width, height);
        return 2;
    }
    CHECK(strix_last_error()[0] == '\0');

    test_library();
    test_load_errors(argv[6]);
    test_queries();
    test_handles();
    test_free_during_run();
    test_run();
    test_kernel_paths();
    test_backend();
    test_detect();
    test_threads();

    for (int s = 0; s < N_STATUS; s++) {
        if (!seen[s]) fprintf(stderr, "status %s was never returned by a test\n", strix_status_name(s));
        CHECK(seen[s]);
    }
    free(frame);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
