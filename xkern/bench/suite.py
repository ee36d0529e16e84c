"""The sweeps behind `python -m xkern bench`: every config x implementation x pass; model pairs.

Implementations that cannot depend on part of a config are measured once and shared:
dense ignores C and block, grouped and masked ignore block.  All the implementations the
configs of one layer need are timed in turns, one sample of each after the other
(timing.measure_interleaved), so a change in machine load hits them alike; an X-Net and
its dense twin likewise.
"""
import datetime
import os
import platform

import numpy as np
import torch

from . import baselines, memory, models, timing

PASSES = ("forward", "step")


def machine_info():
    """Where and when the numbers were taken: CPU, cores, load, library versions, threads."""
    import xkern

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "xkern": xkern.__version__,
        "torch_threads": torch.get_num_threads(),
        "xkern_threads": xkern.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _meta(*, device, dtype, repeats, sample_time, seed, passes, layers, with_memory, command):
    """machine_info() plus the settings of a run."""
    meta = machine_info()
    meta.update(device=device, dtype=str(dtype).replace("torch.", ""), repeats=repeats, sample_time=sample_time,
                seed=seed, passes=list(passes), layers=layers, command=command,
                xkern_autograd=baselines.has_xkern_autograd(),
                memory=("cuda max_memory_allocated" if device == "cuda" else "rss high-water mark")
                if with_memory else None)
    return meta


def _share_key(impl, config):
    if impl == "dense":
        return (impl, config.layer)
    if impl in ("grouped", "masked"):
        return (impl, config.layer, config.compression)
    return (impl, config.layer, config.compression, config.block)


def _measure_layer(jobs, xkern_backend, device, passes, repeats, sample_time, with_memory, log):
    """{key: timings and step memory, or {"skipped": reason}} for jobs {key: (impl, problem)}:
    every implementation the configs of one layer need, their samples of each pass taken
    in turns (timing.measure_interleaved), so that a slow spell of the machine does not
    fall on one of them.  The cases die on return, freeing their tensors."""
    out, cases = {}, {}
    for key, (impl, problem) in jobs.items():
        try:
            case = baselines.build_case(impl, problem, xkern_backend=xkern_backend)
        except NotImplementedError as exc:
            out[key] = {"skipped": str(exc)}
            log(f"{impl}: skipped ({exc})")
            continue
        cases[key] = case
        out[key] = {"api": case.api, "param_bytes": case.param_bytes}
    keys = list(cases)
    for name in passes:
        fns = [cases[k].forward if name == "forward" else cases[k].step for k in keys]
        timings = timing.measure_interleaved(fns, repeats=repeats, sample_time=sample_time,
                                             syncs=[cases[k].sync for k in keys])
        for key, t in zip(keys, timings):
            out[key][name] = t._asdict()
    if with_memory:
        for key in keys:
            out[key]["step_peak_bytes"] = memory.peak_bytes(cases[key].step, device=device, sync=cases[key].sync)
    return out


def run(configs, *, impls=baselines.IMPLS, passes=PASSES, device="cpu", xkern_backend=None,
        dtype=torch.float32, repeats=7, sample_time=0.05, with_memory=True, seed=0, log=None, command=None):
    """Measure every config x impl; returns a JSON-ready dict.

    {"meta": machine_info() + settings,
     "results": [{"layer", "C", "D", "block", "cin", "impl", "api", "param_bytes",
                  "forward": Timing dict, "step": Timing dict, "step_peak_bytes"}, ...],
     "skipped": [{"layer", "C", "block", "impl", "reason"}, ...]}
    Timing dicts hold seconds per call: median, q1, q3, number, repeats.
    log(message) reports progress; command (how to rerun this, e.g. the CLI line) goes into meta.
    """
    for name in passes:
        if name not in PASSES:
            raise ValueError(f"passes must be some of {PASSES}, got {name!r}")
    baselines.check_device(device)
    log = log or (lambda message: None)
    meta = _meta(device=device, dtype=dtype, repeats=repeats, sample_time=sample_time, seed=seed, passes=passes,
                 layers={c.layer.name: c.layer.describe() for c in configs}, with_memory=with_memory,
                 command=command)
    shared, results, skipped = {}, [], []
    layers = []  # configs grouped by layer, in order
    for config in configs:
        if not layers or layers[-1][0].layer != config.layer:
            layers.append([])
        layers[-1].append(config)
    for layer_configs in layers:
        jobs = {}  # share key -> (impl, problem), in order
        for config in layer_configs:
            problem = None
            for impl in impls:
                key = _share_key(impl, config)
                if key in shared or key in jobs:
                    continue
                if problem is None:
                    problem = baselines.make_problem(config, device=device, dtype=dtype, seed=seed)
                jobs[key] = (impl, problem)
        shared.update(_measure_layer(jobs, xkern_backend, device, passes, repeats, sample_time, with_memory, log))
        for config in layer_configs:
            for impl in impls:
                entry = shared[_share_key(impl, config)]
                where = dict(layer=config.layer.name, C=config.compression, block=config.block)
                if "skipped" in entry:
                    skipped.append(dict(where, impl=impl, reason=entry["skipped"]))
                    continue
                results.append(dict(where, D=config.degree, cin=config.layer.cin, impl=impl, **entry))
                log(f"{config.layer.name} C={config.compression} block={config.block} {impl:8s} " +
                    "  ".join(f"{name} {entry[name]['median'] * 1e3:.3f} ms" for name in passes))
    return {"meta": meta, "results": results, "skipped": skipped}


def run_models(pairs=models.PAIRS, *, quick=False, device="cpu", dtype=torch.float32, repeats=7,
               sample_time=0.05, with_memory=True, with_layers=True, seed=0, block=1, log=None, command=None):
    """Training steps and batch-1 inference of X-Nets (expanders in blocks of `block` outputs)
    and their dense twins; the same dict shape as run, with "results" empty and "models":
    [{"x", "block", "dense", "batch", "input", "infer_input",
    "x_stats", "dense_stats", "layers"}], each stats dict holding "step" and "infer" (Timing
    dicts), "step_peak_bytes", "param_bytes", "macs" (per training sample,
    xkern.models.complexity); "layers" (with_layers, CPU) is network_layers.time_layers' dict
    for the X-Net's distinct X layers."""
    from . import network_layers

    baselines.check_device(device)
    log = log or (lambda message: None)
    meta = _meta(device=device, dtype=dtype, repeats=repeats, sample_time=sample_time, seed=seed,
                 passes=["step", "infer"], layers={}, with_memory=with_memory, command=command)
    rows = []
    for pair in pairs:
        batch = pair.quick_batch if quick else pair.batch
        infer_shape = pair.infer_shape or pair.input_shape
        row = dict(x=pair.x_name, block=block, dense=pair.dense_name, batch=batch, input=list(pair.input_shape),
                   infer_input=list(infer_shape))
        roles = (("x_stats", pair.x_name, block), ("dense_stats", pair.dense_name, 1))
        built = [models.model_case(name, pair.input_shape, batch, device=device, dtype=dtype, seed=seed, block=b)
                 for _, name, b in roles]
        # the two models' samples in turns (see timing.measure_interleaved)
        steps = timing.measure_interleaved([case.step for case, _ in built], repeats=repeats,
                                           sample_time=sample_time, syncs=[case.sync for case, _ in built])
        for (role, name, _), (case, counts), step in zip(roles, built, steps):
            stats = dict(step=step._asdict(), param_bytes=case.param_bytes, macs=counts["macs"])
            if with_memory:
                stats["step_peak_bytes"] = memory.peak_bytes(case.step, device=device, sync=case.sync)
            row[role] = stats
            log(f"{name} batch {batch}: step {stats['step']['median'] * 1e3:.1f} ms")
        del built
        inferred = [models.infer_case(name, infer_shape, device=device, dtype=dtype, seed=seed, block=b)
                    for _, name, b in roles]
        infers = timing.measure_interleaved([f for f, _ in inferred], repeats=repeats, sample_time=sample_time,
                                            syncs=[sync for _, sync in inferred])
        for (role, name, _), infer in zip(roles, infers):
            row[role]["infer"] = infer._asdict()
            log(f"{name} batch 1: inference {infer.median * 1e3:.2f} ms")
        del inferred
        if with_layers and device == "cpu":
            model = models.create_model(pair.x_name, seed, block)
            log(f"{pair.x_name}: its X layers against dense conv of the same shapes")
            row["layers"] = network_layers.time_layers(
                model, train_shape=pair.input_shape, batch=batch, infer_shape=infer_shape,
                repeats=repeats, sample_time=sample_time, seed=seed, log=log)
        rows.append(row)
    return {"meta": meta, "results": [], "skipped": [], "models": rows}
