"""The asv history chart as PNG bytes (matplotlib), one per machine.

Drawn with matplotlib's object API and the Agg canvas, not pyplot: building the page must not
change the caller's backend or leave figures open. The PNG carries no version or date in its
metadata, so a rebuild from the same results is byte-identical and git sees no change.
"""

from __future__ import annotations

import io
import math

from .asv_history import History

# Seconds are shown as milliseconds: the headline kernels take 10-1000 ms per call.
UNIT_SCALE = {"seconds": (1e3, "ms per call")}


def _short(commit: str) -> str:
    return commit[:8]


def _scaled(value: float | None, scale: float) -> float:
    # NaN, not None: matplotlib leaves a gap in the line where a commit has no value.
    return math.nan if value is None else value * scale


def history_png(history: History, kind_label: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scale, ylabel = UNIT_SCALE.get(history.unit, (1.0, history.unit))
    n = len(history.passes)
    fig = Figure(figsize=(4.6 * n + 0.6, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    xs = list(range(len(history.runs)))
    labels = [_short(r.commit) for r in history.runs]
    single = history.single_call
    for ax, pass_ in zip(axes, history.passes):
        for backend in history.backends:
            ys = [_scaled(r.kernels.get((backend, pass_)), scale) for r in history.runs]
            # Markers: a commit whose neighbours have no value still shows as a point.
            (line,) = ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.4, label=backend)
            # A value from one timed call is drawn hollow: it is not a median.
            one = [(x, y) for x, y, r in zip(xs, ys, history.runs)
                   if (r.commit, (backend, pass_)) in single]
            if one:
                ax.plot(*zip(*one), linestyle="none", marker="o", markersize=6,
                        color=line.get_color(), markerfacecolor="white")
        ax.set_title(pass_, fontsize=10)
        ax.set_xticks(xs, labels, rotation=45, ha="right", fontsize=7, family="monospace")
        ax.set_xlim(-0.5, len(xs) - 0.5)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        ax.set_xlabel("commit (oldest first)", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    axes[0].set_ylabel(ylabel, fontsize=9)
    axes[-1].legend(fontsize=8, loc="best")
    size = ", ".join(f"{k}={v}" for k, v in history.size.items())
    fig.suptitle(f"{history.machine} ({kind_label}): linear_recurrence, {size}", fontsize=10)
    if single:
        fig.text(0.01, 0.01, "hollow: one timed call (asv run --quick), not a median",
                 fontsize=7, color="#555555")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
