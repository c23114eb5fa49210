"""The headline kernels' asv history per machine, read from results/asv/<machine>/*.json.

asv writes one file per (commit, environment) beside machine.json. In its result format (version
2) each benchmark maps to a row whose columns are named by the file's "result_columns": "result"
holds the values flattened over the product of "params" (each axis a list of repr()'d values, in
the order of the benchmark's param_names in benchmarks.json), "version" the benchmark's code hash.
A value is NaN or null where the benchmark was skipped (a backend this commit lacks).
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

# plrnn.linear_recurrence per backend; on a GPU machine asv runs the CUDA grid, so the same
# benchmark times the cuda_* kernels there.
HEADLINE_BENCHMARK = "kernels.LinearRecurrence.time_linear_recurrence"
# The serial and parallel kernels the paper is about (and the paper's own CUDA kernel); torch's
# scan, `auto` and the baselines are in the asv site.
HEADLINE_BACKENDS = ("cpu_serial", "cpu_parallel", "cuda_serial", "cuda_paper", "cuda_parallel")
# The axes that make a problem size; the largest size with data is charted.
SIZE_PARAMS = ("seq_len", "batch", "hidden")
# benchmarks/kernels.py's axes, for result files without a benchmarks.json to name them.
DEFAULT_PARAM_NAMES = ("seq_len", "batch", "hidden", "backend", "pass")


# Passes in the order a reader expects them; any other pass follows alphabetically.
PASS_ORDER = ("forward", "forward+backward")


@dataclass
class Run:
    commit: str
    date_ms: int
    env: str
    # Every finite value of the benchmark: sorted (param, value) pairs -> value.
    values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)
    # The charted size only: (backend, pass) -> value.
    kernels: dict[tuple[str, str], float] = field(default_factory=dict)
    # Timed calls behind each value (asv's stats_repeat x stats_number), where the file says:
    # `asv run --quick` times one call, as noisy as one call is on a shared machine.
    calls: dict[tuple[tuple[str, str], ...], int] = field(default_factory=dict)
    kernel_calls: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class History:
    machine: str
    benchmark: str
    unit: str
    size: dict[str, str]  # the charted size, e.g. {"seq_len": "65536", "batch": "1", ...}
    passes: list[str]
    backends: list[str]
    runs: list[Run]  # oldest commit first
    dropped: int = 0  # runs of an older benchmark definition, left out as asv does
    absent: int = 0  # runs without this benchmark (`asv run --bench` of others) or unreadable

    @property
    def single_call(self) -> set[tuple[str, tuple[str, str]]]:
        """(commit, (backend, pass)) of the charted values that time one call only."""
        return {(r.commit, s) for r in self.runs for s, n in r.kernel_calls.items() if n == 1}


@dataclass
class NoHistory:
    machine: str
    reason: str


def _plain(value) -> str:
    """asv stores parameter values as repr(): "'cpu_serial'" -> "cpu_serial", "65536" stays."""
    try:
        return str(ast.literal_eval(value)) if isinstance(value, str) else str(value)
    except (ValueError, SyntaxError):
        return str(value)


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def asv_machines(asv_results: Path) -> list[str]:
    """Machine folders under results/asv/ (asv puts benchmarks.json beside them)."""
    if not asv_results.is_dir():
        return []
    return sorted(p.name for p in asv_results.iterdir() if p.is_dir() and p.name[0] not in "._")


def load_benchmarks(asv_results: Path) -> dict:
    try:
        data = json.loads((asv_results / "benchmarks.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_run(path: Path, benchmark: str, param_names, version) -> tuple[Run | None, bool]:
    """(the run's values of `benchmark`, whether it was dropped for an older version)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        row = dict(zip(data["result_columns"], data["results"][benchmark]))
        run = Run(
            str(data.get("commit_hash") or path.stem.split("-")[0]),
            int(data.get("date") or 0),
            str(data.get("env_name") or ""),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None, False
    if version is not None and row.get("version") not in (None, version):
        return None, True
    values, params = row.get("result"), row.get("params") or []
    if not isinstance(values, list):
        return None, False
    repeats, numbers = row.get("stats_repeat"), row.get("stats_number")
    counted = isinstance(repeats, list) and isinstance(numbers, list)
    for i, (combo, value) in enumerate(zip(itertools.product(*params), values)):
        if (number := _finite(value)) is not None:
            key = tuple(sorted(dict(zip(param_names, map(_plain, combo))).items()))
            run.values[key] = number
            if counted and i < min(len(repeats), len(numbers)):
                repeat, times = repeats[i], numbers[i]
                if isinstance(repeat, int) and isinstance(times, int):
                    run.calls[key] = repeat * times
    return run, False


def _size_of(named: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((p, named[p]) for p in SIZE_PARAMS if p in named)


def _size_rank(size: tuple[tuple[str, str], ...]) -> tuple[int, int]:
    """Elements in the problem, then the sequence length: the largest problem is the headline."""
    product = 1
    for _, value in size:
        product *= int(value) if value.isdigit() else 1
    seq_len = dict(size).get("seq_len", "0")
    return product, int(seq_len) if seq_len.isdigit() else 0


def _largest_size(runs: list[Run]) -> tuple[tuple[str, str], ...] | None:
    """The largest size at which any headline kernel has a value, in any run."""
    sizes = {
        _size_of(dict(key))
        for run in runs
        for key in run.values
        if dict(key).get("backend") in HEADLINE_BACKENDS
    }
    return max(sizes, key=_size_rank) if sizes else None


def _pass_order(pass_: str) -> tuple[int, str]:
    return (PASS_ORDER.index(pass_) if pass_ in PASS_ORDER else len(PASS_ORDER), pass_)


def read_history(
    asv_results: Path, machine: str, benchmarks: dict, benchmark: str = HEADLINE_BENCHMARK
) -> History | NoHistory:
    folder = asv_results / machine
    files = sorted(p for p in folder.glob("*.json") if p.name != "machine.json")
    if not files:
        return NoHistory(
            machine,
            f"no asv runs for this machine (no {asv_results.name}/{machine}/<commit>-<env>.json)",
        )
    meta = benchmarks.get(benchmark) if isinstance(benchmarks.get(benchmark), dict) else {}
    param_names = meta.get("param_names") or DEFAULT_PARAM_NAMES
    runs, dropped = [], 0
    for path in files:
        run, was_dropped = _read_run(path, benchmark, param_names, meta.get("version"))
        dropped += was_dropped
        if run is not None:
            runs.append(run)
    size = _largest_size(runs)
    if size is None:
        why = (
            f"{dropped} of {len(files)} runs are of an older benchmark definition"
            if dropped
            else f"none of its {len(files)} runs has a value"
        )
        return NoHistory(
            machine, f"no asv history of the serial/parallel kernels ({benchmark}): {why}"
        )
    for run in runs:
        for key, value in run.values.items():
            named = dict(key)
            if named.get("backend") in HEADLINE_BACKENDS and _size_of(named) == size:
                series = (named["backend"], named.get("pass", ""))
                run.kernels[series] = value
                if key in run.calls:
                    run.kernel_calls[series] = run.calls[key]
    # asv records the commit's date: oldest first, as asv's own graphs read.
    runs.sort(key=lambda r: (r.date_ms, r.commit, r.env))
    charted = {key for run in runs for key in run.kernels}
    return History(
        machine=machine,
        benchmark=benchmark,
        unit=str(meta.get("unit") or "seconds"),
        size=dict(size),
        passes=sorted({p for _, p in charted}, key=_pass_order),
        backends=[b for b in HEADLINE_BACKENDS if any(b == kb for kb, _ in charted)],
        runs=runs,
        dropped=dropped,
        absent=len(files) - len(runs) - dropped,
    )
