/* xkern_runtime.h: the C API of xkern's inference engine (libxkern_runtime).
 *
 * Loads a .xk file written by xkern.runtime.save and runs it on the CPU, with no Python.
 * Compile and link with the flags `python -m xkern config --cflags --libs` prints.
 *
 *     xk_model *m = xk_load("model.xk");
 *     if (!m) { fprintf(stderr, "%s\n", xk_last_error()); return 1; }
 *     int64_t chw[3];  xk_input_shape(m, chw);
 *     float *out = malloc(xk_output_size(m, 1) * sizeof(float));
 *     if (xk_predict(m, x, 1, out, xk_output_size(m, 1)) != 0) fprintf(stderr, "%s\n", xk_last_error());
 *     xk_free(m);
 *
 * Input x: `batch` images of C x H x W float32 values, row-major (NCHW), C, H, W as
 * xk_input_shape gives them.  Output: `batch` rows of xk_output_size(m, 1) floats (the
 * logits of a classifier).  Functions that fail return NULL, a non-zero int or a negative
 * size, and xk_last_error() then says why; nothing crashes on a bad file or argument.
 * One model may be used from several threads: predictions on it run one at a time.
 */
#ifndef XKERN_RUNTIME_H
#define XKERN_RUNTIME_H

#include <stdint.h>

#if defined(_WIN32)
#  define XK_API __declspec(dllexport)
#elif defined(__GNUC__)
#  define XK_API __attribute__((visibility("default")))
#else
#  define XK_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct xk_model xk_model;

/* The network in the .xk file at path, planned and ready to run; NULL on failure. */
XK_API xk_model *xk_load(const char *path);

/* The message of the calling thread's last failure ("" if none). */
XK_API const char *xk_last_error(void);

/* chw = the input's (C, H, W); 0 on success.  Fails when the file records no input
   size (saved without input_shape). */
XK_API int xk_input_shape(const xk_model *m, int64_t chw[3]);

/* Number of floats xk_predict writes for `batch` images; negative on failure. */
XK_API int64_t xk_output_size(const xk_model *m, int64_t batch);

/* Runs the network on `batch` images x; writes xk_output_size(m, batch) floats to out,
   which holds out_len floats.  0 on success. */
XK_API int xk_predict(xk_model *m, const float *x, int64_t batch, float *out, int64_t out_len);

/* Frees m (NULL is allowed). */
XK_API void xk_free(xk_model *m);

/* Not part of the pinned six: the threads xk_predict uses on m (n >= 1), or 0 for
   OpenMP's default (OMP_NUM_THREADS).  0 on success. */
XK_API int xk_set_num_threads(xk_model *m, int n);

#ifdef __cplusplus
}
#endif
#endif /* XKERN_RUNTIME_H */
