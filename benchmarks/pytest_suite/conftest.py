"""pytest-benchmark suite of plrnn: the asv suite's cases (benchmarks/_support.py) on the same
grid (plrnn.bench.grid, chosen by $PLRNN_BENCH_GRID), timed by pytest-benchmark with the
default allocator ($PLRNN_BENCH_ALLOCATOR=steady: freed pages reused).

    python -m pytest benchmarks/pytest_suite --benchmark-json=.benchmarks/plrnn.json
    python -m plrnn.bench.report --pytest .benchmarks/plrnn.json --no-asv

Not collected by a plain `python -m pytest` (testpaths = ["tests"] in pyproject.toml).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The cases live in the asv benchmark package at the repository root, which is not installed.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from benchmarks import _support  # noqa: E402

# On CUDA the host clock needs a synchronize per call; pedantic mode does it with warm-up rounds.
PEDANTIC_WARMUP_ROUNDS = 3
PEDANTIC_TARGET_SECONDS = 1.0
PEDANTIC_ROUNDS = (5, 200)


def _loadavg():
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def pytest_configure(config):
    # pytest-benchmark opens --benchmark-json only after the last benchmark and does not create
    # its folder: on a fresh clone (no .benchmarks/) the documented command lost the whole run.
    path = config.getoption("benchmark_json", None)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def pytest_sessionstart(session):
    # On a shared machine other processes skew the timings: record how busy it was.
    session.config._plrnn_load_at_start = _loadavg()


def pytest_benchmark_update_machine_info(config, machine_info):
    import torch

    from plrnn.bench.machine import machine_info as plrnn_machine_info
    from plrnn.bench.machine import machine_name

    grid = _support.GRID
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "count": torch.cuda.device_count(),
               "memory_bytes": props.total_memory,
               "capability": f"{props.major}.{props.minor}"}
    machine_info.update({
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpu": gpu,
        "plrnn": plrnn_machine_info(),
        # results/<machine>/: the GPU's name when the grid ran on CUDA, else the CPU's.
        "plrnn_machine_name": machine_name(grid.device),
        "plrnn_grid": grid.name,
        "plrnn_device": grid.device,
        "load_average": {"start": getattr(config, "_plrnn_load_at_start", None),
                         "end": _loadavg()},
    })


def pytest_benchmark_update_json(config, benchmarks, output_json):
    import dataclasses

    output_json["plrnn_grid"] = dataclasses.asdict(_support.GRID)


@pytest.fixture
def measure(benchmark):
    """measure(builder, *args, group=..., columns=None) builds the case (skipping what does not
    apply), then times case.run with pytest-benchmark: calibrated rounds on the CPU, pedantic
    rounds with warm-up and a synchronize per call on CUDA. `columns` go into extra_info over the
    case's own info (the report's columns where a suite names them its own way), and so does
    the allocator the process ran with ($PLRNN_BENCH_ALLOCATOR)."""

    def run(builder, *args, group: str, columns: dict | None = None):
        try:
            case = builder(*args)
        except NotImplementedError as err:
            pytest.skip(str(err))
        benchmark.group = group
        benchmark.extra_info.update(case.info)
        benchmark.extra_info.update(columns or {})
        benchmark.extra_info["allocator"] = _support.ALLOCATOR
        if case.device != "cuda":
            benchmark(case.run)
            return case
        per_call = case.seconds_per_call()
        lo, hi = PEDANTIC_ROUNDS
        rounds = max(lo, min(hi, int(PEDANTIC_TARGET_SECONDS / max(per_call, 1e-7))))
        benchmark.extra_info["timing"] = "pedantic, torch.cuda.synchronize() after each call"
        benchmark.pedantic(case.run_synced, rounds=rounds, iterations=1,
                           warmup_rounds=PEDANTIC_WARMUP_ROUNDS)
        return case

    return run
