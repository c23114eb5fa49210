"""Table 2 of the paper: throughput with the parallel vs the serial linear recurrence.

    python reproductions/table2.py                          # this machine, scale=small
    python reproductions/table2.py device=cuda scale=paper
    python reproductions/table2.py variant=authors_code     # as the authors' script ran

Two stacked layers of SRU, QRNN(2), QRNN(10) and GILR-LSTM, b x T steps per batch over several
T; each model runs with the serial and with the parallel recurrence (the paper's one-line
switch, `plrnn.layers.set_backend`), and torch.nn.LSTM (cuDNN on a GPU) of the same size beside
them. Both the train step (forward + backward) and the forward pass alone are timed.
Writes results/<machine>/table2.{csv,md,png,json}.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pandas as pd
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

import plrnn
from plrnn.bench.tables import fmt_x, markdown_table
from plrnn.bench.timing import reuse_freed_pages
from plrnn.layers import set_backend
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

PAPER = Path(__file__).parent / "paper" / "table2.csv"
RECURRENCES = {"cpu": ("cpu_serial", "cpu_parallel"), "cuda": ("cuda_serial", "cuda_parallel")}


@dataclass
class Table2Scale:
    steps: int = 16384  # b x T per batch; b = steps // T
    seq_lens: list[int] = field(default_factory=lambda: [16, 256, 4096, 16384])
    hidden: int = 256
    num_layers: int = 2
    architectures: list[str] = field(
        default_factory=lambda: ["SRU", "QRNN(2)", "QRNN(10)", "GILR-LSTM"])
    lstm: bool = True  # time torch.nn.LSTM beside them (a column the paper lacks)
    rounds: int = 3
    min_run_time: float = 0.2


@dataclass
class Table2Variant:
    input_size: int = 4
    qrnn_sru_hidden: int | None = None  # None: scale.hidden
    qrnn_taps: str = "full"  # "authors": QRNN(k) with k - 1 taps
    passes: list[str] = field(default_factory=lambda: ["train", "forward"])


@dataclass
class Recurrences:
    serial: str | None = None  # None: cpu_serial / cuda_serial
    parallel: str | None = None  # None: cpu_parallel / cuda_parallel


@dataclass
class Table2Config(Common):
    scale: Table2Scale = field(default_factory=Table2Scale)
    variant: Table2Variant = field(default_factory=Table2Variant)
    recurrence: Recurrences = field(default_factory=Recurrences)
    compile_gates: bool = False


def register() -> None:
    register_common()
    ConfigStore.instance().store(name="table2_schema", node=Table2Config)


def _hidden(cfg: DictConfig, arch: str) -> int:
    narrow = cfg.variant.qrnn_sru_hidden
    if narrow is not None and (arch == "SRU" or arch.startswith("QRNN")):
        return narrow
    return cfg.scale.hidden


def measure_cell(cfg: DictConfig, device, T: int, batch: int, backends: tuple[str, str]):
    """Rows for one (T, b): every architecture x recurrence x pass, timed interleaved."""
    x = inputs(T, batch, cfg.variant.input_size, device, cfg.seed)
    rows = []
    for arch in [*cfg.scale.architectures, *([LSTM] if cfg.scale.lstm else [])]:
        torch.manual_seed(cfg.seed)
        model = build(arch, cfg.variant.input_size, _hidden(cfg, arch), cfg.scale.num_layers,
                      backends[0], qrnn_taps=cfg.variant.qrnn_taps,
                      compile_gates=cfg.compile_gates).to(device)
        # One copy per recurrence, same weights: the paper's one-line switch, set before timing.
        models = {"-": model} if arch == LSTM else {
            rec: set_backend(copy.deepcopy(model), rec) for rec in backends}
        for pass_ in cfg.variant.passes:
            fns = {rec: step_fn(m, x, pass_) for rec, m in models.items()}
            try:
                times = interleaved(fns, rounds=cfg.scale.rounds,
                                    min_run_time=cfg.scale.min_run_time, inputs=(x,))
            except RuntimeError as err:
                if arch != LSTM:
                    raise
                # The baseline library refusing a shape (cuDNN's CUDNN_STATUS_NOT_SUPPORTED on
                # an H200 at T = 65536, b = 1) leaves its column empty, with the reason.
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                rows.append({"architecture": arch, "recurrence": "-", "pass": pass_,
                             "seq_len": T, "batch": batch, "round": 0, "seconds": math.nan,
                             "steps_per_s": math.nan, "error": reason})
                continue
            for rec, per_round in times.items():
                for i, s in enumerate(per_round):
                    rows.append({"architecture": arch, "recurrence": rec, "pass": pass_,
                                 "seq_len": T, "batch": batch, "round": i, "seconds": s,
                                 "steps_per_s": T * batch / s})
        del model, models
    return rows


def summarize(raw: pd.DataFrame, backends: tuple[str, str]) -> pd.DataFrame:
    serial, parallel = backends
    med = raw.groupby(["pass", "architecture", "seq_len", "batch", "recurrence"])[
        "steps_per_s"].median()
    published = pd.read_csv(PAPER).set_index(["architecture", "seq_len"])
    out = []
    for (pass_, arch, T, b), _ in raw.groupby(["pass", "architecture", "seq_len", "batch"]):
        if arch == LSTM:
            continue
        s = med[(pass_, arch, T, b, serial)]
        p = med[(pass_, arch, T, b, parallel)]
        lstm = med.get((pass_, LSTM, T, b, "-"), math.nan)
        paper = published["speedup"].get((arch, T), math.nan)
        # The paper's cell at this T had its own batch (b x T = 65,536); scale=small has a
        # quarter of the steps, so its b is not the paper's.
        paper_b = published["batch"].get((arch, T), math.nan)
        out.append({"pass": pass_, "architecture": arch, "T": T, "b": b,
                    "serial steps/s": s, "parallel steps/s": p, "speedup": p / s,
                    "paper b": paper_b, "paper speedup": paper, "ours / paper": p / s / paper,
                    "LSTM steps/s": lstm, "parallel / LSTM": p / lstm})
    order = {a: i for i, a in enumerate(["SRU", "QRNN(2)", "QRNN(10)", "GILR-LSTM"])}
    df = pd.DataFrame(out)
    df["_o"] = df["architecture"].map(lambda a: order.get(a, 99))
    return df.sort_values(["pass", "_o", "T"]).drop(columns="_o").reset_index(drop=True)


def _fmt_rate(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v / 1e3:,.1f}k"


def render(summary: pd.DataFrame) -> pd.DataFrame:
    shown = summary.drop(columns="pass").copy()
    for col in shown.columns:
        if col.endswith("steps/s"):
            shown[col] = shown[col].map(_fmt_rate)
        elif col == "paper b":
            shown[col] = shown[col].map(lambda v: f"{v:.0f}" if math.isfinite(v) else "n/a")
        elif col not in ("architecture", "T", "b"):
            shown[col] = shown[col].map(fmt_x)
    return shown


def figure(summary: pd.DataFrame, device):
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    long = pd.concat([
        summary.assign(source="ours", value=summary["speedup"]),
        summary.assign(source="paper (train, 2017 GPU)", value=summary["paper speedup"]),
    ], ignore_index=True)
    long = long[long["source"].eq("ours") | long["pass"].eq("train")]
    long = long.assign(panel=long["pass"].map({"train": "train step", "forward": "forward only"}))
    grid = sns.catplot(data=long, x="T", y="value", hue="source", col="architecture", row="panel",
                       kind="bar", height=2.6, aspect=1.05, sharey=False, margin_titles=True)
    for ax in grid.axes.flat:
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    grid.set_axis_labels("T (b = steps / T)", "parallel / serial throughput")
    grid.figure.suptitle(f"Table 2 on {device.type.upper()}: speedup of the parallel recurrence",
                         y=1.02)
    return grid.figure


def check(cfg: DictConfig) -> None:
    s = cfg.scale
    require(cfg, "scale.steps", "scale.seq_lens", "scale.hidden", "scale.num_layers",
            "scale.rounds", "scale.min_run_time", "variant.input_size",
            "variant.qrnn_sru_hidden", "device.threads")
    require(cfg, "variant.passes", choices=("train", "forward"))
    require(cfg, "variant.qrnn_taps", choices=("full", "authors"))
    if not s.architectures:
        raise ConfigError("scale.architectures must name at least one of SRU, QRNN(k), GILR-LSTM")
    for arch in s.architectures:  # build's own error for a bad name, before any measuring
        try:
            build(arch, 1, 1, 1, "reference", qrnn_taps=cfg.variant.qrnn_taps)
        except ValueError as err:
            raise ConfigError(f"scale.architectures: {err}") from None
    if max(s.seq_lens) > s.steps:  # b = steps // T would be 0 in that cell
        raise ConfigError(f"scale.steps must be at least the longest of scale.seq_lens, so that "
                          f"every cell has b >= 1; got scale.steps={s.steps}, "
                          f"scale.seq_lens={list(s.seq_lens)}")


def run(cfg: DictConfig) -> Path:
    check(cfg)
    device = resolve_device(cfg.device)
    for key in ("recurrence.serial", "recurrence.parallel"):
        if OmegaConf.select(cfg, key) is not None:
            require_backend(cfg, key, device)
    backends = (cfg.recurrence.serial or RECURRENCES[device.type][0],
                cfg.recurrence.parallel or RECURRENCES[device.type][1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        status = {s.name: s for s in plrnn.backends(device)}
    for name in backends:
        if not status[name].available:
            raise RuntimeError(f"recurrence backend {name!r} is unavailable on {device}: "
                               f"{status[name].reason}")
    allocator = reuse_freed_pages() if device.type == "cpu" else "torch CUDA caching allocator"
    started = time.perf_counter()
    cells = [(T, cfg.scale.steps // T) for T in cfg.scale.seq_lens]
    rows = []
    for T, b in progress(cells, cfg, desc="table2", unit="cell"):
        rows += measure_cell(cfg, device, T, b, backends)
    raw = pd.DataFrame(rows)
    summary = summarize(raw, backends)
    body = []
    titles = {"train": "Train step (forward + backward), as the paper describes Table 2",
              "forward": "Forward pass only, as the authors' timing script measured"}
    for pass_ in cfg.variant.passes:
        part = summary[summary["pass"] == pass_]
        body += [f"## {titles[pass_]}", "", markdown_table(render(part)), ""]
    notes = [
        f"speedup = throughput with `{backends[1]}` / with `{backends[0]}`, medians over "
        f"{cfg.scale.rounds} interleaved rounds; steps/s = b x T / time. `ours / paper` divides by "
        "the paper's speedup, which is for the train step (paper text) on a ~2017 GPU, at the "
        "same T with the paper's batch `paper b` (b x T = 65,536), which differs from ours `b` "
        f"wherever scale.steps ({cfg.scale.steps}) does.",
        f"Models: {cfg.scale.num_layers} layers, {cfg.scale.hidden} units (SRU/QRNN "
        f"{_hidden(cfg, 'SRU')}), input {cfg.variant.input_size}, QRNN taps "
        f"'{cfg.variant.qrnn_taps}', gate fusion (torch.compile) "
        f"{'on' if cfg.compile_gates else 'off'}. `LSTM` is torch.nn.LSTM of the same size "
        f"({'cuDNN' if device.type == 'cuda' else 'the CPU kernel'}), serial by nature.",
        "The authors' script also fed a float64 numpy batch inside the timed region and kept the "
        "GILR surrogate parallel in its 'serial' GILR-LSTM; here every recurrence of a model "
        "switches together and inputs are on the device before timing.",
    ]
    if "error" in raw:
        for (T, b, pass_, reason), _ in raw.dropna(subset=["error"]).groupby(
                ["seq_len", "batch", "pass", "error"]):
            notes.append(f"{LSTM} at T = {T}, b = {b} ({pass_}) failed, so its column is n/a "
                         f"there: {reason}")
    if device.type == "cpu":
        notes.append(
            "CPU numbers: with 2 cores the parallel kernel can at best split time in two while "
            "reading its inputs twice, and the dense layers around the recurrence dominate; they "
            "are not comparable to the paper's GPU numbers.")
    body += [f"- {n}" for n in notes]
    artifact = Artifact(
        name="table2",
        title="Table 2: throughput with the parallel vs the serial recurrence",
        raw=raw, body="\n".join(body), figure=figure(summary, device),
        meta={"backends": list(backends), "allocator": allocator,
              "summary": summary.to_dict(orient="records")},
    )
    path = write_artifact(artifact, cfg, device, time.perf_counter() - started)
    print(markdown_table(render(summary)))
    return path


register()


@hydra.main(config_path="conf/table2", config_name="table2", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
