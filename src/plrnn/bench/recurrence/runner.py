"""Running the tasks: consecutive tasks of one shape, pass and thread count form a cell whose
methods are timed in turn over ROUNDS rounds; each task gives one record (a CSV row)."""

from __future__ import annotations

import contextlib
import math
import statistics
import sys

import numpy as np
import torch
from torch.utils.benchmark import Measurement
from tqdm.auto import tqdm

from plrnn.recurrence import registry as backend_registry
from plrnn.recurrence.cpu import thread_round_trip_ns

from ..bandwidth import copy_measurement
from ..machine import steal_seconds
from ..timing import (
    calls_per_block,
    faults_per_call,
    measure,
    per_call_times,
    rotated,
    single_time,
    take_turns,
)
from .tasks import Env, Task, Unavailable


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# The methods of one cell are timed in turn, this many times each. Many short rounds, not a few
# long ones: on a shared VM the same kernel ran 1.5x slower for seconds at a time, and with 5
# rounds of 0.1 s over 20 methods, identical work came out up to 1.6x apart between cells
# (Zen 4 VM, the distributions section at (65536, 128)).
ROUNDS = 15
# Methods whose calls outlast a round's share of their time (the torch backend's Python loop,
# hundreds of ms a call) are timed in every SLOW_STRIDE-th round only, with that many rounds'
# time: each round costs blocked_autorange a warm-up call, which would otherwise triple them.
SLOW_STRIDE = 3
# After its first measurement, a method with short calls goes on in blocks (timing.BLOCK_S), the
# methods of a cell taking turns block by block until each has had its round's time. Methods
# whose rows refill shared buffers before being timed (`load`) keep one measurement per round.


def _cell_key(task: Task) -> tuple | None:
    """Tasks with equal keys, consecutive, form a cell; None: the task stands alone."""
    if task.how != "autorange":
        return None
    return (task.section, task.shape, task.pass_, task.threads, task.dtype)


def _cells(tasks: list[Task]) -> list[list[Task]]:
    """Consecutive tasks timing the same shape, pass and thread count: they are measured
    interleaved, so a slow spell of a shared machine hits every method of a cell alike."""
    cells: list[list[Task]] = []
    for task in tasks:
        key = _cell_key(task)
        if cells and key is not None and key == _cell_key(cells[-1][0]):
            cells[-1].append(task)
        else:
            cells.append([task])
    return cells


@contextlib.contextmanager
def _num_threads(n: int):
    """torch's intra-op thread count set to n for a block, and restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _new_record(env: Env, task: Task, threads: int) -> dict:
    rec = {
        "section": task.section, "method": task.method, "pass": task.pass_,
        "allocator": env.cfg.allocator, "decays": task.decays, "output": task.output,
        "dtype": task.dtype,
        "threads": threads, "T": task.T, "channels": task.channels,
        "shape": "x".join(map(str, task.shape)), "numel": math.prod(task.shape),
        "note": task.note, "auto_choice": None, "status": "ok", "reason": "",
        "timing": task.how, "median_s": math.nan, "mean_s": math.nan, "iqr_s": math.nan,
        "blocks": 0, "number_per_run": 0, "block_times_s": "", "round_medians_s": "",
        "round_steal_s": "",
        "round_trip_ns": "", "faults_per_call": math.nan, "round_faults": "",
    }
    if task.method == "auto":  # under the cell's thread count: auto reads it
        # As the op resolves it: complex inputs and the item size change the choice.
        dtype = getattr(torch, task.dtype)
        rec["auto_choice"] = backend_registry.resolve(
            "auto", torch.device(env.cfg.device), task.T, task.channels, dtype.is_complex,
            dtype.itemsize).name
    return rec


def _failed(rec: dict, err: BaseException) -> None:
    if isinstance(err, Unavailable):
        rec.update(status="unavailable", reason=str(err))
    else:
        rec.update(status="error", reason=_first_line(err))


def _min_run_time(env: Env, task: Task) -> float:
    return task.min_run_time if task.min_run_time is not None else env.cfg.min_run_time


def _prepare(env: Env, task: Task, rec: dict, threads: int):
    """Times the one-off rows (copy probe, single cold runs) now; returns (fn, inputs, load)
    for an autorange row, or None."""
    if task.how == "copy":
        m = copy_measurement(math.prod(task.shape), env.cfg.device, _min_run_time(env, task),
                             num_threads=threads)
        rec.update(_from_per_call(per_call_times(m), m.number_per_run))
        return None
    fn, inputs, *load = task.build()
    if task.how == "single":
        t = single_time(fn, inputs=inputs)
        rec.update(median_s=t, mean_s=t, blocks=1, number_per_run=1, block_times_s=repr(t))
        return None
    return fn, inputs, load[0] if load else None


def _run_cell(env: Env, cell: list[Task], threads: int, index: int = 0) -> list[dict]:
    recs = [{**_new_record(env, task, threads), "cell": index} for task in cell]
    built = {}
    for i, (task, rec) in enumerate(zip(cell, recs, strict=True)):
        try:
            prepared = _prepare(env, task, rec, threads)
            if prepared is not None:
                built[i] = prepared
        except Exception as err:  # noqa: BLE001 - one failing row must not lose the others
            _failed(rec, err)
    first: dict[int, Measurement] = {}  # each method's first measurement (blocked_autorange)
    per_call: dict[int, list[float]] = {i: [] for i in built}
    # each method's median per call in each round, nan where it sat out: ratios between the
    # methods of a cell are taken round by round (paired_ratio)
    by_round: dict[int, list[float]] = {i: [math.nan] * ROUNDS for i in built}
    # Per round, what the host did to the VM: the seconds it took from the VM's CPUs (steal), and
    # the slower of two cache-line round trips between the pool's first two threads, before and
    # after the round (nan on one thread). 2-thread rows that switch between two speeds for
    # seconds (cpu_parallel and torch at (65536, 4), Zen 4 VM) followed the round trip, 60 or
    # 330 ns, with no steal at all.
    steal = [math.nan] * ROUNDS
    # Per round, the page faults of one more call right after the method's timed calls: the
    # allocator's state then is the one its timed calls met (a probe after all rounds once showed
    # every call of a row faulting where most of its timed calls had not).
    faults: dict[int, list[float]] = {i: [math.nan] * ROUNDS for i in built}
    # one probe before the first round and one after each: round r lies between probes r, r + 1
    boundary_trips = [thread_round_trip_ns()] if built else []
    calls: dict[int, int] = {}  # calls per block of the methods that take turns in blocks
    for r in range(ROUNDS if built else 0):
        steal_before = steal_seconds()
        due = {}  # seconds each method still has in this round, in this round's order
        for i in rotated(list(built), r):
            if recs[i]["status"] != "ok":
                continue
            share = _min_run_time(env, cell[i]) / ROUNDS
            slow = not cell[i].every_round and i in first and first[i].median > share
            if not (slow and r % SLOW_STRIDE):
                due[i] = share * (SLOW_STRIDE if slow else 1)
        turns = {i: t for i, t in due.items() if i in calls}  # in blocks after a first measurement
        for i in due:  # in this round's order: a whole measurement each, before the turns
            if i in turns:
                continue
            fn, inputs, load = built[i]
            try:
                if load is not None:
                    load()
                m = measure(fn, due[i], num_threads=threads, inputs=inputs)
                per_call[i].extend(per_call_times(m))
                by_round[i][r] = m.median
                faults[i][r] = faults_per_call(fn, calls=1)
                first.setdefault(i, m)
                number = calls_per_block(m.median)
                if load is None and number is not None:
                    calls[i] = number
            except Exception as err:  # noqa: BLE001
                _failed(recs[i], err)
        blocks = take_turns({i: built[i][0] for i in turns}, calls, turns,
                            on_error=lambda i, err: _failed(recs[i], err))
        for i, times in blocks.items():
            per_call[i].extend(times)
            if times:
                by_round[i][r] = statistics.median(times)
                faults[i][r] = faults_per_call(built[i][0], calls=1)
        steal[r] = steal_seconds() - steal_before
        boundary_trips.append(thread_round_trip_ns())
    round_trip = [max(before, after) for before, after in zip(boundary_trips, boundary_trips[1:])]
    for i, counts in faults.items():
        if recs[i]["status"] == "ok" and any(math.isfinite(c) for c in counts):
            recs[i]["faults_per_call"] = statistics.median(c for c in counts if math.isfinite(c))
            recs[i]["round_faults"] = ";".join(f"{c:.0f}" for c in counts)
    for i, times in per_call.items():
        if times and recs[i]["status"] == "ok":
            recs[i].update(_from_per_call(times, first[i].number_per_run))
            recs[i]["round_medians_s"] = ";".join(f"{t:.6e}" for t in by_round[i])
            recs[i]["round_steal_s"] = ";".join(f"{t:.2f}" for t in steal)
            recs[i]["round_trip_ns"] = ";".join(f"{t:.0f}" for t in round_trip)
    return recs


def run_tasks(env: Env, tasks: list[Task]) -> list[dict]:
    records, section = [], None
    bar = tqdm(total=len(tasks), desc=f"{env.cfg.allocator} allocator", unit="meas",
               dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
    for index, cell in enumerate(_cells(tasks)):
        first = cell[0]
        if first.section != section:
            env.inputs.clear()
            section = first.section
        bar.set_postfix_str(f"{first.section}: {first.pass_} {first.shape}")
        with _num_threads(first.threads or env.cfg.threads) as threads:
            records.extend(_run_cell(env, cell, threads, index))
        bar.update(len(cell))
    bar.close()
    env.inputs.clear()
    return records


def _from_per_call(times: list[float], number_per_run: int) -> dict:
    """Statistics of the per-call times of all blocks of all rounds of one method."""
    per_call = np.array(times)
    q1, median, q3 = np.percentile(per_call, [25, 50, 75])
    return {
        "median_s": float(median), "mean_s": float(per_call.mean()), "iqr_s": float(q3 - q1),
        "blocks": int(per_call.size), "number_per_run": number_per_run,
        "block_times_s": ";".join(f"{t:.6e}" for t in per_call),
    }
