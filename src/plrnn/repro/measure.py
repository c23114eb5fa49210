"""Timing for the reproductions: the methods of one cell are timed in turn, over several rounds.

Interleaving the methods of a cell (serial, parallel, ...) and taking each one's median over the
rounds keeps a burst of load on a shared machine from landing on one method only, so the ratios
between methods stay honest even when the absolute times drift.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch

from plrnn.bench.timing import (
    calls_per_block,
    check_not_all_zero,
    median_time,
    rotated,
    single_time,
    take_turns,
)


def interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    rounds: int,
    min_run_time: float,
    inputs: Sequence[torch.Tensor] = (),
    between_rounds: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """{method: [median seconds per call in each round]} for every method of one cell.

    Each round starts one method later. Within a round, methods with short calls take turns in
    blocks of about timing.BLOCK_S until each has had min_run_time (the host's speed changes
    faster than one blocked_autorange per method lasts); the others take one blocked_autorange
    median each. between_rounds, if given, is called before each round and after the last (to
    record the machine's state beside the rounds)."""
    check_not_all_zero(inputs)
    calls = {name: calls_per_block(median_time(fn, min(min_run_time, 0.02)))
             for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        if between_rounds is not None:
            between_rounds()
        order = rotated(list(fns), r)
        for name in order:
            if calls[name] is None:
                times[name].append(median_time(fns[name], min_run_time))
        short = {name: min_run_time for name in order if calls[name] is not None}
        for name, blocks in take_turns(fns, calls, short).items():
            times[name].append(statistics.median(blocks))
    if between_rounds is not None:
        between_rounds()
    return times


def cold_calls(fn_factory: Callable[[], Callable[[], object]], repeats: int) -> list[float]:
    """Seconds of `repeats` single calls, each on a fresh closure (fresh inputs), no warm-up."""
    return [single_time(fn_factory()) for _ in range(repeats)]
