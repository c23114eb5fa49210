"""A tuning sweep's outcome: which setting each model keeps, and the sweep as a table and a figure.

The rule that picks a model's setting, stated once so that the table, the comparison runs and
the docs agree: among its sweep configurations, the one with

1. the largest fraction of runs converged, then
2. the smallest median wall time to convergence over those runs, then
3. the highest late accuracy (mean minibatch accuracy over the last logged points), then
4. the smallest learning rate (the more conservative setting), then the smallest width.

With no converged run at all, 1 and 2 tie everywhere and the rule falls back to the setting that
learned most (3): the best the budget found, which the table marks as not converged.
"""

from __future__ import annotations

import math

import pandas as pd

SETTINGS = ("hidden", "lr", "forget_bias")


def setting_text(hidden, lr, forget_bias) -> str:
    """"64 units, lr 0.003, forget bias 10"; a missing forget bias is the layer's default."""
    missing = forget_bias is None or (isinstance(forget_bias, float) and math.isnan(forget_bias))
    fb = "default" if missing else f"{forget_bias:g}"
    return f"{hidden:.0f} units, lr {lr:g}, forget bias {fb}"


def per_setting(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, setting): runs, converged runs, median time and late accuracy."""
    out = []
    for (model, *setting), runs in rows.groupby(["model", *SETTINGS], sort=True):
        done = runs[runs["converged"]]
        out.append({
            "model": model, **dict(zip(SETTINGS, setting)),
            "runs": len(runs), "converged runs": len(done),
            "converged fraction": len(done) / len(runs),
            "median wall s (converged)": float(done["wall_time_s"].median()) if len(done)
            else math.nan,
            "median iterations (converged)": float(done["iterations"].median()) if len(done)
            else math.nan,
            "late accuracy": float(runs["late_accuracy"].mean()),
            "median wall s (all)": float(runs["wall_time_s"].median()),
            "stop reasons": ",".join(sorted(set(runs["stop_reason"]))),
        })
    return pd.DataFrame(out)


def choose(rows: pd.DataFrame) -> pd.DataFrame:
    """Each model's kept setting by the module's rule: one row per model, with its sweep record."""
    table = per_setting(rows)
    ranked = table.assign(_time=table["median wall s (converged)"].fillna(math.inf)).sort_values(
        ["model", "converged fraction", "_time", "late accuracy", "lr", "hidden"],
        ascending=[True, False, True, False, True, True], kind="stable")
    return ranked.groupby("model", sort=True).head(1).drop(columns="_time").reset_index(drop=True)


def outcome_label(row: pd.Series) -> str:
    if row["converged runs"]:
        return (f"{row['converged runs']}/{row['runs']} in {row['median wall s (converged)']:.0f} s"
                f" ({row['median iterations (converged)']:.0f} it)")
    return f"0/{row['runs']}, acc {row['late accuracy']:.2f}"


def sweep_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Model x width x forget bias rows, one column per learning rate, each cell the outcome."""
    table = per_setting(rows)
    chosen = {tuple(r[["model", *SETTINGS]]) for _, r in choose(rows).iterrows()}
    table["cell"] = [outcome_label(r) + (" **kept**" if tuple(r[["model", *SETTINGS]]) in chosen
                                         else "") for _, r in table.iterrows()]
    wide = table.pivot_table(index=["model", "hidden", "forget_bias"], columns="lr",
                             values="cell", aggfunc="first").reset_index()
    wide.columns = [c if isinstance(c, str) else f"lr {c:g}" for c in wide.columns]
    return wide.rename(columns={"forget_bias": "forget bias"}).astype(str)


def sweep_figure(rows: pd.DataFrame):
    """One heatmap per (model, width): lr x forget bias, colour and text = median time to
    convergence; a configuration that never converged shows "x" in the colour of the cap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    table = per_setting(rows)
    cap = float(rows["max_wall_time_s"].max()) if "max_wall_time_s" in rows else float(
        rows["wall_time_s"].max())
    panels = list(table.groupby(["model", "hidden"], sort=True))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, ((model, hidden), t) in zip(axes[0], panels):
        seconds = t.pivot(index="forget_bias", columns="lr", values="median wall s (converged)")
        text = seconds.map(lambda v: "x" if math.isnan(v) else f"{v:.0f}s")
        sns.heatmap(np.log10(seconds.fillna(cap)), vmin=0.0, vmax=math.log10(cap),
                    cmap="viridis_r", annot=text, fmt="", cbar=False, ax=ax,
                    annot_kws={"fontsize": 8})
        ax.set(title=f"{model}, {hidden} units", xlabel="learning rate", ylabel="forget bias")
        ax.set_xticklabels([f"{v:g}" for v in seconds.columns])
        ax.invert_yaxis()
    fig.suptitle(f"Tuning sweep: median time to convergence (colour, log scale); x = no run "
                 f"converged within the {cap:.0f} s cap", y=1.03, fontsize=10)
    fig.tight_layout()
    return fig
