// The engine: a Model planned for one input shape (layouts, packed weights, fused
// steps, one arena), run with no allocation per call.  xk_engine.cpp.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "xk_model.h"

namespace xk {

struct Plan;
struct Step;

class Engine {
public:
    explicit Engine(std::unique_ptr<Model> model);
    ~Engine();
    const Model &model() const { return *model_; }
    // The output's shape (batch first) for an input of shape (B, C, H, W); Error if the
    // network cannot run on it (naming the node that refuses it).
    std::vector<int64_t> output_shape(const int64_t shape[4]);
    // Runs the network on x (B, C, H, W) into out (out_len floats, >= the output's size).
    // threads: 0 for OpenMP's default.  times: (first graph node of each step, seconds).
    void predict(const float *x, const int64_t shape[4], float *out, int64_t out_len, int threads,
                 std::vector<std::pair<int, double>> *times = nullptr);
    // Facts about the plan for shape: arena_bytes, steps, concat_inputs, concat_copies
    // (concatenation inputs not written in place), convs per kernel family (conv_shared4_rows:
    // shared-4 convs tiled within rows).
    std::map<std::string, int64_t> stats(const int64_t shape[4]);
    // The steps after fusion: for each, the graph nodes it runs (for profiles and tests).
    std::vector<std::vector<int>> step_nodes() const;
    int threads = 0;     // set by xk_set_num_threads
    std::mutex mutex;    // one prediction at a time (the plan's arena is shared)
    static bool use_avx2();

private:
    Plan &plan_for(const int64_t shape[4]);
    std::unique_ptr<Model> model_;
    std::vector<Step> steps_;
    std::unique_ptr<Plan> plan_;
};

}  // namespace xk
