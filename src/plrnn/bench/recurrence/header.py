"""The report's header: the machine, the C++ kernels' sources and settings, the backends, the
allocators and the config a run had."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time

import torch

from plrnn.recurrence import sources

from ..machine import machine_name
from ..timing import BLOCK_CALLS_MIN, BLOCK_S
from .config import Config
from .runner import ROUNDS, SLOW_STRIDE


def cpu_kernels_digest() -> str | None:
    """sha256 of every C++ CPU kernel source (the digest the prebuilt libraries and the auto
    calibration are keyed by), shortened: it tells runs of different kernels apart."""
    try:
        return sources.digest(sources.CPU_ALL)[:12]
    except OSError:
        return None


def kernel_settings() -> dict | None:
    """The C++ CPU kernels' process-wide settings in effect (measured per CPU and thread count by
    plrnn.recurrence.calibration and applied at the first kernel call), or None without them."""
    from plrnn.recurrence import calibration, cpu

    if cpu.load() is not None:
        return None
    ops = torch.ops.plrnn
    name = {table_name: {v: k for k, v in table.items()}
            for table_name, table in (("rows", calibration.WIDE_ROWS),
                                      ("stream", calibration.STREAMING),
                                      ("beyond", calibration.STREAMED_BEYOND))}
    settings = {"wide_rows": name["rows"][ops.cpu_wide_rows(-1)],
                "streaming_schedule": name["stream"][ops.cpu_streaming_schedule(-1)],
                "streamed_beyond": name["beyond"][ops.cpu_streamed_beyond(-1)],
                "stream_bytes": ops.cpu_stream_bytes(),
                "ilp_channels": ops.cpu_ilp_channels(-1),
                "output_cache_bytes": ops.cpu_output_cache(-1),
                "calibrated": calibration.enabled()}
    # What the schedule was chosen on: a choice the benchmark then contradicts is worth a look.
    if calibration.enabled():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            record = json.loads(calibration.cache_file(torch.get_num_threads()).read_text())
            settings["pipelined_over_time_split"] = record.get("pipelined_over_time_split")
            settings["last_level_over_private"] = record.get("last_level_over_private")
            settings["calibration_round_trip_ns"] = record.get("thread_round_trip_ns")
            settings["calibration_others_cores"] = record.get("others_cores")
    return settings


def header(info: dict, cfg: Config, argv: list[str], statuses, load,
           allocator_details: dict) -> list[str]:
    commit = info["git_commit"] or "unknown"
    if info["git_dirty"]:
        commit += " (with uncommitted changes)"
    alloc = "; ".join(f"`{al}`: {allocator_details.get(al, 'not run')}" for al in cfg.allocators)
    return [
        "# plrnn linear_recurrence benchmark",
        "",
        f"- machine: `{machine_name()}`: {info['cpu']}, {info['logical_cores']} logical cores, "
        f"{info['torch_threads']} torch threads ({info['torch_parallel_backend']})"
        + (f"; GPU {info['gpu']['name']}" if info["gpu"] else ""),
        f"- torch {info['torch_version']}, Python {info['python_version']}, {info['platform']}",
        f"- commit: {commit}; CPU kernel sources digest: {info['cpu_kernels_digest']}",
        f"- date (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}; load average "
        f"before the run: {load[0]:.2f} on {info['logical_cores']} cores (other processes "
        "competing for the cores make the numbers noisy, threaded kernels most)",
        f"- command: `{' '.join(['python -m plrnn.bench.recurrence', *argv])}`",
        "- backends: " + "; ".join(
            f"{s.name}: {'available' if s.available else 'UNAVAILABLE (' + s.reason + ')'}"
            for s in statuses),
        "- CPU kernel settings (plrnn.recurrence.calibration, measured once per CPU and thread "
        f"count unless PLRNN_AUTO_CALIBRATION=0): {json.dumps(info.get('kernel_settings'))}",
        "- calls: a plain loop, a fresh output per call unless the row says out= (preallocated)",
        "- allocator columns: `default` = the process as users run it (glibc malloc untouched: "
        "a large fresh output is mmap'd and page-faulted on every call, except the CPU "
        "kernels' own outputs of 1 MiB and more, which they recycle from their freed ones "
        "unless PLRNN_CPU_OUTPUT_CACHE=0); `steady` = a child "
        "process that first calls plrnn.bench.timing.reuse_freed_pages(), so freed pages are "
        "reused and outputs cost no page faults (the kernels' own speed). The CSV's `allocator` "
        f"column says which each row used. This run: {alloc}",
        "- decays distributions: U[0,1) = torch.rand; U[0.9,1) = 0.9 + 0.1 U[0,1); "
        "sigmoid(N(mu,1)) for mu = 0, 2, 5 (forget gates; means 0.50, 0.84, 0.99). Impulses and "
        "grad_h ~ N(0,1). Sections 1, 2 and 5 use U[0,1); the grid uses "
        f"{', '.join(cfg.grid_distributions)}; section 4 all five",
        "- timing: median per call over the blocks of torch.utils.benchmark blocked_autorange "
        f"(methods of a cell interleaved over {ROUNDS} rounds, each round starting one method "
        f"later; after its first round, a method with calls under {BLOCK_S * 1e3 / BLOCK_CALLS_MIN:g} "
        f"ms goes on in blocks of about {BLOCK_S * 1e3:g} ms, the cell's methods taking turns "
        "block by block; methods slower "
        f"than a round's share of their time, one round in {SLOW_STRIDE}, except in sections 4 "
        "and 5) "
        "unless marked 'single' (one cold run); every backend's output checked against a "
        "float64 loop first (on 64 channels spread over the whole row)",
        "- ratios between two methods timed in one cell (speedups, x U[0,1), of torch.mul, "
        "auto/best): the median over rounds of the ratio within each round, so they can differ "
        "from the ratio of the two medians shown. A method fast in some rounds and slow in "
        "others gets more blocks in its fast rounds, so its median leans towards them (the CSV "
        "has each round's median, round_medians_s); the ratios, one per round, do not",
        f"- config: `{json.dumps(dataclasses.asdict(cfg))}`",
    ]


def _loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (math.nan, math.nan, math.nan)
