"""median_time(fn): the median seconds of one call of fn, from torch.utils.benchmark.

Why torch.utils.benchmark.Timer and not timeit:
* CUDA: its default clock (torch/utils/benchmark/utils/timer.py, `timer()`) calls
  torch.accelerator.synchronize() before every reading whenever an accelerator is available, so
  asynchronous CUDA work is waited for at both ends of each block; blocked_autorange then sizes
  blocks so that this overhead is below 0.01% of the block. Nothing extra is needed for CUDA.
* blocked_autorange warms up (the block-size estimate runs fn at least once) and reports per-call
  times of many blocks, whose median we return.

Pitfall handled here: Timer(num_threads=...) defaults to 1 and calls torch.set_num_threads(1)
around the measurement, which would time multi-threaded kernels on one thread (and change what
backend="auto" picks, since it reads torch.get_num_threads()). We pass the caller's thread count.

Never time on all-zero inputs: large torch.zeros are mapped copy-on-write to the kernel's zero
page, so reading them costs no memory traffic, and zeros also hide denormal slow paths. Pass the
inputs as `inputs=` and they are checked.
"""

from __future__ import annotations

import ctypes
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch.utils.benchmark import Measurement, Timer


def check_not_all_zero(inputs: Sequence[torch.Tensor]) -> None:
    for i, t in enumerate(inputs):
        if isinstance(t, torch.Tensor) and t.numel() and not bool(t.detach().any()):
            raise ValueError(f"benchmark input {i} (shape {tuple(t.shape)}) is all zeros")


def measure(
    fn: Callable[[], object],
    min_run_time: float = 0.2,
    *,
    num_threads: int | None = None,
    inputs: Sequence[torch.Tensor] = (),
) -> Measurement:
    """blocked_autorange Measurement of fn() (raw block times, number_per_run, median, iqr)."""
    check_not_all_zero(inputs)
    timer = Timer(
        stmt="fn()",
        globals={"fn": fn},
        num_threads=num_threads if num_threads is not None else torch.get_num_threads(),
    )
    return timer.blocked_autorange(min_run_time=min_run_time)


def rotated(items: list, r: int) -> list:
    """items in round r of interleaved timing: each round starts one item later, so that no
    method always runs right after the same other one (in a fixed order, two methods running one
    loop came out 1.10-1.16x apart, Zen 4 VM)."""
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


def median_time(
    fn: Callable[[], object],
    min_run_time: float = 0.2,
    *,
    num_threads: int | None = None,
    inputs: Sequence[torch.Tensor] = (),
) -> float:
    """Median seconds per call of fn() over blocked_autorange blocks."""
    return measure(fn, min_run_time, num_threads=num_threads, inputs=inputs).median


# Methods timed against each other take turns in blocks of about BLOCK_S, once their calls are
# BLOCK_CALLS_MIN or more times shorter. The host's speed changes on a scale of tens of
# milliseconds: timed in one blocked_autorange per method and round, blocks of 1000 calls of the
# same kernel ran at 7 or at 12 us a call, a few blocks at a time, and cpu_serial and cpu_parallel,
# running one code path at (T, m) = (16, 128), came out 1.26x apart (Zen 4 VM); in turns of
# blocks of 100 calls (about 1 ms), the same path timed twice came out 0.99-1.01x apart
# (medians, 400 turns).
BLOCK_S = 0.001
BLOCK_CALLS_MIN = 4


def calls_per_block(seconds_per_call: float) -> int | None:
    """Calls in one block of about BLOCK_S, or None where calls are too long to take turns."""
    if seconds_per_call * BLOCK_CALLS_MIN > BLOCK_S:
        return None
    return max(1, round(BLOCK_S / seconds_per_call))


def block_time(fn: Callable[[], object], number: int) -> float:
    """Seconds per call over `number` back-to-back calls of fn(): one block of a measurement
    that interleaves methods block by block, timed at the caller's thread count (the warm-up and
    input checks are the caller's, as in its first measure())."""
    _sync()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    _sync()
    return (time.perf_counter() - start) / number


def take_turns(fns: dict, calls: dict, due: dict, on_error: Callable | None = None) -> dict:
    """{key: [seconds per call of each block]}: blocks of calls[key] calls of fns[key], the keys
    of `due` taking turns in its order until each has spent due[key] seconds. A block that raises
    ends its key's turns through on_error(key, err), or raises where there is none."""
    due = dict(due)
    times: dict = {key: [] for key in due}
    while due:
        for key in list(due):
            try:
                t = block_time(fns[key], calls[key])
            except Exception as err:
                if on_error is None:
                    raise
                on_error(key, err)
                del due[key]
                continue
            times[key].append(t)
            due[key] -= t * calls[key]
            if due[key] <= 0:
                del due[key]
    return times


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """The median over rounds of num[r] / den[r], over the rounds both timed (nan: not timed).

    Methods timed against each other share each round, so a slow mode of the host hits both
    sides of a round's ratio, where a ratio of the two medians compares values from different
    modes wherever the rounds split about evenly between them (one kernel timed as two rows came
    out 0.88x and 1.12x apart that way on the Zen 4 VM)."""
    pairs = [(n, d) for n, d in zip(num, den, strict=True)
             if math.isfinite(n) and math.isfinite(d) and d > 0]
    return statistics.median(n / d for n, d in pairs) if pairs else math.nan


def per_call_times(m: Measurement) -> list[float]:
    """Seconds per call of each block of a blocked_autorange measurement."""
    return [t / m.number_per_run for t in m.raw_times]


def _sync() -> None:
    accel = getattr(torch, "accelerator", None)
    if accel is not None and accel.is_available():
        accel.synchronize()
    elif torch.cuda.is_available():
        torch.cuda.synchronize()


def single_time(fn: Callable[[], object], *, inputs: Sequence[torch.Tensor] = ()) -> float:
    """Seconds of one cold call of fn() (no warm-up), for methods that take seconds per call."""
    check_not_all_zero(inputs)
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def faults_per_call(fn: Callable[[], object], calls: int = 3) -> float:
    """Median minor page faults of this process during one call of fn(), over `calls` calls (nan
    where the OS does not count them). A fresh output that the allocator maps anew faults once
    per page it writes, and on a VM that can cost several times the kernel's own time, so the
    count says whether a row's time is the kernel's or the allocator's."""
    try:
        import resource
    except ImportError:
        return math.nan
    counts = []
    for _ in range(calls):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return float(statistics.median(counts))


def reuse_freed_pages() -> str:
    """Lets large tensors reuse freed heap pages instead of fresh mmap'd ones.

    glibc maps allocations above a moving threshold (up to 32 MiB) fresh from the OS and returns
    them on free, so the next call pays a page fault per 4 KiB, several times the kernel's own
    time, or not, depending on the allocation history. Timing every call in the steady state
    keeps the comparison about the kernels; the returned text goes into the result's config, and
    starts with "default" where nothing could be changed (not glibc, or mallopt refused).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "default (not glibc)"
    m_trim_threshold, m_mmap_max = -1, -4
    if libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1):
        return "glibc mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1): freed pages are reused"
    return "default (mallopt refused)"
