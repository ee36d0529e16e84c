// The engine's model: a .xk file parsed and checked (xk_format.cpp), the same rules as
// xkern.runtime.graph.check.  Every size and index is checked here, so the planner and
// the kernels may trust them.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace xk {

// A failure with a message for the user: a bad file, a bad input, a bad argument.
// (std::invalid_argument: pybind11 raises it as ValueError.)
struct Error : std::invalid_argument {
    explicit Error(const std::string &what) : std::invalid_argument(what) {}
};

// A float32 or int64 array from the file, copied out of it (aligned, owned).
struct Array {
    std::vector<int64_t> shape;
    std::vector<float> f;     // float32 arrays
    std::vector<int64_t> i;   // int64 arrays (index)
    bool present = false;
    int64_t dim(size_t k) const { return shape[k]; }
};

enum class Op {
    conv2d, xconv2d, linear, xlinear, affine, relu, relu6, maxpool2d, avgpool2d,
    adaptive_avgpool2d, add, concat, flatten, reshape
};
const char *op_name(Op op);

struct Node {
    std::string name;
    Op op;
    std::vector<int> inputs;            // value ids: 0 the graph input, k + 1 node k
    int64_t stride[2] = {1, 1}, padding[2] = {0, 0}, dilation[2] = {1, 1}, kernel[2] = {1, 1};
    int64_t groups = 1, in_channels = 0;
    bool ceil_mode = false, count_include_pad = true;
    int64_t divisor = 0;                // 0: none (torch's divisor_override)
    int64_t output_size[2] = {-1, -1};  // -1: keep that input size
    int64_t axis = 1, start_dim = 1, end_dim = -1;
    std::vector<int64_t> shape;         // reshape
    Array weight, bias, index, scale, shift;
};

struct Model {
    std::string input_name;
    int64_t input_shape[4] = {-1, -1, -1, -1};  // -1: any size (batch always)
    std::vector<Node> nodes;
    int output = 0;                             // value id
    std::string describe() const;               // for messages
};

// Parses and checks the .xk file held in data[0..size); throws Error naming the problem.
std::unique_ptr<Model> parse_model(const uint8_t *data, size_t size);
std::unique_ptr<Model> load_model_file(const char *path);

}  // namespace xk
