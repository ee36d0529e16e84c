// The engine's planner and driver.
//
// At load (Engine::Engine) the node list becomes a list of steps: a conv absorbs the
// residual add and the ReLU that follow it when it is their only input, and the affine
// (and ReLU) before it when the conv is their only reader (a pre-activation network's
// batch norm: applied as the conv fills its planes), a 1x1 conv read only by an average
// pool runs after that pool (they commute: DenseNet's transitions convolve a quarter of the
// positions), an affine or add absorbs its ReLU,
// and flatten / reshape become views.  For each input shape
// (plan_for, cached) the planner infers every shape, packs every conv's weights into
// term lists for its kernel family (xk_kernels.h, xk_depthwise.h, xk_first.h; stride-1 3x3
// X-convs by Winograd on the training path's kernels, xk_backend.h), and lays all values out in
// one arena: a view shares its input's storage, each input of a channel concatenation is written
// straight into its slice of the concatenation (DenseNet's features are never copied),
// an elementwise step (and a conv's fused residual) writes over its input when nothing
// reads that afterwards, and storages whose lifetimes do not overlap share memory.
// predict then runs the steps with no allocation.
#include "xk_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(_WIN32)
#include <malloc.h>
#endif

#include "xk_kernels.h"
#include "xk_backend.h"
#include "xk_depthwise.h"
#include "xk_dense.h"
#include "xk_first.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace xk {

using Shape = std::vector<int64_t>;

namespace {

enum class Kind { conv, linear, xlinear, eltwise, maxpool, avgpool, adaptive, concat, view };
enum Act { NONE = 0, RELU = 1, RELU6 = 2 };
enum Family { VEC = 0, SHARED4 = 1, DEPTHWISE = 2, ROWS3 = 3, DW3S1 = 4, DW3S2 = 5, WINO = 6, QUADS = 7, COLS = 8, FIRST = 9 };

[[noreturn]] void fail(const std::string &m) { throw Error(m); }

std::string shape_str(const Shape &s) {
    std::string out = "(";
    for (size_t j = 0; j < s.size(); ++j) out += (j ? ", " : "") + std::to_string(s[j]);
    return out + (s.size() == 1 ? ",)" : ")");
}

// sizes are bounded (attrs <= 2^40, arrays by the file) but products of them are not
int64_t mul(int64_t a, int64_t b) {
    if (a < 0 || b < 0 || (a && b > (int64_t(1) << 50) / a)) fail("the network is too large for this input size");
    return a * b;
}

int64_t numel(const Shape &s, size_t from = 0) {
    int64_t n = 1;
    for (size_t k = from; k < s.size(); ++k) n = mul(n, s[k]);
    return n;
}

int64_t floordiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// torch's output size of a convolution / pooling window along one axis
int64_t conv_out(int64_t size, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode = false) {
    int64_t span = size + 2 * p - d * (k - 1) - 1;
    int64_t out = floordiv(span + (ceil_mode ? s - 1 : 0), s) + 1;
    if (ceil_mode && (out - 1) * s >= size + p) out -= 1;
    return out;
}

inline float act_apply(float v, int act) {
    if (act == RELU) return v > 0.f ? v : 0.f;
    if (act == RELU6) return v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
    return v;
}

template <int ACT> inline float act_t(float v) {
    if (ACT == RELU) return v > 0.f ? v : 0.f;
    if (ACT == RELU6) return v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
    return v;
}

int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int thread_count() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// The most threads a plan makes room for: OpenMP's default or the processor count, whichever
// is more (a later request for more runs on this many).
int64_t plan_threads() {
#ifdef _OPENMP
    return std::max(omp_get_max_threads(), omp_get_num_procs());
#else
    return 1;
#endif
}

int n_threads(int requested) {
#ifdef _OPENMP
    return requested > 0 ? requested : omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}

struct Storage {
    int64_t size = 0;   // floats per sample
    int parent = -1;    // a storage this one is a slice of (a concatenation)
    int64_t off = 0;    // floats from the parent's start, per sample
    bool external = false;
    std::vector<int> values, children;
    int64_t first = 0, last = 0, arena = 0, stride = 0;
};

}  // namespace

struct Step {
    Kind kind;
    std::vector<int> nodes;   // graph nodes it runs, the main one first
    std::vector<int> in;      // values read (add: two)
    int resid = -1;           // conv: value added before the activation
    int out = -1;
    int act = NONE;
    const Node *node = nullptr;
    const Node *add_node = nullptr;
    std::vector<int> pre_nodes;   // conv: the affine (and activation) it applies to its input first
    int pre_act = NONE;
    const Node *pool = nullptr;   // conv (1x1): the average pool of its output, run on its input first
};

struct ConvPlan {
    int64_t cin = 0, cout = 0, h = 0, w = 0, ho = 0, wo = 0;
    bool direct = false;                   // reads the input itself as its one plane
    int64_t wq = 0, hq = 0, pq = 0, cstride = 0, scratch = -1, scratch_size = 0;
    int64_t sh = 1, sw = 1, ph = 0, pw = 0;
    std::vector<int> phase_of;             // (a * sw + b) -> plane, -1 unused
    std::vector<std::pair<int, int>> phases;
    int family = VEC;
    int nt = 0;                            // terms per output
    std::vector<int32_t> off;              // VEC [cout][nt]; SHARED4 [block][nt]; DEPTHWISE [nt]
    std::vector<float> wt;                 // VEC [cout][nt]; SHARED4 [block][nt][4]; DEPTHWISE [cout][nt]
    std::vector<int> blocks;               // SHARED4 first outputs
    int vec = 0, vec_last = 0;             // VEC: vectors per tile, in the last tile; 0: pair tiles. ROWS3: per strip
    std::vector<float> bias;
    int64_t tile = 0, n_tiles = 0, strips = 0;   // ROWS3: tile = row blocks (of ho / tile rows, rounded)
    std::unique_ptr<backend::Winograd> wino;     // WINO: its tiles, quads and transformed weights
    std::unique_ptr<backend::Pointwise> quads;   // QUADS: its tiles, quads and weights
    std::unique_ptr<backend::Columns> cols;      // COLS: its columns and their quads
    std::unique_ptr<kern::DwFlat> dw_flat;       // DW3S1 on a small map with same padding: the flat kernel's masks
    int64_t threads = 0;                         // WINO, QUADS, COLS, FIRST: threads their scratch has room for
    kern::FirstGeom first{};                     // FIRST: the geometry, one thread's ring
    int64_t odd = 0;                       // ROWS3 at stride 2: floats from an even-row phase plane to its odd one
    int64_t run = 0;                       // SHARED4 dense: tiles (strips: rows) per dense4 call; 0: one tile a call
    const Node *pre = nullptr;             // an affine applied to the input (then pre_act) as the planes are filled
    int pre_act = NONE;
    // a 1x1 conv after its average pool (Step::pool): the pool reads the step's input (pool_h x
    // pool_w maps) through the affine pool_pre and writes the conv's input (cin, h, w) at floats
    // `pooled` of the scratch, each thread's channel after the affine at pool_buf + thread * pool_h pool_w
    // (pool_threads of them)
    const Node *pool = nullptr, *pool_pre = nullptr;
    int pool_pre_act = NONE;
    int64_t pool_h = 0, pool_w = 0, pooled = 0, pool_buf = 0, pool_threads = 1;
};

struct Plan {
    int64_t shape[4] = {0, 0, 0, 0};
    std::vector<Shape> shapes;                 // per value
    std::vector<int64_t> base, stride;         // per value: floats from the arena (or x) start, per-sample stride
    std::vector<char> ext;                     // per value: lives in the caller's x
    std::vector<std::unique_ptr<ConvPlan>> conv;  // per step
    std::vector<std::vector<char>> copy;       // per concat step: input k must be copied
    std::vector<std::vector<int64_t>> concat_off;
    struct Free {
        void operator()(float *p) const {
#if defined(_WIN32)
            _aligned_free(p);
#else
            std::free(p);
#endif
        }
    };
    std::unique_ptr<float, Free> raw;
    float *arena = nullptr;
    int64_t arena_size = 0;
    const float *x = nullptr;
    float *ptr(int v, int64_t b) const {
        return const_cast<float *>((ext[v] ? x : arena) + base[v] + b * stride[v]);
    }
};

bool Engine::use_avx2() {
#if XK_X86
    static const bool yes = [] {
        const char *isa = std::getenv("XKERN_ENGINE_ISA");
        if (isa && std::strcmp(isa, "generic") == 0) return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return yes;
#else
    return false;
#endif
}

// ---------------------------------------------------------------- fusion (once, at load)
namespace {
// A 1x1 conv (stride 1, no padding, dense or X) and an average pool with every window inside
// the map and counted in full: pooling the input first gives the same sums (both are linear
// per position; the pool's weights sum to one, so the bias passes through).
bool commutes_with_pool(const Node &conv, const Node &pool) {
    const bool one = conv.weight.dim(2) == 1 && conv.weight.dim(3) == 1 && conv.stride[0] == 1 && conv.stride[1] == 1 &&
                     conv.padding[0] == 0 && conv.padding[1] == 0 && (conv.op == Op::xconv2d || conv.groups == 1);
    return one && pool.op == Op::avgpool2d && pool.padding[0] == 0 && pool.padding[1] == 0 && !pool.ceil_mode &&
           pool.divisor == 0;
}
}  // namespace

Engine::Engine(std::unique_ptr<Model> model) : model_(std::move(model)) {
    const auto &nodes = model_->nodes;
    const int nv = int(nodes.size()) + 1;
    std::vector<std::vector<int>> readers(nv);
    for (int k = 0; k < int(nodes.size()); ++k)
        for (int v : nodes[k].inputs) readers[v].push_back(k);
    std::vector<int> uses(nv, 0);
    for (int v = 0; v < nv; ++v) uses[v] = int(readers[v].size());
    uses[model_->output] += 1;
    std::vector<char> absorbed(nodes.size(), 0);
    // the one node reading value v, if v has exactly one use and that is a node
    auto sole_reader = [&](int v) -> int { return uses[v] == 1 && readers[v].size() == 1 ? readers[v][0] : -1; };
    auto take_act = [&](Step &s, int &cur) {
        int r = sole_reader(cur);
        if (r >= 0 && (nodes[r].op == Op::relu || nodes[r].op == Op::relu6)) {
            s.act = nodes[r].op == Op::relu ? RELU : RELU6;
            s.nodes.push_back(r);
            absorbed[r] = 1;
            cur = r + 1;
        }
    };
    // the affine node (and activation node) a conv reads its input through, if it is their only reader
    std::vector<std::pair<int, int>> pre_of(nodes.size(), {-1, -1});
    for (int k = 0; k < int(nodes.size()); ++k) {
        if (nodes[k].op != Op::affine) continue;
        int a = sole_reader(k + 1), cur = k + 1;
        if (a >= 0 && (nodes[a].op == Op::relu || nodes[a].op == Op::relu6)) cur = a + 1; else a = -1;
        const int c = sole_reader(cur);
        // not depthwise convs: their kernels read the input itself, without planes
        if (c >= 0 && (nodes[c].op == Op::xconv2d || (nodes[c].op == Op::conv2d && nodes[c].groups == 1))) pre_of[c] = {k, a};
    }
    for (auto &pa : pre_of)
        if (pa.first >= 0) {
            absorbed[pa.first] = 1;
            if (pa.second >= 0) absorbed[pa.second] = 1;
        }
    for (int k = 0; k < int(nodes.size()); ++k) {
        if (absorbed[k]) continue;
        const Node &n = nodes[k];
        Step s;
        s.node = &n;
        s.nodes = {k};
        s.in = n.inputs;
        int cur = k + 1;
        switch (n.op) {
            case Op::conv2d: case Op::xconv2d: {
                s.kind = Kind::conv;
                if (pre_of[k].first >= 0) {
                    const int a = pre_of[k].first, r = pre_of[k].second;
                    s.pre_nodes = {a};
                    if (r >= 0) s.pre_nodes.push_back(r);
                    s.pre_act = r < 0 ? NONE : nodes[r].op == Op::relu ? RELU : RELU6;
                    s.in = nodes[a].inputs;
                }
                const int pr = sole_reader(cur);
                if (pr >= 0 && commutes_with_pool(n, nodes[pr])) {
                    s.pool = &nodes[pr];
                    s.nodes.push_back(pr);
                    absorbed[pr] = 1;
                    cur = pr + 1;
                }
                int r = sole_reader(cur);
                if (r >= 0 && nodes[r].op == Op::add) {
                    int other = nodes[r].inputs[0] == cur ? nodes[r].inputs[1] : nodes[r].inputs[0];
                    if (other != cur && other < cur) {  // computed before this conv runs
                        s.resid = other;
                        s.add_node = &nodes[r];
                        s.nodes.push_back(r);
                        absorbed[r] = 1;
                        cur = r + 1;
                    }
                }
                take_act(s, cur);
                break;
            }
            case Op::linear: s.kind = Kind::linear; take_act(s, cur); break;
            case Op::xlinear: s.kind = Kind::xlinear; take_act(s, cur); break;
            case Op::affine: case Op::add: s.kind = Kind::eltwise; take_act(s, cur); break;
            case Op::relu: s.kind = Kind::eltwise; s.act = RELU; break;
            case Op::relu6: s.kind = Kind::eltwise; s.act = RELU6; break;
            case Op::maxpool2d: s.kind = Kind::maxpool; break;
            case Op::avgpool2d: s.kind = Kind::avgpool; break;
            case Op::adaptive_avgpool2d: s.kind = Kind::adaptive; break;
            case Op::concat: s.kind = Kind::concat; break;
            case Op::flatten: case Op::reshape: s.kind = Kind::view; break;
        }
        s.out = cur;
        steps_.push_back(std::move(s));
    }
}

Engine::~Engine() = default;

std::vector<std::vector<int>> Engine::step_nodes() const {
    std::vector<std::vector<int>> out;
    for (auto &s : steps_) {
        out.push_back(s.nodes);
        out.back().insert(out.back().end(), s.pre_nodes.begin(), s.pre_nodes.end());
    }
    return out;
}

// ---------------------------------------------------------------- shapes
namespace {

struct Namer {
    const Node &n;
    [[noreturn]] void bad(const std::string &m) const { fail("node '" + n.name + "' (" + op_name(n.op) + "): " + m); }
};

Shape infer_shape(const Node &n, const std::vector<const Shape *> &in) {
    Namer c{n};
    const Shape &x = *in[0];
    switch (n.op) {
        case Op::conv2d: case Op::xconv2d: {
            int64_t n_in = n.op == Op::xconv2d ? n.in_channels : n.weight.dim(1) * n.groups;
            if (x.size() != 4 || x[1] != n_in)
                c.bad("expects (B, " + std::to_string(n_in) + ", H, W), got " + shape_str(x));
            int64_t kh = n.weight.dim(2), kw = n.weight.dim(3);
            int64_t ho = conv_out(x[2], kh, n.stride[0], n.padding[0], n.dilation[0]);
            int64_t wo = conv_out(x[3], kw, n.stride[1], n.padding[1], n.dilation[1]);
            if (ho < 1 || wo < 1)
                c.bad("input " + shape_str({x[2], x[3]}) + " is too small for kernel " + shape_str({kh, kw}));
            return {x[0], n.weight.dim(0), ho, wo};
        }
        case Op::linear: case Op::xlinear: {
            int64_t n_in = n.op == Op::xlinear ? n.in_channels : n.weight.dim(1);
            if (x.size() != 2 || x[1] != n_in) c.bad("expects (B, " + std::to_string(n_in) + "), got " + shape_str(x));
            return {x[0], n.weight.dim(0)};
        }
        case Op::affine:
            if (x.size() != 4 || x[1] != n.scale.dim(0))
                c.bad("expects (B, " + std::to_string(n.scale.dim(0)) + ", H, W), got " + shape_str(x));
            return x;
        case Op::relu: case Op::relu6: return x;
        case Op::add:
            if (x != *in[1]) c.bad("inputs have shapes " + shape_str(x) + " and " + shape_str(*in[1]));
            return x;
        case Op::maxpool2d: case Op::avgpool2d: {
            if (x.size() != 4) c.bad("expects (B, C, H, W), got " + shape_str(x));
            Shape out = x;
            for (int a = 0; a < 2; ++a) {
                out[2 + a] = conv_out(x[2 + a], n.kernel[a], n.stride[a], n.padding[a], n.dilation[a], n.ceil_mode);
                if (out[2 + a] < 1)
                    c.bad("input " + shape_str({x[2], x[3]}) + " is too small for kernel " + shape_str({n.kernel[0], n.kernel[1]}));
            }
            return out;
        }
        case Op::adaptive_avgpool2d:
            if (x.size() != 4) c.bad("expects (B, C, H, W), got " + shape_str(x));
            return {x[0], x[1], n.output_size[0] < 0 ? x[2] : n.output_size[0], n.output_size[1] < 0 ? x[3] : n.output_size[1]};
        case Op::concat: {
            int64_t r = int64_t(x.size()), axis = n.axis < 0 ? n.axis + r : n.axis;
            if (axis == 0 && n.axis < 0) c.bad("axis " + std::to_string(n.axis) + " of " + std::to_string(r) + "-D inputs is the batch axis");
            std::string shapes;
            for (auto *s : in) shapes += (shapes.empty() ? "" : ", ") + shape_str(*s);
            if (axis < 1 || axis >= r) c.bad("cannot join shapes [" + shapes + "] along axis " + std::to_string(n.axis));
            Shape out = x;
            out[axis] = 0;
            for (auto *s : in) {
                if (int64_t(s->size()) != r) c.bad("cannot join shapes [" + shapes + "]");
                for (int64_t a = 0; a < r; ++a)
                    if (a != axis && (*s)[a] != x[a]) c.bad("cannot join shapes [" + shapes + "]");
                out[axis] += (*s)[axis];
            }
            return out;
        }
        case Op::flatten: {
            int64_t r = int64_t(x.size()), stop = n.end_dim == -1 ? r : n.end_dim + 1;
            if (n.start_dim >= r || stop > r)
                c.bad("cannot flatten axes " + std::to_string(n.start_dim) + ".." + std::to_string(n.end_dim) + " of shape " + shape_str(x));
            Shape out(x.begin(), x.begin() + n.start_dim);
            int64_t m = 1;
            for (int64_t a = n.start_dim; a < stop; ++a) m = mul(m, x[a]);
            out.push_back(m);
            out.insert(out.end(), x.begin() + stop, x.end());
            return out;
        }
        case Op::reshape: {
            Shape out{x[0]};
            int64_t total = numel(x, 1), known = 1, free = -1;
            for (size_t a = 0; a < n.shape.size(); ++a) {
                if (n.shape[a] == -1) free = int64_t(a) + 1; else known = mul(known, n.shape[a]);
                out.push_back(n.shape[a]);
            }
            std::string to = "(B";
            for (auto s : n.shape) to += ", " + std::to_string(s);
            to += ")";
            if (free >= 0) {
                if (known == 0 || total % known) c.bad("cannot reshape " + shape_str(x) + " to " + to);
                out[free] = total / known;
            } else if (known != total) c.bad("cannot reshape " + shape_str(x) + " to " + to);
            return out;
        }
    }
    return x;
}

// ---------------------------------------------------------------- conv packing
// The Winograd tile side for a stride-1 3x3 X-conv of `terms` terms per output onto an ho x wo
// map, 0 for none.  The quads compute whole vectors of tiles (a panel's last holds 8, 16 or 24),
// so each side costs its (m + 2)^2 transformed entries times those vectors: F(4x4, 3x3) where
// that is no more than F(2x2, 3x3)'s (maps from 12x12: 14x14's 16 tiles fill two vectors), else
// F(2x2, 3x3) where at least 60% of its tiles' positions are outputs (not 3x3 maps); none under
// WINO_TERMS terms (the transforms cost per channel).  Against the row tiles at batch 1: 0.43-0.52
// of the time from 28x28 up; F(4x4) at 14x14 0.75 of F(2x2)'s (X-ResNet's 256-channel convs),
// at 16x16 0.74 (X-DenseNet's).
constexpr int64_t WINO_TERMS = 12, COLS_ROWS = 2048;
// Vectors of tiles the quads compute for n tiles: three a whole panel, then those of the last.
int64_t wino_vectors(int64_t n) {
    const int64_t W = backend::panel_width(), L = backend::panel_lanes();
    return n / W * (W / L) + (n % W + L - 1) / L;
}
int wino_tile(int64_t terms, int64_t ho, int64_t wo) {
    if (terms < WINO_TERMS) return 0;
    if (36 * wino_vectors(backend::tiles(4, ho, wo)) <= 16 * wino_vectors(backend::tiles(2, ho, wo))) return 4;
    return 10 * ho * wo >= 6 * 4 * backend::tiles(2, ho, wo) ? 2 : 0;
}

std::unique_ptr<ConvPlan> plan_conv(const Node &n, const Shape &x, const Shape &y, bool input_external, const Node *pre,
                                    int pre_act) {
    auto cp = std::make_unique<ConvPlan>();
    ConvPlan &p = *cp;
    p.pre = pre;
    p.pre_act = pre_act;
    p.cin = x[1]; p.h = x[2]; p.w = x[3]; p.cout = y[1]; p.ho = y[2]; p.wo = y[3];
    const int64_t kh = n.weight.dim(2), kw = n.weight.dim(3), d_in = n.weight.dim(1);
    p.sh = n.stride[0]; p.sw = n.stride[1]; p.ph = n.padding[0]; p.pw = n.padding[1];
    const int64_t dh = n.dilation[0], dw = n.dilation[1];
    p.bias = n.bias.present ? n.bias.f : std::vector<float>(size_t(p.cout), 0.f);
    bool depthwise = n.op == Op::conv2d && n.groups == p.cin && p.cout == p.cin && d_in == 1;
    // the quads of the backend's kernels address their panels' rows by 32-bit offsets
    if (n.op == Op::xconv2d && mul(mul(p.cin, kh * kw), backend::panel_width()) > (int64_t(1) << 31) - 1)
        fail("node '" + n.name + "': the input has too many channels for the engine's 32-bit offsets");
    if (n.op == Op::xconv2d && kh == 3 && kw == 3 && p.sh == 1 && p.sw == 1 && dh == 1 && dw == 1 && !pre) {
        if (const int m = wino_tile(d_in, p.ho, p.wo)) {
            p.family = WINO;
            p.direct = true;  // the kernels read the input as it is
            p.nt = int(d_in * 9);
            auto c = std::make_unique<backend::Winograd>();
            c->m = m; c->h = p.h; c->w = p.w; c->ho = p.ho; c->wo = p.wo; c->ph = p.ph; c->pw = p.pw;
            backend::prepare(*c, p.cin, p.cout, d_in, n.index.i.data(), n.weight.f.data());
            // one scratch per thread (at most plan_threads(), or one per panel),
            // and the conv's output before a fused residual is added
            p.threads = std::max<int64_t>(1, std::min<int64_t>(plan_threads(), c->panels));
            p.scratch_size = p.threads * backend::scratch_floats(*c) + mul(p.cout, mul(p.ho, p.wo));
            p.wino = std::move(c);
            return cp;
        }
    }
    // dense convs over 1-4 input channels (a first layer): row rings and tiles of xk_first.h
    if (n.op == Op::conv2d && n.groups == 1 && p.cin <= kern::FIRST_CIN_MAX && kh * kw > 1 && kh <= kern::FIRST_K_MAX &&
        kw <= kern::FIRST_K_MAX && dh == 1 && dw == 1 && p.sh <= 2 && p.sw <= 2) {
        p.family = FIRST;
        p.nt = int(d_in * kh * kw);
        const int64_t len = kern::first_len(p.wo, kw, p.sw);
        p.first = {p.cin, p.h, p.w, p.cout, p.ho, p.wo, kh, kw, p.sh, p.sw, p.ph, p.pw, len, mul(kh * p.cin * p.sw, len)};
        if (pre) p.first.pre_scale = pre->scale.f.data(), p.first.pre_shift = pre->shift.f.data(), p.first.pre_act = pre_act;
        p.threads = std::max<int64_t>(1, std::min<int64_t>(plan_threads(), p.ho));
        p.scratch_size = mul(p.threads, p.first.ring);
        // [block of four outputs][term][4], zeros past cout
        const int64_t blocks = (p.cout + 3) / 4;
        p.wt.assign(size_t(blocks * p.nt * 4), 0.f);
        for (int64_t v = 0; v < p.cout; ++v)
            for (int64_t j = 0; j < p.nt; ++j) p.wt[size_t(((v / 4) * p.nt + j) * 4 + v % 4)] = n.weight.f[size_t(v * p.nt + j)];
        p.bias.resize(size_t(blocks * 4), 0.f);
        return cp;
    }
    // stride-1 1x1 X-convs on maps of a panel or more: in quads on panels copied to L1 (0.7-0.9
    // of the vec tiles' time on 7x7 to 32x32 maps, the same on block expanders' shared runs)
    if (n.op == Op::xconv2d && kh == 1 && kw == 1 && p.sh == 1 && p.sw == 1 && p.ph == 0 && p.pw == 0 &&
        p.h * p.w >= backend::panel_width()) {
        p.family = QUADS;
        p.direct = true;
        p.nt = int(d_in);
        auto c = std::make_unique<backend::Pointwise>();
        backend::prepare(*c, p.cin, p.cout, d_in, p.h * p.w, n.index.i.data(), n.weight.f.data());
        p.threads = std::max<int64_t>(1, std::min<int64_t>(plan_threads(), c->tiles * backend::quads(c->q)));
        // per thread one scratch, the output before a fused residual (the input's affine is
        // applied as panels load)
        p.scratch_size = p.threads * backend::scratch_floats(*c) + mul(p.cout, p.h * p.w);
        p.quads = std::move(c);
        return cp;
    }
    // strided X-convs onto maps of a panel or more, with at most COLS_ROWS columns (input
    // channels x taps): 1x1 X-convs in quads over their columns (beyond that, a panel of
    // columns outgrows L2's share and the row tiles win)
    if (n.op == Op::xconv2d && (p.sh > 1 || p.sw > 1) && p.ho * p.wo >= backend::panel_width() &&
        p.cin * kh * kw <= COLS_ROWS) {
        p.family = COLS;
        p.direct = true;
        p.nt = int(d_in * kh * kw);
        auto c = std::make_unique<backend::Columns>();
        c->kh = kh; c->kw = kw; c->sh = p.sh; c->sw = p.sw; c->ph = p.ph; c->pw = p.pw; c->dh = dh; c->dw = dw;
        c->h = p.h; c->w = p.w; c->ho = p.ho; c->wo = p.wo;
        backend::prepare(*c, p.cin, p.cout, d_in, n.index.i.data(), n.weight.f.data());
        p.threads = std::max<int64_t>(1, std::min<int64_t>(plan_threads(), c->quads.tiles * backend::quads(c->quads.q)));
        // per thread one scratch, the output before a fused residual, the input after its affine, the columns
        p.scratch_size = p.threads * backend::scratch_floats(c->quads) + mul(p.cout, p.ho * p.wo) +
                         (pre ? mul(p.cin, p.h * p.w) : 0) + backend::column_floats(*c);
        p.cols = std::move(c);
        return cp;
    }
    p.family = depthwise ? DEPTHWISE : VEC;
    p.tile = depthwise ? kern::DW_T : 0;
    // index[v][i]: the input channel of output v's i-th weight row
    auto index = [&](int64_t v, int64_t i) -> int64_t {
        if (n.op == Op::xconv2d) return n.index.i[v * d_in + i];
        return (v / (p.cout / n.groups)) * d_in + i;
    };
    if (!depthwise) {  // outputs in blocks of four with one index row share their loads
        bool all = true;
        for (int64_t v = 0; v < p.cout && all; v += 4) {
            all = v + 4 <= p.cout;
            for (int64_t u = v + 1; all && u < v + 4; ++u)
                for (int64_t i = 0; i < d_in && all; ++i) all = index(u, i) == index(v, i);
            p.blocks.push_back(int(v));
        }
        if (all) { p.family = SHARED4; p.tile = kern::SHARED_T; }
        else p.blocks.clear();  // mixed: the vec kernel for all (blocks are rare then)
    }
    // convs with three kernel rows, stride 1 or 2, and random index rows: the row-tile kernel
    if (p.family == VEC && kh == 3 && dh == 1 && p.sh == p.sw && p.sh <= 2) {
        p.family = ROWS3;
        // strips of 8 or 16 columns, whichever costs less by a count of cycles per term group:
        // FMAs (1.5 R vec), at least the 12 of the three-FMA chain an accumulator gets, plus 2
        // for the group's offset and broadcasts
        auto cost = [&](int nv, int64_t blocks) {
            int64_t c = 0;
            for (int64_t x0 = 0; x0 < p.wo; x0 += 8 * nv)
                for (int64_t b = 0; b < blocks; ++b) {
                    const int64_t rows = (b + 1) * p.ho / blocks - b * p.ho / blocks, v = p.wo - x0 > 8 ? nv : 1;
                    c += std::max<int64_t>(3 * rows * v / 2, 12) + 2;
                }
            return c;
        };
        const int64_t b1 = (p.ho + kern::ROWS_MAX - 1) / kern::ROWS_MAX, b2 = (p.ho + kern::ROWS2_MAX - 1) / kern::ROWS2_MAX;
        p.vec = p.wo > 8 && cost(2, b2) < cost(1, b1) ? 2 : 1;
        p.tile = p.vec == 2 ? b2 : b1;
    }
    if (p.family == DEPTHWISE && kh == 3 && kw == 3 && dh == 1 && dw == 1 && p.sh == 1 && p.sw == 1) p.family = DW3S1;
    if (p.family == DEPTHWISE && kh == 3 && kw == 3 && dh == 1 && dw == 1 && p.sh == 2 && p.sw == 2) p.family = DW3S2;
    if (p.family == DW3S1 && p.ph == 1 && p.pw == 1 && p.ho == p.h && p.wo == p.w && Engine::use_avx2()) {
        auto f = std::make_unique<kern::DwFlat>();
        if (kern::dw_flat_init(*f, p.h, p.w)) p.dw_flat = std::move(f);
    }
    // plane geometry
    const int64_t oy_max = (kh - 1) * dh / p.sh, ox_max = (kw - 1) * dw / p.sw;
    p.direct = kh == 1 && kw == 1 && p.sh == 1 && p.sw == 1 && p.ph == 0 && p.pw == 0 && !input_external && !pre;
    p.phase_of.assign(size_t(p.sh * p.sw), -1);
    for (int64_t ky = 0; ky < kh; ++ky)
        for (int64_t kx = 0; kx < kw; ++kx) {
            int64_t a = ky * dh % p.sh, b = kx * dw % p.sw;
            if (p.phase_of[a * p.sw + b] < 0) {
                p.phase_of[a * p.sw + b] = int(p.phases.size());
                p.phases.emplace_back(int(a), int(b));
            }
        }
    if (p.family == ROWS3) p.direct = false;
    // a channel stride of a multiple of 1 KiB maps the channels' rows to 4 or fewer places in
    // the L1 sets (4 KiB apart): direct only while each place holds at most 4 channels of 8 ways
    if (p.direct && (p.h * p.w) % 256 == 0 && p.cin * std::gcd<int64_t>(p.h * p.w, 1024) > 4 * 1024) p.direct = false;
    // channels of h w floats, h w not a multiple of 8, start off the 32-byte grid: loads split cache lines
    if ((p.h * p.w) % 8) p.direct = false;
    if (p.family == DW3S2 || p.family == DW3S1) p.direct = true;  // reads its input as it is
    if (p.direct) { p.wq = p.w; p.hq = p.h; }
    else { p.wq = (p.w + 2 * p.pw + p.sw - 1) / p.sw; p.hq = p.ho + oy_max + 1; }
    if (p.family == ROWS3) {  // strips of 8 vec columns may read 8 vec + kw past a row
        p.hq = p.ho + 3;
        p.strips = (p.wo + 8 * p.vec - 1) / (8 * p.vec);
        p.n_tiles = p.tile * p.strips;
    }
    p.pq = mul(p.hq, p.wq);
    p.cstride = mul(p.pq, int64_t(p.phases.size()));
    if (!p.direct) {  // an odd number of cache lines: channels spread over the L1 sets
        p.cstride = (p.cstride + 15) / 16 * 16;
        if (p.cstride / 16 % 2 == 0) p.cstride += 16;
    }
    // tiles of two outputs x 32 pixels where they cover the map exactly; else of one output
    // and at most VEC_MAX vectors, as even as they come.  One output x 64 pixels ran 5% slower
    // than pairs on X-DenseNet's 32x32 maps; pairs waste up to 30% of their columns on 7x7 ones
    if (p.family == VEC && mul(p.ho, p.wq) % kern::PAIR_T == 0) {
        p.tile = kern::PAIR_T;
        p.n_tiles = mul(p.ho, p.wq) / kern::PAIR_T;
    } else if (p.family == VEC) {
        const int64_t vectors = (mul(p.ho, p.wq) + 7) / 8, n0 = (vectors + kern::VEC_MAX - 1) / kern::VEC_MAX;
        p.vec = int((vectors + n0 - 1) / n0);
        p.tile = 8 * p.vec;
        p.n_tiles = (vectors + p.vec - 1) / p.vec;
        p.vec_last = int(vectors - (p.n_tiles - 1) * p.vec);
    }
    if (p.family != ROWS3) p.n_tiles = (mul(p.ho, p.wq) + p.tile - 1) / p.tile;
    // shared-4 tiles within rows when rows have padding columns, unless tiles across rows are
    // 15% fewer: within rows the kernel finishes every tile (across rows store_tile does, row
    // segment by row segment), but a 7-column row fills 7 of a tile's 24 columns
    if (p.family == SHARED4 && p.wq != p.wo) {
        const int64_t strips = (p.wo + p.tile - 1) / p.tile;
        if (100 * mul(strips, p.ho) <= 115 * p.n_tiles) {
            p.strips = strips;
            p.n_tiles = mul(p.ho, p.strips);
        }
    }
    // dense convs: runs of tiles (xk_dense.h), two rows of strips or a stretch of the flat plane
    // whose input (about 4096 floats: 16 KiB) stays in L1 across the output blocks
    if (p.family == SHARED4 && n.op == Op::conv2d && n.groups == 1 && (p.strips || p.wq == p.wo))
        p.run = p.strips ? 2 : std::max<int64_t>(1, 4096 / (p.tile * d_in * kh * kw));
    const int64_t reach = mul(p.cin, p.cstride) + p.tile + oy_max * p.wq + ox_max + 64 + (kw - 1) * dw + 32;
    if (reach > (int64_t(1) << 31) - 1) fail("node '" + n.name + "': the input is too large for the engine's 32-bit offsets");
    if (!p.direct) p.scratch_size = reach;
    // term lists
    p.nt = int(d_in * kh * kw);
    auto tap_off = [&](int64_t ky, int64_t kx) -> int64_t {
        int64_t ry = ky * dh, rx = kx * dw;
        return p.phase_of[(ry % p.sh) * p.sw + rx % p.sw] * p.pq + (ry / p.sh) * p.wq + rx / p.sw;
    };
    auto weight = [&](int64_t v, int64_t i, int64_t ky, int64_t kx) { return n.weight.f[((v * d_in + i) * kh + ky) * kw + kx]; };
    if (p.family == DW3S2 || p.family == DW3S1) {
        p.wt = n.weight.f;
    } else if (p.family == DEPTHWISE) {
        for (int64_t ky = 0; ky < kh; ++ky)
            for (int64_t kx = 0; kx < kw; ++kx) p.off.push_back(int32_t(tap_off(ky, kx)));
        p.wt = n.weight.f;
    } else if (p.family == SHARED4) {
        for (int b : p.blocks) {
            for (int64_t i = 0; i < d_in; ++i)
                for (int64_t ky = 0; ky < kh; ++ky)
                    for (int64_t kx = 0; kx < kw; ++kx) {
                        p.off.push_back(int32_t(index(b, i) * p.cstride + tap_off(ky, kx)));
                        for (int u = 0; u < 4; ++u) p.wt.push_back(weight(b + u, i, ky, kx));
                    }
        }
    } else if (p.family == ROWS3) {  // groups (i, kx), three weights each (ky = 0, 1, 2)
        p.nt = int(d_in * kw);
        // phases are numbered ky-major, so every column phase's odd-row plane lies as far on
        p.odd = p.sh == 2 ? tap_off(1, 0) - tap_off(0, 0) : 0;
        for (int64_t v = 0; v < p.cout; ++v)
            for (int64_t i = 0; i < d_in; ++i)
                for (int64_t kx = 0; kx < kw; ++kx) {
                    p.off.push_back(int32_t(index(v, i) * p.cstride + tap_off(0, kx)));
                    for (int64_t ky = 0; ky < 3; ++ky) p.wt.push_back(weight(v, i, ky, kx));
                }
    } else {
        for (int64_t v = 0; v < p.cout; ++v)
            for (int64_t i = 0; i < d_in; ++i)
                for (int64_t ky = 0; ky < kh; ++ky)
                    for (int64_t kx = 0; kx < kw; ++kx) {
                        p.off.push_back(int32_t(index(v, i) * p.cstride + tap_off(ky, kx)));
                        p.wt.push_back(weight(v, i, ky, kx));
                    }
    }
    return cp;
}

// d[k] = act(s[k] scale[c] + shift[c]) for k < n: channel c through the affine a
void affine_apply(const Node &a, int act, int64_t c, const float *s, float *d, int64_t n) {
    const float sc = a.scale.f[size_t(c)], sh = a.shift.f[size_t(c)];
#if XK_X86
    if (Engine::use_avx2()) return kern::affine_avx2(s, d, n, sc, sh, act);
#endif
    kern::affine_generic(s, d, n, sc, sh, act);
}
// the input's affine, if the conv has one, of s into d (or of d in place)
void pre_apply(const ConvPlan &p, int64_t c, const float *s, float *d, int64_t n) {
    if (p.pre) affine_apply(*p.pre, p.pre_act, c, s, d, n);
}
void pre_apply(const ConvPlan &p, int64_t c, float *d, int64_t n) { pre_apply(p, c, d, d, n); }

// zero-padded phase planes of one image x (cin, h, w) into dst (cin, phases, hq, wq).  Padding
// stays zero after the input's affine (pre_apply), as the conv pads the affine's output.
void fill_planes(const ConvPlan &p, const float *x, float *dst, int nt) {
    const int64_t np = int64_t(p.phases.size());
    // one plane with no padding columns: the channel as it is, then zero rows (a 1x1 conv)
    const bool flat = np == 1 && p.sh == 1 && p.sw == 1 && p.ph == 0 && p.pw == 0 && p.wq == p.w;
#pragma omp parallel for num_threads(nt) if (nt > 1 && p.cin * p.pq > 16384) schedule(static)
    for (int64_t c = 0; c < p.cin; ++c) {
        const float *src = x + c * p.h * p.w;
        if (flat) {
            float *plane = dst + c * p.cstride;
            std::memcpy(plane, src, sizeof(float) * size_t(p.h * p.w));
            std::memset(plane + p.h * p.w, 0, sizeof(float) * size_t(p.pq - p.h * p.w));
            pre_apply(p, c, plane, p.h * p.w);
            continue;
        }
        for (int64_t f = 0; f < np; ++f) {
            const int64_t a = p.phases[f].first, b = p.phases[f].second;
            float *plane = dst + c * p.cstride + f * p.pq;
            for (int64_t r = 0; r < p.hq; ++r) {
                float *row = plane + r * p.wq;
                const int64_t iy = p.sh * r + a - p.ph;
                if (iy < 0 || iy >= p.h) { std::memset(row, 0, sizeof(float) * p.wq); continue; }
                const float *in = src + iy * p.w;
                // columns cc with 0 <= sw * cc + b - pw < w hold input, the rest padding
                const int64_t lo = std::min(std::max<int64_t>((p.pw - b + p.sw - 1) / p.sw, 0), p.wq);
                const int64_t hi = std::max(std::min<int64_t>((p.w + p.pw - b + p.sw - 1) / p.sw, p.wq), lo);
                std::memset(row, 0, sizeof(float) * lo);
                if (p.sw == 1) std::memcpy(row + lo, in + lo + b - p.pw, sizeof(float) * (hi - lo));
                else if (p.sw == 2) {
#if XK_X86
                    if (Engine::use_avx2()) kern::gather2_avx2(in + b - p.pw + 2 * lo, row + lo, hi - lo); else
#endif
                    kern::gather2_generic(in + b - p.pw + 2 * lo, row + lo, hi - lo);
                } else {
                    const float *src_row = in + b - p.pw;
                    for (int64_t cc = lo; cc < hi; ++cc) row[cc] = src_row[p.sw * cc];
                }
                std::memset(row + hi, 0, sizeof(float) * (p.wq - hi));
                pre_apply(p, c, row + lo, hi - lo);
            }
        }
    }
}

inline void finish(const float *s, float bias, const float *r, float *d, int64_t n, int act) {
#if XK_X86
    if (Engine::use_avx2()) return kern::finish_avx2(s, bias, r, d, n, act);
#endif
    kern::finish_generic(s, bias, r, d, n, act);
}

// out[v] (ho, wo) = act(res + bias (+ resid)) for the flat tile's positions [q0, q0 + T)
inline void store_tile(const ConvPlan &p, const float *res, int64_t q0, float bias, const float *resid, float *out, int act) {
    const int64_t qend = std::min(q0 + p.tile, p.ho * p.wq);
    if (p.wq == p.wo) {  // no padding columns: one run
        if (qend > q0) finish(res, bias, resid ? resid + q0 : nullptr, out + q0, qend - q0, act);
        return;
    }
    for (int64_t y = q0 / p.wq; y * p.wq < qend; ++y) {
        const int64_t row = y * p.wq;
        const int64_t x0 = std::max<int64_t>(q0 - row, 0), x1 = std::min<int64_t>(qend - row, p.wo);
        if (x1 > x0)
            finish(res + (row + x0 - q0), bias, resid ? resid + y * p.wo + x0 : nullptr, out + y * p.wo + x0, x1 - x0, act);
    }
}

void run_conv(const ConvPlan &p, const float *x, float *scratch, const float *resid, float *out, int act, int nt) {
    // a conv of less than 2^18 multiply-adds runs on one thread: a parallel region's fork and
    // barrier cost more than it saves, and far more when the machine is busy
    if (p.cout * p.ho * p.wo * p.nt * (p.family == ROWS3 ? 3 : 1) < (int64_t(1) << 18)) nt = 1;
    if (p.family == FIRST) {
        const int nw = int(std::min<int64_t>(nt, p.threads));
        // output rows split between the threads, each with its own ring
#pragma omp parallel num_threads(nw) if (nw > 1)
        {
            const int64_t k = thread_id(), m = thread_count();
            kern::first_rows(p.first, x, p.wt.data(), p.bias.data(), resid, out, act, scratch + k * p.first.ring, p.ho * k / m,
                             p.ho * (k + 1) / m, Engine::use_avx2());
        }
        return;
    }
    const float *planes = x;
    if (!p.direct) {
        fill_planes(p, x, scratch, nt);
        planes = scratch;
    }
    const int64_t plane_out = p.ho * p.wo;
    if (p.family == WINO || p.family == QUADS || p.family == COLS) {
        const backend::Pointwise *pq = p.quads ? p.quads.get() : p.cols ? &p.cols->quads : nullptr;
        const int64_t per = p.wino ? backend::scratch_floats(*p.wino) : backend::scratch_floats(*pq);
        const int64_t items = p.wino ? p.wino->panels : pq->tiles;
        // scratch: one part per thread, the output before a fused residual, the input after its
        // affine (the columns' input; the quads apply the affine as they load their panels), the columns
        float *after = scratch + p.threads * per, *copy = after + p.cout * plane_out;
        float *col = copy + (p.pre && p.cols ? p.cin * p.h * p.w : 0), *dst = resid ? after : out;
        const float *src = x;
        backend::Affine pre;
        if (p.pre && p.quads) pre = {p.pre->scale.f.data(), p.pre->shift.f.data(), p.pre_act};
        if (p.pre && !p.quads) {  // the input's affine, in one pass into the copy
            for (int64_t c = 0; c < p.cin; ++c) pre_apply(p, c, x + c * p.h * p.w, copy + c * p.h * p.w, p.h * p.w);
            src = copy;
        }
        const int nw = int(std::min<int64_t>(nt, p.threads));
        // fewer tiles than two per thread: their quads split too, each share copying its panels
        // again (not Winograd's panels: transforming them again cost as much as the split saved).
        // Every output is computed in full by one item, the same way however they split: the
        // same bits at every thread count.
        const int64_t nq = backend::quads(p.wino ? p.wino->q : pq->q);
        const int64_t split = !p.wino && nw > 1 && items < 2 * nw ? std::min(nq, (2 * nw + items - 1) / items) : 1;
#pragma omp parallel num_threads(nw) if (nw > 1)
        {
            if (p.cols) {  // the columns first, input channels split between the threads
                const int64_t k = thread_id(), n = thread_count();
                backend::fill_columns(*p.cols, src, col, p.cin * k / n, p.cin * (k + 1) / n);
#pragma omp barrier
            }
            float *mine = scratch + per * thread_id();
#pragma omp for schedule(static)
            for (int64_t it = 0; it < items * split; ++it) {
                const int64_t u = it / split, q_lo = nq * (it % split) / split, q_hi = nq * (it % split + 1) / split;
                if (p.wino) backend::run_panel(*p.wino, src, p.bias.data(), u, q_lo, q_hi, mine, dst);
                else backend::run_tile(*pq, p.cols ? col : src, p.bias.data(), u, q_lo, q_hi, mine, dst,
                                       pre.scale ? &pre : nullptr);
            }
        }
        if (resid || act) finish(dst, 0.f, resid, out, p.cout * plane_out, act);
        return;
    }
    const bool avx2 = Engine::use_avx2();
    if (p.family == DW3S2 || p.family == DW3S1) {
        const int s = p.family == DW3S2 ? 2 : 1;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t c = 0; c < p.cout; ++c) {
            const float *in = x + c * p.h * p.w, *w = p.wt.data() + c * 9, *r = resid ? resid + c * plane_out : nullptr;
            float *o = out + c * plane_out;
#if XK_X86
            if (avx2 && p.dw_flat) { kern::dw3s1_flat(*p.dw_flat, in, w, p.bias[c], r, act, o); continue; }
            if (avx2 && s == 2) { kern::dw3s2_avx2(in, p.h, p.w, p.ph, p.pw, p.ho, p.wo, w, p.bias[c], r, act, o); continue; }
            if (avx2) { kern::dw3s1_avx2(in, p.h, p.w, p.ph, p.pw, p.ho, p.wo, w, p.bias[c], r, act, o); continue; }
#endif
            kern::dw3_direct_generic(in, p.h, p.w, s, p.ph, p.pw, p.ho, p.wo, w, p.bias[c], r, act, o);
        }
        return;
    }
    if (p.family == DEPTHWISE) {
        const int64_t items = p.cout * p.n_tiles;
        const int ntaps = p.nt;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            const int64_t c = it / p.n_tiles, q0 = (it % p.n_tiles) * p.tile;
            alignas(32) float res[kern::DW_T];
            const float *base = planes + c * p.cstride + q0;
            const float *w = p.wt.data() + c * ntaps;
#if XK_X86
            if (avx2) kern::dw_avx2(base, p.off.data(), w, ntaps, res); else
#endif
            kern::dw_generic(base, p.off.data(), w, ntaps, res);
            store_tile(p, res, q0, p.bias[c], resid ? resid + c * plane_out : nullptr, out + c * plane_out, act);
        }
        return;
    }
    if (p.family == ROWS3) {
        const int64_t items = p.cout * p.n_tiles, sw = 8 * p.vec;
        const int groups = p.nt, s = int(p.sh);
#if XK_X86
        using RowsKernel = void (*)(const float *, int64_t, int64_t, const int32_t *, const float *, int, const kern::RowsOut &);
        // [stride - 1][vectors - 1][rows - 1]: one vector for a strip of 8 columns or fewer
#define XK_ROWS_TABLE(S)                                                                                          \
    {{kern::rows3_avx2<1, 1, S>, kern::rows3_avx2<2, 1, S>, kern::rows3_avx2<3, 1, S>, kern::rows3_avx2<4, 1, S>, \
      kern::rows3_avx2<5, 1, S>, kern::rows3_avx2<6, 1, S>, kern::rows3_avx2<7, 1, S>, kern::rows3_avx2<8, 1, S>}, \
     {kern::rows3_avx2<1, 2, S>, kern::rows3_avx2<2, 2, S>, kern::rows3_avx2<3, 2, S>, kern::rows3_avx2<4, 2, S>, \
      kern::rows3_avx2<5, 2, S>, kern::rows3_avx2<6, 2, S>, nullptr, nullptr}}
        static const RowsKernel by_rows[2][2][kern::ROWS_MAX] = {XK_ROWS_TABLE(1), XK_ROWS_TABLE(2)};
#undef XK_ROWS_TABLE
#endif
        // consecutive items share a tile, so its input rows stay in cache across the outputs
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            const int64_t tile = it / p.cout, v = it % p.cout, block = tile / p.strips;
            const int64_t y0 = block * p.ho / p.tile, x0 = tile % p.strips * sw;
            const int32_t *o = p.off.data() + v * groups;
            const float *w = p.wt.data() + v * groups * 3, *base = planes + y0 * p.wq + x0;
            const int64_t at = v * plane_out + y0 * p.wo + x0;
            const kern::RowsOut e{p.bias[v], resid ? resid + at : nullptr, out + at, p.wo,
                                  int((block + 1) * p.ho / p.tile - y0), int(std::min(sw, p.wo - x0)), act};
#if XK_X86
            if (avx2) { by_rows[s - 1][e.cols > 8][e.rows - 1](base, p.wq, p.odd, o, w, groups, e); continue; }
#endif
            alignas(32) float res[kern::ROWS_MAX * 8];
            for (int c = 0; 8 * c < e.cols; ++c) {
                kern::rows3_generic(base + 8 * c, p.wq, p.odd, s, o, w, groups, e.rows, res);
                for (int r = 0; r < e.rows; ++r)
                    finish(res + r * 8, e.bias, e.resid ? e.resid + r * p.wo + 8 * c : nullptr, e.out + r * p.wo + 8 * c,
                           std::min(8, e.cols - 8 * c), act);
            }
        }
        return;
    }
    const int terms = p.nt;
    if (p.family == VEC && p.vec == 0) {
        const int64_t nvb = (p.cout + 1) / 2, items = nvb * p.n_tiles;
        // consecutive items share a tile, so a thread's input rows stay in its cache
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            const int64_t q0 = (it / nvb) * p.tile, v0 = 2 * (it % nvb), v1 = v0 + 1 < p.cout ? v0 + 1 : v0;
            alignas(32) float r0[kern::PAIR_T], r1[kern::PAIR_T];
            const int32_t *o0 = p.off.data() + v0 * terms, *o1 = p.off.data() + v1 * terms;
            const float *w0 = p.wt.data() + v0 * terms, *w1 = p.wt.data() + v1 * terms, *base = planes + q0;
#if XK_X86
            if (avx2 && p.wq == p.wo) {  // a whole tile of contiguous outputs: the kernel finishes it
                const float bias[2] = {p.bias[v0], p.bias[v1]};
                kern::Epilogue e{bias, {resid ? resid + v0 * plane_out + q0 : nullptr, v1 != v0 && resid ? resid + v1 * plane_out + q0 : nullptr},
                                 {out + v0 * plane_out + q0, v1 != v0 ? out + v1 * plane_out + q0 : nullptr}, act, kern::PAIR_T};
                kern::pair_avx2(base, o0, w0, o1, w1, terms, r0, r1, &e);
                continue;
            }
            if (avx2) kern::pair_avx2(base, o0, w0, o1, w1, terms, r0, r1); else
#endif
            kern::pair_generic(base, o0, w0, o1, w1, terms, r0, r1);
            store_tile(p, r0, q0, p.bias[v0], resid ? resid + v0 * plane_out : nullptr, out + v0 * plane_out, act);
            if (v1 != v0)
                store_tile(p, r1, q0, p.bias[v1], resid ? resid + v1 * plane_out : nullptr, out + v1 * plane_out, act);
        }
        return;
    }
    if (p.family == VEC) {
        using VecKernel = void (*)(const float *, const int32_t *, const float *, int, float *, const kern::VecOut *);
        VecKernel full = nullptr, last = nullptr;
#if XK_X86
        static const VecKernel by_vec[kern::VEC_MAX] = {
            kern::vec_avx2<1>, kern::vec_avx2<2>, kern::vec_avx2<3>, kern::vec_avx2<4>,
            kern::vec_avx2<5>, kern::vec_avx2<6>, kern::vec_avx2<7>, kern::vec_avx2<8>};
        if (avx2) { full = by_vec[p.vec - 1]; last = by_vec[p.vec_last - 1]; }
#endif
        const int64_t items = p.cout * p.n_tiles;
        // consecutive items share a tile, so a thread's input rows stay in its cache
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            const int64_t tile = it / p.cout, v = it % p.cout, q0 = tile * p.tile;
            const bool is_last = tile == p.n_tiles - 1;
            const int32_t *o = p.off.data() + v * terms;
            const float *w = p.wt.data() + v * terms;
            alignas(32) float res[kern::VEC_MAX * 8];
            if (full) {
                VecKernel kernel = is_last ? last : full;
                if (p.wq == p.wo) {  // the tile's outputs are contiguous: the kernel finishes it
                    const kern::VecOut e{p.bias[v], resid ? resid + v * plane_out + q0 : nullptr, out + v * plane_out + q0,
                                         int(std::min<int64_t>(p.tile, plane_out - q0)), act};
                    kernel(planes + q0, o, w, terms, nullptr, &e);
                    continue;
                }
                kernel(planes + q0, o, w, terms, res, nullptr);
            } else {
                kern::vec_generic(planes + q0, o, w, terms, is_last ? p.vec_last : p.vec, res);
            }
            store_tile(p, res, q0, p.bias[v], resid ? resid + v * plane_out : nullptr, out + v * plane_out, act);
        }
        return;
    }
    if (p.run) {  // dense: runs of rows (strips) or of flat-plane tiles, each for four outputs
        const int64_t nvb = int64_t(p.blocks.size());
        const int64_t span = p.strips ? p.ho : p.n_tiles, runs = (span + p.run - 1) / p.run, items = nvb * runs;
        // consecutive items share a run, so its input stays in cache across the output blocks
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            const int64_t r = it / nvb, vb = it % nvb, s0 = r * p.run, s1 = std::min(span, s0 + p.run);
            const int v = p.blocks[size_t(vb)];
            // strips: rows s0..s1 of wo columns; flat: positions [s0 T, min(s1 T, ho wo)) as one row
            const int64_t q0 = p.strips ? s0 * p.wq : s0 * p.tile, at = p.strips ? s0 * p.wo : q0;
            kern::DenseOut e{p.bias.data() + v, {}, {}, p.wo, p.wq, int(p.strips ? s1 - s0 : 1),
                             int(p.strips ? p.wo : std::min(s1 * p.tile, plane_out) - q0), act};
            for (int u = 0; u < 4; ++u) {
                e.resid[u] = resid ? resid + (v + u) * plane_out + at : nullptr;
                e.out[u] = out + (v + u) * plane_out + at;
            }
            const int32_t *off = p.off.data() + vb * terms;
            const float *w4 = p.wt.data() + vb * terms * 4;
#if XK_X86
            if (avx2) { kern::dense4_avx2(planes + q0, off, w4, terms, e); continue; }
#endif
            kern::dense4_generic(planes + q0, off, w4, terms, e);
        }
        return;
    }
    const int64_t nvb = int64_t(p.blocks.size()), items = nvb * p.n_tiles;
    // consecutive items share a tile, so a thread's input rows stay in its cache
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t it = 0; it < items; ++it) {
        const int64_t tile = it / nvb, vb = it % nvb;
        // q0: the tile's first plane position; at: its first output; tiles within rows (strips)
        // or over the plane
        const int64_t y = p.strips ? tile / p.strips : 0, x0 = p.strips ? tile % p.strips * p.tile : 0;
        const int64_t q0 = p.strips ? y * p.wq + x0 : tile * p.tile, at = p.strips ? y * p.wo + x0 : q0;
        const float *base = planes + q0;
        // a tile of contiguous outputs: the kernel finishes it
        const bool whole = avx2 && (p.strips || (p.wq == p.wo && q0 + p.tile <= plane_out));
        alignas(32) float res[4 * kern::SHARED_T];
        const int v = p.blocks[vb];
        const int32_t *off = p.off.data() + vb * terms;
        const float *w4 = p.wt.data() + vb * terms * 4;
#if XK_X86
        if (whole) {
            kern::Epilogue e{p.bias.data() + v, {}, {}, act,
                             int(p.strips ? std::min<int64_t>(p.tile, p.wo - x0) : p.tile)};
            for (int u = 0; u < 4; ++u) {
                e.resid[u] = resid ? resid + (v + u) * plane_out + at : nullptr;
                e.out[u] = out + (v + u) * plane_out + at;
            }
            kern::shared4_avx2(base, off, w4, terms, res, &e);
            continue;
        }
        if (avx2) kern::shared4_avx2(base, off, w4, terms, res); else
#endif
        kern::shared4_generic(base, off, w4, terms, res);
        for (int u = 0; u < 4; ++u) {
            if (p.strips) {
                const int64_t o = (v + u) * plane_out + at;
                finish(res + u * kern::SHARED_T, p.bias[v + u], resid ? resid + o : nullptr, out + o,
                       std::min<int64_t>(p.tile, p.wo - x0), act);
            } else {
                store_tile(p, res + u * kern::SHARED_T, q0, p.bias[v + u], resid ? resid + (v + u) * plane_out : nullptr,
                           out + (v + u) * plane_out, act);
            }
        }
    }
}

}  // namespace

// ---------------------------------------------------------------- planning (per input shape)
Plan &Engine::plan_for(const int64_t shape[4]) {
    if (plan_ && std::equal(shape, shape + 4, plan_->shape)) return *plan_;
    plan_.reset();
    auto plan = std::make_unique<Plan>();
    Plan &P = *plan;
    std::copy(shape, shape + 4, P.shape);
    const auto &nodes = model_->nodes;
    const int nv = int(nodes.size()) + 1, ns = int(steps_.size());
    const int64_t B = shape[0];
    for (int a = 0; a < 4; ++a)
        if (shape[a] < 1 || shape[a] > (int64_t(1) << 40)) fail("input sizes must be positive, got " + shape_str(Shape(shape, shape + 4)));
    // shapes, step by step (fused nodes checked in turn, each naming itself)
    P.shapes.assign(nv, Shape());
    P.shapes[0] = Shape(shape, shape + 4);
    numel(P.shapes[0]);
    for (auto &s : steps_) {
        for (int k : s.pre_nodes) {
            std::vector<const Shape *> in;
            for (int v : nodes[k].inputs) in.push_back(&P.shapes[v]);
            P.shapes[k + 1] = infer_shape(nodes[k], in);
        }
        int prev = -1;
        for (int k : s.nodes) {
            const Node &n = nodes[k];
            std::vector<const Shape *> in;
            for (int v : n.inputs) in.push_back(&P.shapes[v]);
            if (prev >= 0 && n.op == Op::add) {  // the fused residual add: conv output + resid
                in = {&P.shapes[n.inputs[0]], &P.shapes[n.inputs[1]]};
            }
            P.shapes[k + 1] = infer_shape(n, in);
            numel(P.shapes[k + 1]);
            prev = k;
        }
    }
    // storages: one per produced value, views share, concat inputs become slices
    std::vector<Storage> S;
    std::vector<int> sto(nv, -1), prod(nv, -1), last(nv, -1);
    auto per_sample = [&](int v) { return numel(P.shapes[v], 1); };
    auto fresh = [&](int v) {
        Storage st;
        st.size = per_sample(v);
        st.values = {v};
        S.push_back(st);
        sto[v] = int(S.size()) - 1;
    };
    fresh(0);
    S[0].external = true;
    prod[0] = -1;
    for (int s = 0; s < ns; ++s) {
        const Step &st = steps_[s];
        if (st.kind == Kind::view) { sto[st.out] = sto[st.in[0]]; S[sto[st.out]].values.push_back(st.out); }
        else fresh(st.out);
        prod[st.out] = s;
        last[st.out] = std::max(last[st.out], s);
        for (int v : st.in) last[v] = std::max(last[v], s);
        if (st.resid >= 0) last[st.resid] = std::max(last[st.resid], s);
    }
    last[model_->output] = ns;
    auto root = [&](int id) { while (S[id].parent >= 0) id = S[id].parent; return id; };
    P.copy.assign(ns, {});
    P.concat_off.assign(ns, {});
    for (int s = ns - 1; s >= 0; --s) {
        const Step &st = steps_[s];
        if (st.kind != Kind::concat) continue;
        const Shape &y = P.shapes[st.out];
        int64_t axis = st.node->axis < 0 ? st.node->axis + int64_t(y.size()) : st.node->axis;
        int64_t inner = numel(y, size_t(axis) + 1), at = 0;
        P.copy[s].assign(st.in.size(), 1);
        for (size_t k = 0; k < st.in.size(); ++k) {
            const int u = st.in[k];
            P.concat_off[s].push_back(at * inner);
            const int su = sto[u], sc = sto[st.out];
            bool ok = axis == 1 && !S[su].external && S[su].parent < 0 && su != sc && root(sc) != su &&
                      S[su].size == per_sample(u) && std::count(st.in.begin(), st.in.end(), u) == 1;
            if (ok) {
                S[su].parent = sc;
                S[su].off = at * inner;
                S[sc].children.push_back(su);
                P.copy[s][k] = 0;
            }
            at += P.shapes[u][size_t(axis)];
        }
    }
    // writing over a value: nothing that shares its memory may be read later
    auto subtree_values = [&](int id, std::vector<int> &out, auto &&self) -> void {
        out.insert(out.end(), S[id].values.begin(), S[id].values.end());
        for (int c : S[id].children) self(c, out, self);
    };
    auto can_write = [&](int u, int s) {
        const int su = sto[u];
        if (S[u == 0 ? 0 : su].external || S[su].external) return false;
        std::vector<int> vals;
        subtree_values(su, vals, subtree_values);
        for (int a = S[su].parent; a >= 0; a = S[a].parent) vals.insert(vals.end(), S[a].values.begin(), S[a].values.end());
        for (int w : vals)
            if (last[w] > s || prod[w] > s) return false;
        return true;
    };
    auto move_into = [&](int out, int u) {
        int old = sto[out];
        S[old].values.erase(std::remove(S[old].values.begin(), S[old].values.end(), out), S[old].values.end());
        sto[out] = sto[u];
        S[sto[u]].values.push_back(out);
    };
    for (int s = 0; s < ns; ++s) {
        const Step &st = steps_[s];
        if (!S[sto[st.out]].children.empty() || S[sto[st.out]].parent >= 0 || S[sto[st.out]].values.size() != 1) continue;
        std::vector<int> cands;
        if (st.kind == Kind::eltwise) cands = st.in;
        else if (st.kind == Kind::conv && st.resid >= 0 && root(sto[st.resid]) != root(sto[st.in[0]])) cands = {st.resid};
        for (int u : cands)
            if (S[sto[u]].size == per_sample(st.out) && can_write(u, s)) { move_into(st.out, u); break; }
    }
    // conv plans and their plane scratch
    P.conv.resize(ns);
    struct Block { int64_t size, first, last; int storage; };
    std::vector<Block> blocks;
    for (int s = 0; s < ns; ++s) {
        const Step &st = steps_[s];
        if (st.kind != Kind::conv) continue;
        const Node *pre = st.pre_nodes.empty() ? nullptr : &nodes[size_t(st.pre_nodes[0])];
        const Shape &xs = P.shapes[st.in[0]];
        if (st.pool) {  // the conv on the pooled input, the pool's output shape; the pool takes the affine
            const Shape &ys = P.shapes[size_t(st.pool - nodes.data() + 1)];
            P.conv[s] = plan_conv(*st.node, {xs[0], xs[1], ys[2], ys[3]}, ys, false, nullptr, NONE);
            ConvPlan &cp = *P.conv[s];
            cp.pool = st.pool;
            cp.pool_pre = pre;
            cp.pool_pre_act = st.pre_act;
            cp.pool_h = xs[2];
            cp.pool_w = xs[3];
            cp.pooled = (cp.scratch_size + 15) / 16 * 16;
            cp.pool_buf = cp.pooled + (mul(cp.cin, cp.h * cp.w) + 15) / 16 * 16;
            cp.pool_threads = plan_threads();
            cp.scratch_size = cp.pool_buf + (pre ? mul(cp.pool_threads, (mul(xs[2], xs[3]) + 15) / 16 * 16) : 0);
        } else {
            P.conv[s] = plan_conv(*st.node, xs, P.shapes[st.node - nodes.data() + 1], S[sto[st.in[0]]].external, pre,
                                  st.pre_act);
        }
        // whole cache lines, so every block placed after it starts 64-byte aligned
        if (P.conv[s]->scratch_size) blocks.push_back({(P.conv[s]->scratch_size + 15) / 16 * 16, s, s, -1 - s});
    }
    // lifetimes of root storages
    for (size_t id = 0; id < S.size(); ++id) {
        if (S[id].parent >= 0 || S[id].external) continue;
        std::vector<int> vals;
        subtree_values(int(id), vals, subtree_values);
        if (vals.empty()) continue;
        int64_t first = ns, lastr = -1;
        for (int w : vals) { first = std::min<int64_t>(first, prod[w]); lastr = std::max<int64_t>(lastr, last[w]); }
        S[id].stride = (S[id].size + 15) / 16 * 16;
        blocks.push_back({mul(S[id].stride, B), first, lastr, int(id)});
    }
    // greedy placement, largest first: lowest offset clear of every block alive at the same time
    std::sort(blocks.begin(), blocks.end(), [](const Block &a, const Block &b) {
        return a.size != b.size ? a.size > b.size : a.first < b.first;
    });
    std::vector<std::pair<int64_t, int64_t>> placed;  // (offset, index in blocks)
    std::vector<int64_t> offset(blocks.size(), 0);
    int64_t total = 0;
    for (size_t k = 0; k < blocks.size(); ++k) {
        std::vector<std::pair<int64_t, int64_t>> busy;
        for (auto &pl : placed) {
            const Block &o = blocks[size_t(pl.second)];
            if (o.first <= blocks[k].last && blocks[k].first <= o.last) busy.emplace_back(pl.first, pl.first + o.size);
        }
        std::sort(busy.begin(), busy.end());
        int64_t at = 0;
        for (auto &b : busy) {
            if (at + blocks[k].size <= b.first) break;
            at = std::max(at, b.second);
        }
        offset[k] = at;
        placed.emplace_back(at, int64_t(k));
        total = std::max(total, at + blocks[k].size);
    }
    for (size_t k = 0; k < blocks.size(); ++k) {
        if (blocks[k].storage >= 0) S[size_t(blocks[k].storage)].arena = offset[k];
        else P.conv[size_t(-1 - blocks[k].storage)]->scratch = offset[k];
    }
    P.arena_size = total + 64;  // slack: tiles read a little past a value's end
    if (P.arena_size > (int64_t(1) << 34)) fail("the network needs more than 64 GiB at this input size");
    {  // from 1 MiB on, in whole 2 MiB huge pages where the system allows them (madvise): fewer
       // TLB misses over the activations; 64-byte aligned in any case
        const size_t need = size_t(P.arena_size) * sizeof(float), huge = size_t(2) << 20;
        const size_t align = need >= huge / 2 ? huge : 64, bytes = (need + align - 1) / align * align;
#if defined(_WIN32)
        void *mem = _aligned_malloc(bytes, align);
#else
        void *mem = nullptr;
        if (posix_memalign(&mem, align, bytes) != 0) mem = nullptr;
#endif
        if (!mem) fail("cannot allocate the arena (" + std::to_string(bytes) + " bytes)");
#ifdef MADV_HUGEPAGE
        if (align == huge) madvise(mem, bytes, MADV_HUGEPAGE);
#endif
        std::memset(mem, 0, bytes);
        P.raw.reset(static_cast<float *>(mem));
        P.arena = P.raw.get();
    }
    // where each value lives
    P.base.assign(nv, 0); P.stride.assign(nv, 0); P.ext.assign(nv, 0);
    for (int v = 0; v < nv; ++v) {
        if (sto[v] < 0) continue;
        int id = sto[v];
        int64_t off = 0;
        while (S[id].parent >= 0) { off += S[id].off; id = S[id].parent; }
        if (S[id].external) { P.ext[v] = 1; P.base[v] = off; P.stride[v] = S[0].size; }
        else { P.base[v] = S[id].arena + off; P.stride[v] = S[id].stride; }
    }
    // values absorbed into a fused step are never stored: point them at the step's output
    for (auto &st : steps_)
        for (size_t j = 1; j < st.nodes.size(); ++j) {
            int v = st.nodes[j - 1] + 1;
            if (sto[v] < 0) { P.base[v] = P.base[st.out]; P.stride[v] = P.stride[st.out]; P.ext[v] = P.ext[st.out]; }
        }
    plan_ = std::move(plan);
    return *plan_;
}

std::map<std::string, int64_t> Engine::stats(const int64_t shape[4]) {
    Plan &P = plan_for(shape);
    std::map<std::string, int64_t> out{{"arena_bytes", P.arena_size * 4}, {"steps", int64_t(steps_.size())},
                                       {"concat_inputs", 0}, {"concat_copies", 0}, {"conv_vec", 0},
                                       {"conv_shared4", 0}, {"conv_shared4_rows", 0}, {"conv_winograd", 0}, {"conv_quads", 0}, {"conv_columns", 0},
                                       {"conv_depthwise", 0}, {"conv_rows3", 0}, {"conv_rows3_16", 0}, {"conv_first", 0},
                                       {"conv_direct", 0}, {"conv_pre_affine", 0}, {"conv_dense", 0},
                                       {"conv_after_pool", 0}};
    for (size_t s = 0; s < steps_.size(); ++s) {
        for (char c : P.copy[s]) { out["concat_inputs"] += 1; out["concat_copies"] += c; }
        if (!P.conv[s]) continue;
        const ConvPlan &cp = *P.conv[s];
        out[cp.family == VEC ? "conv_vec" : cp.family == SHARED4 ? "conv_shared4" : cp.family == ROWS3 ? "conv_rows3"
            : cp.family == WINO ? "conv_winograd" : cp.family == QUADS ? "conv_quads" : cp.family == COLS ? "conv_columns" : cp.family == FIRST ? "conv_first" : "conv_depthwise"] += 1;
        out["conv_direct"] += cp.direct;
        out["conv_rows3_16"] += cp.family == ROWS3 && cp.vec == 2;
        out["conv_shared4_rows"] += cp.family == SHARED4 && cp.strips > 0;
        out["conv_pre_affine"] += cp.pre != nullptr || cp.pool_pre != nullptr;
        out["conv_after_pool"] += cp.pool != nullptr;
        out["conv_dense"] += cp.family == SHARED4 && cp.run > 0;
    }
    return out;
}

std::vector<int64_t> Engine::output_shape(const int64_t shape[4]) {
    return plan_for(shape).shapes[size_t(model_->output)];
}

// ---------------------------------------------------------------- running
namespace {

void run_linear(const Node &n, const float *x, float *out, int act) {
    const int64_t n_out = n.weight.dim(0), n_in = n.weight.dim(1);
#if XK_X86
    if (Engine::use_avx2()) kern::matvec_avx2(n.weight.f.data(), x, n_in, n_out, out); else
#endif
    kern::matvec_generic(n.weight.f.data(), x, n_in, n_out, out);
    for (int64_t o = 0; o < n_out; ++o) out[o] = act_apply(out[o] + (n.bias.present ? n.bias.f[o] : 0.f), act);
}

void run_xlinear(const Node &n, const float *x, float *out, int act) {
    const int64_t n_out = n.weight.dim(0), d = n.weight.dim(1);
    for (int64_t o = 0; o < n_out; ++o) {
        float s = 0;
        for (int64_t i = 0; i < d; ++i) s += n.weight.f[o * d + i] * x[n.index.i[o * d + i]];
        out[o] = act_apply(s + (n.bias.present ? n.bias.f[o] : 0.f), act);
    }
}

template <int ACT>
void eltwise_t(const Node &n, const float *a, const float *b, float *out, const Shape &s, int nt) {
    const int64_t total = numel(s, 1);
    if (n.op == Op::affine) {
        const int64_t c = s[1], inner = total / c;
#pragma omp parallel for num_threads(nt) if (nt > 1 && total > 65536) schedule(static)
        for (int64_t ch = 0; ch < c; ++ch) affine_apply(n, ACT, ch, a + ch * inner, out + ch * inner, inner);
    } else if (n.op == Op::add) {
#pragma omp parallel for num_threads(nt) if (nt > 1 && total > 65536) schedule(static)
        for (int64_t k = 0; k < total; ++k) out[k] = act_t<ACT>(a[k] + b[k]);
    } else {
#pragma omp parallel for num_threads(nt) if (nt > 1 && total > 65536) schedule(static)
        for (int64_t k = 0; k < total; ++k) out[k] = act_t<ACT>(a[k]);
    }
}

// max over a window, separably: each input row's max over the window's columns (into
// rowmax, one row of Wo per input row), then the max of those over the window's rows
void run_maxpool(const Node &n, const Shape &xs, const Shape &ys, const float *x, float *out, int nt) {
    const int64_t C = xs[1], H = xs[2], W = xs[3], Ho = ys[2], Wo = ys[3];
    const int64_t kh = n.kernel[0], kw = n.kernel[1], dh = n.dilation[0], dw = n.dilation[1];
    auto window = [](int64_t start, int64_t k, int64_t d, int64_t size, int64_t &a, int64_t &b) {
        a = 0; b = k;  // taps a..b-1 fall inside [0, size)
        while (a < k && start + a * d < 0) ++a;
        while (b > a && start + (b - 1) * d >= size) --b;
    };
#if XK_X86
    if (Engine::use_avx2() && kh == 3 && kw == 3 && n.stride[0] == 2 && n.stride[1] == 2 && dh == 1 && dw == 1) {
#pragma omp parallel for num_threads(nt) if (nt > 1 && C * Ho * Wo > 16384) schedule(static)
        for (int64_t c = 0; c < C; ++c)
            kern::maxpool3s2_avx2(x + c * H * W, H, W, n.padding[0], n.padding[1], Ho, Wo, out + c * Ho * Wo);
        return;
    }
#endif
    std::vector<int64_t> cols(static_cast<size_t>(3 * Wo));
    for (int64_t xo = 0; xo < Wo; ++xo) {
        const int64_t c = xo * n.stride[1] - n.padding[1];
        cols[size_t(3 * xo)] = c;
        window(c, kw, dw, W, cols[size_t(3 * xo + 1)], cols[size_t(3 * xo + 2)]);
    }
#pragma omp parallel num_threads(nt) if (nt > 1 && C * Ho * Wo > 16384)
    {
        std::vector<float> rowmax(static_cast<size_t>(H * Wo));
#pragma omp for schedule(static)
        for (int64_t c = 0; c < C; ++c) {
            const float *in = x + c * H * W;
            for (int64_t h = 0; h < H; ++h) {
                const float *row = in + h * W;
                float *rm = rowmax.data() + h * Wo;
                for (int64_t xo = 0; xo < Wo; ++xo) {
                    const float *q = row + cols[size_t(3 * xo)];
                    float m = -INFINITY;
                    int nan = 0;
                    for (int64_t kx = cols[size_t(3 * xo + 1)]; kx < cols[size_t(3 * xo + 2)]; ++kx) {
                        const float v = q[kx * dw];
                        nan |= v != v;          // no branch on the data: maxss and a flag
                        m = v > m ? v : m;
                    }
                    rm[xo] = nan ? NAN : m;  // NaN propagates, as in torch
                }
            }
            float *o = out + c * Ho * Wo;
            for (int64_t y = 0; y < Ho; ++y) {
                const int64_t r = y * n.stride[0] - n.padding[0];
                int64_t a, b;
                window(r, kh, dh, H, a, b);
                float *oy = o + y * Wo;
                for (int64_t xo = 0; xo < Wo; ++xo) oy[xo] = -INFINITY;
                for (int64_t ky = a; ky < b; ++ky) {
                    const float *rm = rowmax.data() + (r + ky * dh) * Wo;
                    for (int64_t xo = 0; xo < Wo; ++xo) oy[xo] = rm[xo] > oy[xo] || rm[xo] != rm[xo] ? rm[xo] : oy[xo];
                }
            }
        }
    }
}

// torch's avg_pool2d window size along one axis
int64_t avg_count(int64_t size, int64_t o, int64_t k, int64_t s, int64_t p, bool include_pad) {
    const int64_t start = o * s - p, end = std::min(start + k, size + p);
    if (include_pad) return end - start;
    return std::min(end, size) - std::max<int64_t>(start, 0);
}

// One channel's average pool: (h, w) -> (ho, wo).
void avgpool_plane(const Node &n, int64_t H, int64_t W, int64_t Ho, int64_t Wo, const float *in, float *o) {
#if XK_X86
    // 2x2 windows at stride 2 inside the input (DenseNet's transitions): whole vectors of outputs
    if (n.kernel[0] == 2 && n.kernel[1] == 2 && n.stride[0] == 2 && n.stride[1] == 2 && n.padding[0] == 0 &&
        n.padding[1] == 0 && 2 * Ho <= H && 2 * Wo <= W && Engine::use_avx2()) {
        const float div = float(n.divisor ? n.divisor : 4);
        for (int64_t y = 0; y < Ho; ++y) kern::avgpool2s2_row_avx2(in + 2 * y * W, in + (2 * y + 1) * W, o + y * Wo, Wo, div);
        return;
    }
#endif
    for (int64_t y = 0; y < Ho; ++y)
        for (int64_t xo = 0; xo < Wo; ++xo) {
            float s = 0;
            for (int64_t ky = 0; ky < n.kernel[0]; ++ky) {
                const int64_t iy = y * n.stride[0] - n.padding[0] + ky;
                if (iy < 0 || iy >= H) continue;
                for (int64_t kx = 0; kx < n.kernel[1]; ++kx) {
                    const int64_t ix = xo * n.stride[1] - n.padding[1] + kx;
                    if (ix >= 0 && ix < W) s += in[iy * W + ix];
                }
            }
            const int64_t div = n.divisor ? n.divisor
                : avg_count(H, y, n.kernel[0], n.stride[0], n.padding[0], n.count_include_pad) *
                  avg_count(W, xo, n.kernel[1], n.stride[1], n.padding[1], n.count_include_pad);
            o[y * Wo + xo] = s / float(div);
        }
}

void run_avgpool(const Node &n, const Shape &xs, const Shape &ys, const float *x, float *out, int nt) {
    const int64_t C = xs[1], H = xs[2], W = xs[3], Ho = ys[2], Wo = ys[3];
#pragma omp parallel for num_threads(nt) if (nt > 1 && C * Ho * Wo > 16384) schedule(static)
    for (int64_t c = 0; c < C; ++c) avgpool_plane(n, H, W, Ho, Wo, x + c * H * W, out + c * Ho * Wo);
}

// The pool of a conv after its pool (ConvPlan::pool): x (cin, pool_h, pool_w), through the
// input's affine, into the scratch's pooled input.
void run_pool_first(const ConvPlan &p, const float *x, float *scratch, int nt) {
    const int64_t H = p.pool_h, W = p.pool_w, buf = (H * W + 15) / 16 * 16;
    const int nw = int(std::min<int64_t>(nt, p.pool_threads));  // the threads the buffers have room for
#pragma omp parallel for num_threads(nw) if (nw > 1 && p.cin * p.h * p.w > 16384) schedule(static)
    for (int64_t c = 0; c < p.cin; ++c) {
        const float *in = x + c * H * W;
        if (p.pool_pre) {
            float *mine = scratch + p.pool_buf + thread_id() * buf;
            affine_apply(*p.pool_pre, p.pool_pre_act, c, in, mine, H * W);
            in = mine;
        }
        avgpool_plane(*p.pool, H, W, p.h, p.w, in, scratch + p.pooled + c * p.h * p.w);
    }
}

void run_adaptive(const Shape &xs, const Shape &ys, const float *x, float *out) {
    const int64_t C = xs[1], H = xs[2], W = xs[3], oh = ys[2], ow = ys[3];
    if (oh == 1 && ow == 1) {  // a global average: eight running sums a channel, in doubles
        const int64_t n = H * W;
        for (int64_t c = 0; c < C; ++c) {
            const float *in = x + c * n;
            double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int64_t k = 0;
            for (; k + 8 <= n; k += 8)
                for (int j = 0; j < 8; ++j) lane[j] += in[k + j];
            double s = ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
            for (; k < n; ++k) s += in[k];
            out[c] = float(s / double(n));
        }
        return;
    }
    for (int64_t c = 0; c < C; ++c) {
        const float *in = x + c * H * W;
        for (int64_t i = 0; i < oh; ++i) {
            const int64_t r0 = i * H / oh, r1 = ((i + 1) * H + oh - 1) / oh;
            for (int64_t j = 0; j < ow; ++j) {
                const int64_t c0 = j * W / ow, c1 = ((j + 1) * W + ow - 1) / ow;
                double s = 0;
                for (int64_t r = r0; r < r1; ++r)
                    for (int64_t k = c0; k < c1; ++k) s += in[r * W + k];
                out[(c * oh + i) * ow + j] = float(s / double((r1 - r0) * (c1 - c0)));
            }
        }
    }
}

}  // namespace

void Engine::predict(const float *x, const int64_t shape[4], float *out, int64_t out_len, int threads_req,
                     std::vector<std::pair<int, double>> *times) {
    Plan &P = plan_for(shape);
    const int out_v = model_->output;
    const int64_t out_size = numel(P.shapes[size_t(out_v)]);
    if (out_len < out_size)
        fail("the output buffer holds " + std::to_string(out_len) + " floats; the network writes " + std::to_string(out_size));
    P.x = x;
    const int nt = n_threads(threads_req > 0 ? threads_req : threads);
    const int64_t B = shape[0];
    for (size_t s = 0; s < steps_.size(); ++s) {
        const Step &st = steps_[s];
        const Node &n = *st.node;
        const auto start = std::chrono::steady_clock::now();
        const Shape &xs = P.shapes[size_t(st.in[0])], &ys = P.shapes[size_t(st.out)];
        for (int64_t b = 0; b < B; ++b) {
            const float *in0 = P.ptr(st.in[0], b);
            float *y = P.ptr(st.out, b);
            switch (st.kind) {
                case Kind::conv: {
                    const ConvPlan &cp = *P.conv[s];
                    float *scratch = cp.scratch >= 0 ? P.arena + cp.scratch : nullptr;
                    const float *x_conv = in0;
                    if (cp.pool) {
                        run_pool_first(cp, in0, scratch, nt);
                        x_conv = scratch + cp.pooled;
                    }
                    run_conv(cp, x_conv, scratch, st.resid >= 0 ? P.ptr(st.resid, b) : nullptr, y, st.act, nt);
                    break;
                }
                case Kind::linear: run_linear(n, in0, y, st.act); break;
                case Kind::xlinear: run_xlinear(n, in0, y, st.act); break;
                case Kind::eltwise: {
                    const float *in1 = st.in.size() > 1 ? P.ptr(st.in[1], b) : nullptr;
                    if (st.act == RELU) eltwise_t<RELU>(n, in0, in1, y, xs, nt);
                    else if (st.act == RELU6) eltwise_t<RELU6>(n, in0, in1, y, xs, nt);
                    else eltwise_t<NONE>(n, in0, in1, y, xs, nt);
                    break;
                }
                case Kind::maxpool: run_maxpool(n, xs, ys, in0, y, nt); break;
                case Kind::avgpool: run_avgpool(n, xs, ys, in0, y, nt); break;
                case Kind::adaptive: run_adaptive(xs, ys, in0, y); break;
                case Kind::concat: {
                    int64_t axis = n.axis < 0 ? n.axis + int64_t(ys.size()) : n.axis;
                    int64_t outer = numel(ys, 1) / numel(ys, size_t(axis)), row = numel(ys, size_t(axis));
                    for (size_t k = 0; k < st.in.size(); ++k) {
                        if (!P.copy[s][k]) continue;
                        const float *src = P.ptr(st.in[k], b);
                        const int64_t len = numel(P.shapes[size_t(st.in[k])], size_t(axis));
                        for (int64_t o = 0; o < outer; ++o)
                            std::memmove(y + o * row + P.concat_off[s][k], src + o * len, sizeof(float) * size_t(len));
                    }
                    break;
                }
                case Kind::view: break;
            }
        }
        if (times)
            times->emplace_back(st.nodes[0], std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const int64_t per = numel(P.shapes[size_t(out_v)], 1);
    for (int64_t b = 0; b < B; ++b) std::memcpy(out + b * per, P.ptr(out_v, b), sizeof(float) * size_t(per));
}

}  // namespace xk
