"""Derived numbers and their presentation: efficiency, speedups, geometric means, tables, plot.

    efficiency(impl) = dense time x D / Cin / impl time   (1.0: as fast per useful multiply-add as dense)
    speedup vs other = other time / xkern time
Geometric means run over the configs of one block size.  Input: suite.run's (or run_models') dict.
"""
import json
import math

# The targets on geometric means: forward efficiency (block 1, block > 1), step speedup vs grouped.
FORWARD_EFFICIENCY_TARGET = {"block 1": 0.8, "block > 1": 0.9}
STEP_SPEEDUP_TARGET, STEP_SPEEDUP_FLOOR = 1.5, 1.0
PASS_TITLES = {"forward": "forward", "step": "training step (forward + backward through torch autograd)"}


def geomean(values):
    """Geometric mean of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def by_config(result):
    """One dict per (layer, C, block), in run order: times[pass][impl] (median s), mem[impl] (bytes)."""
    configs = {}
    for r in result["results"]:
        key = (r["layer"], r["C"], r["block"])
        c = configs.setdefault(key, dict(layer=r["layer"], C=r["C"], D=r["D"], block=r["block"], cin=r["cin"],
                                         times={}, mem={}))
        for name in result["meta"]["passes"]:
            c["times"].setdefault(name, {})[r["impl"]] = r[name]["median"]
        c["mem"][r["impl"]] = r.get("step_peak_bytes")
    return list(configs.values())


def derive(config, name):
    """eff[impl] and speedup {"vs grouped", "vs masked", "vs dense"} of xkern, for pass name; None where unmeasured."""
    times = config["times"].get(name, {})
    dense = times.get("dense")
    eff = {impl: (dense * config["D"] / config["cin"] / t if dense is not None else None)
           for impl, t in times.items()}
    xk = times.get("xkern")
    speedup = {f"vs {other}": (times[other] / xk if xk is not None and other in times else None)
               for other in ("grouped", "masked", "dense")}
    return eff, speedup


def summary(result):
    """Geometric means per pass and block size, and each target with its measured value."""
    configs = by_config(result)
    out = {}
    for name in result["meta"]["passes"]:
        for block in sorted({c["block"] for c in configs}):
            rows = [derive(c, name) for c in configs if c["block"] == block]
            impls = sorted({impl for eff, _ in rows for impl in eff})
            entry = {f"eff {impl}": geomean(eff.get(impl) for eff, _ in rows) for impl in impls}
            entry.update({k: geomean(sp[k] for _, sp in rows) for k in ("vs grouped", "vs masked", "vs dense")})
            out.setdefault(name, {})[f"block {block}"] = entry
    targets = []
    for key, gm in out.get("forward", {}).items():
        target = FORWARD_EFFICIENCY_TARGET["block 1" if key == "block 1" else "block > 1"]
        targets.append(dict(what=f"forward efficiency of xkern ({key})", value=gm.get("eff xkern"),
                            target=target, floor=None))
    gm = out.get("step", {}).get("block 1")
    if gm is not None:
        targets.append(dict(what="step speedup of xkern vs grouped (block 1)", value=gm["vs grouped"],
                            target=STEP_SPEEDUP_TARGET, floor=STEP_SPEEDUP_FLOOR))
    out["targets"] = targets
    return out


def _ms(t):
    v = t * 1e3
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def _fmt(v, kind):
    if v is None:
        return "-"
    return {"ms": _ms, "eff": "{:.2f}".format, "x": "{:.2f}x".format, "mb": lambda b: f"{b / 2**20:.2f}"}[kind](v)


def _impls(result):
    present = {r["impl"] for r in result["results"]}
    order = ("dense", "grouped", "masked", "xkern")
    return [i for i in order if i in present]


def tables(result):
    """[(title, headers, rows)] of strings: one table per pass and step memory for the layers,
    then the X-Net vs dense-twin table and each X-Net's layer table when models were run."""
    out = _layer_tables(result) if result["results"] else []
    if result.get("models"):
        out.append(_model_table(result))
        out += [_network_layer_table(m) for m in result["models"] if m.get("layers")]
    return out


def _model_table(result):
    headers = ["X-Net", "dense twin", "batch", "input", "X step ms", "dense step ms", "X speedup",
               "dense/X MACs", "X params MB", "dense params MB"]
    with_infer = all("infer" in m["x_stats"] for m in result["models"])
    if with_infer:
        headers += ["batch-1 input", "X infer ms", "dense infer ms", "X infer speedup"]
    with_memory = bool(result["meta"].get("memory"))
    if with_memory:
        headers += ["X step MB", "dense step MB"]
    rows = []
    for m in result["models"]:
        xs, ds = m["x_stats"], m["dense_stats"]
        row = [_x_name(m), m["dense"], str(m["batch"]), "x".join(map(str, m["input"])),
               _fmt(xs["step"]["median"], "ms"), _fmt(ds["step"]["median"], "ms"),
               _fmt(ds["step"]["median"] / xs["step"]["median"], "x"), _fmt(ds["macs"] / xs["macs"], "x"),
               _fmt(xs["param_bytes"], "mb"), _fmt(ds["param_bytes"], "mb")]
        if with_infer:
            row += ["x".join(map(str, m["infer_input"])), _fmt(xs["infer"]["median"], "ms"),
                    _fmt(ds["infer"]["median"], "ms"), _fmt(ds["infer"]["median"] / xs["infer"]["median"], "x")]
        if with_memory:
            row += [_fmt(xs.get("step_peak_bytes"), "mb"), _fmt(ds.get("step_peak_bytes"), "mb")]
        rows.append(row)
    return ("X-Net vs its dense twin: training step (forward + backward) and batch-1 inference (eval, "
            "no_grad), median ms", headers, rows)


def _x_name(model):
    block = model.get("block", 1)
    return f"{model['x']} (block {block})" if block > 1 else model["x"]


def _layer_label(layer):
    stride = f" s{layer['stride']}" if layer["stride"] > 1 else ""
    return (f"{layer['cin']}->{layer['cout']} {layer['kernel']}x{layer['kernel']}{stride} D{layer['degree']} "
            f"{layer['height']}x{layer['width']}")


def _network_layer_table(model):
    """One row per distinct X layer: fwd+bwd at the training batch, then forward at batch 1."""
    headers = ["phase", "layer", "count", "batch", "dense ms", "xkern ms", "efficiency"]
    rows = []
    for mode, phase in (("step", "fwd+bwd"), ("infer", "batch-1 fwd")):
        for r in model["layers"][mode]:
            rows.append([phase, _layer_label(r["layer"]), str(r["layer"]["count"]), str(r["batch"]),
                         _fmt(r["dense"], "ms"), _fmt(r["xkern"], "ms"), _fmt(r["eff"], "eff")])
    return (f"{_x_name(model)}: its X layers against torch's dense conv of the same shape (training input "
            f"{'x'.join(map(str, model['input']))}, inference input {'x'.join(map(str, model['infer_input']))})",
            headers, rows)


# Targets on the networks' own layers and end to end (issue 18).
NETWORK_LAYER_TARGET, NETWORK_LAYER_FLOOR = 0.8, 0.5
MODEL_STEP_TARGET, MODEL_INFER_TARGET = 1.4, 1.2


def network_summary(result):
    """Geometric means over every distinct X layer of the networks run (fwd+bwd efficiency,
    batch-1 forward efficiency, the lowest layer) and over the networks (X-Net's speedup
    over its dense twin, training step and batch-1 inference); None where not measured."""
    models = result.get("models") or []
    out = {}
    for mode in ("step", "infer"):
        effs = [r["eff"] for m in models if m.get("layers") for r in m["layers"][mode]]
        out[f"layer eff {mode}"] = geomean(effs)
        out[f"layer eff {mode} min"] = min(effs) if effs else None
        out[f"model speedup {mode}"] = geomean(
            m["dense_stats"][mode]["median"] / m["x_stats"][mode]["median"]
            for m in models if mode in m["x_stats"])
    return out


def _layer_tables(result):
    impls = _impls(result)
    configs = by_config(result)
    summ = summary(result)
    speed_cols = [k for k in ("vs grouped", "vs masked") if "xkern" in impls and k.split()[1] in impls]
    out = []
    for name in result["meta"]["passes"]:
        headers = (["layer", "C", "D", "block"] + [f"{i} ms" for i in impls] +
                   [f"eff {i}" for i in impls if i != "dense"] + [f"xkern {k}" for k in speed_cols])
        rows = []
        for c in configs:
            eff, sp = derive(c, name)
            rows.append([c["layer"], str(c["C"]), str(c["D"]), str(c["block"])] +
                        [_fmt(c["times"][name].get(i), "ms") for i in impls] +
                        [_fmt(eff.get(i), "eff") for i in impls if i != "dense"] +
                        [_fmt(sp[k], "x") for k in speed_cols])
        for block, gm in summ[name].items():
            rows.append([f"geomean {block}", "", "", ""] + [""] * len(impls) +
                        [_fmt(gm.get(f"eff {i}"), "eff") for i in impls if i != "dense"] +
                        [_fmt(gm[k], "x") for k in speed_cols])
        out.append((f"{PASS_TITLES[name]}: median ms per call", headers, rows))
    if result["meta"].get("memory"):
        headers = ["layer", "C", "D", "block"] + [f"{i} MB" for i in impls]
        rows = [[c["layer"], str(c["C"]), str(c["D"]), str(c["block"])] +
                [_fmt(c["mem"].get(i), "mb") for i in impls] for c in configs]
        out.append(("training step: peak memory added by one step, MB", headers, rows))
    return out


def _header_lines(result):
    m = result["meta"]
    load = " ".join(str(v) for v in m["load_avg"]) if m.get("load_avg") else "n/a"
    xkern_api = sorted({r["api"] for r in result["results"] if r["impl"] == "xkern"})
    lines = [
        f"date: {m['date']}",
        f"machine: {m['cpu']}, {m['cores']} cores, load average {load}" + (f", GPU {m['gpu']}" if m.get("gpu") else ""),
        f"versions: xkern {m['xkern']}, torch {m['torch']}, numpy {m['numpy']}, python {m['python']}",
        f"threads: torch {m['torch_threads']}, xkern {m['xkern_threads']}; device {m['device']}, {m['dtype']}",
        f"timing: median over {m['repeats']} samples of back-to-back calls, each sample >= "
        f"{m['sample_time'] * 1e3:.0f} ms, after a warm-up call; the implementations of a layer "
        "(or an X-Net and its twin) sampled in turns",
    ]
    if m["layers"]:
        lines += ["layers: " + "; ".join(f"{k} = {v}" for k, v in m["layers"].items()),
                  f"xkern: {', '.join(xkern_api) if xkern_api else 'not measured'}",
                  "efficiency = dense ms x D / Cin / ms (1.0: as fast per useful multiply-add as dense conv); "
                  "xkern vs X = X ms / xkern ms"]
    if m.get("memory") == "rss high-water mark":
        lines.append("memory: growth of the resident-set high-water mark during one step (outputs, gradients, "
                     "workspaces, a masked layer's dense weight), not counting inputs and parameters")
    elif m.get("memory"):
        lines.append("memory: growth of torch.cuda.max_memory_allocated during one step")
    if m.get("allocator"):
        lines.append(f"allocator: {m['allocator']}")
    if m.get("command"):
        lines.append(f"command: {m['command']}")
    if m.get("load_avg") and m["load_avg"][0] > 0.5 * m["cores"]:
        lines.append(f"WARNING: load average {m['load_avg'][0]} on {m['cores']} cores before the run: "
                     "other processes compete for the CPU, timings are inflated and noisy")
    return lines


def _network_target_lines(result):
    gm = network_summary(result)
    checks = [("fwd+bwd efficiency of the networks' X layers, geomean", gm["layer eff step"], NETWORK_LAYER_TARGET),
              ("batch-1 forward efficiency of the networks' X layers, geomean", gm["layer eff infer"],
               NETWORK_LAYER_TARGET),
              ("lowest layer efficiency (fwd+bwd or batch-1 forward)",
               min((v for v in (gm["layer eff step min"], gm["layer eff infer min"]) if v is not None), default=None),
               NETWORK_LAYER_FLOOR),
              ("X-Net training step vs dense twin, geomean", gm["model speedup step"], MODEL_STEP_TARGET),
              ("X-Net batch-1 inference vs dense twin, geomean", gm["model speedup infer"], MODEL_INFER_TARGET)]
    return [f"{what}: {value:.2f} (target {target}): {'met' if value >= target else 'not met'}"
            for what, value, target in checks if value is not None]


def _target_lines(result):
    lines = _network_target_lines(result)
    for t in summary(result)["targets"]:
        if t["value"] is None:
            continue
        status = "met" if t["value"] >= t["target"] else (
            "below target, above floor" if t["floor"] is not None and t["value"] >= t["floor"] else "not met")
        floor = f", floor {t['floor']}" if t["floor"] is not None else ""
        lines.append(f"{t['what']}: {t['value']:.2f} (target {t['target']}{floor}): {status}")
    if lines and any(name not in ("L1", "L2", "L3", "L4") for name in result["meta"]["layers"]):
        lines.append("(the targets are defined on the reference layers L1-L4)")
    return lines


def _skipped_lines(result):
    seen = []
    for s in result["skipped"]:
        line = f"{s['impl']}: {s['reason']}"
        if line not in seen:
            seen.append(line)
    return seen


def _text_table(headers, rows):
    widths = [max(len(r[i]) for r in [headers] + rows) for i in range(len(headers))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(headers)] + [fmt(r) for r in rows]


def text(result):
    """The report as plain text: header, one table per pass, memory, targets, skipped."""
    lines = ["xkern bench"] + _header_lines(result)
    for title, headers, rows in tables(result):
        lines += ["", title] + _text_table(headers, rows)
    for section, body in (("targets", _target_lines(result)), ("skipped", _skipped_lines(result))):
        if body:
            lines += ["", section + ":"] + ["  " + b for b in body]
    return "\n".join(lines) + "\n"


def markdown(result):
    """The same report as markdown, for BENCHMARKS.md."""
    lines = ["## Benchmark: xkern vs torch dense / grouped / masked", ""]
    lines += [f"- {line}" for line in _header_lines(result)]
    for title, headers, rows in tables(result):
        lines += ["", f"### {title}", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    for section, body in (("Targets", _target_lines(result)), ("Skipped", _skipped_lines(result))):
        if body:
            lines += ["", f"### {section}", ""] + [f"- {b}" for b in body]
    return "\n".join(lines) + "\n"


def to_json(result):
    """suite.run's dict plus the summary, as JSON."""
    return json.dumps(dict(result, summary=summary(result), networks=network_summary(result)), indent=1)


def plot(result, path):
    """Two panels: forward efficiency per config and implementation; xkern's step speedups."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = by_config(result)
    labels = [f"{c['layer']} C{c['C']}" + (f" b{c['block']}" if c["block"] > 1 else "") for c in configs]
    impls = [i for i in _impls(result) if i != "dense"]
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(configs) + 2), 7), sharex=True)
    width = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        values = [derive(c, "forward")[0].get(impl) or 0.0 for c in configs]
        axes[0].bar([k + (j - (len(impls) - 1) / 2) * width for k in range(len(configs))], values, width, label=impl)
    axes[0].axhline(0.8, color="k", ls="--", lw=1, label="target 0.8 (0.9 for blocks)")
    axes[0].set_ylabel("forward efficiency\n(dense x D/Cin / time)")
    axes[0].legend(fontsize="small")
    others = [k for k in ("vs grouped", "vs masked") if k.split()[1] in impls and "xkern" in impls]
    width = 0.8 / max(1, len(others))
    for j, key in enumerate(others):
        values = [derive(c, "step")[1][key] or 0.0 for c in configs] if "step" in result["meta"]["passes"] else []
        axes[1].bar([k + (j - (len(others) - 1) / 2) * width for k in range(len(values))], values, width,
                    label=f"xkern {key}")
    axes[1].axhline(1.5, color="k", ls="--", lw=1, label="target 1.5x vs grouped")
    axes[1].axhline(1.0, color="gray", ls=":", lw=1)
    axes[1].set_ylabel("training-step speedup")
    axes[1].legend(fontsize="small")
    axes[1].set_xticks(range(len(configs)))
    axes[1].set_xticklabels(labels, rotation=45, ha="right")
    m = result["meta"]
    fig.suptitle(f"xkern bench, {m['cpu']}, {m['torch_threads']} threads, {m['date']}", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
