"""Timing for the reproductions: the methods of one cell are timed in turn, over several rounds.

Interleaving the methods of a cell (serial, parallel, ...) and taking each one's median over the
rounds keeps a burst of load on a shared machine from landing on one method only, so the ratios
between methods stay honest even when the absolute times drift.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from plrnn.bench.timing import median_time, rotated, single_time


def interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    rounds: int,
    min_run_time: float,
    inputs: Sequence[torch.Tensor] = (),
) -> dict[str, list[float]]:
    """{method: [median seconds per call in each round]} for every method of one cell."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name in rotated(list(fns), r):
            times[name].append(median_time(fns[name], min_run_time, inputs=inputs))
    return times


def cold_calls(fn_factory: Callable[[], Callable[[], object]], repeats: int) -> list[float]:
    """Seconds of `repeats` single calls, each on a fresh closure (fresh inputs), no warm-up."""
    return [single_time(fn_factory()) for _ in range(repeats)]
