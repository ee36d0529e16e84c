"""xkern.backends._graphs: one cached copy per graph, and the tables kept beside it."""
import numpy as np
import pytest

import xkern
from xkern.backends import _graphs
from xkern.ops.validate import index_array
from testing import assert_close, conv2d_oracle, random_index


@pytest.fixture(autouse=True)
def fresh_cache():
    _graphs.clear()
    yield
    _graphs.clear()


@pytest.mark.parametrize("n_out, degree", [(6, 4), (64, 32)])  # keyed on all bytes / on a sample
def test_equal_graphs_share_one_read_only_copy(n_out, degree):
    index = random_index(np.random.default_rng(0), n_out, 40, degree, False)
    first = index_array(index, n_out, 40, degree)
    assert first is not index and not first.flags.writeable and first.dtype == np.int64
    np.testing.assert_array_equal(first, index)
    assert index_array(index.copy(), n_out, 40, degree) is first
    assert index_array(index.astype(np.int32), n_out, 40, degree) is first
    assert index_array(index, n_out, 41, degree) is not first  # another Cin: another graph


def test_an_index_changed_in_place_is_a_new_graph():
    """Large graphs are keyed on a sample of entries: an edit the sample skips must still be seen."""
    index = random_index(np.random.default_rng(1), 64, 16, 32, True)
    first = index_array(index, 64, 16, 32)
    flat = index.reshape(-1)
    assert flat.size // _graphs.SAMPLES > 1  # entry 1 is not in the key
    flat[1] = (flat[1] + 1) % 16
    second = index_array(index, 64, 16, 32)
    assert second is not first
    np.testing.assert_array_equal(second, index)
    assert first[0, 1] != second[0, 1]


def test_tables_are_kept_by_identity_only():
    index = random_index(np.random.default_rng(2), 8, 16, 4, False)
    cached = index_array(index, 8, 16, 4)
    made = []

    def make():
        made.append(1)
        return (np.arange(3),)

    assert _graphs.table(cached, "k", make) is _graphs.table(cached, "k", make)
    assert len(made) == 1
    assert _graphs.table(index, "k", make) is None  # the caller's array: may change
    assert _graphs.table(cached.copy(), "k", make) is None


def test_the_byte_budget_keeps_the_graph_in_use(monkeypatch):
    monkeypatch.setattr(_graphs, "CACHE_BYTES", 1)
    rng = np.random.default_rng(3)
    for seed in range(3):
        cached = index_array(random_index(rng, 8, 16, 4, False), 8, 16, 4)
        _graphs.table(cached, "k", lambda: (np.zeros(100),))
        assert list(_graphs._cache.values())[-1].index is cached
        assert len(_graphs._cache) == 1
        assert _graphs._bytes == sum(g.nbytes for g in _graphs._cache.values()) == cached.nbytes + 800


def test_the_count_budget(monkeypatch):
    monkeypatch.setattr(_graphs, "CACHE_SIZE", 2)
    rng = np.random.default_rng(4)
    copies = [index_array(random_index(rng, 8, 16, 4, False), 8, 16, 4) for _ in range(3)]
    assert len(_graphs._cache) == 2
    assert _graphs.table(copies[0], "k", lambda: (np.zeros(1),)) is None  # evicted: not cached now
    assert _graphs.table(copies[2], "k", lambda: (np.zeros(1),)) is not None


def test_results_survive_eviction_between_forward_and_backward(monkeypatch):
    """A graph evicted between calls (a budget of one graph, two graphs in turn) is looked up
    and its tables made again: the results stay those of the oracle."""
    monkeypatch.setattr(_graphs, "CACHE_SIZE", 1)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 12, 7, 7))
    for turn in range(2):
        for seed in range(2):
            index = random_index(np.random.default_rng(seed), 40, 12, 6, False)
            weight = np.random.default_rng(seed).standard_normal((40, 6, 3, 3))
            grad_out = np.random.default_rng(seed).standard_normal((2, 40, 7, 7))
            got = (xkern.xconv2d(x, weight, index, None, 1, 1),) + xkern.xconv2d_backward(
                grad_out, x, weight, index, 1, 1)
            want = conv2d_oracle(x, weight, index, None, 1, 1, 1, grad_out)
            for name, g, w in zip(("out", "grad_x", "grad_weight"), got, want):
                assert_close(g, w, np.float64, f"turn {turn} graph {seed} {name}")
