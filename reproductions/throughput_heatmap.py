"""The ICLR poster's heatmap: GILR-LSTM throughput over batch x sequence length.

    python reproductions/throughput_heatmap.py                    # this machine, scale=small
    python reproductions/throughput_heatmap.py device=cuda scale=paper

A 2-layer, 256-unit GILR-LSTM, forward pass timed (as on the poster), over batch b and length T
with b x T capped; torch.nn.LSTM (cuDNN on a GPU) of the same size once per batch size.
Writes results/<machine>/throughput_heatmap.{csv,md,png,json} with the poster's numbers beside.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pandas as pd
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

import plrnn
from plrnn.bench.tables import fmt_x, markdown_table
from plrnn.bench.timing import reuse_freed_pages
from plrnn.repro import Artifact, register_common, resolve_device, write_artifact
from plrnn.repro.config import (
    Common,
    ConfigError,
    one_line_errors,
    progress,
    require,
    require_backend,
)
from plrnn.repro.measure import interleaved
from plrnn.repro.models import LSTM, build, inputs, step_fn

PAPER = Path(__file__).parent / "paper" / "throughput_heatmap.csv"
GILR_LSTM = "GILR-LSTM"


@dataclass
class HeatmapScale:
    batches: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    seq_lens: list[int] = field(default_factory=lambda: [256, 1024, 4096, 16384])
    max_steps: int = 32768  # cells with b x T above this are skipped, as on the poster
    hidden: int = 256
    num_layers: int = 2
    input_size: int = 4
    lstm_seq_len: int = 256  # the LSTM's throughput hardly depends on T; one length per batch
    rounds: int = 2
    min_run_time: float = 0.2


@dataclass
class HeatmapConfig(Common):
    scale: HeatmapScale = field(default_factory=HeatmapScale)
    backend: str = "auto"  # the GILR-LSTM's linear_recurrence backend
    step: str = "forward"  # the timed step: "forward" (the poster) or "train"


def register() -> None:
    register_common()
    ConfigStore.instance().store(name="throughput_heatmap_schema", node=HeatmapConfig)


def _time(cfg: DictConfig, device, arch: str, T: int, b: int) -> list[float]:
    torch.manual_seed(cfg.seed)
    s = cfg.scale
    model = build(arch, s.input_size, s.hidden, s.num_layers, cfg.backend).to(device)
    x = inputs(T, b, s.input_size, device, cfg.seed)
    fn = step_fn(model, x, cfg.step)
    return interleaved({arch: fn}, rounds=s.rounds, min_run_time=s.min_run_time,
                       inputs=(x,))[arch]


def measure(cfg: DictConfig, device) -> pd.DataFrame:
    s = cfg.scale
    cells = [(GILR_LSTM, T, b) for b in s.batches for T in s.seq_lens if b * T <= s.max_steps]
    cells += [(LSTM, s.lstm_seq_len, b) for b in s.batches]
    rows = []
    for arch, T, b in progress(cells, cfg, desc="heatmap", unit="cell"):
        for i, sec in enumerate(_time(cfg, device, arch, T, b)):
            rows.append({"model": arch, "seq_len": T, "batch": b, "round": i, "seconds": sec,
                         "kilo_steps_per_s": T * b / sec / 1e3})
    return pd.DataFrame(rows)


def _paper() -> pd.DataFrame:
    paper = pd.read_csv(PAPER, comment="#")
    return paper.replace({"model": {"CuDNN LSTM": LSTM}})


def grids(raw: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Ours, the paper's and ours/paper as batch x T tables (kilo steps/s), plus the LSTM rows."""
    ours = raw.groupby(["model", "batch", "seq_len"])["kilo_steps_per_s"].median().reset_index()
    paper = _paper()
    g = ours[ours["model"] == GILR_LSTM].pivot(index="batch", columns="seq_len",
                                               values="kilo_steps_per_s")
    p = paper[paper["model"] == GILR_LSTM].pivot(index="batch", columns="seq_len",
                                                 values="kilo_steps_per_s")
    p.columns = p.columns.astype(int)
    lstm = ours[ours["model"] == LSTM].set_index("batch")["kilo_steps_per_s"]
    lstm_paper = paper[paper["model"] == LSTM].set_index("batch")["kilo_steps_per_s"]
    return {
        "ours": g,
        "paper": p.reindex(index=g.index, columns=g.columns),
        "ratio": g / p.reindex(index=g.index, columns=g.columns),
        "lstm": pd.DataFrame({"ours": lstm, "paper": lstm_paper.reindex(lstm.index),
                              "GILR-LSTM best / LSTM": g.max(axis=1) / lstm}),
    }


def _as_table(grid: pd.DataFrame, digits: int = 1) -> str:
    shown = grid.map(lambda v: fmt_x(v, digits) if not math.isnan(v) else "")
    shown.insert(0, "batch \\ T", [str(b) for b in grid.index])
    shown.columns = ["batch \\ T", *[str(c) for c in grid.columns]]
    return markdown_table(shown.reset_index(drop=True))


def _lstm_table(lstm: pd.DataFrame) -> str:
    shown = lstm.map(fmt_x).reset_index()
    shown["batch"] = shown["batch"].astype(str)
    return markdown_table(shown)


def figure(g: dict[str, pd.DataFrame], device):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 4, figsize=(15, 4.2),
                             gridspec_kw={"width_ratios": [8, 1.3, 8, 1.3]})
    panels = [("ours", f"ours ({device.type.upper()})", "ours"),
              ("paper", "poster (2017 GPU)", "paper")]
    for i, (key, title, lstm_col) in enumerate(panels):
        if g[key].isna().all().all():  # e.g. a smoke grid the poster never measured
            axes[2 * i].text(0.5, 0.5, "no published cell in this grid", ha="center")
            axes[2 * i].set(title=title)
            axes[2 * i + 1].set_axis_off()
            continue
        sns.heatmap(g[key], ax=axes[2 * i], annot=True, fmt=".3g", cmap="viridis",
                    cbar=False, annot_kws={"size": 7})
        axes[2 * i].set(title=f"GILR-LSTM, {title}: k steps/s", xlabel="T", ylabel="batch")
        sns.heatmap(g["lstm"][[lstm_col]].rename(columns={lstm_col: "LSTM"}), ax=axes[2 * i + 1],
                    annot=True, fmt=".3g", cmap="magma", cbar=False, annot_kws={"size": 7})
        axes[2 * i + 1].set(ylabel="", xlabel="")
    fig.tight_layout()
    return fig


def check(cfg: DictConfig) -> None:
    s = cfg.scale
    require(cfg, "scale.batches", "scale.seq_lens", "scale.max_steps", "scale.hidden",
            "scale.num_layers", "scale.input_size", "scale.lstm_seq_len", "scale.rounds",
            "scale.min_run_time", "device.threads")
    require(cfg, "step", choices=("forward", "train"))
    if min(s.batches) * min(s.seq_lens) > s.max_steps:  # the GILR-LSTM grid would be empty
        raise ConfigError(f"scale.max_steps must be at least the smallest batch x T, "
                          f"{min(s.batches) * min(s.seq_lens)}; got {s.max_steps}")


def run(cfg: DictConfig) -> Path:
    check(cfg)
    device = resolve_device(cfg.device)
    require_backend(cfg, "backend", device)
    started = time.perf_counter()
    allocator = reuse_freed_pages() if device.type == "cpu" else "torch CUDA caching allocator"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plrnn.backends(device)  # builds the kernels before anything is timed
    raw = measure(cfg, device)
    g = grids(raw)
    chosen = plrnn.recurrence.registry.choose_auto(device, 4096, cfg.scale.hidden) \
        if cfg.backend == "auto" else cfg.backend
    body = [
        "## GILR-LSTM throughput, ours (thousand steps/s)", "", _as_table(g["ours"]), "",
        "## The poster's (thousand steps/s, read off the published image)", "",
        _as_table(g["paper"]), "",
        "## Ours / poster", "", _as_table(g["ratio"], 2), "",
        f"## {LSTM if device.type == 'cuda' else 'LSTM (torch.nn.LSTM, CPU kernel)'} per batch "
        f"(thousand steps/s, T = {cfg.scale.lstm_seq_len})", "",
        _lstm_table(g["lstm"]),
        "",
        f"- {cfg.scale.num_layers} layers x {cfg.scale.hidden} units, input "
        f"{cfg.scale.input_size}, timed step: {cfg.step}, GILR-LSTM backend {cfg.backend!r}"
        + (f" (-> {chosen} at T = 4096)" if cfg.backend == "auto" else "")
        + f"; medians over {cfg.scale.rounds} rounds.",
        "- The poster's numbers come from a ~2017 GPU" + (
            "; these are CPU numbers, a different fact." if device.type == "cpu" else "."),
    ]
    artifact = Artifact(
        name="throughput_heatmap",
        title="Throughput heatmap: GILR-LSTM over batch x T, LSTM per batch",
        raw=raw, body="\n".join(body), figure=figure(g, device),
        meta={"allocator": allocator},
    )
    path = write_artifact(artifact, cfg, device, time.perf_counter() - started)
    print(_as_table(g["ours"]))
    return path


register()


@hydra.main(config_path="conf/throughput_heatmap", config_name="throughput_heatmap",
            version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
