"""Median wall time of a callable, or of several taken in turns.

On a shared machine the speed changes from one second to the next; timing callables
one after another lets a slow spell land on one of them.  measure_interleaved takes one
sample of each in turn, repeats times, so such spells spread over all of them.

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
    return measure_interleaved([fn], repeats=repeats, sample_time=sample_time, warmup=warmup, syncs=[sync])[0]


def _sample(fn, sync, number):
    sync()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    sync()
    return (time.perf_counter() - start) / number


def measure_interleaved(fns, *, repeats=7, sample_time=0.05, warmup=1, syncs=None):
    """measure() for each of fns, the samples taken in turns: sample 1 of every fn, then
    sample 2 of every fn, and so on.  syncs: one sync callable (or None) per fn.
    Returns a list of Timings, one per fn."""
    if repeats < 1 or warmup < 0 or sample_time < 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0, sample_time >= 0; got {repeats}, {warmup}, {sample_time}")
    syncs = [s or (lambda: None) for s in (syncs or [None] * len(fns))]
    if len(syncs) != len(fns):
        raise ValueError(f"need one sync per callable; got {len(syncs)} for {len(fns)}")
    for fn in fns:
        for _ in range(warmup):
            fn()
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        numbers = []
        for fn, sync in zip(fns, syncs):
            single = _sample(fn, sync, 1)
            numbers.append(max(1, min(10_000, math.ceil(sample_time / max(single, 1e-9)))))
        per_call = [[] for _ in fns]
        for _ in range(repeats):
            for k, (fn, sync) in enumerate(zip(fns, syncs)):
                per_call[k].append(_sample(fn, sync, numbers[k]))
    finally:
        if enabled:
            gc.enable()
    timings = []
    for times, number in zip(per_call, numbers):
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        timings.append(Timing(float(median), float(q1), float(q3), number, repeats))
    return timings
