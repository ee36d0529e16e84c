// The C API (xkern_runtime.h) over xk::Engine: every failure, C++ exceptions included,
// becomes a return code and a message in the calling thread's xk_last_error().
#include <cstring>
#include <new>
#include <string>

#include "xk_engine.h"
#include "xkern_runtime.h"

struct xk_model {
    explicit xk_model(std::unique_ptr<xk::Model> m) : engine(std::move(m)) {}
    xk::Engine engine;
};

namespace {

thread_local std::string last_error;

template <class T, class F>
T guarded(T on_error, F &&f) {
    try {
        last_error.clear();
        return f();
    } catch (const std::bad_alloc &) {
        last_error = "out of memory";
    } catch (const std::exception &e) {
        last_error = e.what();
    } catch (...) {
        last_error = "unknown error";
    }
    return on_error;
}

int fail(const char *msg) {
    last_error = msg;
    return -1;
}

// (C, H, W) recorded in the file, or an error when any is free
int known_shape(const xk_model *m, int64_t chw[3]) {
    const int64_t *s = m->engine.model().input_shape;
    if (s[1] < 1 || s[2] < 1 || s[3] < 1)
        return fail("the model's input size is not recorded in the file (save it with input_shape)");
    chw[0] = s[1]; chw[1] = s[2]; chw[2] = s[3];
    return 0;
}

}  // namespace

extern "C" {

xk_model *xk_load(const char *path) {
    return guarded<xk_model *>(nullptr, [&]() -> xk_model * {
        if (!path) { fail("xk_load: path is NULL"); return nullptr; }
        auto *m = new xk_model(xk::load_model_file(path));
        const int64_t *s = m->engine.model().input_shape;
        if (s[1] > 0 && s[2] > 0 && s[3] > 0) {  // plan now, so a file that cannot run fails here
            try {
                int64_t shape[4] = {1, s[1], s[2], s[3]};
                m->engine.output_shape(shape);
            } catch (...) {
                delete m;
                throw;
            }
        }
        return m;
    });
}

const char *xk_last_error(void) { return last_error.c_str(); }

int xk_input_shape(const xk_model *m, int64_t chw[3]) {
    return guarded<int>(-1, [&]() -> int {
        if (!m) return fail("xk_input_shape: model is NULL");
        if (!chw) return fail("xk_input_shape: chw is NULL");
        return known_shape(m, chw);
    });
}

int64_t xk_output_size(const xk_model *m, int64_t batch) {
    return guarded<int64_t>(-1, [&]() -> int64_t {
        if (!m) return fail("xk_output_size: model is NULL");
        if (batch < 1) return fail("xk_output_size: batch must be >= 1");
        int64_t chw[3];
        if (known_shape(m, chw)) return -1;
        auto *mm = const_cast<xk_model *>(m);
        std::lock_guard<std::mutex> lock(mm->engine.mutex);
        int64_t shape[4] = {batch, chw[0], chw[1], chw[2]};
        auto out = mm->engine.output_shape(shape);
        int64_t n = 1;
        for (auto s : out) n *= s;
        return n;
    });
}

int xk_predict(xk_model *m, const float *x, int64_t batch, float *out, int64_t out_len) {
    return guarded<int>(-1, [&]() -> int {
        if (!m) return fail("xk_predict: model is NULL");
        if (!x) return fail("xk_predict: x is NULL");
        if (!out) return fail("xk_predict: out is NULL");
        if (batch < 1) return fail("xk_predict: batch must be >= 1");
        int64_t chw[3];
        if (known_shape(m, chw)) return -1;
        std::lock_guard<std::mutex> lock(m->engine.mutex);
        int64_t shape[4] = {batch, chw[0], chw[1], chw[2]};
        m->engine.predict(x, shape, out, out_len, 0);
        return 0;
    });
}

void xk_free(xk_model *m) { delete m; }

int xk_set_num_threads(xk_model *m, int n) {
    return guarded<int>(-1, [&]() -> int {
        if (!m) return fail("xk_set_num_threads: model is NULL");
        if (n < 0) return fail("xk_set_num_threads: n must be >= 0 (0: OpenMP's default)");
        m->engine.threads = n;
        return 0;
    });
}

}  // extern "C"
