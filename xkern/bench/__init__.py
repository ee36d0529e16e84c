"""Benchmarks of X-Conv against torch's dense, grouped and masked-dense convolutions.

One set of definitions shared by `python -m xkern bench` and asv (asv_bench/):
    layers    the reference layers, (layer, C, block) configs and expander indices (numpy only)
    baselines the timed callables: torch dense / grouped / masked-dense and xkern, forward and training step
    timing    median wall time of a callable (perf_counter loop, synchronising CUDA)
    memory    peak memory of one training step
    models    a training step of an X-Net and of its dense twin (xkern.models)
    suite     the sweeps behind the CLI: configs x implementations x passes; model pairs
    report    derived numbers (efficiency, speedups, geometric means), text / markdown / JSON tables, plot
"""
