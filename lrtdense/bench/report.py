"""The benchmark's table (Markdown) and figure, lrtdense's columns beside the published ones
(``lrtdense.bench.published``)."""
import json
import sys

from lrtdense.bench.published import METHODS, PUBLISHED, SOURCES, published_name

__all__ = ["markdown", "figure"]

COLORS = ["C3", "C0", "C1", "C2", "C4"]      # lrtdense, then METHODS' columns


def _cell(pair, digits=None):
    """"mean ± plus_minus"; lrtdense's (digits None) to 3 decimals, 4 below 0.1 (naval)."""
    if pair is None:
        return ""
    digits = digits or (3 if abs(pair[0]) >= 0.1 else 4)
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def _published(name, method, metric):
    key = published_name(name)
    return None if key is None else PUBLISHED[key][method][metric]


def _ours(result, metric):
    s = result["summary"][metric]
    return s["mean"], s["se"]


def markdown(results):
    """Two tables (test RMSE, test log-likelihood), one row per data set: lrtdense's mean ±
    standard error over its splits, then the published columns (their own ±, as printed), then
    the settings and the sources."""
    methods = " | ".join(METHODS)
    lines = ["Test RMSE (lower is better)", "",
             f"| data set | splits | lrtdense | {methods} |",
             "|---|---|---" + "|---" * len(METHODS) + "|"]
    for name, r in results.items():
        cells = [_cell(_published(name, m, "rmse"), 2) for m in METHODS]
        lines.append(f"| {name} | {len(r['splits'])} | {_cell(_ours(r, 'rmse'))} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Test log-likelihood (higher is better; lrtdense: the MC mixture's, and the "
              "moment-matched Gaussian's beside it)", "",
              f"| data set | splits | lrtdense | lrtdense (moment-matched) | {methods} |",
              "|---|---|---|---" + "|---" * len(METHODS) + "|"]
    for name, r in results.items():
        cells = [_cell(_published(name, m, "test_ll"), 2) for m in METHODS]
        lines.append(f"| {name} | {len(r['splits'])} | {_cell(_ours(r, 'test_ll'))} | "
                     f"{_cell(_ours(r, 'test_ll_gaussian'))} | " + " | ".join(cells) + " |")
    settings = next(iter(results.values()))["settings"] if results else {}
    lines += ["", f"Settings: {json.dumps(settings)}", "", "Sources:", ""]
    lines += [f"- {m}: {SOURCES[m]}" for m in METHODS]
    return "\n".join(lines) + "\n"


def figure(results, path, *, file=None):
    """Draws test RMSE and log-likelihood per data set with error bars, lrtdense beside the
    published columns, to ``path``; returns True, or False (with one line on ``file``, default
    stderr) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("lrtdense bench uci: no figure: matplotlib is not installed "
              "(pip install 'lrtdense[examples]')", file=file or sys.stderr)
        return False
    names = list(results)
    columns = ["lrtdense"] + list(METHODS)
    fig, axes = plt.subplots(2, len(names), figsize=(2.2 * len(names) + 1, 5.5), squeeze=False)
    for j, name in enumerate(names):
        for i, metric in enumerate(("rmse", "test_ll")):
            ax = axes[i, j]
            for c, column in enumerate(columns):
                pair = (_ours(results[name], metric) if column == "lrtdense"
                        else _published(name, column, metric))
                if pair is not None:
                    ax.errorbar([c], [pair[0]], yerr=[pair[1]], fmt="o", capsize=3,
                                color=COLORS[c])
            ax.set_xticks(range(len(columns)))
            ax.set_xticklabels(columns, rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{name}\n{'RMSE' if metric == 'rmse' else 'test LL'} (lrtdense: "
                         f"{len(results[name]['splits'])} splits)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
