"""Figure 2 of the paper: learning curves of the synthetic task over wall time.

    python reproductions/table3.py     # draws this figure at its end
    python reproductions/figure2.py    # again, from the runs table3.py kept

One panel per sequence length; per model, the moving average of minibatch accuracy of each run,
then the mean and a +-1 sd band across runs, against wall time in minutes. Reads the per-run
logs that table3.py's comparison writes (results/<machine>/table3_runs/compare/); measures nothing itself.
Writes results/<machine>/figure2.{csv,md,png,json}.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from plrnn.bench.tables import fmt_x, markdown_table
from plrnn.repro import Artifact, register_common, resolve_device, write_artifact
from plrnn.repro.artifacts import results_dir
from plrnn.repro.config import Common, ConfigError, MissingInput, one_line_errors, require
from plrnn.repro.tuning import setting_text

NAMES = {"gilr_lstm": "GILR-LSTM", "lstm": "LSTM"}


@dataclass
class Figure2Scale:
    # Moving-average window (in logged points) per panel, in order of T; one value: every panel.
    smoothing: list[int] = field(default_factory=lambda: [5])
    grid_points: int = 200  # common wall-time grid the runs are resampled onto


@dataclass
class Figure2Config(Common):
    scale: Figure2Scale = field(default_factory=Figure2Scale)
    runs: str = "table3_runs"  # table3.py's runs folder under results/<machine>/


def register() -> None:
    register_common()
    ConfigStore.instance().store(name="figure2_schema", node=Figure2Config)


def load_logs(folder: Path) -> pd.DataFrame:
    """The logs of the runs that finished: each with its record (JSON) beside it.

    A run writes its log row by row and its record at the end, so a log without a record is a
    run that was stopped (Ctrl-C, a killed cluster job) or is still going: drawn, it would look
    like a run that ended where it was cut off.
    """
    if not folder.is_dir():
        raise MissingInput(
            f"no table3 logs in {folder}: run `python reproductions/table3.py` first (same "
            "device and results_dir)")
    logs = sorted(p for p in folder.glob("*.csv") if p.with_suffix(".json").is_file())
    frames = [pd.read_csv(p).assign(run=p.stem) for p in logs]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise MissingInput(f"no finished run's log in {folder} (a log counts once its run "
                           "wrote its record, the .json beside it)")
    logs = pd.concat(frames, ignore_index=True)
    logs["model"] = logs["model"].map(lambda k: NAMES.get(k, k))
    return logs


def settings(folder: Path) -> dict[str, str]:
    """Each model's setting in these runs, from table3.py's run records beside the logs."""
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    seen = {}
    for r in records:
        seen.setdefault(r["model"], set()).add((r["hidden"], r["lr"], r["forget_bias"]))
    return {model: "; ".join(setting_text(*s) for s in sorted(found, key=str))
            for model, found in sorted(seen.items())}


def curves(logs: pd.DataFrame, smoothing: list[int], grid_points: int) -> pd.DataFrame:
    """Mean and sd across runs of the smoothed accuracy, on a common wall-time grid per panel.

    A run that stopped (converged, or hit its cap) keeps its last smoothed value up to the end of
    the panel's time axis: a converged model stays at its accuracy; dropping it would bias the
    mean towards the runs still training.
    """
    out = []
    lengths = sorted(logs["T"].unique())
    if len(smoothing) not in (1, len(lengths)):
        raise ConfigError(
            f"scale.smoothing must hold one window, or one per panel in order of T "
            f"({', '.join(map(str, lengths))}: {len(lengths)}); got {smoothing}")
    for i, T in enumerate(lengths):
        window = smoothing[i] if len(smoothing) == len(lengths) else smoothing[0]
        panel = logs[logs["T"] == T]
        grid = np.linspace(0.0, panel["wall_time_s"].max(), grid_points)
        for model, runs in panel.groupby("model"):
            resampled = []
            for _, r in runs.groupby("run"):
                r = r.sort_values("wall_time_s")
                smooth = r["accuracy"].rolling(window, min_periods=1).mean().to_numpy()
                resampled.append(np.interp(grid, r["wall_time_s"].to_numpy(), smooth))
            stack = np.vstack(resampled)
            # The sample sd, as Table 3's; one run has no spread to show.
            sd = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros(grid_points)
            out.append(pd.DataFrame({
                "T": T, "model": model, "wall_time_min": grid / 60.0,
                "accuracy_mean": stack.mean(axis=0), "accuracy_sd": sd,
                "runs": len(resampled), "smoothing": window}))
    return pd.concat(out, ignore_index=True)


def figure(curve: pd.DataFrame, device, caption: str = ""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    lengths = sorted(curve["T"].unique())
    fig, axes = plt.subplots(1, len(lengths), figsize=(4.6 * len(lengths), 3.6), squeeze=False)
    palette = dict(zip(sorted(curve["model"].unique()), sns.color_palette(n_colors=4)))
    for ax, T in zip(axes[0], lengths):
        for model, c in curve[curve["T"] == T].groupby("model"):
            color = palette[model]
            ax.plot(c["wall_time_min"], c["accuracy_mean"], color=color,
                    label=f"{model} ({c['runs'].iloc[0]} runs)")
            ax.fill_between(c["wall_time_min"], c["accuracy_mean"] - c["accuracy_sd"],
                            c["accuracy_mean"] + c["accuracy_sd"], color=color, alpha=0.25)
        ax.set(title=f"n = {T:,}", xlabel="wall time (minutes)", ylim=(0.3, 1.02))
        ax.axhline(1.0, color="grey", lw=0.6, ls=":")
    axes[0][0].set_ylabel("minibatch accuracy (moving average)")
    axes[0][-1].legend(loc="lower right")
    title = f"Figure 2 on {device.type.upper()}: mean ± sd across runs"
    fig.suptitle(title + (f"\n{caption}" if caption else ""), y=1.02 + 0.05 * bool(caption),
                 fontsize=10 if caption else None)
    fig.tight_layout()
    return fig


def summary_table(logs: pd.DataFrame) -> pd.DataFrame:
    """Per panel and model: runs, and the median time of the first perfect logged minibatch."""
    rows = []
    for (T, model), runs in logs.groupby(["T", "model"]):
        firsts = [r.loc[r["accuracy"] >= 1.0, "wall_time_s"].min() for _, r in runs.groupby("run")]
        reached = [f for f in firsts if np.isfinite(f)]
        rows.append({"T": str(T), "model": model, "runs": str(len(firsts)),
                     "runs reaching 100%": str(len(reached)),
                     "median time to first 100% (s)": fmt_x(float(np.median(reached)), 1)
                     if reached else "-"})
    return pd.DataFrame(rows)


def run(cfg: DictConfig) -> Path:
    require(cfg, "scale.smoothing", "device.threads")
    require(cfg, "scale.grid_points", minimum=2)  # a curve needs two points
    device = resolve_device(cfg.device)
    started = time.perf_counter()
    folder = results_dir(cfg, device) / f"{cfg.runs}{cfg.tag}" / "compare"
    logs = load_logs(folder)
    curve = curves(logs, list(cfg.scale.smoothing), cfg.scale.grid_points)
    kept = settings(folder)
    origin = ("the setting table3.py's sweep kept; see [the sweep](table3_sweep.md)"
              if (folder.parent / "sweep").is_dir() else "the setting these runs used; no sweep")
    body = [
        "## The runs behind the curves", "", markdown_table(summary_table(logs)), "",
        *(f"- {model}: {text} ({origin})" for model, text in kept.items()),
        f"- From `{folder.parent.name}/{folder.name}/` ({logs['run'].nunique()} runs, written by "
        "table3.py's comparison). Each "
        "run's accuracy (logged every few steps) is smoothed with a moving average of "
        f"{list(cfg.scale.smoothing)} logged points, resampled onto a common wall-time grid "
        "(a stopped run holds its last value), then averaged; the band is ± 1 sd across runs.",
        "- The paper's panels (n = 1,024 / 8,192 / 1,048,576, a ~2017 GPU) are images with no "
        "published data; set this figure beside them by shape: the GILR-LSTM reaching 100% "
        "well before the LSTM.",
    ]
    artifact = Artifact(
        name="figure2", title="Figure 2: learning curves of the synthetic task",
        raw=curve, body="\n".join(body),
        figure=figure(curve, device, "; ".join(f"{m}: {t}" for m, t in kept.items())),
        meta={"logs": f"{folder.parent.name}/{folder.name}",
              "runs": sorted(logs["run"].unique())},
    )
    path = write_artifact(artifact, cfg, device, time.perf_counter() - started)
    return path


register()


@hydra.main(config_path="conf/figure2", config_name="figure2", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
