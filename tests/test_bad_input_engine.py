"""Bad input to xkern's C++ engine: truncated, corrupted and hostile .xk files, wrong
input shapes, NULL pointers.  Each must give a clear error (a Python ValueError, or NULL /
non-zero and a message from xk_last_error) and never crash or read out of bounds.

The fuzz loops run in a child process, so a crash fails the test with its signal instead
of killing the test run; they go through the pybind11 module and the C API (ctypes)."""
import io
import json
import os
import struct
import zipfile

import numpy as np
import pytest

from xkern import runtime
from xkern.runtime import Graph, Node, engine as xk_engine

from testing import run_python

pytestmark = pytest.mark.skipif(not xk_engine.available(), reason="the C++ engine is not built")


def _graph():
    """A small network with every kind of conv and most ops (no torch needed)."""
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    index = np.stack([rng.choice(8, 3, replace=False) for _ in range(8)]).astype(np.int64)
    conv = dict(stride=[1, 1], padding=[1, 1], dilation=[1, 1])
    nodes = [
        Node("stem", "conv2d", ["x"], dict(conv, groups=1), {"weight": f(8, 3, 3, 3), "bias": f(8)}),
        Node("dw", "conv2d", ["stem"], dict(conv, groups=8), {"weight": f(8, 1, 3, 3)}),
        Node("xc", "xconv2d", ["dw"], dict(conv, in_channels=8), {"weight": f(8, 3, 3, 3), "index": index}),
        Node("sum", "add", ["xc", "stem"]),
        Node("act", "relu", ["sum"]),
        Node("cat", "concat", ["act", "stem"], {"axis": 1}),
        Node("bn", "affine", ["cat"], {}, {"scale": f(16), "shift": f(16)}),
        Node("pool", "maxpool2d", ["bn"], dict(kernel=[2, 2], stride=[2, 2], padding=[0, 0],
                                              dilation=[1, 1], ceil_mode=True)),
        Node("gap", "adaptive_avgpool2d", ["pool"], {"output_size": [1, 1]}),
        Node("flat", "flatten", ["gap"], {"start_dim": 1, "end_dim": -1}),
        Node("fc", "linear", ["flat"], {}, {"weight": f(5, 16), "bias": f(5)}),
    ]
    return Graph("x", (None, 3, 9, 9), nodes, "fc")


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(path, bytes) of a valid .xk file."""
    path = tmp_path_factory.mktemp("bad") / "good.xk"
    runtime.format.write(_graph(), path)
    return path, path.read_bytes()


def boundaries(data):
    """Offsets where the file's sections begin and end: each member's local header, .npy
    header and data, the central directory's entries, the end records."""
    cuts = {0, len(data)}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            start = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[start + 26:start + 30])
            body = start + 30 + name_len + extra_len
            major = data[body + 6]
            header = struct.unpack("<H", data[body + 8:body + 10])[0] + 10 if major == 1 else \
                struct.unpack("<I", data[body + 8:body + 12])[0] + 12
            cuts |= {start, start + 30, body, body + 8, body + header, body + info.file_size}
    eocd = data.rfind(b"PK\x05\x06")
    cd = struct.unpack("<I", data[eocd + 16:eocd + 20])[0]
    entry = cd
    while data[entry:entry + 4] == b"PK\x01\x02":
        cuts.add(entry)
        n, e, c = struct.unpack("<HHH", data[entry + 28:entry + 34])
        entry += 46 + n + e + c
    z64 = data.rfind(b"PK\x06\x06")
    cuts |= {cd, entry, eocd, eocd + 22} | ({z64} if z64 >= 0 else set())
    return sorted(c for c in cuts if 0 <= c <= len(data))


# The child: load every variant through the pybind11 module and through xk_load, predict
# when a variant loads; print how many loaded and how many were refused with a message.
CHILD = r"""
import ctypes, os, sys, numpy as np
from xkern.runtime import _engine
sys.path.insert(0, sys.argv[3])
from test_engine import c_library
lib = c_library()
variants = np.load(sys.argv[1], allow_pickle=False)
x = np.random.default_rng(0).standard_normal((1, 3, 9, 9)).astype(np.float32)
counts = {"loaded": 0, "refused": 0}
path = sys.argv[2]
for k in range(len(variants.files)):
    data = variants[f"v{k}"].tobytes()
    try:
        e = _engine.Engine(data)
    except (ValueError, MemoryError) as exc:
        assert str(exc), "an error without a message"
        counts["refused"] += 1
    else:
        counts["loaded"] += 1
        try:
            e.run(x, 1)
        except (ValueError, MemoryError) as exc:
            assert str(exc)
    with open(path, "wb") as f:
        f.write(data)
    m = lib.xk_load(path.encode())
    if not m:
        assert lib.xk_last_error(), "NULL without a message"
        continue
    out = np.empty(64, np.float32)
    n = lib.xk_output_size(m, 1)
    if n > 0 and lib.xk_predict(m, x.ctypes.data, 1, out.ctypes.data, out.size) != 0:
        assert lib.xk_last_error()
    lib.xk_free(m)
print(counts["loaded"], counts["refused"])
"""


def run_variants(variants, tmp_path):
    np.savez(tmp_path / "variants.npz", **{f"v{k}": np.frombuffer(v, np.uint8) for k, v in enumerate(variants)})
    tests = os.path.dirname(os.path.abspath(__file__))
    out = run_python(CHILD, str(tmp_path / "variants.npz"), str(tmp_path / "variant.xk"), tests)
    return tuple(map(int, out.split()))


def test_the_good_file_loads(good):
    path, data = good
    x = np.random.default_rng(0).standard_normal((1, 3, 9, 9)).astype(np.float32)
    got = runtime.load(path).predict(x)
    np.testing.assert_allclose(got, runtime.load(path, backend="reference").predict(x), rtol=0, atol=1e-4)


def test_files_cut_at_every_section_boundary(good, tmp_path):
    _, data = good
    cuts = boundaries(data)
    assert len(cuts) > 60
    prefixes = [data[:c + d] for c in cuts for d in (-1, 0, 1) if 0 <= c + d < len(data)]
    # a section removed from the middle: the directory then points at the wrong bytes
    holes = [data[:a] + data[b:] for a, b in zip(cuts, cuts[1:]) if b < len(data) and a > 0]
    loaded, refused = run_variants(prefixes + holes, tmp_path)
    assert loaded == 0 and refused == len(prefixes) + len(holes)
    for variant in prefixes[::7]:
        (tmp_path / "cut.xk").write_bytes(variant)
        with pytest.raises(ValueError):
            runtime.load(tmp_path / "cut.xk")


def test_random_byte_flips(good, tmp_path):
    _, data = good
    rng = np.random.default_rng(1)
    cd = data.rfind(b"PK\x01\x02")
    variants = []
    for k in range(600):
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            # half the flips land in the headers, JSON and directory, where they matter most
            at = int(rng.integers(0, len(buf))) if k % 2 else \
                int(rng.choice([rng.integers(0, 400), rng.integers(cd - 200, len(buf))]))
            buf[min(at, len(buf) - 1)] ^= int(rng.integers(1, 256))
        variants.append(bytes(buf))
    loaded, refused = run_variants(variants, tmp_path)
    assert loaded + refused == len(variants) and refused > 100


def _edit(data, edit):
    """data with edit(doc, arrays) applied to its graph.json and arrays."""
    with np.load(io.BytesIO(data)) as f:
        arrays = {k: f[k] for k in f.files}
    doc = json.loads(str(arrays.pop("graph.json")[()]))
    edit(doc, arrays)
    arrays["graph.json"] = np.array(json.dumps(doc))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _attr(node, key, value):
    return lambda d, a: d["nodes"][node]["attrs"].update({key: value})


@pytest.mark.parametrize("edit, message", [
    (_attr(0, "padding", [2 ** 40, 1]), "too large"),
    (_attr(0, "stride", [2 ** 41, 1]), "'stride' is invalid"),
    (_attr(7, "kernel", [40, 40]), "too small for kernel"),
    (_attr(5, "axis", 0), "batch axis"),
    (_attr(5, "axis", 7), "cannot join"),
    (_attr(2, "in_channels", 2), "index entries"),
    (_attr(9, "start_dim", 9), "cannot flatten"),
    (lambda d, a: d["nodes"][3].update(inputs=["xc", "x"]), "inputs have shapes"),
    (lambda d, a: d["nodes"][3].update(inputs=["xc", "later"]), "which no earlier node produces"),
    (lambda d, a: d["nodes"][1].update(name="stem"), "used twice"),
    (lambda d, a: d.update(nodes=[[[[]]]]), "malformed"),
    (lambda d, a: d.update(input_shape=[None, 3, -9, 9]), "input_shape"),
    (lambda d, a: d.update(output="nowhere"), "not produced"),
    (lambda d, a: a.update({"fc.weight": np.zeros((5, 16), np.float64)}), "float32"),
    (lambda d, a: a.update({"xc.index": a["xc.index"].astype(np.int32)}), "int64"),
    (lambda d, a: a.update({"fc.bias": np.zeros(4, np.float32)}), "bias must have shape"),
    (lambda d, a: a.update({"bn.scale": np.zeros((2, 8), np.float32)}), "1-D"),
])
def test_hostile_graphs_name_the_problem(good, edit, message):
    bad = _edit(good[1], edit)
    with pytest.raises(ValueError, match=message):
        xk_engine._engine.Engine(bad).run(np.zeros((1, 3, 9, 9), np.float32), 1)


def test_hostile_containers(good, tmp_path):
    _, data = good
    # an .npy header claiming far more data than the member holds
    start = data.find(b"'shape': (8, 3, 3, 3)")
    assert start > 0
    huge = data[:start] + b"'shape': (8, 3, 3, 9)" + data[start + 21:]
    # JSON nested deeper than any recursive parser's stack
    with np.load(io.BytesIO(data)) as f:
        arrays = {k: f[k] for k in f.files}
    text = str(arrays["graph.json"][()])
    arrays["graph.json"] = np.array(text[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    deep = buffer.getvalue()
    compressed = io.BytesIO()
    with np.load(io.BytesIO(data)) as f:
        np.savez_compressed(compressed, **{k: f[k] for k in f.files})
    not_zip = b"\x93NUMPY" + data[6:]
    for bad, message in [(huge, "shorter than its shape"), (compressed.getvalue(), "compressed"),
                         (not_zip, "not an xkern runtime file|corrupt zip"), (b"", "too short"),
                         (b"PK\x05\x06" + b"\xff" * 18, "zip64"), (b"PK\x05\x06" + b"\x01" * 18, "directory")]:
        with pytest.raises(ValueError, match=message):
            xk_engine._engine.Engine(bad)
    with pytest.raises(ValueError, match="nested too deeply"):
        xk_engine._engine.Engine(deep)
    (tmp_path / "deep.xk").write_bytes(deep)
    with pytest.raises(ValueError, match="not valid JSON"):
        runtime.load(tmp_path / "deep.xk")
    loaded, refused = run_variants([huge, compressed.getvalue(), not_zip, deep], tmp_path)
    assert loaded == 0 and refused == 4


def test_wrong_inputs_to_predict(good):
    path, _ = good
    net = runtime.load(path)
    with pytest.raises(ValueError, match=r"\(None, 3, 9, 9\)"):
        net.predict(np.zeros((1, 3, 9, 8), np.float32))
    with pytest.raises(ValueError, match="batch"):
        net.predict(np.zeros((3, 9, 9), np.float32))
    with pytest.raises(ValueError, match="empty"):
        net.predict(np.zeros((0, 3, 9, 9), np.float32))
    with pytest.raises(TypeError, match="complex"):
        net.predict(np.zeros((1, 3, 9, 9), np.complex64))
    with pytest.raises(ValueError, match="expects"):  # the engine's own check, below Python's
        net._engine.run(np.zeros((1, 4, 9, 9), np.float32), 1)
    with pytest.raises(ValueError, match="backend"):
        runtime.load(path, backend="gpu")
    # a strided, non-float32 input is converted, not misread
    x = np.random.default_rng(0).standard_normal((1, 3, 9, 18))[:, :, :, ::2]
    np.testing.assert_allclose(net.predict(x), net.predict(np.ascontiguousarray(x, np.float32)), rtol=0, atol=0)
