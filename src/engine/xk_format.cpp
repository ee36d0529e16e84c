// Reading a .xk file without Python: a stored (uncompressed) zip of .npy members, one
// of them graph.json.npy, a 0-d numpy unicode array holding JSON (xkern.runtime.format).
// Every offset, length and count read from the file is checked against the bytes that
// are there before it is used: a truncated, corrupted or hostile file raises Error.
#include "xk_model.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>

namespace xk {

const char *op_name(Op op) {
    static const char *names[] = {"conv2d", "xconv2d", "linear", "xlinear", "affine", "relu", "relu6",
                                  "maxpool2d", "avgpool2d", "adaptive_avgpool2d", "add", "concat",
                                  "flatten", "reshape"};
    return names[static_cast<int>(op)];
}

namespace {

[[noreturn]] void fail(const std::string &msg) { throw Error(msg); }

uint16_t rd16(const uint8_t *p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t *p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24); }
uint64_t rd64(const uint8_t *p) { return uint64_t(rd32(p)) | (uint64_t(rd32(p + 4)) << 32); }

struct Span { const uint8_t *p; size_t n; };

// ------------------------------------------------------------------ zip (stored members only)
std::map<std::string, Span> read_zip(const uint8_t *d, size_t n) {
    const size_t eocd_len = 22;
    if (n < eocd_len) fail("not an xkern runtime file (.xk): too short to be a zip archive");
    // The end-of-central-directory record is in the last 22 + 65535 bytes.
    size_t lo = n > eocd_len + 65535 ? n - eocd_len - 65535 : 0, at = SIZE_MAX;
    for (size_t i = n - eocd_len + 1; i-- > lo;)
        if (rd32(d + i) == 0x06054b50) { at = i; break; }
    if (at == SIZE_MAX) fail("not an xkern runtime file (.xk): no zip directory (truncated or not a zip)");
    uint64_t count = rd16(d + at + 10), cd_size = rd32(d + at + 12), cd_off = rd32(d + at + 16);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {  // zip64
        if (at < 20 || rd32(d + at - 20) != 0x07064b50) fail("corrupt zip: zip64 locator missing");
        uint64_t z = rd64(d + at - 20 + 8);
        if (z > n || n - z < 56 || rd32(d + z) != 0x06064b50) fail("corrupt zip: bad zip64 directory record");
        count = rd64(d + z + 32); cd_size = rd64(d + z + 40); cd_off = rd64(d + z + 48);
    }
    if (cd_off > n || cd_size > n - cd_off) fail("corrupt zip: the directory lies outside the file (truncated?)");
    std::map<std::string, Span> members;
    const uint8_t *p = d + cd_off, *end = d + cd_off + cd_size;
    for (uint64_t k = 0; k < count; ++k) {
        if (end - p < 46 || rd32(p) != 0x02014b50) fail("corrupt zip: bad directory entry");
        uint16_t method = rd16(p + 10), name_len = rd16(p + 28), extra_len = rd16(p + 30), comment_len = rd16(p + 32);
        uint64_t csize = rd32(p + 20), usize = rd32(p + 24), off = rd32(p + 42);
        if (size_t(end - p) < 46u + name_len + extra_len + comment_len) fail("corrupt zip: bad directory entry");
        std::string name(reinterpret_cast<const char *>(p + 46), name_len);
        const uint8_t *e = p + 46 + name_len, *e_end = e + extra_len;
        while (e_end - e >= 4) {  // zip64 extra: the fields that are 0xFFFFFFFF, in order
            uint16_t id = rd16(e), len = rd16(e + 2);
            if (e_end - e - 4 < len) break;
            if (id == 1) {
                const uint8_t *f = e + 4, *f_end = e + 4 + len;
                if (usize == 0xFFFFFFFFu) { if (f_end - f < 8) fail("corrupt zip: zip64 field"); usize = rd64(f); f += 8; }
                if (csize == 0xFFFFFFFFu) { if (f_end - f < 8) fail("corrupt zip: zip64 field"); csize = rd64(f); f += 8; }
                if (off == 0xFFFFFFFFu) { if (f_end - f < 8) fail("corrupt zip: zip64 field"); off = rd64(f); f += 8; }
            }
            e += 4 + len;
        }
        p += 46 + name_len + extra_len + comment_len;
        if (method != 0) fail("member " + name + " is compressed; .xk files are written uncompressed (np.savez)");
        if (csize != usize) fail("corrupt zip: member " + name + " has two sizes");
        if (off > n || n - off < 30 || rd32(d + off) != 0x04034b50) fail("corrupt zip: member " + name + " is missing (truncated file?)");
        uint64_t data = off + 30 + rd16(d + off + 26) + rd16(d + off + 28);
        if (data > n || csize > n - data) fail("member " + name + " runs past the end of the file (truncated?)");
        members[name] = Span{d + data, size_t(csize)};
    }
    return members;
}

// ------------------------------------------------------------------ .npy
struct Npy { char kind; int itemsize; std::vector<int64_t> shape; Span data; };

Npy read_npy(const std::string &name, Span s) {
    auto bad = [&](const std::string &why) -> void { fail("member " + name + " is not a valid .npy array: " + why); };
    if (s.n < 10 || std::memcmp(s.p, "\x93NUMPY", 6) != 0) bad("no .npy magic");
    int major = s.p[6];
    size_t hlen, hstart;
    if (major == 1) { hlen = rd16(s.p + 8); hstart = 10; }
    else if (major == 2 || major == 3) { if (s.n < 12) bad("short header"); hlen = rd32(s.p + 8); hstart = 12; }
    else { bad("unknown version"); return {}; }
    if (hlen > s.n - hstart) bad("header runs past the member");
    std::string h(reinterpret_cast<const char *>(s.p + hstart), hlen);
    // {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
    auto field = [&](const char *key) -> size_t {
        size_t k = h.find(std::string("'") + key + "'");
        if (k == std::string::npos) bad(std::string("no ") + key);
        k = h.find(':', k);
        if (k == std::string::npos) bad(std::string("no ") + key);
        return k + 1;
    };
    size_t k = field("descr");
    size_t q0 = h.find('\'', k), q1 = q0 == std::string::npos ? q0 : h.find('\'', q0 + 1);
    if (q1 == std::string::npos) bad("descr");
    std::string descr = h.substr(q0 + 1, q1 - q0 - 1);
    Npy a;
    if (descr == "<f4") { a.kind = 'f'; a.itemsize = 4; }
    else if (descr == "<i8") { a.kind = 'i'; a.itemsize = 8; }
    else if (descr.size() >= 3 && descr[0] == '<' && descr[1] == 'U') {
        a.kind = 'U';
        long long chars = 0;
        for (size_t j = 2; j < descr.size(); ++j) {
            if (descr[j] < '0' || descr[j] > '9' || chars > (1LL << 40)) bad("descr " + descr);
            chars = chars * 10 + (descr[j] - '0');
        }
        a.itemsize = int(std::min<long long>(chars, 1LL << 28)) * 4;
        if (chars > (1LL << 28)) bad("string too long");
    } else bad("dtype " + descr + " (float32 '<f4' or int64 '<i8' expected)");
    k = field("fortran_order");
    while (k < h.size() && h[k] == ' ') ++k;
    if (h.compare(k, 5, "False") != 0) bad("fortran order");
    k = field("shape");
    while (k < h.size() && h[k] == ' ') ++k;
    if (k >= h.size() || h[k] != '(') bad("shape");
    ++k;
    uint64_t count = 1;
    for (;;) {
        while (k < h.size() && (h[k] == ' ' || h[k] == ',')) ++k;
        if (k >= h.size()) bad("shape");
        if (h[k] == ')') break;
        int64_t v = 0; size_t digits = 0;
        while (k < h.size() && h[k] >= '0' && h[k] <= '9') {
            v = v * 10 + (h[k++] - '0');
            if (++digits > 15) bad("shape entry too large");
        }
        if (!digits || a.shape.size() >= 8) bad("shape");
        a.shape.push_back(v);
        if (v && count > (uint64_t(1) << 50) / uint64_t(v)) bad("shape too large");
        count *= uint64_t(v);
    }
    size_t body = hstart + hlen;
    if (count > (s.n - body) / uint64_t(a.itemsize)) bad("its data is shorter than its shape says (truncated?)");
    a.data = Span{s.p + body, size_t(count) * a.itemsize};
    return a;
}

// ------------------------------------------------------------------ JSON
struct Json {
    enum Kind { Null, Bool, Num, Str, Arr, Obj } kind = Null;
    bool b = false;
    double num = 0;
    bool integral = false;
    int64_t i = 0;
    std::string s;
    std::vector<Json> a;
    std::vector<std::pair<std::string, Json>> o;
    const Json *get(const std::string &key) const {
        if (kind != Obj) return nullptr;
        for (auto &kv : o) if (kv.first == key) return &kv.second;
        return nullptr;
    }
};

struct JsonParser {
    const std::string &t;
    size_t k = 0;
    explicit JsonParser(const std::string &text) : t(text) {}
    [[noreturn]] void bad(const char *why) {
        fail(std::string("graph.json is not valid JSON: ") + why + " at character " + std::to_string(k));
    }
    void ws() { while (k < t.size() && (t[k] == ' ' || t[k] == '\n' || t[k] == '\r' || t[k] == '\t')) ++k; }
    bool lit(const char *w) {
        size_t n = std::strlen(w);
        if (t.compare(k, n, w) == 0) { k += n; return true; }
        return false;
    }
    static void utf8(std::string &out, uint32_t c) {
        if (c < 0x80) out += char(c);
        else if (c < 0x800) { out += char(0xC0 | (c >> 6)); out += char(0x80 | (c & 63)); }
        else if (c < 0x10000) { out += char(0xE0 | (c >> 12)); out += char(0x80 | ((c >> 6) & 63)); out += char(0x80 | (c & 63)); }
        else { out += char(0xF0 | (c >> 18)); out += char(0x80 | ((c >> 12) & 63)); out += char(0x80 | ((c >> 6) & 63)); out += char(0x80 | (c & 63)); }
    }
    uint32_t hex4() {
        if (t.size() - k < 4) bad("short \\u escape");
        uint32_t v = 0;
        for (int j = 0; j < 4; ++j) {
            char c = t[k++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= c - '0';
            else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
            else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
            else bad("bad \\u escape");
        }
        return v;
    }
    std::string str() {
        ++k;  // opening quote
        std::string out;
        for (;;) {
            if (k >= t.size()) bad("unterminated string");
            char c = t[k++];
            if (c == '"') return out;
            if (c != '\\') { out += c; continue; }
            if (k >= t.size()) bad("unterminated string");
            char e = t[k++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t c1 = hex4();
                    if (c1 >= 0xD800 && c1 < 0xDC00 && t.compare(k, 2, "\\u") == 0) {
                        k += 2;
                        uint32_t c2 = hex4();
                        if (c2 < 0xDC00 || c2 >= 0xE000) bad("bad surrogate pair");
                        c1 = 0x10000 + ((c1 - 0xD800) << 10) + (c2 - 0xDC00);
                    }
                    utf8(out, c1);
                    break;
                }
                default: bad("bad escape");
            }
        }
    }
    Json value(int depth) {
        if (depth > 64) bad("nested too deeply");
        ws();
        if (k >= t.size()) bad("unexpected end");
        Json v;
        char c = t[k];
        if (c == '{') {
            v.kind = Json::Obj; ++k; ws();
            if (k < t.size() && t[k] == '}') { ++k; return v; }
            for (;;) {
                ws();
                if (k >= t.size() || t[k] != '"') bad("expected a key");
                std::string key = str();
                ws();
                if (k >= t.size() || t[k] != ':') bad("expected ':'");
                ++k;
                v.o.emplace_back(std::move(key), value(depth + 1));
                ws();
                if (k < t.size() && t[k] == ',') { ++k; continue; }
                if (k < t.size() && t[k] == '}') { ++k; return v; }
                bad("expected ',' or '}'");
            }
        }
        if (c == '[') {
            v.kind = Json::Arr; ++k; ws();
            if (k < t.size() && t[k] == ']') { ++k; return v; }
            for (;;) {
                v.a.push_back(value(depth + 1));
                ws();
                if (k < t.size() && t[k] == ',') { ++k; continue; }
                if (k < t.size() && t[k] == ']') { ++k; return v; }
                bad("expected ',' or ']'");
            }
        }
        if (c == '"') { v.kind = Json::Str; v.s = str(); return v; }
        if (lit("null")) return v;
        if (lit("true")) { v.kind = Json::Bool; v.b = true; return v; }
        if (lit("false")) { v.kind = Json::Bool; return v; }
        // numbers, and Python's NaN / Infinity (json.dumps writes them in meta)
        v.kind = Json::Num;
        if (lit("NaN")) { v.num = std::nan(""); return v; }
        if (lit("Infinity")) { v.num = INFINITY; return v; }
        if (lit("-Infinity")) { v.num = -INFINITY; return v; }
        size_t start = k;
        bool neg = false;
        if (k < t.size() && t[k] == '-') { neg = true; ++k; }
        size_t d0 = k;
        uint64_t mag = 0;
        bool overflow = false;
        while (k < t.size() && t[k] >= '0' && t[k] <= '9') {
            if (mag > (uint64_t(1) << 62)) overflow = true;
            else mag = mag * 10 + uint64_t(t[k] - '0');
            ++k;
        }
        if (k == d0) bad("unexpected character");
        bool frac = false;
        if (k < t.size() && t[k] == '.') { frac = true; ++k; while (k < t.size() && t[k] >= '0' && t[k] <= '9') ++k; }
        if (k < t.size() && (t[k] == 'e' || t[k] == 'E')) {
            frac = true; ++k;
            if (k < t.size() && (t[k] == '+' || t[k] == '-')) ++k;
            while (k < t.size() && t[k] >= '0' && t[k] <= '9') ++k;
        }
        v.num = std::strtod(t.substr(start, k - start).c_str(), nullptr);
        if (!frac && !overflow) { v.integral = true; v.i = neg ? -int64_t(mag) : int64_t(mag); }
        return v;
    }
    Json parse() {
        Json v = value(0);
        ws();
        if (k != t.size()) bad("trailing characters");
        return v;
    }
};

// graph.json.npy: a 0-d '<U{n}' array: n UTF-32 code units (NUL-padded) -> UTF-8.
std::string read_text(const Npy &a) {
    if (a.kind != 'U' || !a.shape.empty()) fail("graph.json must be a 0-d unicode array");
    std::string out;
    size_t n = a.data.n / 4;
    for (size_t j = 0; j < n; ++j) {
        uint32_t c = rd32(a.data.p + 4 * j);
        if (c == 0) break;
        if (c > 0x10FFFF || (c >= 0xD800 && c < 0xE000)) fail("graph.json holds an invalid character");
        JsonParser::utf8(out, c);
    }
    return out;
}

// ------------------------------------------------------------------ the graph
struct Checker {
    std::string node;  // "node 'name' (op)" for messages
    [[noreturn]] void bad(const std::string &msg) const { fail(node + ": " + msg); }

    static std::string show(const Json &v) {
        switch (v.kind) {
            case Json::Null: return "None";
            case Json::Bool: return v.b ? "True" : "False";
            case Json::Num: return v.integral ? std::to_string(v.i) : std::to_string(v.num);
            case Json::Str: return "'" + v.s + "'";
            case Json::Arr: {
                std::string s = "[";
                for (size_t j = 0; j < v.a.size(); ++j) s += (j ? ", " : "") + show(v.a[j]);
                return s + "]";
            }
            default: return "{...}";
        }
    }
    const Json &attr(const Json &attrs, const char *key) const {
        const Json *v = attrs.get(key);
        if (!v) bad(std::string("attribute '") + key + "' is missing");
        return *v;
    }
    void invalid(const char *key, const Json &v) const { bad(std::string("attribute '") + key + "' is invalid: " + show(v)); }
    // attribute values are bounded so that no size computed from them can overflow
    static bool is_int(const Json &v, int64_t lo) { return v.kind == Json::Num && v.integral && v.i >= lo && v.i <= (int64_t(1) << 40); }
    void pair(const Json &attrs, const char *key, int64_t lo, int64_t out[2]) const {
        const Json &v = attr(attrs, key);
        if (v.kind != Json::Arr || v.a.size() != 2 || !is_int(v.a[0], lo) || !is_int(v.a[1], lo)) invalid(key, v);
        out[0] = v.a[0].i; out[1] = v.a[1].i;
    }
    int64_t integer(const Json &attrs, const char *key, int64_t lo) const {
        const Json &v = attr(attrs, key);
        if (v.kind != Json::Num || !v.integral || v.i < lo || v.i > (int64_t(1) << 40)) invalid(key, v);
        return v.i;
    }
    bool boolean(const Json &attrs, const char *key) const {
        const Json &v = attr(attrs, key);
        if (v.kind != Json::Bool) invalid(key, v);
        return v.b;
    }
};

std::string shape_str(const std::vector<int64_t> &s) {
    std::string out = "(";
    for (size_t j = 0; j < s.size(); ++j) out += (j ? ", " : "") + std::to_string(s[j]);
    return out + (s.size() == 1 ? ",)" : ")");
}

}  // namespace

std::unique_ptr<Model> parse_model(const uint8_t *data, size_t size) {
    auto members = read_zip(data, size);
    auto it = members.find("graph.json.npy");
    if (it == members.end()) fail("not an xkern runtime file (.xk): no graph.json");
    Json doc = JsonParser(read_text(read_npy("graph.json", it->second))).parse();
    const Json *format = doc.get("format");
    if (doc.kind != Json::Obj || !format || format->kind != Json::Str || format->s != "xkern-runtime")
        fail("not an xkern runtime file (.xk)");
    const Json *version = doc.get("version");
    if (!version || version->kind != Json::Num || !version->integral || version->i != 1)
        fail("the file has .xk version " + (version ? Checker::show(*version) : std::string("None")) +
             "; this xkern reads version 1");
    auto model = std::make_unique<Model>();
    const Json *input = doc.get("input"), *shape = doc.get("input_shape"), *nodes = doc.get("nodes"),
               *output = doc.get("output");
    if (!input || input->kind != Json::Str || !shape || shape->kind != Json::Arr || !nodes ||
        nodes->kind != Json::Arr || !output || output->kind != Json::Str)
        fail("malformed graph.json (input, input_shape, nodes and output are required)");
    if (shape->a.size() != 4) fail("malformed graph.json: input_shape must have 4 entries (B, C, H, W)");
    for (int j = 0; j < 4; ++j) {
        const Json &s = shape->a[j];
        if (s.kind == Json::Null) continue;
        if (!Checker::is_int(s, 1)) fail("malformed graph.json: input_shape entries must be positive or null");
        if (j) model->input_shape[j] = s.i;
    }
    model->input_name = input->s;
    std::map<std::string, int> known{{input->s, 0}};
    for (const Json &jn : nodes->a) {
        const Json *name = jn.get("name"), *op = jn.get("op"), *inputs = jn.get("inputs"), *attrs = jn.get("attrs"),
                   *arrays = jn.get("arrays");
        if (!name || name->kind != Json::Str || !op || op->kind != Json::Str || !inputs || inputs->kind != Json::Arr ||
            !attrs || attrs->kind != Json::Obj || !arrays || arrays->kind != Json::Obj)
            fail("malformed graph.json: a node lacks name, op, inputs, attrs or arrays");
        Node n;
        n.name = name->s;
        static const char *ops[] = {"conv2d", "xconv2d", "linear", "xlinear", "affine", "relu", "relu6",
                                    "maxpool2d", "avgpool2d", "adaptive_avgpool2d", "add", "concat",
                                    "flatten", "reshape"};
        int code = -1;
        for (int j = 0; j < 14; ++j) if (op->s == ops[j]) code = j;
        if (code < 0) fail("node '" + n.name + "': unknown op '" + op->s + "'");
        n.op = Op(code);
        Checker c{"node '" + n.name + "' (" + op->s + ")"};
        if (known.count(n.name)) fail("node '" + n.name + "': the name is used twice");
        size_t want = n.op == Op::add ? 2 : n.op == Op::concat ? 0 : 1;
        if ((want && inputs->a.size() != want) || (!want && inputs->a.empty()))
            fail("node '" + n.name + "' (" + op->s + ") takes " + (want ? std::to_string(want) : ">= 1") +
                 " inputs, got " + std::to_string(inputs->a.size()));
        for (const Json &in : inputs->a) {
            if (in.kind != Json::Str || !known.count(in.s))
                fail("node '" + n.name + "' reads " + Checker::show(in) + ", which no earlier node produces");
            n.inputs.push_back(known[in.s]);
        }
        // arrays: which are required / allowed, their dtypes and shapes
        std::vector<std::string> required, optional;
        switch (n.op) {
            case Op::conv2d: case Op::linear: required = {"weight"}; optional = {"bias"}; break;
            case Op::xconv2d: case Op::xlinear: required = {"weight", "index"}; optional = {"bias"}; break;
            case Op::affine: required = {"scale", "shift"}; break;
            default: break;
        }
        for (auto &kv : arrays->o) {
            bool ok = false;
            for (auto &r : required) ok |= r == kv.first;
            for (auto &r : optional) ok |= r == kv.first;
            if (!ok) c.bad("array '" + kv.first + "' is not one of this op's");
        }
        for (auto &r : required) if (!arrays->get(r)) fail("malformed graph.json: node '" + n.name + "' has no array '" + r + "'");
        for (auto &kv : arrays->o) {
            if (kv.second.kind != Json::Str) c.bad("array '" + kv.first + "': member name expected");
            auto m = members.find(kv.second.s + ".npy");
            if (m == members.end()) fail("malformed graph.json: node '" + n.name + "' names a missing member '" + kv.second.s + "'");
            Npy a = read_npy(kv.second.s, m->second);
            bool is_index = kv.first == "index";
            if (a.kind != (is_index ? 'i' : 'f')) c.bad("array '" + kv.first + "' must be a " + (is_index ? "int64" : "float32") + " ndarray");
            Array &dst = kv.first == "weight" ? n.weight : kv.first == "bias" ? n.bias : kv.first == "index" ? n.index
                       : kv.first == "scale" ? n.scale : n.shift;
            dst.present = true;
            dst.shape = a.shape;
            if (is_index) { dst.i.resize(a.data.n / 8); if (a.data.n) std::memcpy(dst.i.data(), a.data.p, a.data.n); }
            else { dst.f.resize(a.data.n / 4); if (a.data.n) std::memcpy(dst.f.data(), a.data.p, a.data.n); }
        }
        const Json &at = *attrs;
        switch (n.op) {
            case Op::conv2d: case Op::xconv2d:
                c.pair(at, "stride", 1, n.stride); c.pair(at, "padding", 0, n.padding); c.pair(at, "dilation", 1, n.dilation);
                if (n.op == Op::conv2d) n.groups = c.integer(at, "groups", -(int64_t(1) << 40));
                else n.in_channels = c.integer(at, "in_channels", -(int64_t(1) << 40));
                break;
            case Op::xlinear: n.in_channels = c.integer(at, "in_features", -(int64_t(1) << 40)); break;
            case Op::maxpool2d: case Op::avgpool2d: {
                c.pair(at, "kernel", 1, n.kernel); c.pair(at, "stride", 1, n.stride); c.pair(at, "padding", 0, n.padding);
                if (n.op == Op::maxpool2d) c.pair(at, "dilation", 1, n.dilation);
                n.ceil_mode = c.boolean(at, "ceil_mode");
                if (n.op == Op::avgpool2d) {
                    n.count_include_pad = c.boolean(at, "count_include_pad");
                    const Json &d = c.attr(at, "divisor");
                    if (d.kind != Json::Null) { if (!Checker::is_int(d, 1)) c.invalid("divisor", d); n.divisor = d.i; }
                }
                break;
            }
            case Op::adaptive_avgpool2d: {
                const Json &v = c.attr(at, "output_size");
                if (v.kind != Json::Arr || v.a.size() != 2) c.invalid("output_size", v);
                for (int j = 0; j < 2; ++j) {
                    if (v.a[j].kind == Json::Null) continue;
                    if (!Checker::is_int(v.a[j], 1)) c.invalid("output_size", v);
                    n.output_size[j] = v.a[j].i;
                }
                break;
            }
            case Op::concat:
                n.axis = c.integer(at, "axis", -(int64_t(1) << 40));
                if (n.axis == 0) c.bad("axis must not be the batch axis 0");
                break;
            case Op::flatten:
                n.start_dim = c.integer(at, "start_dim", -(int64_t(1) << 40));
                n.end_dim = c.integer(at, "end_dim", -(int64_t(1) << 40));
                if (n.start_dim < 1 || (n.end_dim != -1 && n.end_dim < n.start_dim))
                    c.bad("need 1 <= start_dim <= end_dim or end_dim = -1");
                break;
            case Op::reshape: {
                const Json &v = c.attr(at, "shape");
                if (v.kind != Json::Arr || v.a.size() > 8) c.invalid("shape", v);
                int minus = 0;
                for (auto &s : v.a) {
                    if (!Checker::is_int(s, -1)) c.invalid("shape", v);
                    minus += s.i == -1;
                    n.shape.push_back(s.i);
                }
                if (minus > 1) c.bad("at most one -1 in shape");
                break;
            }
            default: break;
        }
        // shapes of the arrays, against each other and the attrs
        if (n.op == Op::conv2d || n.op == Op::xconv2d || n.op == Op::linear || n.op == Op::xlinear || n.op == Op::affine) {
            const Array &first = n.op == Op::affine ? n.scale : n.weight;
            size_t ndim = (n.op == Op::conv2d || n.op == Op::xconv2d) ? 4 : n.op == Op::affine ? 1 : 2;
            bool empty = false;
            for (auto s : first.shape) empty |= s == 0;
            if (first.shape.size() != ndim || empty)
                c.bad("weight must be a non-empty " + std::to_string(ndim) + "-D array, got " + shape_str(first.shape));
            int64_t n_out = first.shape[0];
            const Array *second = n.op == Op::affine ? &n.shift : &n.bias;
            if (second->present && second->shape != std::vector<int64_t>{n_out})
                c.bad(std::string(n.op == Op::affine ? "shift" : "bias") + " must have shape (" + std::to_string(n_out) + ",)");
            if (n.index.present) {
                if (n.index.shape != std::vector<int64_t>{first.shape[0], first.shape[1]})
                    c.bad("index must have shape " + shape_str({first.shape[0], first.shape[1]}) + ", got " + shape_str(n.index.shape));
                for (int64_t v : n.index.i)
                    if (v < 0 || v >= n.in_channels) c.bad("index entries must lie in [0, " + std::to_string(n.in_channels) + ")");
            }
            if (n.op == Op::conv2d && (n.groups < 1 || n_out % n.groups))
                c.bad("groups=" + std::to_string(n.groups) + " must divide Cout=" + std::to_string(n_out));
            if (n.op == Op::conv2d || n.op == Op::xconv2d) {
                if (n.weight.shape[2] > 4096 || n.weight.shape[3] > 4096) c.bad("kernel too large");
            }
        }
        known[n.name] = int(model->nodes.size()) + 1;
        model->nodes.push_back(std::move(n));
    }
    if (!known.count(output->s)) fail("the graph output '" + output->s + "' is not produced by any node");
    model->output = known[output->s];
    return model;
}

std::unique_ptr<Model> load_model_file(const char *path) {
    FILE *f = std::fopen(path, "rb");
    if (!f) fail(std::string("cannot open '") + path + "': " + std::strerror(errno));
    std::vector<uint8_t> buf;
    uint8_t chunk[1 << 16];
    size_t got;
    while ((got = std::fread(chunk, 1, sizeof chunk, f)) > 0) buf.insert(buf.end(), chunk, chunk + got);
    bool err = std::ferror(f);
    std::fclose(f);
    if (err) fail(std::string("cannot read '") + path + "'");
    try {
        return parse_model(buf.data(), buf.size());
    } catch (const Error &e) {
        fail(std::string("'") + path + "': " + e.what());
    }
}

}  // namespace xk
