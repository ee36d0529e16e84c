// xkern.runtime._engine: the engine for Python (pybind11).  xkern.runtime.Engine wraps
// it; the checks Python users expect (dtype, rank, sizes) happen there, the engine
// re-checks what it relies on.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "xk_engine.h"

namespace py = pybind11;

namespace {

struct PyEngine {
    std::unique_ptr<xk::Engine> engine;

    explicit PyEngine(py::bytes data) {
        std::string buf = data;  // the file's bytes
        auto model = xk::parse_model(reinterpret_cast<const uint8_t *>(buf.data()), buf.size());
        engine = std::make_unique<xk::Engine>(std::move(model));
    }

    py::tuple run(py::array_t<float, py::array::c_style | py::array::forcecast> x, int threads, bool profile) {
        if (x.ndim() != 4) throw xk::Error("x must be a batch (B, C, H, W)");
        int64_t shape[4];
        for (int a = 0; a < 4; ++a) shape[a] = x.shape(a);
        std::vector<std::pair<int, double>> times;
        py::array_t<float> out;
        {
            std::lock_guard<std::mutex> lock(engine->mutex);
            std::vector<int64_t> oshape;
            {
                py::gil_scoped_release release;
                oshape = engine->output_shape(shape);
            }
            out = py::array_t<float>(std::vector<py::ssize_t>(oshape.begin(), oshape.end()));
            const float *xp = x.data();
            float *op = out.mutable_data();
            int64_t n = out.size();
            py::gil_scoped_release release;
            engine->predict(xp, shape, op, n, threads, profile ? &times : nullptr);
        }
        return py::make_tuple(out, times);
    }

    std::vector<int64_t> output_shape(std::vector<int64_t> shape) {
        if (shape.size() != 4) throw xk::Error("shape must be (B, C, H, W)");
        std::lock_guard<std::mutex> lock(engine->mutex);
        return engine->output_shape(shape.data());
    }
};

}  // namespace

PYBIND11_MODULE(_engine, m) {
    m.doc() = "xkern's C++ inference engine (see xkern.runtime)";
    py::class_<PyEngine>(m, "Engine")
        .def(py::init<py::bytes>(), py::arg("data"), "Parse, check and plan the .xk file held in data (bytes).")
        .def("run", &PyEngine::run, py::arg("x"), py::arg("threads") = 0, py::arg("profile") = false,
             "(output, [(first node index, seconds) per step]) for the batch x (float32, B x C x H x W).")
        .def("output_shape", &PyEngine::output_shape, py::arg("shape"))
        .def("stats", [](PyEngine &e, std::vector<int64_t> shape) {
                 if (shape.size() != 4) throw xk::Error("shape must be (B, C, H, W)");
                 std::lock_guard<std::mutex> lock(e.engine->mutex);
                 return e.engine->stats(shape.data());
             }, py::arg("shape"), "Facts about the plan for an input shape (arena size, fused steps, copies).")
        .def("steps", [](const PyEngine &e) { return e.engine->step_nodes(); },
             "The graph nodes each step runs (a conv with its fused add and ReLU is one step).");
    m.def("has_avx2", &xk::Engine::use_avx2, "Whether the engine runs its AVX2 + FMA kernels on this CPU.");
}
