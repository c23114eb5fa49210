"""Benchmark of plrnn.linear_recurrence: every backend side by side, in one run.

    python -m plrnn.bench.recurrence                # default run (~2-4 min on 2 cores)
    python -m plrnn.bench.recurrence --quick        # smaller shapes, shorter timing (~1 min)
    python -m plrnn.bench.recurrence --sweep-auto   # only the channels x T sweep behind `auto`

Sections (CPU, fp32):
1. Bandwidth: the copy_ probe, torch.mul(out=), and the C++ kernels writing into a preallocated
   buffer (torch.ops.plrnn.cpu_scan_out), as GB/s at 12 bytes/element and as a fraction of copy.
2. Latency-bound regime: 4 channels, long T, forward and forward+backward.
3. The paper's Table-1 grid (batch 1, m channels, T steps), forward; auto against the best kernel.
4. Forward+backward at T=65536, 128 channels against torch's associative_scan and Python loops.

Writes into --out (default results/<machine_name()>/): recurrence_bench.csv (every measurement,
with the raw blocked_autorange block times), recurrence_bench.md (the printed tables under a header
naming machine, torch, commit and config) and recurrence_bench.json (machine_info + config).
With --sweep-auto: auto_sweep.csv, auto_sweep.md and auto_sweep.json instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import importlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import plrnn

from .bandwidth import COPY_BYTES_PER_ELEMENT, bytes_moved, copy_measurement
from .machine import machine_info, machine_name
from .tables import fmt_ms, fmt_x, markdown_table
from .timing import measure, reuse_freed_pages, single_time

# plrnn.recurrence re-exports a *function* named `backends`, which shadows the module attribute.
backend_registry = importlib.import_module("plrnn.recurrence.registry")

KERNELS = ("cpu_serial", "cpu_parallel")
COMPARED = ("cpu_serial", "cpu_parallel", "torch", "auto")
FWD, FWD_BWD = "forward", "forward+backward"

GOAL_BANDWIDTH_FRACTION = 0.80
GOAL_LATENCY_SPEEDUP = 2.0
GOAL_AUTO_RATIO = 1.10
GOAL_AUTO_VS_ASSOC = 8.0
SWEEP_TIE = 0.05  # sweep cells where the kernels are within 5% of each other are ties


# --------------------------------------------------------------------------------------- config
@dataclass
class Config:
    quick: bool
    min_run_time: float
    slow_min_run_time: float  # for methods that take about a second per call
    threads: int
    seed: int
    bandwidth_shape: tuple[int, int]
    latency_channels: int
    latency_T: tuple[int, ...]
    grid_m: tuple[int, ...]
    grid_T: tuple[int, ...]
    fb_T: int
    fb_channels: int
    sweep_channels: tuple[int, ...]
    sweep_T: tuple[int, ...]
    sweep_min_run_time: float
    allocator: str
    device: str = "cpu"
    dtype: str = "float32"
    inputs: str = "decays ~ U(0,1), impulses ~ N(0,1), grad_h ~ N(0,1); fp32, contiguous"


def make_config(args: argparse.Namespace) -> Config:
    quick = args.quick
    mrt = args.min_run_time if args.min_run_time is not None else (0.1 if quick else 0.5)
    return Config(
        quick=quick,
        min_run_time=mrt,
        slow_min_run_time=min(mrt, 0.2),
        threads=torch.get_num_threads(),
        seed=args.seed,
        bandwidth_shape=(1024, 16384) if quick else (4096, 16384),
        latency_channels=4,
        latency_T=(16384, 65536) if quick else (65536, 262144),
        grid_m=(4, 32, 128),
        grid_T=(16, 256, 4096) if quick else (16, 256, 4096, 65536),
        fb_T=16384 if quick else 65536,
        fb_channels=128,
        sweep_channels=(1, 4, 16, 64, 256, 1024) if quick
        else (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
        sweep_T=(16, 256, 4096, 65536) if quick else (16, 64, 256, 1024, 4096, 16384, 65536),
        sweep_min_run_time=min(mrt, 0.2),
        allocator=reuse_freed_pages(),
    )


# ---------------------------------------------------------------------------------------- tasks
class Unavailable(Exception):
    """This measurement cannot run here; the message says why."""


@dataclass
class Task:
    section: str
    method: str  # backend name or probe
    pass_: str
    shape: tuple[int, ...]
    build: Callable[[], tuple[Callable[[], object], tuple[torch.Tensor, ...]]] | None
    how: str = "autorange"  # "autorange" | "single"
    min_run_time: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def T(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return math.prod(self.shape[1:])


class Inputs:
    """Random inputs per shape, created on first use, dropped between sections."""

    def __init__(self, seed: int):
        self.seed = seed
        self._cache: dict = {}

    def clear(self) -> None:
        self._cache.clear()
        gc.collect()

    def get(self, shape: tuple[int, ...], grad: bool = False):
        """(a, x) or, with grad=True, (a, x, g) with a and x leaves that require grad."""
        key = (shape, grad)
        if key not in self._cache:
            gen = torch.Generator().manual_seed(self.seed + hash(shape) % 1000)
            a = torch.rand(shape, generator=gen)
            x = torch.randn(shape, generator=gen)
            if grad:
                g = torch.randn(shape, generator=gen)
                self._cache[key] = (a.requires_grad_(), x.requires_grad_(), g)
            else:
                self._cache[key] = (a, x)
        return self._cache[key]


@dataclass
class Env:
    cfg: Config
    inputs: Inputs
    status: dict  # backend name -> BackendStatus
    out_op_reason: str | None  # why torch.ops.plrnn.cpu_scan_out is unavailable, or None

    def require(self, backend: str) -> None:
        if backend == "auto" or backend not in self.status:
            return
        st = self.status[backend]
        if not st.available:
            raise Unavailable(st.reason)


def _op(env: Env, backend: str, shape, pass_: str):
    def build():
        env.require(backend)
        if pass_ == FWD:
            a, x = env.inputs.get(shape)
            return (lambda: plrnn.linear_recurrence(a, x, backend=backend)), (a, x)
        a, x, g = env.inputs.get(shape, grad=True)

        def fwd_bwd():
            h = plrnn.linear_recurrence(a, x, backend=backend)
            torch.autograd.grad(h, (a, x), g)

        return fwd_bwd, (a, x, g)

    return build


# ------------------------------------------------------------------------------------- sections
def bandwidth_tasks(env: Env) -> list[Task]:
    shape = env.cfg.bandwidth_shape
    numel = math.prod(shape)
    sec = "1 bandwidth"
    bufs: dict = {}

    def scan_inputs():
        if "a" not in bufs:
            a, x = env.inputs.get(shape)
            bufs.update(a=a, x=x, out=torch.empty_like(x))
            bufs["out"].copy_(x)  # fault the pages in: the timed kernel only writes
        return bufs["a"], bufs["x"], bufs["out"]

    def copy_probe():
        raise AssertionError("measured by bandwidth.copy_measurement")

    def mul():
        a, x, out = scan_inputs()
        return (lambda: torch.mul(a, x, out=out)), (a, x)

    def scan_out(parallel: bool):
        def build():
            env.require("cpu_parallel" if parallel else "cpu_serial")
            if env.out_op_reason:
                raise Unavailable(env.out_op_reason)
            a, x, out = scan_inputs()
            op = torch.ops.plrnn.cpu_scan_out
            return (lambda: op(a, x, None, False, parallel, out=out)), (a, x)

        return build

    return [
        Task(sec, "copy_ probe", "copy", (numel,), copy_probe, note="dst.copy_(src), preallocated"),
        Task(sec, "torch.mul(out=)", FWD, shape, mul, note="torch.mul(a, x, out=h)"),
        Task(sec, "cpu_serial", FWD, shape, scan_out(False), note="cpu_scan_out(out=buf)"),
        Task(sec, "cpu_parallel", FWD, shape, scan_out(True), note="cpu_scan_out(out=buf)"),
        Task(sec, "cpu_serial", FWD, shape, _op(env, "cpu_serial", shape, FWD),
             note="linear_recurrence (allocates h)"),
    ]


def latency_tasks(env: Env) -> list[Task]:
    c = env.cfg
    return [
        Task("2 latency", b, p, (T, c.latency_channels), _op(env, b, (T, c.latency_channels), p))
        for T in c.latency_T for p in (FWD, FWD_BWD) for b in COMPARED
    ]


def grid_tasks(env: Env) -> list[Task]:
    c = env.cfg
    return [
        Task("3 table-1 grid", b, FWD, (T, 1, m), _op(env, b, (T, 1, m), FWD))
        for m in c.grid_m for T in c.grid_T for b in COMPARED
    ]


def _combine(left, right):
    return left[0] * right[0], right[0] * left[1] + right[1]


def fwd_bwd_tasks(env: Env) -> list[Task]:
    c = env.cfg
    shape = (c.fb_T, c.fb_channels)
    sec = "4 forward+backward"

    def assoc_build():
        try:
            from torch._higher_order_ops.associative_scan import associative_scan
        except ImportError as err:
            raise Unavailable(f"torch._higher_order_ops.associative_scan: {err}") from None
        # Check it computes the recurrence before timing it (eager, combine_mode="generic").
        a, x = torch.rand(64, 3), torch.randn(64, 3)
        got = associative_scan(_combine, (a, x), dim=0, combine_mode="generic")[1]
        want = plrnn.linear_recurrence(a, x, backend="reference")
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise Unavailable("associative_scan does not reproduce the recurrence here")
        a, x, g = env.inputs.get(shape, grad=True)

        def fn():
            h = associative_scan(_combine, (a, x), dim=0, combine_mode="generic")[1]
            torch.autograd.grad(h, (a, x), g)

        return fn, (a, x, g)

    def reference_fwd():
        a, x = env.inputs.get(shape)
        return (lambda: plrnn.linear_recurrence(a, x, backend="reference")), (a, x)

    def reference_fwd_bwd():
        a, x, g = env.inputs.get(shape, grad=True)

        def fn():
            torch.autograd.grad(plrnn.linear_recurrence(a, x, backend="reference"), (a, x), g)

        return fn, (a, x, g)

    slow = c.slow_min_run_time
    tasks = [Task(sec, b, FWD_BWD, shape, _op(env, b, shape, FWD_BWD)) for b in COMPARED]
    tasks[2].min_run_time = slow  # torch backend: ~seconds per call at T=65536
    tasks += [
        Task(sec, "associative_scan", FWD_BWD, shape, assoc_build, min_run_time=slow,
             note='torch._higher_order_ops associative_scan, combine_mode="generic", eager'),
        Task(sec, "reference (Python loop)", FWD, shape, reference_fwd, how="single",
             note="forward only; one cold run"),
        Task(sec, "reference (Python loop)", FWD_BWD, shape, reference_fwd_bwd, how="single",
             note="autograd through the loop; one cold run"),
    ]
    return tasks


def sweep_tasks(env: Env) -> list[Task]:
    c = env.cfg
    return [
        Task("auto sweep", b, FWD, (T, C), _op(env, b, (T, C), FWD),
             min_run_time=c.sweep_min_run_time)
        for C in c.sweep_channels for T in c.sweep_T for b in KERNELS
    ]


# ----------------------------------------------------------------------------------------- run
def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


ROUNDS = 5  # the methods of one cell are timed in turn, this many times each


def _cells(tasks: list[Task]) -> list[list[Task]]:
    """Consecutive tasks timing the same shape and pass: they are measured interleaved, so a
    slow spell of a shared machine hits every method of a cell alike."""
    cells: list[list[Task]] = []
    for task in tasks:
        key = (task.section, task.shape, task.pass_, task.how)
        if cells and task.how == "autorange" and task.method != "copy_ probe" and key == (
            cells[-1][0].section, cells[-1][0].shape, cells[-1][0].pass_, cells[-1][0].how
        ) and cells[-1][0].method != "copy_ probe":
            cells[-1].append(task)
        else:
            cells.append([task])
    return cells


def _new_record(env: Env, task: Task) -> dict:
    rec = {
        "section": task.section, "method": task.method, "pass": task.pass_,
        "T": task.T, "channels": task.channels, "shape": "x".join(map(str, task.shape)),
        "numel": math.prod(task.shape), "note": task.note,
        "auto_choice": None, "status": "ok", "reason": "", "timing": task.how,
        "median_s": math.nan, "mean_s": math.nan, "iqr_s": math.nan,
        "blocks": 0, "number_per_run": 0, "block_times_s": "",
    }
    if task.method == "auto":
        rec["auto_choice"] = backend_registry.choose_auto(
            torch.device(env.cfg.device), task.T, task.channels)
    return rec


def _failed(rec: dict, err: BaseException) -> None:
    if isinstance(err, Unavailable):
        rec.update(status="unavailable", reason=str(err))
    else:
        rec.update(status="error", reason=_first_line(err))


def run_tasks(env: Env, tasks: list[Task]) -> list[dict]:
    records, section = [], None
    bar = tqdm(total=len(tasks), desc="measurements", unit="meas", dynamic_ncols=True,
               file=sys.stderr, mininterval=0.5)
    for cell in _cells(tasks):
        first = cell[0]
        if first.section != section:
            env.inputs.clear()
            section = first.section
        bar.set_postfix_str(f"{first.section}: {first.pass_} {first.shape}")
        recs = [_new_record(env, task) for task in cell]
        built = {}
        for task, rec in zip(cell, recs, strict=True):
            mrt = task.min_run_time if task.min_run_time is not None else env.cfg.min_run_time
            try:
                if task.method == "copy_ probe":
                    m = copy_measurement(task.T, env.cfg.device, mrt, num_threads=env.cfg.threads)
                    rec.update(_from_measurements([m]))
                elif task.how == "single":
                    fn, inputs = task.build()
                    t = single_time(fn, inputs=inputs)
                    rec.update(median_s=t, mean_s=t, blocks=1, number_per_run=1,
                               block_times_s=repr(t))
                else:
                    built[id(task)] = (task.build(), mrt)
            except Exception as err:  # noqa: BLE001 - one failing row must not lose the others
                _failed(rec, err)
        runs: dict[int, list] = {key: [] for key in built}
        for _ in range(ROUNDS if built else 0):
            for task, rec in zip(cell, recs, strict=True):
                if id(task) not in built or rec["status"] != "ok":
                    continue
                (fn, inputs), mrt = built[id(task)]
                try:
                    runs[id(task)].append(
                        measure(fn, mrt / ROUNDS, num_threads=env.cfg.threads, inputs=inputs))
                except Exception as err:  # noqa: BLE001
                    _failed(rec, err)
        for task, rec in zip(cell, recs, strict=True):
            if runs.get(id(task)) and rec["status"] == "ok":
                rec.update(_from_measurements(runs[id(task)]))
        records.extend(recs)
        bar.update(len(cell))
    bar.close()
    env.inputs.clear()
    return records


def _from_measurements(ms: list) -> dict:
    """Pooled per-call times of all blocks of all rounds of one method."""
    per_call = np.array([t / m.number_per_run for m in ms for t in m.raw_times])
    q1, median, q3 = np.percentile(per_call, [25, 50, 75])
    return {
        "median_s": float(median), "mean_s": float(per_call.mean()), "iqr_s": float(q3 - q1),
        "blocks": int(per_call.size), "number_per_run": ms[-1].number_per_run,
        "block_times_s": ";".join(f"{t:.6e}" for t in per_call),
    }


# -------------------------------------------------------------------------------------- tables
def _time(df: pd.DataFrame, **where) -> float:
    sel = df
    for key, value in where.items():
        sel = sel[sel[key] == value]
    ok = sel[sel["status"] == "ok"]
    return float(ok["median_s"].iloc[0]) if len(ok) else math.nan


def _reasons(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] != "ok"].drop_duplicates(["method", "status", "reason"])
    return [f"n/a  {r.method}: {r.status}: {r.reason}" for _, r in bad.iterrows()]


@dataclass
class Section:
    title: str
    table: pd.DataFrame
    lines: list[str]  # goal lines and footnotes


def bandwidth_section(df: pd.DataFrame) -> tuple[Section, dict]:
    d = df[df["section"] == "1 bandwidth"]
    copy_t = _time(d, method="copy_ probe")
    numel_copy = int(d[d["method"] == "copy_ probe"]["numel"].iloc[0])
    copy_bw = COPY_BYTES_PER_ELEMENT * numel_copy / copy_t
    rows, fractions = [], {}
    for _, r in d.iterrows():
        moved = (COPY_BYTES_PER_ELEMENT * r["numel"] if r["pass"] == "copy"
                 else bytes_moved(r["numel"], FWD))
        per = moved // r["numel"]
        bw = moved / r["median_s"] if r["status"] == "ok" else math.nan
        frac = bw / copy_bw
        if r["method"] in KERNELS and "out=" in r["note"]:
            fractions[r["method"]] = frac
        rows.append({
            "measurement": r["method"], "call": r["note"], "shape": r["shape"],
            "B/elem": str(per), "time ms": fmt_ms(r["median_s"]),
            "GB/s effective": fmt_x(bw / 1e9), "fraction of copy": fmt_x(frac),
        })
    f = fractions.get("cpu_serial", math.nan)
    goal = _goal(f >= GOAL_BANDWIDTH_FRACTION if math.isfinite(f) else None,
                 f"cpu_serial forward (cpu_scan_out into a preallocated buffer) >= "
                 f"{GOAL_BANDWIDTH_FRACTION:.2f} of copy bandwidth: {fmt_x(f)}")
    lines = [f"copy bandwidth: {copy_bw / 1e9:.2f} GB/s (8 B/elem); scan rows count 12 B/elem "
             "(read a, x; write h)", goal, *_reasons(d)]
    return (Section("1. Bandwidth (forward, fp32)", pd.DataFrame(rows), lines),
            {"bandwidth_fraction_cpu_serial": f,
             "bandwidth_fraction_cpu_parallel": fractions.get("cpu_parallel", math.nan),
             "copy_GBps": copy_bw / 1e9})


def _compare_rows(d: pd.DataFrame, keys: list[str]) -> list[dict]:
    rows = []
    for key, g in d.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        t = {b: _time(g, method=b) for b in COMPARED}
        choice = g[g["method"] == "auto"]["auto_choice"].iloc[0]
        best = min(t["cpu_serial"], t["cpu_parallel"])
        rows.append({**dict(zip(keys, key, strict=True)), **t, "auto ->": choice,
                     "auto/best": t["auto"] / best,
                     "serial/parallel": t["cpu_serial"] / t["cpu_parallel"]})
    return rows


def latency_section(df: pd.DataFrame) -> tuple[Section, dict]:
    d = df[df["section"] == "2 latency"]
    rows = _compare_rows(d, ["T", "channels", "pass"])
    speedups = [r["serial/parallel"] for r in rows]
    worst = min(speedups) if speedups else math.nan
    table = pd.DataFrame([{
        "T": str(r["T"]), "C": str(r["channels"]), "pass": r["pass"],
        **{f"{b} ms": fmt_ms(r[b]) for b in COMPARED}, "auto ->": r["auto ->"],
        "parallel speedup": fmt_x(r["serial/parallel"]),
    } for r in rows])
    goal = _goal(worst >= GOAL_LATENCY_SPEEDUP if math.isfinite(worst) else None,
                 f"cpu_parallel >= {GOAL_LATENCY_SPEEDUP:.0f}x cpu_serial in every row "
                 f"(speedup = cpu_serial time / cpu_parallel time): min {fmt_x(worst)}")
    return (Section("2. Latency-bound regime (4 channels)", table, [goal, *_reasons(d)]),
            {"latency_min_parallel_speedup": worst})


def grid_section(df: pd.DataFrame) -> tuple[Section, dict]:
    d = df[df["section"] == "3 table-1 grid"].copy()
    d["m"] = d["channels"]
    rows = _compare_rows(d, ["m", "T"])
    table = pd.DataFrame([{
        "m": str(r["m"]), "T": str(r["T"]), **{f"{b} ms": fmt_ms(r[b]) for b in COMPARED},
        "auto ->": r["auto ->"], "auto/best": fmt_x(r["auto/best"]),
        "serial/parallel": fmt_x(r["serial/parallel"]),
    } for r in rows])
    ratios = [(r["auto/best"], r["m"], r["T"]) for r in rows if math.isfinite(r["auto/best"])]
    worst = max(ratios) if ratios else (math.nan, None, None)
    over = [f"(m={m}, T={T}): {x:.2f}" for x, m, T in ratios if x > GOAL_AUTO_RATIO]
    goal = _goal(worst[0] <= GOAL_AUTO_RATIO if ratios else None,
                 f"auto within {GOAL_AUTO_RATIO - 1:.0%} of min(cpu_serial, cpu_parallel) in every "
                 f"cell: worst auto/best {fmt_x(worst[0])}"
                 + (f" at (m={worst[1]}, T={worst[2]})" if ratios else "")
                 + (f"; over: {', '.join(over)}" if over else ""))
    lines = ["inputs (T, 1, m), forward; serial/parallel > 1 means cpu_parallel is faster",
             goal, *_reasons(d)]
    return (Section("3. Table-1 grid (batch 1, forward)", table, lines),
            {"grid_worst_auto_ratio": worst[0]})


def fwd_bwd_section(df: pd.DataFrame) -> tuple[Section, dict]:
    d = df[df["section"] == "4 forward+backward"]
    auto_t = _time(d, method="auto", **{"pass": FWD_BWD})
    rows = []
    for _, r in d.iterrows():
        rows.append({
            "method": r["method"], "pass": r["pass"],
            "auto ->": r["auto_choice"] if isinstance(r["auto_choice"], str) else "",
            "timing": r["timing"],
            "time ms": fmt_ms(r["median_s"]),
            "auto fwd+bwd speedup": fmt_x(r["median_s"] / auto_t, 1),
        })
    assoc = _time(d, method="associative_scan")
    speedup = assoc / auto_t
    T, C = int(d["T"].iloc[0]), int(d["channels"].iloc[0])
    goal = _goal(speedup >= GOAL_AUTO_VS_ASSOC if math.isfinite(speedup) else None,
                 f"auto fwd+bwd >= {GOAL_AUTO_VS_ASSOC:.0f}x faster than associative_scan: "
                 f"{fmt_x(speedup, 1)}x")
    lines = ["speedup column = that row's time / auto's forward+backward time", goal,
             *_reasons(d)]
    return (Section(f"4. Forward+backward, T={T}, {C} channels", pd.DataFrame(rows), lines),
            {"auto_vs_associative_scan": speedup})


def sweep_section(df: pd.DataFrame, threads: int) -> list[Section]:
    d = df[df["section"] == "auto sweep"]
    rows = []
    for (C, T), g in d.groupby(["channels", "T"], sort=False):
        s, p = _time(g, method="cpu_serial"), _time(g, method="cpu_parallel")
        if not (math.isfinite(s) and math.isfinite(p)):
            winner = "n/a"
        elif abs(s / p - 1) <= SWEEP_TIE:
            winner = "tie"
        else:
            winner = "cpu_parallel" if p < s else "cpu_serial"
        auto = backend_registry.choose_auto(torch.device("cpu"), int(T), int(C))
        rows.append({"C": int(C), "T": int(T), "C/thread": C / threads, "serial": s,
                     "parallel": p, "winner": winner, "auto": auto})
    long = pd.DataFrame([{
        "C": str(r["C"]), "T": str(r["T"]), "C/thread": f"{r['C/thread']:g}",
        "cpu_serial ms": fmt_ms(r["serial"]), "cpu_parallel ms": fmt_ms(r["parallel"]),
        "serial/parallel": fmt_x(r["serial"] / r["parallel"]), "winner": r["winner"],
        "auto picks": r["auto"],
        "auto agrees": "yes" if r["auto"] == r["winner"] else ("tie" if r["winner"] == "tie"
                                                                else "NO"),
    } for r in rows])
    letter = {"cpu_serial": "S", "cpu_parallel": "P", "tie": "=", "n/a": "-"}
    grid = pd.DataFrame(rows).pivot(index="C", columns="T", values="winner").map(letter.get)
    agree = pd.DataFrame(rows).pivot(index="C", columns="T", values="auto")
    marked = grid.copy()
    for C in grid.index:
        for T in grid.columns:
            if letter.get(agree.loc[C, T]) != grid.loc[C, T] and grid.loc[C, T] in "SP":
                marked.loc[C, T] = grid.loc[C, T] + "*"
    marked = marked.reset_index().rename(columns={"C": "C \\ T"}).astype(str)
    marked.columns = [str(c) for c in marked.columns]
    return [
        Section("auto sweep: cpu_serial vs cpu_parallel, forward (T, C)", long,
                [f"{threads} torch threads; auto picks what "
                 "plrnn.recurrence.registry.choose_auto says (see its comment)", *_reasons(d)]),
        Section("auto sweep: winner per cell (S serial, P parallel, = within "
                f"{SWEEP_TIE:.0%}, * = auto picks the other)", marked, []),
    ]


def _goal(ok: bool | None, text: str) -> str:
    return f"Goal {'n/a ' if ok is None else ('PASS' if ok else 'FAIL')}: {text}"


# ---------------------------------------------------------------------------------------- main
def kernel_source_sha1() -> str | None:
    src = Path(backend_registry.__file__).parent / "csrc" / "cpu_scan.cpp"
    try:
        return hashlib.sha1(src.read_bytes()).hexdigest()[:12]
    except OSError:
        return None


def header(info: dict, cfg: Config, argv: list[str], statuses, load) -> list[str]:
    commit = info["git_commit"] or "unknown"
    if info["git_dirty"]:
        commit += " (with uncommitted changes)"
    lines = [
        "# plrnn linear_recurrence benchmark",
        "",
        f"- machine: `{machine_name()}`: {info['cpu']}, {info['logical_cores']} logical cores, "
        f"{info['torch_threads']} torch threads ({info['torch_parallel_backend']})"
        + (f"; GPU {info['gpu']['name']}" if info["gpu"] else ""),
        f"- torch {info['torch_version']}, Python {info['python_version']}, {info['platform']}",
        f"- commit: {commit}; cpu_scan.cpp sha1: {kernel_source_sha1()}",
        f"- date (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}; load average "
        f"before the run: {load[0]:.2f} on {info['logical_cores']} cores (other processes "
        "competing for the cores make the numbers noisy, threaded kernels most)",
        f"- command: `{' '.join(['python -m plrnn.bench.recurrence', *argv])}`",
        "- backends: " + "; ".join(
            f"{s.name}: {'available' if s.available else 'UNAVAILABLE (' + s.reason + ')'}"
            for s in statuses),
        "- timing: torch.utils.benchmark blocked_autorange median (per call) unless marked "
        "'single' (one cold run)",
        f"- config: `{json.dumps(dataclasses.asdict(cfg))}`",
    ]
    return lines


def _loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (math.nan, math.nan, math.nan)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m plrnn.bench.recurrence",
        description="Benchmark plrnn.linear_recurrence backends (CPU) side by side.",
    )
    p.add_argument("--quick", action="store_true",
                   help="smaller shapes and shorter timing (about a minute)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: results/<machine_name()>/)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds of timing per measurement (default 0.5, --quick 0.1)")
    p.add_argument("--sweep-auto", action="store_true",
                   help="run only the channels x T sweep of cpu_serial vs cpu_parallel that the "
                        "auto rule is derived from; writes auto_sweep.{csv,md,json}")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cfg = make_config(args)
    out = args.out if args.out is not None else Path("results") / machine_name()
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    load = _loadavg()

    print("plrnn bench: loading the C++ kernels (the first build takes about a minute) ...",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # auto's fallback note; shown in tables
        statuses = plrnn.backends(cfg.device)
        status = {s.name: s for s in statuses}
        out_reason = None
        if not status["cpu_serial"].available:
            out_reason = status["cpu_serial"].reason
        else:
            try:
                torch.ops.plrnn.cpu_scan_out  # noqa: B018 - raises if the op is not registered
            except (AttributeError, RuntimeError) as err:
                out_reason = f"torch.ops.plrnn.cpu_scan_out missing: {_first_line(err)}"
        print(f"plrnn bench: backends ready in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)

        env = Env(cfg, Inputs(cfg.seed), status, out_reason)
        if args.sweep_auto:
            tasks = sweep_tasks(env)
        else:
            tasks = bandwidth_tasks(env) + latency_tasks(env) + grid_tasks(env) \
                + fwd_bwd_tasks(env)
        start = time.perf_counter()
        records = run_tasks(env, tasks)
        elapsed = time.perf_counter() - start

    df = pd.DataFrame.from_records(records)
    head = header(info, cfg, argv, statuses, load)
    meta = {"machine_name": machine_name(), "machine": info, "config": dataclasses.asdict(cfg),
            "kernel_source_sha1": kernel_source_sha1(), "argv": argv,
            "backends": {s.name: {"available": s.available, "reason": s.reason}
                         for s in statuses},
            "measurement_seconds": elapsed, "loadavg_before": load, "loadavg_after": _loadavg()}
    if args.sweep_auto:
        sections, stem, goals = sweep_section(df, cfg.threads), "auto_sweep", {}
    else:
        sections, goals = [], {}
        for make in (bandwidth_section, latency_section, grid_section, fwd_bwd_section):
            section, g = make(df)
            sections.append(section)
            goals.update(g)
        stem = "recurrence_bench"
        meta["goals"] = goals

    body = []
    for s in sections:
        body += [f"## {s.title}", "", markdown_table(s.table), "", *s.lines, ""]
    body.append(f"({len(records)} measurements in {elapsed:.0f} s)")
    text = "\n".join(body)
    busy = ""
    if load[0] > 0.5:
        busy = (f"\nWARNING: load average {load[0]:.2f} before the run: other processes share "
                "the cores, so threaded rows (cpu_parallel, torch) are timed under contention.\n")
    print("\n" + "\n".join(head[2:6]) + "\n" + busy + "\n" + text)

    df.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.md").write_text("\n".join(head) + "\n\n" + text + "\n")
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(f"\nwrote {out / stem}.csv, .md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
