"""The benchmark's verdicts and its Markdown report.

``add_ratios(results)`` adds, per configuration, the ratios of medians and the verdict on the
issue's bar; ``format_report(results)`` renders everything as Markdown (machine, step times,
ratios and bars, spread, memory, page faults, RSS, peer sanity checks, what each contender runs).
"""
import reference_step as ref

__all__ = ["BARS", "MEMORY_BAR", "add_ratios", "bar_verdict", "format_report"]

PEER_LABELS = {"torch": "PyTorch eager", "jax": "JAX jit"}
ORDER = ("floor", "lrtdense", "lrtdense_reference", "torch", "jax")
# (dtype, batch) -> (what lrtdense's step is compared with, the largest ratio allowed)
BARS = {("float32", 100): ("jax", 1.0), ("float32", 1000): ("floor", 1.8),
        ("float64", 100): ("floor", 3.0), ("float64", 1000): ("floor", 1.7)}
BAR_F32_B100_FLOOR = 2.8   # the "~2.8x the GEMM floor", used when JAX was not run
MEMORY_BAR = 1.5
CHECK_TOL = {"float32": 1e-5, "float64": 1e-10}   # loss; gradients get 100x


def add_ratios(results):
    """Adds each configuration's ratios of medians and its bar verdict (in place)."""
    for cfg in results["configs"]:
        med = {name: t["median_ms"] for name, t in cfg["time"].items()}
        ratios = {"lrtdense/floor": med["lrtdense"] / med["floor"]}
        if "time_cold" in cfg:
            ratios["lrtdense/floor cold"] = (cfg["time_cold"]["lrtdense"]["median_ms"]
                                             / cfg["time_cold"]["floor"]["median_ms"])
        for other in ("lrtdense_reference", "torch", "jax"):
            if other in med:
                ratios[f"lrtdense/{other}"] = med["lrtdense"] / med[other]
                ratios[f"{other}/floor"] = med[other] / med["floor"]
        cfg["ratios"] = ratios
        cfg["bar"] = bar_verdict(cfg["dtype"], cfg["batch"], ratios, results["reference_sizes"])
        for mem in cfg["memory"].values():
            mem["met"] = (mem["footprint_over_needs"] <= MEMORY_BAR
                          if results["reference_sizes"] else None)


def bar_verdict(dtype, batch, ratios, reference_sizes):
    """{"text", "measured", "met"} for the issue's bar on lrtdense's step in this configuration
    (met None: no bar, e.g. not the reference network)."""
    if (dtype, batch) not in BARS or not reference_sizes:
        return {"text": "none", "measured": None, "met": None}
    against, limit = BARS[dtype, batch]
    if against == "jax" and "lrtdense/jax" not in ratios:
        against, limit = "floor", BAR_F32_B100_FLOOR
        text = f"≤ {limit}× floor (JAX not run; the bar is ≤ 1.0× JAX jit, ≈ 2.8× floor)"
    else:
        text = f"≤ {limit}× {'GEMM floor' if against == 'floor' else PEER_LABELS[against]}"
    measured = ratios[f"lrtdense/{against}"]
    return {"text": text, "measured": measured, "met": bool(measured <= limit)}


def _mb(nbytes):
    return "n/a" if nbytes is None else f"{nbytes / 2**20:,.1f}"


def _ms(value):
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _pct(share):
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _verdict(met):
    return {True: "**met**", False: "**missed**", None: "-"}[met]


def _table(header, align, rows):
    return (["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(row) + " |" for row in rows])


def format_report(results):
    """The whole report as one Markdown string."""
    m, s, configs = results["machine"], results["settings"], results["configs"]
    labels = {}
    for cfg in configs:
        labels.update(cfg["labels"])
    names = [n for n in ORDER if n in labels]
    env = ", ".join(f"{k}={'unset' if v is None else v}" for k, v in m["env"].items())
    load = "n/a" if m["loadavg"] is None else " / ".join(f"{v:.1f}" for v in m["loadavg"])
    lines = [
        "# lrtdense reference-step benchmark", "",
        f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable); "
        f"{m['platform']}; load average {load} (1 / 5 / 15 min) when the timing began",
        f"- NumPy {m['numpy']}, BLAS {m['blas']}; autograd {m['autograd']}; Python {m['python']}",
        f"- Environment: {env}",
        "- Peers: " + ("; ".join(m["peers"].values()) or "none"),
        f"- {m['date']}; `{m['command']}`; {results['seconds']:.0f} s in all",
        f"- Network {'-'.join(map(str, s['sizes']))}"
        + ("" if results["reference_sizes"] else " (not the reference network: no bars)")
        + f"; {s['repeats']} rounds after {s['warmup']} warm-up rounds. In each round every "
        "contender in turn (a new random order each round) runs two steps back to back: the "
        "second (\"warm\", its own data in the caches, as in a training loop) is the step time "
        "below; the first (\"cold\", after another contender) is in the spread table. Medians.",
    ]
    lines += [f"- {note}" for note in results["notes"]]

    lines += ["", "## Step time (median ms per step; × GEMM floor in parentheses)", ""]
    rows = []
    for cfg in configs:
        floor = cfg["time"]["floor"]["median_ms"]
        cells = [cfg["dtype"], str(cfg["batch"])]
        for n in names:
            t = cfg["time"].get(n)
            cells.append("skipped" if t is None else _ms(floor) if n == "floor" else
                         f"{_ms(t['median_ms'])} ({t['median_ms'] / floor:.2f}×)")
        rows.append(cells + [_pct(cfg["others_cpu"])])
    lines += _table(["dtype", "batch"] + [labels[n] for n in names]
                    + ["CPU used by other processes"],
                    ["---", "---:"] + ["---:"] * (len(names) + 1), rows)

    others = [n for n in names if n not in ("floor", "lrtdense")]
    lines += ["", "## Ratios of medians, and the issue's bars", ""]
    rows = []
    for cfg in configs:
        r, bar = cfg["ratios"], cfg["bar"]
        cold = r.get("lrtdense/floor cold")
        cells = [cfg["dtype"], str(cfg["batch"]), f"{r['lrtdense/floor']:.2f}",
                 "-" if cold is None else f"{cold:.2f}"]
        cells += [f"{r[f'lrtdense/{n}']:.2f}" if f"lrtdense/{n}" in r else "-" for n in others]
        cells += [f"{r[f'{n}/floor']:.2f}" if f"{n}/floor" in r else "-" for n in others]
        cells += [bar["text"], "-" if bar["measured"] is None else f"{bar['measured']:.2f}",
                  _verdict(bar["met"])]
        rows.append(cells)
    lines += _table(["dtype", "batch", "lrtdense / floor", "(cold steps)"]
                    + [f"lrtdense / {labels[n]}" for n in others]
                    + [f"{labels[n]} / floor" for n in others] + ["bar", "measured", "status"],
                    ["---", "---:"] + ["---:"] * (2 + 2 * len(others)) + ["---", "---:", "---"],
                    rows)

    lines += ["", "## Spread of the step times: interquartile range / median (min ms); median of "
              "the cold steps", ""]
    rows = []
    for cfg in configs:
        cells = [cfg["dtype"], str(cfg["batch"])]
        for n in names:
            t, c = cfg["time"].get(n), cfg["time_cold"].get(n)
            cells.append("-" if t is None else
                         f"{100 * (t['q75_ms'] - t['q25_ms']) / t['median_ms']:.0f}% "
                         f"({_ms(t['min_ms'])}); cold {_ms(c['median_ms'])}")
        rows.append(cells)
    lines += _table(["dtype", "batch"] + [labels[n] for n in names],
                    ["---", "---:"] + ["---:"] * len(names), rows)

    lines += ["", f"## Memory of lrtdense's training step (tracemalloc; before any peer is "
              f"imported; bar: footprint peak ≤ {MEMORY_BAR}× what the math needs)", ""]
    rows = []
    for cfg, name, mem in [(cfg, n, cfg["memory"][n]) for n in names for cfg in configs
                           if n in cfg["memory"]]:
        allocs = mem["numpy_allocs_per_step"]
        rows.append([labels[name], cfg["dtype"], str(cfg["batch"]), _mb(mem["needs"]["total"]),
                     _mb(mem["footprint_peak"]), f"{mem['footprint_over_needs']:.2f}",
                     _verdict(mem["met"]), _mb(mem["retained"]), _mb(mem["step_peak"]),
                     "n/a" if allocs is None else f"{allocs:.0f}",
                     _mb(mem["numpy_bytes_per_step"]), f"{mem['minflt_per_step']:.0f}",
                     _mb(mem["explicit_noise"]), _mb(mem["explicit_total"])])
    lines += _table(["step", "dtype", "batch", "math needs MB", "footprint peak MB", "peak / needs",
                     "status", "kept between steps MB", "one step's peak MB",
                     "NumPy buffers / step", "MB allocated / step", "page faults / step",
                     "explicit per-example noise MB", "× 3 copies MB"],
                    ["---", "---", "---:", "---:", "---:", "---:", "---"] + ["---:"] * 7, rows)
    lines += ["",
              "Math needs: params + grads + Adam m + Adam v (4 × the parameter count) + every "
              "layer's input and the logits + every layer's input squared. Footprint peak: "
              "everything tracemalloc saw (NumPy buffers and Python objects) from building the "
              "optimizer state and the step, through the warm-up and "
              f"{s['memory_steps']} more steps; the initial params and the minibatch, made "
              "before, are not in it. Kept between steps: what is still allocated after a step "
              "(Adam state, any workspace). One step's peak: a step's own allocations above "
              "its starting point, after warm-up. NumPy buffers and MB allocated: counted "
              "through a NumPy memory handler. Page faults: getrusage, per step, after warm-up. "
              "Explicit per-example sampling: batch × Σ in·out standard normals alone; "
              "× 3 adds "
              "the sampled kernels W = loc + scale·ε and their gradients.",
              "", "## Page faults per step (minor faults; each contender alone, after its timing)",
              ""]
    rows = [[cfg["dtype"], str(cfg["batch"])]
            + [f"{cfg['faults'][n]:.0f}" if n in cfg["faults"] else "-" for n in names]
            for cfg in configs]
    lines += _table(["dtype", "batch"] + [labels[n] for n in names],
                    ["---", "---:"] + ["---:"] * len(names), rows)
    lines += ["", f"Peak RSS (ru_maxrss, process-wide): {_mb(results['rss_lrtdense_only'])} MB "
              f"after lrtdense and the floor alone (no peer imported yet); "
              f"{_mb(results['rss_end'])} MB at the end (every contender, the interpreter and "
              f"all imports)."]

    checks = [(name, cfg, c) for cfg in configs for name, c in cfg["checks"].items()]
    if checks:
        lines += ["", "## Peer sanity check: loss and gradients on lrtdense's params and noise", ""]
        rows = []
        for name, cfg, c in checks:
            tol = CHECK_TOL[cfg["dtype"]]
            ok = c["loss_rel"] <= tol and c["grad_rel"] <= 100 * tol
            rows.append([labels[name], cfg["dtype"], str(cfg["batch"]), f"{c['loss']:.6g}",
                         f"{c['loss_rel']:.1e}", f"{c['grad_rel']:.1e}", c["worst"],
                         "ok" if ok else "**MISMATCH**"])
        lines += _table(["peer", "dtype", "batch", "loss", "loss rel. err",
                         "max grad rel. err", "worst param", "status"],
                        ["---", "---", "---:", "---:", "---:", "---:", "---", "---"], rows)
        lines += ["", "Relative to lrtdense's autograd path with the same explicit noise; "
                  "gradient errors relative to each gradient's largest element. Tolerances: "
                  "loss 1e-5 (float32) / 1e-10 (float64), gradients 100× that."]

    lines += ["", "## What each contender runs", ""]
    for n in names:
        note = next(cfg["contender_notes"][n] for cfg in configs if n in cfg["contender_notes"])
        lines.append(f"- {labels[n]}: {note}")
        if n == "floor":
            lines += [f"  - {p}" for p in ref.GEMM_FLOOR_PRODUCTS]
    return "\n".join(lines) + "\n"
