/* xk_predict: classify images with a .xk model, in C, through xkern's engine.
 *
 *     cc examples/xk_predict.c $(python -m xkern config --cflags --libs) -o xk_predict
 *     ./xk_predict model.xk images.f32 [logits.f32] [threads]
 *
 * images.f32: raw float32, one or more images of the model's C x H x W (NCHW order),
 * e.g. written by numpy's x.astype(np.float32).tofile("images.f32").  Prints each
 * image's best class and, with a third argument, writes all outputs there as raw float32.
 */
#include <stdio.h>
#include <stdlib.h>

#include "xkern_runtime.h"

static float *read_floats(const char *path, long *count) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *data = bytes > 0 ? malloc((size_t)bytes) : NULL;
    if (data && fread(data, 1, (size_t)bytes, f) != (size_t)bytes) { free(data); data = NULL; }
    fclose(f);
    *count = bytes / (long)sizeof(float);
    return data;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s model.xk images.f32 [logits.f32] [threads]\n", argv[0]);
        return 2;
    }
    xk_model *model = xk_load(argv[1]);
    if (!model) {
        fprintf(stderr, "xk_load: %s\n", xk_last_error());
        return 1;
    }
    if (argc > 4 && xk_set_num_threads(model, atoi(argv[4])) != 0) {
        fprintf(stderr, "xk_set_num_threads: %s\n", xk_last_error());
        return 1;
    }
    int64_t chw[3];
    if (xk_input_shape(model, chw) != 0) {
        fprintf(stderr, "xk_input_shape: %s\n", xk_last_error());
        return 1;
    }
    long count = 0;
    float *x = read_floats(argv[2], &count);
    const long image = (long)(chw[0] * chw[1] * chw[2]);
    if (!x || count == 0 || count % image) {
        fprintf(stderr, "%s must hold whole %lldx%lldx%lld float32 images\n", argv[2],
                (long long)chw[0], (long long)chw[1], (long long)chw[2]);
        return 1;
    }
    const int64_t batch = count / image, n_out = xk_output_size(model, batch);
    float *out = n_out > 0 ? malloc((size_t)n_out * sizeof(float)) : NULL;
    if (!out || xk_predict(model, x, batch, out, n_out) != 0) {
        fprintf(stderr, "xk_predict: %s\n", out ? xk_last_error() : "no output buffer");
        return 1;
    }
    const int64_t classes = n_out / batch;
    for (int64_t b = 0; b < batch; ++b) {
        int64_t best = 0;
        for (int64_t c = 1; c < classes; ++c)
            if (out[b * classes + c] > out[b * classes + best]) best = c;
        printf("image %lld: class %lld (logit %.4f)\n", (long long)b, (long long)best, out[b * classes + best]);
    }
    if (argc > 3) {
        FILE *f = fopen(argv[3], "wb");
        if (!f || fwrite(out, sizeof(float), (size_t)n_out, f) != (size_t)n_out) {
            fprintf(stderr, "cannot write %s\n", argv[3]);
            return 1;
        }
        fclose(f);
    }
    free(out);
    free(x);
    xk_free(model);
    return 0;
}
