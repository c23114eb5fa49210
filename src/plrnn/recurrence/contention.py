"""How much of this process's CPUs other work took while it timed something (Linux; elsewhere
unknown, nan). calibration.py uses it to tell a measurement of the kernels from a measurement
of a busy machine: with a second process spinning on the other core of the 2-core Zen 4 VM,
cpu_parallel measured 0.35-0.57x cpu_serial at (T, C) = (4096, 16 to 64), where alone it ran
1.2-1.4x faster, and cpu_serial 2.5-4x slower than cpu_parallel at 128-256 channels, where alone
the two were 1.3-1.9x apart. A record with that pattern (its cause not known: the host's moving
the threads to two dies gives a milder form of it) had auto run cpu_serial at (4096, 32) for as
long as it was kept, 1.27x slower than cpu_parallel in the benchmark."""

from __future__ import annotations

import math
import os
import time


def _cpus() -> set[int] | None:
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    cpus = _cpus()
    return len(cpus) if cpus is not None else os.cpu_count() or 1


def busy_seconds(stat: str = "/proc/stat", cpus: set[int] | None = None) -> float:
    """CPU seconds since boot that the CPUs this process may run on spent on anything but idling
    (user, nice, system, interrupts, and steal: time the hypervisor gave to others), summed over
    those CPUs; nan where the system does not say."""
    cpus = _cpus() if cpus is None else cpus
    total = 0
    try:
        with open(stat) as f:
            for line in f:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                if cpus is not None and int(name[3:]) not in cpus:
                    continue
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
                total += user + nice + system + irq + softirq + steal
    except (OSError, ValueError):
        return math.nan
    return total / os.sysconf("SC_CLK_TCK") if total else math.nan


def own_seconds() -> float:
    """CPU seconds this process (all its threads) has run."""
    t = os.times()
    return t.user + t.system


class Others:
    """`with Others() as others: ...`, then `others.cores`: how many of this process's CPUs other
    work kept busy on average while the block ran, at least (0 alone; about 0.9 over a quarter
    second with a competing process spinning; nan where unknown). The counters advance by clock
    ticks, so a tick per CPU and one for this process are taken off what they say: a block of a
    few milliseconds reads 0 whatever ran beside it."""

    cores = math.nan

    def __enter__(self) -> Others:
        self._start = (time.perf_counter(), busy_seconds(), own_seconds())
        return self

    def __exit__(self, *exc) -> None:
        wall, busy, own = (b - a for a, b in zip(self._start, (time.perf_counter(),
                                                                busy_seconds(), own_seconds())))
        slack = (usable_cpus() + 1) / os.sysconf("SC_CLK_TCK")
        self.cores = max(0.0, busy - own - slack) / wall if wall > 0 else math.nan


def others_now(seconds: float = 0.25) -> float:
    """Others' cores over a short pause of this process."""
    with Others() as others:
        time.sleep(seconds)
    return others.cores
