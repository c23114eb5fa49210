"""The command: its arguments, the steady-allocator child, and main (run, report, write)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

import plrnn

from ..arguments import positive_float
from ..machine import machine_info, machine_name
from ..tables import markdown_table
from .config import ALLOCATORS, GRID_DISTRIBUTIONS, Config, make_config
from .header import _loadavg, cpu_kernels_digest, header, kernel_settings
from .inputs import Inputs
from .runner import run_tasks
from .sections import (
    Section,
    bandwidth_section,
    distribution_section,
    dtype_section,
    fwd_bwd_section,
    grid_section,
    latency_section,
    layout_section,
)
from .sweep import sweep_section, sweep_tasks
from .tasks import (
    Env,
    bandwidth_tasks,
    distribution_tasks,
    dtype_tasks,
    fwd_bwd_tasks,
    grid_tasks,
    latency_tasks,
    layout_tasks,
)

# name -> (tasks, section); in the order they run and print
SECTIONS: dict[str, tuple[Callable, Callable]] = {
    "bandwidth": (bandwidth_tasks, bandwidth_section),
    "latency": (latency_tasks, latency_section),
    "grid": (grid_tasks, grid_section),
    "distributions": (distribution_tasks, distribution_section),
    "fwd-bwd": (fwd_bwd_tasks, fwd_bwd_section),
    "dtypes": (dtype_tasks, dtype_section),
    "layouts": (layout_tasks, layout_section),
}
SECTION_NAMES = tuple(SECTIONS)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m plrnn.bench.recurrence",
        description="Benchmark plrnn.linear_recurrence backends (CPU) side by side, as users "
                    "call them, with the default and the steady-state allocator.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="smaller shapes and shorter timing (a couple of minutes)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny shapes and timing: every code path in seconds, numbers "
                           "meaningless (for tests)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: results/<machine_name()>/)")
    p.add_argument("--min-run-time", type=positive_float, default=None,
                   help="seconds of timing per measurement (default 0.5, --quick 0.1)")
    p.add_argument("--allocator", choices=("both", *ALLOCATORS), default="both",
                   help="both (default): this process as it starts, then a child process with "
                        "the steady-state allocator; or only one of them")
    p.add_argument("--all-distributions", action="store_true",
                   help="time the Table-1 grid under all five decay distributions (default: "
                        f"{' and '.join(GRID_DISTRIBUTIONS)})")
    p.add_argument("--sections", nargs="+", choices=SECTION_NAMES, default=list(SECTION_NAMES),
                   help="run only these sections (default: all)")
    p.add_argument("--sweep-auto", action="store_true",
                   help="run only the channels x T sweep of cpu_serial vs cpu_parallel that the "
                        "auto rule is derived from; writes auto_sweep.{csv,md,json}")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        p.error(f"--out must be a directory; {args.out} is a file")
    return args


def steady_child_argv(args: argparse.Namespace, out: Path) -> list[str]:
    """The same run in a child process with the steady-state allocator, writing into `out`."""
    argv = ["--allocator", "steady", "--out", str(out), "--seed", str(args.seed),
            "--sections", *args.sections]
    if args.quick:
        argv.append("--quick")
    if args.smoke:
        argv.append("--smoke")
    if args.min_run_time is not None:
        argv += ["--min-run-time", repr(args.min_run_time)]
    if args.all_distributions:
        argv.append("--all-distributions")
    if args.sweep_auto:
        argv.append("--sweep-auto")
    return argv


TEXT_COLUMNS = ("note", "reason", "block_times_s", "round_medians_s", "round_steal_s",
                "round_trip_ns", "round_faults", "output", "decays", "auto_choice", "dtype")


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Empty text cells as "" whether the frame was built here or read back from a CSV."""
    df = df.copy()
    if "dtype" not in df:  # runs from before section 6 timed fp32 only
        df["dtype"] = "float32"
    for col in TEXT_COLUMNS:
        if col in df:
            df[col] = df[col].astype(object).where(df[col].notna(), "")
    return df


def run_steady_child(args: argparse.Namespace, stem: str) -> tuple[pd.DataFrame, dict]:
    """Runs the steady-allocator child; (its records, what happened) -- empty records if it
    failed, so its columns read n/a and its goals not met, never silently dropped."""
    with tempfile.TemporaryDirectory(prefix="plrnn-bench-steady-") as tmp:
        cmd = [sys.executable, "-m", "plrnn.bench.recurrence", *steady_child_argv(args, Path(tmp))]
        print("plrnn bench: steady-state allocator run in a child process ...", file=sys.stderr,
              flush=True)
        # stdout (its own steady-only tables) is kept out of ours; its progress goes to stderr.
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        info = {"command": cmd[2:], "returncode": proc.returncode}
        csv_path, meta_path = Path(tmp) / f"{stem}.csv", Path(tmp) / f"{stem}.json"
        if proc.returncode != 0 or not csv_path.exists():
            info["stdout_tail"] = proc.stdout[-2000:]
            return pd.DataFrame(), info
        info["allocator_detail"] = json.loads(meta_path.read_text())["config"]["allocator_detail"]
        return normalize(pd.read_csv(csv_path, dtype={"shape": str})), info


def _load_backends(cfg: Config) -> tuple[list, dict]:
    print("plrnn bench: loading the C++ kernels (the first build takes about a minute) ...",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    statuses = plrnn.backends(cfg.device)
    print(f"plrnn bench: backends ready in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return statuses, {s.name: s for s in statuses}


def build_sections(df: pd.DataFrame, cfg: Config, sweep: bool) -> list[Section]:
    if sweep:
        return sweep_section(df, cfg.threads, cfg.allocators)
    return [SECTIONS[name][1](df, cfg.allocators) for name in cfg.sections]


def render(sections: list[Section], machine: str) -> str:
    body = []
    for s in sections:
        body += [f"## {s.title}", ""]
        for table in s.tables:
            body += [markdown_table(table), ""]
        body += [*s.lines, *(g.line(machine) for g in s.goals), ""]
    goals = [g for s in sections for g in s.goals]
    if goals:
        met = sum(g.met for g in goals)
        body += ["## Goals", "",
                 f"On `{machine}`, from the medians of this run: {met} of {len(goals)} met.", "",
                 *(f"- {g.line(machine)}" for g in goals), ""]
    return "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cfg = make_config(args)  # first: the steady child's mallopt precedes every allocation
    out = args.out if args.out is not None else Path("results") / machine_name()
    out.mkdir(parents=True, exist_ok=True)
    # The kernel source as the run starts: what was built, whatever is edited while it runs.
    info, load = {**machine_info(), "cpu_kernels_digest": cpu_kernels_digest()}, _loadavg()
    stem = "auto_sweep" if args.sweep_auto else "recurrence_bench"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # auto's fallback note; shown in tables
        statuses, status = _load_backends(cfg)
        env = Env(cfg, Inputs(cfg.seed), status)
        if args.sweep_auto:
            tasks = sweep_tasks(env)
        else:
            tasks = [t for name in cfg.sections for t in SECTIONS[name][0](env)]
        start = time.perf_counter()
        records = run_tasks(env, tasks)
        elapsed = time.perf_counter() - start
    info["kernel_settings"] = kernel_settings()  # applied by the run's first kernel call

    df = normalize(pd.DataFrame.from_records(records))
    details = {cfg.allocator: cfg.allocator_detail}
    meta = {"machine_name": machine_name(), "machine": info, "config": dataclasses.asdict(cfg),
            "cpu_kernels_digest": info["cpu_kernels_digest"], "argv": argv,
            "backends": {s.name: {"available": s.available, "reason": s.reason}
                         for s in statuses},
            "measurement_seconds": elapsed, "loadavg_before": load}
    if args.allocator == "both":
        steady, meta["steady_child"] = run_steady_child(args, stem)
        details["steady"] = meta["steady_child"].get(
            "allocator_detail", f"child FAILED (exit {meta['steady_child']['returncode']})")
        df = pd.concat([df, steady], ignore_index=True)
    meta["loadavg_after"] = _loadavg()
    meta["allocators"] = details

    sections = build_sections(df, cfg, args.sweep_auto)
    meta["goals"] = [g.as_dict() for s in sections for g in s.goals]
    head = header(info, cfg, argv, statuses, load, details)
    text = render(sections, machine_name())
    text += f"\n({len(df)} measurements; {elapsed:.0f} s in this process)"
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
