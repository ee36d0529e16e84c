"""Median wall time of a callable.

A plain perf_counter loop, not torch.utils.benchmark.Timer: Timer sets torch (and with it
every OpenMP kernel sharing torch's runtime) to one thread unless told otherwise, and here
the thread count is whatever the caller set (torch.set_num_threads / xkern.set_num_threads).
"""
import gc
import math
import time
from typing import NamedTuple

import numpy as np


class Timing(NamedTuple):
    median: float     # seconds per call
    q1: float         # first and third quartiles of the per-call times of the samples
    q3: float
    number: int       # calls per sample
    repeats: int      # samples


def measure(fn, *, repeats=7, sample_time=0.05, warmup=1, sync=None):
    """Time fn(): `warmup` calls (JIT compilation, first-touch allocation), then `repeats`
    samples of `number` back-to-back calls, number chosen so a sample lasts >= sample_time.

    sync() runs before and after each sample (torch.cuda.synchronize for GPU work).
    Returns a Timing of seconds per call; the garbage collector is off while timing, as in timeit.
    """
    if repeats < 1 or warmup < 0 or sample_time < 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0, sample_time >= 0; got {repeats}, {warmup}, {sample_time}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        single = time.perf_counter() - start
        number = max(1, min(10_000, math.ceil(sample_time / max(single, 1e-9))))
        per_call = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            for _ in range(number):
                fn()
            sync()
            per_call.append((time.perf_counter() - start) / number)
    finally:
        if enabled:
            gc.enable()
    q1, median, q3 = np.percentile(per_call, [25, 50, 75])
    return Timing(float(median), float(q1), float(q3), number, repeats)
