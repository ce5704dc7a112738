/*
 * detect: runs a Strix detector model on one raw frame and prints the boxes.
 *
 *   detect MODEL.strix FRAME WIDTH HEIGHT [rgb|bgr|nv12|gray]
 *
 * FRAME is a tightly packed raw frame (e.g. from
 * `ffmpeg -i photo.jpg -f rawvideo -pix_fmt rgb24 frame.rgb`). Output: a few
 * `#` comment lines about the model, then one line per detection:
 *
 *   det CLASS_ID SCORE X0 Y0 X1 Y1 PX0 PY0 PX1 PY1 LABEL
 *
 * with the corners as fractions (0..1) of the frame, then in pixels, and the
 * class label (which may contain spaces) last. Exit status 0 on success, 1 on any error (message on stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strix.h"

static int fail(const char *what, strix_status s) {
    fprintf(stderr, "detect: %s: %s: %s\n", what, strix_status_name(s), strix_last_error());
    return 1;
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc(n > 0 ? (size_t)n : 1);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL.strix FRAME WIDTH HEIGHT [rgb|bgr|nv12|gray]\n", argv[0]);
        return 2;
    }
    size_t width = strtoul(argv[3], NULL, 10), height = strtoul(argv[4], NULL, 10);
    strix_pixel_format format = STRIX_FORMAT_RGB;
    if (argc == 6) {
        if (!strcmp(argv[5], "bgr")) format = STRIX_FORMAT_BGR;
        else if (!strcmp(argv[5], "nv12")) format = STRIX_FORMAT_NV12;
        else if (!strcmp(argv[5], "gray")) format = STRIX_FORMAT_GRAY;
        else if (strcmp(argv[5], "rgb")) {
            fprintf(stderr, "detect: unknown format %s\n", argv[5]);
            return 2;
        }
    }
    if (strix_abi_version() != STRIX_ABI_VERSION) {
        fprintf(stderr, "detect: header ABI %d, library ABI %u\n", STRIX_ABI_VERSION, strix_abi_version());
        return 1;
    }

    size_t size = 0;
    unsigned char *pixels = read_file(argv[2], &size);
    if (!pixels) {
        perror(argv[2]);
        return 1;
    }

    int rc = 1;
    strix_model *model = NULL;
    strix_context *ctx = NULL;
    strix_detection *dets = NULL;
    strix_status s;
    if ((s = strix_model_load_path(argv[1], &model)) != STRIX_OK) {
        rc = fail("loading the model", s);
        goto out;
    }

    strix_tensor_info in;
    strix_image_spec spec;
    size_t labels = 0;
    if ((s = strix_model_input_info(model, 0, &in)) != STRIX_OK) { rc = fail("input info", s); goto out; }
    if ((s = strix_model_image_input(model, &spec)) != STRIX_OK) { rc = fail("image input", s); goto out; }
    if ((s = strix_model_label_count(model, &labels)) != STRIX_OK) { rc = fail("labels", s); goto out; }
    printf("# libstrix %s, input '%s' %zux%zux%zu (%s), %zu labels, frame %zux%zu\n", strix_version(), in.name,
           spec.channels, spec.height, spec.width, spec.color == STRIX_COLOR_BGR ? "BGR" : "RGB", labels, width,
           height);

    /* The context keeps the model alive: the model handle could be freed here. */
    if ((s = strix_context_new(model, &ctx)) != STRIX_OK) { rc = fail("creating a context", s); goto out; }

    size_t capacity = 16, count = 0;
    for (;;) {
        strix_detection *grown = realloc(dets, capacity * sizeof *dets);
        if (!grown) { fprintf(stderr, "detect: out of memory\n"); goto out; }
        dets = grown;
        s = strix_detect(ctx, pixels, size, width, height, 0, format, dets, capacity, &count);
        if (s == STRIX_E_SIZE && count > capacity) { /* more boxes than room: retry bigger */
            capacity = count;
            continue;
        }
        if (s != STRIX_OK) { rc = fail("detecting", s); goto out; }
        break;
    }
    for (size_t i = 0; i < count; i++) {
        const strix_detection *d = &dets[i];
        const char *label = "?";
        if (strix_model_label(model, d->class_id, &label) != STRIX_OK) label = "?";
        printf("det %u %.6f %.6f %.6f %.6f %.6f %.1f %.1f %.1f %.1f %s\n", d->class_id, d->score, d->x0, d->y0, d->x1,
               d->y1, d->x0 * width, d->y0 * height, d->x1 * width, d->y1 * height, label);
    }
    printf("# %zu detections\n", count);
    rc = 0;
out:
    free(dets);
    strix_context_free(ctx);
    strix_model_free(model);
    free(pixels);
    return rc;
}
