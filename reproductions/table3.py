"""Table 3 of the paper: the synthetic long-dependency task, GILR-LSTM vs LSTM, as a fair race.

    python reproductions/table3.py                          # scale=small: ~1.5 h on a 2-core CPU
    python reproductions/table3.py stage=summary            # the tables again from the runs kept
    python reproductions/table3.py device=cuda scale=paper  # the paper's lengths (days)

Three steps, one command (stage=all):
1. sweep: both models get the same tuning budget, a Hydra multirun over learning rate x forget
   bias x width at one length (scale.sweep), each run capped alike. Jobs run scale.n_jobs at a
   time with the joblib launcher, the cores split evenly between them.
2. compare: each model keeps its best sweep setting (the rule in plrnn.repro.tuning) and trains
   with fresh seeds at every length of scale.compare, again a multirun.
3. summary: reads the runs' records back from results/<machine>/table3_runs/ and writes
   table3_sweep.{csv,md,png,json}, table3.{csv,md,png,json} and figure2.{csv,md,png,json}.

Every run writes its record (JSON) and its accuracy log (CSV) under table3_runs/<phase>/, so the
steps can also run apart: the multiruns on a cluster (`stage=run job.phase=sweep ...` with another
Hydra launcher), then `stage=summary` here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pandas as pd
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from plrnn.bench.tables import fmt_x, markdown_table
from plrnn.repro import Artifact, register_common, resolve_device, write_artifact
from plrnn.repro.artifacts import file_tag, results_dir
from plrnn.repro.config import (
    Common,
    ConfigError,
    MissingInput,
    one_line_errors,
    require,
    require_backend,
)
from plrnn.repro.tuning import SETTINGS, choose, setting_text, sweep_figure, sweep_table
from plrnn.tasks import PAPER_LENGTHS, ModelConfig, RunConfig, TrainConfig, paper_config
from plrnn.tasks import run as train_run

HERE = Path(__file__).resolve().parent
PAPER = HERE / "paper" / "table3.csv"
NAMES = {"gilr_lstm": "GILR-LSTM", "lstm": "LSTM"}  # the paper's "CuDNN LSTM" is torch.nn.LSTM
PAPER_NAMES = {"GILR-LSTM": "GILR-LSTM", "LSTM": "CuDNN LSTM"}
GOAL_SPEEDUP = 5.0  # GILR-LSTM converges >= 5x faster in wall time than the LSTM at T >= 1024
LATE_POINTS = 10  # "late accuracy": mean over a run's last logged points


@dataclass
class ModelSettings:
    """A model's fixed settings; the sweep replaces hidden, lr and forget_bias."""

    hidden: int = 64
    lr: float = 1e-3
    clip: float | None = 20.0
    forget_bias: float | None = None  # None: the layer's default
    init_scale: float | None = None  # LSTM weights U(-s, s); None: torch's default


@dataclass
class SweepGrid:
    seq_len: int = 256
    lr: list[float] = field(default_factory=lambda: [3e-4, 1e-3, 3e-3])
    forget_bias: list[float] = field(default_factory=lambda: [1.0, 5.0, 10.0])
    hidden: list[int] = field(default_factory=lambda: [64, 128])
    seeds: int = 1
    # Sweep seeds start here, apart from the comparison's, so that no compared run is a run
    # its setting was picked on.
    first_seed: int = 1000
    max_steps: int | None = 20000
    max_wall_time_s: float | None = 240.0


@dataclass
class Comparison:
    seq_lens: list[int] = field(default_factory=lambda: [256, 1024])
    seeds: int = 3
    max_steps: int | None = 20000
    max_wall_time_s: float | None = 600.0


@dataclass
class Table3Scale:
    models: list[str] = field(default_factory=lambda: ["gilr_lstm", "lstm"])
    batch_size: int = 8
    # True: the comparison takes plrnn.tasks.paper_config (the paper's sizes, lr, clipping,
    # batch) and there is no sweep; batch_size and the two ModelSettings are then unused.
    paper_settings: bool = False
    # False: no sweep, the comparison runs the two ModelSettings as they are.
    tune: bool = True
    gilr_lstm: ModelSettings = field(default_factory=ModelSettings)
    lstm: ModelSettings = field(default_factory=ModelSettings)
    sweep: SweepGrid = field(default_factory=SweepGrid)
    compare: Comparison = field(default_factory=Comparison)
    window: int = 5  # consecutive perfect checks; the paper's text: 5 minibatches
    check_every: int = 1
    log_every: int = 10
    n_jobs: int = 2  # runs at a time (joblib launcher); >1 needs hydra-joblib-launcher
    figure2_scale: str = "small"  # reproductions/conf/figure2/scale/<name>.yaml


@dataclass
class Job:
    """One training run of a multirun (stage=run)."""

    phase: str = "compare"  # "sweep" | "compare"
    model: str = "gilr_lstm"
    seq_len: int | None = None  # compare only; the sweep runs at scale.sweep.seq_len
    # None: scale.sweep.first_seed in the sweep, seed in the comparison, so that a sweep run
    # never repeats a comparison run (stage=all passes every job its seed).
    seed: int | None = None
    # Sweep only; a comparison run takes its model's kept setting.
    hidden: int | None = None
    lr: float | None = None
    forget_bias: float | None = None


@dataclass
class Table3Config(Common):
    scale: Table3Scale = field(default_factory=Table3Scale)
    backend: str = "auto"  # the GILR-LSTM's linear_recurrence backend
    dtype: str = "float32"
    stage: str = "all"  # "all" | "summary" | "run" (one job, launched by stage=all)
    job: Job = field(default_factory=Job)
    # The runs' records and logs: results/<machine>/<runs><tag>/{sweep,compare}/.
    runs: str = "table3_runs"


def register() -> None:
    register_common()
    ConfigStore.instance().store(name="table3_schema", node=Table3Config)


def runs_dir(cfg: DictConfig, device) -> Path:
    """results/<machine>/table3_runs<tag>/. A command that is one job of a multirun of this
    script (-m) gets the tag of its files, so that each job keeps its own runs; a training job
    (stage=run, launched by a multirun) is told its folder by `runs` and `tag`."""
    tag = cfg.tag if cfg.stage == "run" else file_tag(cfg)
    return results_dir(cfg, device) / f"{cfg.runs}{tag}"


# --- one run ------------------------------------------------------------------------------------

def run_config(cfg: DictConfig, device, kind: str, T: int, seed: int, setting: dict | None,
               caps, log: Path) -> RunConfig:
    """setting: hidden / lr / forget_bias over the model's fixed settings; None with the paper's."""
    s = cfg.scale
    common = dict(device=str(device), dtype=cfg.dtype, log_path=str(log))
    if s.paper_settings:
        rc = paper_config(kind, T, seed=seed, max_steps=caps.max_steps, **common)
        rc.train.window, rc.train.check_every = s.window, s.check_every
    else:
        m = {**OmegaConf.to_container(s[kind]), **(setting or {})}
        model = ModelConfig(kind=kind, hidden=int(m["hidden"]), forget_bias=m["forget_bias"],
                            init_scale=m["init_scale"])
        rc = RunConfig(seq_len=T, batch_size=s.batch_size, seed=seed, model=model,
                       train=TrainConfig(lr=float(m["lr"]), clip=m["clip"],
                                         max_steps=caps.max_steps, window=s.window,
                                         check_every=s.check_every), **common)
    if kind == "gilr_lstm":
        rc.model.backend = cfg.backend
    rc.train.max_wall_time_s = caps.max_wall_time_s
    rc.train.log_every = s.log_every
    rc.train.progress = False  # jobs run side by side; their bars would interleave
    return rc


def load_records(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise MissingInput(
            f"no run records in {folder}: run `python reproductions/table3.py` first (same "
            "device, results_dir and tag)")
    return pd.DataFrame([json.loads(p.read_text()) for p in files])


def kept_setting(cfg: DictConfig, device, kind: str) -> dict | None:
    """The setting a comparison run of `kind` uses: the sweep's pick, or the fixed one."""
    if cfg.scale.paper_settings:
        return None
    if not cfg.scale.tune:
        return {k: cfg.scale[kind][k] for k in SETTINGS}
    sweep = load_records(runs_dir(cfg, device) / "sweep")
    kept = choose(sweep)
    row = kept[kept["model"] == NAMES[kind]]
    if row.empty:
        raise MissingInput(f"the sweep in {runs_dir(cfg, device)} has no run of {kind}")
    return {k: row.iloc[0][k] for k in SETTINGS}


def run_job(cfg: DictConfig, device) -> Path:
    """Trains the one configuration cfg.job names and writes its record and log."""
    j, s = cfg.job, cfg.scale
    seed = j.seed if j.seed is not None else s.sweep.first_seed if j.phase == "sweep" else cfg.seed
    if j.phase == "sweep":
        missing = [k for k in SETTINGS if j[k] is None]
        if missing:
            raise ConfigError(f"a sweep job needs job.{', job.'.join(missing)}")
        T, caps, setting = s.sweep.seq_len, s.sweep, {k: j[k] for k in SETTINGS}
    else:
        if j.seq_len is None:
            raise ConfigError("a compare job needs job.seq_len")
        T, caps, setting = j.seq_len, s.compare, kept_setting(cfg, device, j.model)
    folder = runs_dir(cfg, device) / j.phase
    folder.mkdir(parents=True, exist_ok=True)
    rc = run_config(cfg, device, j.model, T, seed, setting, caps, folder / "pending.csv")
    name = (f"{j.model}_T{T}_h{rc.model.hidden}_lr{rc.train.lr:g}"
            f"_fb{rc.model.forget_bias}_seed{seed}")
    rc.log_path = str(folder / f"{name}.csv")
    result = train_run(rc)
    log = pd.read_csv(rc.log_path)
    record = {
        "phase": j.phase, "seq_len": T, "model": NAMES[j.model], "seed": seed,
        "hidden": rc.model.hidden, "lr": rc.train.lr, "forget_bias": rc.model.forget_bias,
        "converged": result.converged, "iterations": result.iterations,
        "wall_time_s": result.wall_time_s, "stop_reason": result.stop_reason,
        "final_accuracy": result.final_accuracy, "final_loss": result.final_loss,
        "late_accuracy": float(log["accuracy"].tail(LATE_POINTS).mean()),
        "batch_size": rc.batch_size, "clip": rc.train.clip,
        "max_steps": caps.max_steps, "max_wall_time_s": caps.max_wall_time_s,
        "threads": torch.get_num_threads(), "log": f"{j.phase}/{name}.csv",
    }
    # The record marks the run as finished (figure2.py draws only logs that have one), so it
    # appears whole or not at all.
    path = folder / f"{name}.json"
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(partial, path)
    return path


# --- the multiruns --------------------------------------------------------------------------

def _joined(values) -> str:
    return ",".join(str(v) for v in values)


def multirun(cfg: DictConfig, device, phase: str, grid: dict[str, list], runs: Path) -> None:
    """Runs every combination of `grid` (job keys) as one Hydra multirun of this script.

    The jobs get this run's whole config (written to `runs`, so it stays on record), their
    records go to `runs`, and they take their own job.* values; jobs run scale.n_jobs at a time,
    each on its share of the cores.
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    threads = cfg.device.threads or max(1, (os.cpu_count() or 1) // cfg.scale.n_jobs)
    config["device"]["threads"] = threads
    config["runs"], config["tag"] = runs.name, ""
    (runs / "config.yaml").write_text(
        OmegaConf.to_yaml({"defaults": ["table3_schema", "_self_"], **config}))
    launcher = ["hydra/launcher=basic"]
    if cfg.scale.n_jobs > 1:
        if importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None:
            raise RuntimeError("scale.n_jobs > 1 runs jobs with Hydra's joblib launcher: "
                               "pip install hydra-joblib-launcher, or set scale.n_jobs=1")
        launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={cfg.scale.n_jobs}"]
    scratch = Path(tempfile.mkdtemp(prefix=f"table3-{phase}-"))
    command = [sys.executable, str(Path(__file__).resolve()), "--multirun",
               "--config-dir", str(runs), "--config-name", "config", "stage=run",
               f"job.phase={phase}", *(f"job.{k}={_joined(v)}" for k, v in grid.items()),
               *launcher, f"hydra.sweep.dir={scratch}"]
    expected = math.prod(len(v) for v in grid.values())
    before = len(list((runs / phase).glob("*.json")))
    print(f"table3: {phase}, {expected} runs, {cfg.scale.n_jobs} at a time, {threads} "
          f"thread(s) each", flush=True)
    done = subprocess.run(command, check=False)
    written = len(list((runs / phase).glob("*.json"))) - before
    if done.returncode != 0 or written != expected:
        raise RuntimeError(f"table3 {phase}: {written} of {expected} runs wrote a record "
                           f"(exit status {done.returncode}); the jobs' Hydra logs are in "
                           f"{scratch}")
    shutil.rmtree(scratch, ignore_errors=True)


def train_all(cfg: DictConfig, device) -> None:
    """The sweep and the comparison into a staging folder that replaces the runs folder once
    both finished, so that an interrupted command leaves the previous runs whole."""
    s = cfg.scale
    final = runs_dir(cfg, device)
    staged = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    if s.tune and not s.paper_settings:
        multirun(cfg, device, "sweep", {
            "model": s.models, "hidden": s.sweep.hidden, "lr": s.sweep.lr,
            "forget_bias": s.sweep.forget_bias,
            "seed": [s.sweep.first_seed + i for i in range(s.sweep.seeds)]}, staged)
    multirun(cfg, device, "compare", {
        "model": s.models, "seq_len": s.compare.seq_lens,
        "seed": [cfg.seed + i for i in range(s.compare.seeds)]}, staged)
    config = OmegaConf.load(staged / "config.yaml")
    config.runs, config.tag = cfg.runs, file_tag(cfg)  # as they will read after the swap
    (staged / "config.yaml").write_text(OmegaConf.to_yaml(config))
    _swap_dirs(staged, final)


def _swap_dirs(staged: Path, final: Path) -> None:
    """Replaces `final` by `staged` so that a crash leaves one of the two whole."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


# --- the tables -----------------------------------------------------------------------------

def _mean_std(values: pd.Series) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _censored_median(runs: pd.DataFrame, column: str) -> float:
    return float(runs[column].where(runs["converged"], math.inf).median())


def summarize(raw: pd.DataFrame) -> pd.DataFrame:
    paper = pd.read_csv(PAPER)
    out = []
    for (T, model), runs in raw.groupby(["seq_len", "model"]):
        done = runs[runs["converged"]]
        it, it_sd = _mean_std(done["iterations"])
        wall, wall_sd = _mean_std(done["wall_time_s"])
        p = paper[(paper["seq_len"] == T) & (paper["model"] == PAPER_NAMES[model])]
        # Medians over every run, a capped one counting as "longer than any": infinite when at
        # least half hit the cap. Of three runs, one slow run sets the mean; not the median.
        out.append({
            "T": T, "model": model, "converged": f"{len(done)}/{len(runs)}",
            "iterations": it, "iterations sd": it_sd, "wall s": wall, "wall s sd": wall_sd,
            "iterations median": _censored_median(runs, "iterations"),
            "wall s median": _censored_median(runs, "wall_time_s"),
            # A run that hit its cap bounds its time to convergence from below, so the mean and
            # median over every run's wall time bound the true mean and median.
            "wall s lower bound": float(runs["wall_time_s"].mean()),
            "wall s median lower bound": float(runs["wall_time_s"].median()),
            "all converged": len(done) == len(runs),
            "paper iterations (k)": p["iterations_k_mean"].iloc[0] if len(p) else math.nan,
            "paper wall (h)": p["wall_hours_mean"].iloc[0] if len(p) else math.nan,
        })
    return pd.DataFrame(out)


def speedups(summary: pd.DataFrame) -> pd.DataFrame:
    """LSTM wall time / GILR-LSTM wall time per length, ours and the paper's."""
    rows = []
    for T, both in summary.groupby("T"):
        by = both.set_index("model")
        if not {"GILR-LSTM", "LSTM"} <= set(by.index):
            continue
        g, lstm = by.loc["GILR-LSTM"], by.loc["LSTM"]
        bound = not lstm["all converged"]  # the LSTM's time is only known to be at least this
        lstm_wall = lstm["wall s lower bound"] if bound else lstm["wall s"]
        ours = lstm_wall / g["wall s"] if g["all converged"] else math.nan
        median_bound = math.isinf(lstm["wall s median"])
        lstm_median = lstm["wall s median lower bound"] if median_bound else lstm["wall s median"]
        medians = lstm_median / g["wall s median"] if math.isfinite(g["wall s median"]) else (
            math.nan)
        paper = lstm["paper wall (h)"] / g["paper wall (h)"]
        rows.append({"T": T, "ours": ours, "ours is a lower bound": bound,
                     "ours, medians": medians, "medians: lower bound": median_bound,
                     "paper": paper, "goal (>= 5x at T >= 1024)": _goal(T, ours, bound)})
    return pd.DataFrame(rows)


def _goal(T: int, speedup: float, lower_bound: bool) -> str:
    if T < 1024 or math.isnan(speedup):
        return "n/a"
    if speedup >= GOAL_SPEEDUP:
        return "PASS"
    # A capped LSTM only bounds the speedup from below: longer caps would decide it.
    return "undecided (lower bound; raise the cap)" if lower_bound else "FAIL"


def render(summary: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({
        "T": summary["T"].astype(str), "model": summary["model"],
        "converged": summary["converged"],
        "iterations": [f"{m:.0f} ± {s:.0f}" if math.isfinite(m) else "-"
                       for m, s in zip(summary["iterations"], summary["iterations sd"])],
        "wall time (s)": [f"{m:.1f} ± {s:.1f}" if math.isfinite(m) else
                          f"- (> {lb:.0f})" for m, s, lb in
                          zip(summary["wall s"], summary["wall s sd"],
                              summary["wall s lower bound"])],
        "median wall time (s)": [f"{m:.1f}" if math.isfinite(m) else f"> {lb:.0f}" for m, lb in
                                 zip(summary["wall s median"],
                                     summary["wall s median lower bound"])],
        "paper iterations (k)": [paper_text(T, m, "iterations_k") for T, m in
                                 zip(summary["T"], summary["model"])],
        "paper wall (h)": [paper_text(T, m, "wall_hours") for T, m in
                           zip(summary["T"], summary["model"])],
    })
    return shown


def paper_text(T: int, model: str, column: str) -> str:
    """The paper's cell as printed: "mean ± sd" with its own digits, "not converged" where the
    paper says so, "-" for a length it did not run."""
    paper = pd.read_csv(PAPER, dtype=str, keep_default_na=False)
    row = paper[(paper["seq_len"] == str(T)) & (paper["model"] == PAPER_NAMES[model])]
    if row.empty:
        return "-"
    row = row.iloc[0]
    if row["converged"].lower() != "true":
        return "not converged"
    return f"{row[column + '_mean']} ± {row[column + '_std']}"


def figure(raw: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 4))
    shown = raw.assign(status=raw["converged"].map({True: "converged", False: "hit the cap"}),
                       T=raw["seq_len"].astype(str))
    sns.stripplot(data=shown, x="T", y="wall_time_s", hue="model", dodge=True, ax=ax, size=7,
                  marker="o", jitter=0.15)
    capped = shown[~shown["converged"]]
    if len(capped):
        sns.stripplot(data=capped, x="T", y="wall_time_s", hue="model", dodge=True, ax=ax,
                      size=12, marker="x", linewidth=1.5, jitter=0.15, legend=False)
    ax.set(yscale="log", ylabel="wall time to convergence (s); x = hit the cap",
           xlabel="sequence length T", title="Table 3: time to convergence per run")
    fig.tight_layout()
    return fig



def _setting_text(row) -> str:
    return setting_text(row["hidden"], row["lr"], row["forget_bias"])


def write_sweep(cfg: DictConfig, device, sweep: pd.DataFrame, elapsed_s: float) -> pd.DataFrame:
    kept = choose(sweep)
    g = cfg.scale.sweep
    lines = [f"- {m}: {_setting_text(r)} ({'converged ' + str(r['converged runs']) + '/' + str(r['runs']) if r['converged runs'] else 'no setting converged within the cap: the best late accuracy'})"
             for m, r in kept.set_index("model").iterrows()]
    body = [
        "## Every configuration's outcome", "",
        "Cells: runs converged / runs, then the median wall time and iterations to convergence; "
        "or, when no run converged, the late accuracy (mean minibatch accuracy over the last "
        f"{LATE_POINTS} logged points; 0.5 is chance).", "",
        markdown_table(sweep_table(sweep)), "",
        "## Settings kept for the comparison ([Table 3](table3.md))", "", *lines, "",
        f"- The same grid and caps for both models: T = {g.seq_len}, batch "
        f"{cfg.scale.batch_size}, {g.seeds} seed(s) per configuration (seeds from "
        f"{g.first_seed}, apart from the comparison's), caps per run {g.max_steps} steps and "
        f"{g.max_wall_time_s} s; clipping {cfg.scale.gilr_lstm.clip} (GILR-LSTM) and "
        f"{cfg.scale.lstm.clip} (LSTM). {cfg.scale.n_jobs} runs at a time.",
        "- The rule (plrnn.repro.tuning): most runs converged, then the least median wall "
        "time to convergence, then the highest late accuracy, then the smaller lr and width.",
    ]
    write_artifact(Artifact(
        name="table3_sweep", title="Table 3, tuning sweep: the same budget for both models",
        raw=sweep, body="\n".join(body), figure=sweep_figure(sweep),
        meta={"kept": kept.to_dict(orient="records")}), cfg, device, elapsed_s)
    return kept


def write_table(cfg: DictConfig, device, raw: pd.DataFrame, kept: pd.DataFrame | None,
                elapsed_s: float) -> Path:
    s, c = cfg.scale, cfg.scale.compare
    runs = runs_dir(cfg, device)
    summary = summarize(raw)
    ratio = speedups(summary)
    if kept is not None:
        settings = ["## Settings", "",
                    "Each model trains with the setting it did best with in [the tuning sweep]"
                    "(table3_sweep.md), where both got the same grid and caps:", "",
                    *[f"- {m}: {_setting_text(r)}" for m, r in kept.set_index("model").iterrows()],
                    ""]
    else:
        settings = ["## Settings", "", "- " + ("the paper's (plrnn.tasks.paper_config)"
                                                if s.paper_settings else
                                                "fixed by the scale (no sweep); per run in the CSV"),
                    ""]
    body = [
        "## Time to convergence beside the paper's", "", markdown_table(render(summary)), "",
        "## Wall-time speedup of the GILR-LSTM (LSTM wall time / GILR-LSTM wall time)", "",
        markdown_table(ratio.assign(**{k: ratio[k].map(fmt_x)
                                       for k in ("ours", "ours, medians", "paper")})
                       .astype(str)) if len(ratio) else "(needs both models)", "",
        *settings,
        f"- Convergence: {s.window} consecutive checks at 100% minibatch accuracy, a check every "
        f"{s.check_every} step(s). Caps per run: {c.max_steps} steps, {c.max_wall_time_s} s; a "
        "capped run did not converge ('-' where none did, with the mean wall time of all runs as "
        "a lower bound). With any LSTM run capped, the speedup is a lower bound: the mean of all "
        "its runs' wall times, capped ones included, over the GILR-LSTM's mean.",
        f"- {c.seeds} seeds per (T, model), {s.n_jobs} runs at a time with "
        f"{int(raw['threads'].iloc[0])} thread(s) each. Mean ± sd over the runs that converged, "
        "as the paper reports them; the median over all runs beside it (a capped run counts as "
        "longer than any), since with three runs a single slow one sets the mean. The paper "
        "reports thousands of iterations and hours on a ~2017 GPU (the LSTM is cuDNN there, "
        "torch.nn.LSTM here).",
        (f"- The runs were made by `stage=all` with the config in `{runs.name}/config.yaml`"
         if (runs / "config.yaml").is_file() else
         f"- The runs in `{runs.name}/` were made by `stage=run` jobs (each job's config is in "
         "its Hydra output folder)")
        + "; `stage=summary` rebuilds these tables and Figure 2 from them.",
        f"- GILR-LSTM recurrence backend '{cfg.backend}'. Learning curves: "
        "[Figure 2](figure2.md).",
    ]
    return write_artifact(Artifact(
        name="table3", title="Table 3: synthetic task, time to convergence",
        raw=raw, body="\n".join(body), figure=figure(raw),
        meta={"runs": runs_dir(cfg, device).name, "summary": summary.to_dict(orient="records"),
              "speedups": ratio.to_dict(orient="records"),
              "kept": None if kept is None else kept.to_dict(orient="records")},
    ), cfg, device, elapsed_s)


def draw_figure2(cfg: DictConfig) -> Path:
    """figure2.py on the comparison's logs, under this command's header."""
    name = "reproductions_figure2"  # the key tests/reproductions/helpers.py loads it under
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "figure2.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    figure2 = sys.modules[name]
    f2 = OmegaConf.merge(
        OmegaConf.structured(figure2.Figure2Config),
        {"scale": OmegaConf.load(HERE / "conf" / "figure2" / "scale" /
                                 f"{cfg.scale.figure2_scale}.yaml"),
         "device": cfg.device, "results_dir": cfg.results_dir, "tag": file_tag(cfg),
         "progress": cfg.progress})
    return figure2.run(f2)


def as_made(cfg: DictConfig, device) -> DictConfig:
    """stage=summary: cfg with the scale, dtype and backend the runs were made with, so that the
    tables describe them (caps, seeds, lengths) and not this command's defaults. stage=all
    keeps that config beside the runs; runs made by stage=run jobs alone (on a cluster) must
    match this command's caps, or the command is refused."""
    runs = runs_dir(cfg, device)
    saved = runs / "config.yaml"
    if saved.is_file():
        keys = ["scale", "dtype", "backend"]
        made = OmegaConf.to_container(OmegaConf.masked_copy(OmegaConf.load(saved), keys))
        if made != OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True):
            print(f"table3: the runs in {runs} were made with another scale, dtype or backend "
                  "than this command's; the summary describes theirs (config.yaml)",
                  file=sys.stderr)
        return OmegaConf.merge(cfg, made)
    records = load_records(runs / "compare")
    if "max_steps" not in records.columns:  # records of a version that did not keep the caps
        return cfg
    caps = cfg.scale.compare
    made_caps = {(int(r.max_steps), float(r.max_wall_time_s)) for r in records.itertuples()}
    if made_caps != {(caps.max_steps, float(caps.max_wall_time_s))}:
        raise ConfigError(
            f"the comparison runs in {runs} were made with caps (steps, s) "
            f"{sorted(made_caps)}, this command's are ({caps.max_steps}, "
            f"{float(caps.max_wall_time_s)}); pass the scale they were made with")
    return cfg


def summarize_runs(cfg: DictConfig, device, started: float) -> Path:
    runs = runs_dir(cfg, device)
    sweep_dir = runs / "sweep"
    kept = None
    if sweep_dir.is_dir() and not cfg.scale.paper_settings and cfg.scale.tune:
        kept = write_sweep(cfg, device, load_records(sweep_dir), time.perf_counter() - started)
    raw = load_records(runs / "compare")
    path = write_table(cfg, device, raw, kept, time.perf_counter() - started)
    draw_figure2(cfg)
    print(markdown_table(render(summarize(raw))))
    print(f"and the runs' records and logs in {runs}/")
    return path


def check(cfg: DictConfig) -> None:
    """Refuses what would otherwise fail in every job of a multirun, or only at the end, when
    Figure 2 is drawn."""
    require(cfg, "scale.batch_size", "scale.window", "scale.check_every", "scale.log_every",
            "scale.n_jobs", "scale.sweep.lr", "scale.sweep.hidden", "scale.sweep.seeds",
            "scale.sweep.max_steps", "scale.sweep.max_wall_time_s", "scale.compare.seeds",
            "scale.compare.max_steps", "scale.compare.max_wall_time_s", "scale.sweep.seq_len",
            "scale.compare.seq_lens", "job.seq_len", "job.hidden", "job.lr", "device.threads",
            *(f"scale.{kind}.{key}" for kind in NAMES for key in
              ("hidden", "lr", "clip", "init_scale")))
    require(cfg, "scale.models", choices=tuple(NAMES))
    require(cfg, "scale.figure2_scale", choices=sorted(
        p.stem for p in (HERE / "conf" / "figure2" / "scale").glob("*.yaml")))
    # Figure 2 draws one panel per compared length, each smoothed by its own window or by one.
    smoothing = OmegaConf.load(HERE / "conf" / "figure2" / "scale" /
                               f"{cfg.scale.figure2_scale}.yaml").smoothing
    lengths = sorted(set(cfg.scale.compare.seq_lens))
    if len(smoothing) not in (1, len(lengths)):
        raise ConfigError(
            f"scale.figure2_scale={cfg.scale.figure2_scale} smooths with {list(smoothing)}: one "
            f"window, or one per compared length ({len(lengths)}: {lengths}), is needed; pick "
            "another scale.figure2_scale")
    require(cfg, "stage", choices=("all", "summary", "run"))
    require(cfg, "job.phase", choices=("sweep", "compare"))
    require(cfg, "job.model", choices=tuple(NAMES))
    # float16 too is refused by plrnn.tasks (Adam's eps is 0 in float16).
    require(cfg, "dtype", choices=("float32", "float64", "bfloat16"))
    if cfg.scale.paper_settings:  # plrnn.tasks.paper_config knows the paper's lengths only
        lengths = [*cfg.scale.compare.seq_lens, *([cfg.job.seq_len] if cfg.job.seq_len else [])]
        if not set(lengths) <= set(PAPER_LENGTHS):
            raise ConfigError(f"scale.compare.seq_lens must be among the paper's lengths "
                              f"{PAPER_LENGTHS} with scale.paper_settings=true; got {lengths}")


def run(cfg: DictConfig) -> Path:
    """stage=all: sweep, compare, summary; stage=summary: the last; stage=run: one job."""
    check(cfg)
    device = resolve_device(cfg.device)
    if cfg.stage != "summary":
        require_backend(cfg, "backend", device)
    started = time.perf_counter()
    if cfg.stage == "run":
        return run_job(cfg, device)
    if cfg.stage == "all":
        train_all(cfg, device)
    else:
        cfg = as_made(cfg, device)
    return summarize_runs(cfg, device, started)


register()


@hydra.main(config_path="conf/table3", config_name="table3", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
