"""`auto` on CPU: which of cpu_serial and cpu_parallel is faster is measured once per CPU and
thread count, and cached on disk (as Triton caches its autotuning).

Why not a fixed rule: the two kernels differ most with few channels and long sequences, and
there the machines we measured disagree (`--sweep-auto`, results/<machine>/auto_sweep.md, T >=
16384, 2 threads): on an AMD EPYC VM cpu_parallel won at 32 channels (1.25x) and lost at 16
(0.8x); on an Intel Xeon (Skylake-SP) VM it won at 16 channels (1.1-1.3x) and tied or lost at 32
(0.9-1.0x). No rule was within 10% of the best on both. With one thread, more than 256 channels
or short sequences auto takes cpu_serial whatever was measured: it moves the least memory. (The
measurement itself runs at the first call of a real-valued CPU kernel at each thread count,
whichever shape and backend: the kernel settings below come with it.)

Three regimes are measured, forward into a preallocated output (a fresh one per call measured
page faults: _timed), inputs as real forget gates (sigmoid(N(2, 1))), medians of interleaved
rounds, each regime twice or three times, the three in turns (settled_in_turns):
- long sequences (T >= MIN_STEPS): T = 65536 at 1, 2, 4, 8, 16 and 32 channels, where one thread's
  loop is bound by its dependency chain or by memory;
- the longest (T >= LONGEST_MIN_STEPS): T = 262144 at the same channel counts. cpu_parallel's
  fixed costs (two parallel regions, a second read of a third of the inputs from cache) weigh
  less the longer the sequence: on the Zen 4 VM at 4 channels it tied with cpu_serial at T =
  65536 (0.93-1.09 from run to run) and ran 1.4-1.75x faster at T = 262144, so one length
  could not answer for both;
- sequences that fit in the cache (SHORT_MIN_STEPS <= T < MIN_STEPS): T = 4096 at 4 to 256
  channels, where two threads splitting the channels of short rows share pages and cpu_serial
  gained nothing from its second thread on the Skylake-SP VM (while cpu_parallel's time chunks
  ran 1.1-1.5x faster at 16 to 128 channels). Longer sequences with more than 32 channels take
  this answer too while inputs and output fit in the last-level cache (registry._cpu_kernel).
cpu_parallel is chosen for the channel counts up to a measured size where it was at least 5%
faster. About 12 s once on idle CPUs (minutes on a loaded machine), announced by a warning;
cached in PLRNN_CACHE_DIR (default
~/.cache/plrnn) under the CPU's model and feature flags, the thread count and the kernels
measured (calibration_store.kernels_key), measured by one process at a time, and pruned once unread (calibration_store.py; a
record that is damaged, or holds values no measurement writes, is measured again).
PLRNN_AUTO_CALIBRATION=0 (or false, no, off) uses the fixed rule below instead (the tests do, to
be deterministic); it is read at the first call that needs the choices at a thread count.

The same measurement decides how cpu_parallel works inside each thread: with few channels it can
also cut each thread's share of time into chunks run side by side in registers (Algorithm 1
again, reading each cache-sized block twice), which paid up to 32 channels on the AMD EPYC VM and
lost at every width on the Intel Skylake-SP VM (0.5-0.9x the plain loop, 1 and 2 threads, 1 to 32
channels). cpu_parallel is timed both ways at the long length; the in-thread chunks are kept up
to the widest measured width where they were at least 5% faster (`ilp_channels`; rows of one
float never take them, ilp_from), and the choices
above use the faster way. On one thread, where auto never takes cpu_parallel for real inputs, only this question
is measured (about 2 s, its own record), the first time cpu_parallel is asked for by name there.
The first cpu_parallel call at each thread count applies the answer (cpu.py).

Three settings of the kernels themselves are measured too (docs/op.md, "How auto chooses"),
since the CPUs we met disagree on them by up to 2x: how rows wider than one register strip are
stepped (wide_rows: one thread, any backend, once per CPU, under a second), how cpu_serial
spreads a scan streamed from memory over 2+ threads (streaming_schedule: in the per-thread-count
record, about 3 s more, measured again up to STREAM_TRIES times while the two schedules come out
within MARGIN of each other), and whether scans already count as streamed beyond one core's own
cache rather than beyond the last-level cache (streamed_beyond: in the same record, about a
second more). The first call of a CPU kernel at each thread count applies them.

A measurement that other processes disturbed (they kept more CPUs busy than it left free: a build
on the second core of a 2-core VM) is used, with a warning, and its record says so; the first
process that finds the CPUs quiet when it reads such a record measures again (contention.py).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import NamedTuple

import torch

from .calibration_store import cache_file, cpu_model, exclusive, layout_cache_file, read_record
from .calibration_store import write_record as _store_record
from .contention import Others, others_now, usable_cpus

log = logging.getLogger(__name__)

MIN_STEPS = 16384  # from here on, the long regime's choice
LONGEST_MIN_STEPS = 131072  # from here on, the choice measured at _LONGEST_STEPS
# Each stands for the channel counts above the one before it.
MEASURED_CHANNELS = (1, 2, 4, 8, 16, 32)
SHORT_MIN_STEPS = 1024  # shorter sequences: cpu_serial (the threads' second pass does not pay)
SHORT_MEASURED_CHANNELS = (4, 16, 32, 64, 128, 256)
MIN_WORK = 1 << 16  # below T * channels = 2**16 cpu_parallel runs on one thread (cpu_kernels_impl.h)
MARGIN = 1.05  # cpu_parallel must be this much faster to be chosen
FIXED_RULE = frozenset(range(17, 33))  # without calibration: the AMD EPYC measurement
FIXED_ILP = 32  # without calibration: in-thread chunks up to 32 channels (AMD EPYC)
_STEPS, _SHORT_STEPS, _LONGEST_STEPS = 65536, 4096, 262144
# Many short rounds: the host's speed changes on a scale of tens of milliseconds, and with 5
# rounds of 20 ms per way a record chose cpu_serial at (4096, 32), measuring it 1.11x faster,
# where interleaved millisecond blocks timed cpu_parallel 1.14-1.17x faster (Zen 4 VM).
_ROUNDS = 25
_ROUND_S = 0.004  # calls per round fill this long, or one call where it takes longer
# CPUs that other work may keep busy, on average, beyond those a measurement leaves free, before
# the measurement counts as disturbed (contention.py): alone, the Zen 4 VM's measurements saw
# 0-0.02; with a competing process on the other core, 0.7-0.8.
OTHERS_LIMIT = 0.1


class Choice(NamedTuple):
    # Sets, not tuples: auto asks `channels in` one of them on every call, and a miss scanned the
    # whole tuple, 1.8 us for the 224 counts of a calibrated short regime (Zen 4 VM), 10% of a
    # call at (4096, 32).
    long: frozenset[int]  # channel counts for cpu_parallel at MIN_STEPS <= T < LONGEST_MIN_STEPS
    longest: frozenset[int]  # ... at T >= LONGEST_MIN_STEPS
    short: frozenset[int]  # ... at SHORT_MIN_STEPS <= T < MIN_STEPS
    ilp: int  # cpu_parallel's in-thread chunks up to this many channels
    stream: str  # cpu_serial's schedule for scans streamed from memory: one of STREAMING
    beyond: str  # where scans count as streamed from memory: one of STREAMED_BEYOND


# Without calibration (PLRNN_AUTO_CALIBRATION=0): the AMD EPYC measurement for long sequences,
# cpu_serial's channel split for short ones, the pipelined streaming schedule, and scans streamed
# only beyond the last-level cache.
FIXED_CHOICE = Choice(FIXED_RULE, FIXED_RULE, frozenset(), FIXED_ILP, "pipelined", "last_level")

_cache: dict[int, Choice] = {}
_layout: str | None = None  # wide_rows()'s answer once known

# The layouts of cpu_kernels.h (wide_rows_layout): rows wider than one register strip stepped
# one whole row after the other, or in blocks of rows strip by strip with the state in registers.
WIDE_ROWS = {"sequential": 0, "strips": 1}
# cpu_serial's schedules for scans streamed from memory on several threads (cpu_kernels.h,
# streaming_schedule).
STREAMING = {"pipelined": 0, "time_split": 1}
# Where scans count as streamed from memory (cpu_kernels.h, streamed_beyond): beyond the
# last-level cache, or already beyond one core's own cache.
STREAMED_BEYOND = {"last_level": 0, "private": 1}
# Where to compare them: rows as wide as the widest of STREAM_SHAPES' narrow ones, inputs and
# output together at most half the last-level cache and more than BEYOND_MIN_PRIVATE times one
# core's own cache (else it is not asked: last_level).
BEYOND_CHANNELS = 128
BEYOND_MAX_STEPS = 16384
BEYOND_MIN_PRIVATE = 4
# Where to compare layouts of wide rows: each input 32 MiB, beyond the last-level cache of the
# CPUs we met.
LAYOUT_SHAPES = ((65536, 128), (8192, 1024))
# Where to compare the streaming schedules: as large, with rows narrow enough (under 2 KiB per
# thread) that both schedules run. At (8192, 1024) two threads' shares are 2 KiB, which the
# pipelined schedule leaves to the channel split: a record on the Zen 4 VM measured 1.003 there
# and 1.096 at (65536, 128), geomean under MARGIN, and so chose pipelined, which the benchmark
# then ran at 0.6x the time split's speed forward+backward at (65536, 128).
STREAM_SHAPES = ((65536, 128), (32768, 256))
# Measurements of the streaming schedules taken at most, while their answer stays within MARGIN
# either way: a single one on a shared machine can land anywhere in between.
STREAM_TRIES = 3
# What measure_streaming times; records that compared the schedules another way are measured anew.
STREAM_MEASURE = ("forward and reverse scans into preallocated outputs; where scans count as "
                  "streamed, under the measured schedule")
# Measurements of cpu_serial against cpu_parallel taken at most per regime (settled).
CHANNEL_TRIES = 3
# How cpu_serial and cpu_parallel are timed against each other (_timed, settled); records that
# timed them otherwise are measured anew.
CHANNELS_MEASURE = ("into preallocated outputs, every width and way in one set of 25 rounds of "
                    "4 ms, each round starting one way later, twice or three times, the regimes "
                    "in turns")


# PLRNN_AUTO_CALIBRATION's spellings of "off" (stripped, any case); anything else is on.
_OFF = frozenset({"0", "false", "no", "off"})


def enabled() -> bool:
    return os.environ.get("PLRNN_AUTO_CALIBRATION", "1").strip().lower() not in _OFF


_said_uncached = False


def _record_path(where: Callable[[], Path]) -> Path | None:
    """where(), or None where there is no folder to cache in (said once, in a warning)."""
    global _said_uncached
    try:
        return where()
    except OSError as err:
        if not _said_uncached:
            _said_uncached = True
            log.warning("plrnn: the calibration cannot be cached, so each process will measure "
                        "it again: %s", err)
        return None


def _read(path: Path | None) -> dict | None:
    try:
        return None if path is None else read_record(path)
    except (OSError, ValueError):  # missing, unreadable, damaged
        return None


def _write_record(path: Path | None, record: dict) -> None:
    if path is not None:
        _store_record(path, record)


def _channel_set(record: dict, key: str, widest: int) -> frozenset[int]:
    """record[key], channel counts as channels_from writes them; ValueError for anything else
    (a record edited, or written by another version)."""
    value = record[key]
    if not (isinstance(value, list)
            and all(type(c) is int and 1 <= c <= widest for c in value)):
        raise ValueError(f"{key}: {value!r}")
    return frozenset(value)


def _ilp_of(record: dict) -> int:
    """record["ilp_channels"] as ilp_from writes it; ValueError for anything else."""
    value = record["ilp_channels"]
    if type(value) is not int or value not in (0, *MEASURED_CHANNELS):
        raise ValueError(f"ilp_channels: {value!r}")
    return value


def parallel_channels(threads: int, steps: int) -> frozenset[int]:
    """The channel counts for which cpu_parallel is the faster kernel here at this length."""
    if threads < 2 or steps < SHORT_MIN_STEPS:
        return frozenset()
    choice = _choice(threads)
    if steps >= LONGEST_MIN_STEPS:
        return choice.longest
    return choice.long if steps >= MIN_STEPS else choice.short


def streaming_schedule(threads: int) -> int:
    """cpu_serial's schedule here for scans streamed from memory on `threads` threads: one of
    STREAMING's values."""
    if threads < 2:
        return STREAMING["pipelined"]
    return STREAMING[_choice(threads).stream]


def streamed_beyond(threads: int) -> int:
    """Where scans count as streamed from memory here on `threads` threads: one of
    STREAMED_BEYOND's values."""
    if threads < 2:
        return STREAMED_BEYOND["last_level"]
    return STREAMED_BEYOND[_choice(threads).beyond]


def ilp_channels(threads: int) -> int:
    """The widest rows (channels) for which cpu_parallel chunks time inside each thread here."""
    return _choice(threads).ilp


def _choice(threads: int) -> Choice:
    """The choices at this thread count, fixed at its first use in the process, so that auto's
    calls read no environment variable: os.environ.get of an unset one raises and catches a
    KeyError, 2.2 us of each call after a kernel that evicted the interpreter's caches (Zen 4
    VM, 4 channels, T = 65536, where the whole Python path took 15-20 us)."""
    if threads not in _cache:
        if not enabled():
            _cache[threads] = FIXED_CHOICE
        elif threads < 2:
            _cache[threads] = _load_or_measure_one_thread()
        else:
            _cache[threads] = _load_or_measure(threads)
    return _cache[threads]


def _load_or_measure_one_thread() -> Choice:
    """On one thread only cpu_parallel asked for by name asks (auto takes cpu_serial there), and
    only one question is open: whether its in-thread chunks beat its plain loop, which is then
    cpu_serial's. It is measured on its own, at one thread: on the Zen 4 VM the chunks (the fixed
    32 channels) made cpu_parallel 1.6-2.0x slower than cpu_serial at 2 to 32 channels, where on
    the Zen 3 VM they had paid."""
    path = _record_path(lambda: cache_file(1))
    choice = _one_thread_record(path)
    if choice is not None:
        return choice
    with exclusive(path):
        # Another thread of this process, or another process, may have measured it meanwhile.
        choice = _cache.get(1) or _one_thread_record(path)
        if choice is not None:
            return choice
        return _measure_one_thread(path)


def _one_thread_record(path: Path | None) -> Choice | None:
    record = _read(path)
    try:
        if (record is not None and record.get("channels_measured_by") == CHANNELS_MEASURE
                and _reusable(record, 1)):
            return _one_thread_choice(_ilp_of(record))
    except (ValueError, KeyError, TypeError):
        pass
    return None


def _measure_one_thread(path: Path | None) -> Choice:
    _announce("cpu_parallel's in-thread chunks on one thread", "about 2 s", path)
    with Others() as others:
        times, tries = settled(measure_in_thread_chunks, ilp_from)
    ilp = ilp_from(times)
    _write_record(path, {
        "cpu": cpu_model().partition(":")[2].strip(),
        "threads": 1,
        "torch": torch.__version__,
        "plain_over_chunked": {str(c): round(t["plain"] / t["ilp"], 3) for c, t in times.items()},
        "ilp_channels": ilp,
        "channels_measured_by": CHANNELS_MEASURE,
        "channel_measurements": {"in_thread_chunks": tries},
        **_disturbance(others, 1, path),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    })
    log.info("plrnn: in-thread chunks calibrated for one thread (%s): plain/chunked %s, up to %d "
             "channels", path, {c: round(t["plain"] / t["ilp"], 3) for c, t in times.items()}, ilp)
    return _one_thread_choice(ilp)


def _one_thread_choice(ilp: int) -> Choice:
    return Choice(frozenset(), frozenset(), frozenset(), ilp, "pipelined", "last_level")


def _load_or_measure(threads: int) -> Choice:
    path = _record_path(lambda: cache_file(threads))
    choice = _threads_record(path, threads)
    if choice is not None:
        return choice
    with exclusive(path):
        # Another thread of this process, or another process, may have measured it meanwhile.
        choice = _cache.get(threads) or _threads_record(path, threads)
        if choice is not None:
            return choice
        return _measure(threads, path)


def _threads_record(path: Path | None, threads: int) -> Choice | None:
    record = _read(path)
    try:
        # Records that compared the streaming schedules otherwise (once, at LAYOUT_SHAPES, or
        # through the backward), that timed the kernels width after width, and records from
        # before the longest regime: measured again.
        if (record is not None
                and record["streaming_schedule"] in STREAMING
                and record.get("streamed_beyond") in STREAMED_BEYOND
                and record.get("streaming_measured_by") == STREAM_MEASURE
                and record.get("channels_measured_by") == CHANNELS_MEASURE
                and _reusable(record, threads)):
            widest, short_widest = max(MEASURED_CHANNELS), max(SHORT_MEASURED_CHANNELS)
            return Choice(_channel_set(record, "parallel_channels", widest),
                          _channel_set(record, "longest_parallel_channels", widest),
                          _channel_set(record, "short_parallel_channels", short_widest),
                          _ilp_of(record), record["streaming_schedule"],
                          record["streamed_beyond"])
    except (ValueError, KeyError, TypeError):
        pass
    return None


def _measure(threads: int, path: Path | None) -> Choice:
    _announce(f"which CPU backend each shape takes with {threads} thread(s)",
              "about 12 s on idle CPUs", path)
    started = time.monotonic()
    # Where the host had the threads at the start and after each measurement: on a VM it moves
    # them between one core, one die and two dies, and which kernel wins near the crossover
    # changes with it (docs/benchmarks.md), so the record says what it was measured under.
    from . import cpu

    trips = [cpu.thread_round_trip_ns()]
    with Others() as others:
        times, regimes, taken = settled_in_turns(measure, {
            "longest": (measure_longest, lambda t: channels_from(_parallel_ratios(t))),
            "short": (measure_short,
                      lambda t: channels_from(_parallel_ratios(t), SHORT_MEASURED_CHANNELS)),
        })
        ilp = ilp_from(times)
        ratios = _long_ratios(times)
        longest_ratios = _parallel_ratios(regimes["longest"])
        short_ratios = _parallel_ratios(regimes["short"])
        trips.append(cpu.thread_round_trip_ns())
        stream_ratios, stream_tries = stream_from(measure_streaming)
        stream = stream_schedule_from(stream_ratios)
        beyond_ratios = _beyond_ratios(measure_streamed_beyond(STREAMING[stream]))
        trips.append(cpu.thread_round_trip_ns())
    choice = Choice(channels_from(ratios), channels_from(longest_ratios),
                    channels_from(short_ratios, SHORT_MEASURED_CHANNELS),
                    ilp, stream, beyond_from(beyond_ratios))
    record = {
        "cpu": cpu_model().partition(":")[2].strip(),
        "threads": threads,
        "torch": torch.__version__,
        "serial_over_parallel": {str(c): round(r, 3) for c, r in ratios.items()},
        "parallel_channels": sorted(choice.long),
        "longest_serial_over_parallel": {str(c): round(r, 3) for c, r in longest_ratios.items()},
        "longest_parallel_channels": sorted(choice.longest),
        "short_serial_over_parallel": {str(c): round(r, 3) for c, r in short_ratios.items()},
        "short_parallel_channels": sorted(choice.short),
        "plain_over_chunked": {str(c): round(t["plain"] / t["ilp"], 3) for c, t in times.items()},
        "ilp_channels": ilp,
        "pipelined_over_time_split": {f"{T}x{C}": round(r, 3)
                                      for (T, C), r in stream_ratios.items()},
        "streaming_measurements": stream_tries,
        "streaming_measured_by": STREAM_MEASURE,
        "channels_measured_by": CHANNELS_MEASURE,
        "channel_measurements": taken,
        "streaming_schedule": choice.stream,
        "last_level_over_private": {f"{T}x{C}": round(r, 3)
                                    for (T, C), r in beyond_ratios.items()},
        "streamed_beyond": choice.beyond,
        # before the measurements, after the three regimes' and after the streaming schedules'
        # (None: one thread)
        "thread_round_trip_ns": [round(t) if math.isfinite(t) else None for t in trips],
        **_disturbance(others, threads, path),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    _write_record(path, record)
    took = time.monotonic() - started
    if took > 60:
        log.warning("plrnn: the calibration at %d thread(s) took %.0f s (other work on the CPUs "
                    "slows it)", threads, took)
    log.info("plrnn: auto calibrated for this CPU (%s): long %s, longest %s, short %s, in-thread "
             "chunks up to %d channels, streaming %s beyond the %s cache", path,
             record["serial_over_parallel"], record["longest_serial_over_parallel"],
             record["short_serial_over_parallel"], ilp, choice.stream, choice.beyond)
    return choice


def _long_ratios(times: dict[int, dict[str, float]]) -> dict[int, float]:
    """cpu_serial's time over cpu_parallel's, with in-thread chunks where they paid (measure())."""
    ilp = ilp_from(times)
    return {c: t["serial"] / t["ilp" if c <= ilp else "plain"] for c, t in times.items()}


def _parallel_ratios(times: dict[int, dict[str, float]]) -> dict[int, float]:
    return {c: t["serial"] / t["parallel"] for c, t in times.items()}


def settled(measure_once: Callable[[], dict[int, dict[str, float]]],
            decide: Callable[[dict[int, dict[str, float]]], object]
            ) -> tuple[dict[int, dict[str, float]], int]:
    """Seconds per width and way, the median over CHANNEL_TRIES measurements where the first two
    decide differently, else over those two; returns them and the number taken. One measurement
    in a slow spell of a shared VM can time cpu_parallel below cpu_serial at every width (the
    rounds of one measurement span about a second), and the record keeps its answer."""
    tries = [measure_once(), measure_once()]
    if decide(tries[0]) != decide(tries[1]):
        tries += [measure_once() for _ in range(CHANNEL_TRIES - 2)]
    return _medians(tries), len(tries)


def _medians(tries: list[dict[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    return {c: {way: statistics.median(t[c][way] for t in tries) for way in tries[0][c]}
            for c in tries[0]}


Times = dict[int, dict[str, float]]


def settled_in_turns(long_once: Callable[[], Times],
                     others: dict[str, tuple[Callable[[int], Times], Callable[[Times], object]]]
                     ) -> tuple[Times, dict[str, Times], dict[str, int]]:
    """As settled(), for the long regime (measure()) and the regimes in `others`, each
    (measure_once(ilp), decide), which time cpu_parallel with in-thread chunks up to `ilp`
    channels as the long regime's measurements so far say (ilp_from). Measured in turns, long
    then each other regime, twice, so that two measurements of one regime lie seconds apart:
    two taken back to back at (4096, 128) both timed cpu_serial 7% faster in a record (the
    median of them, 0.93), where every other record on the Zen 4 VM (17) and the benchmark, on
    one die of the host or two, timed cpu_parallel 1.1-4x faster; a slow spell of a shared host
    can outlast one measurement. Measurements taken with another `ilp` than the final one are
    taken again. Returns the long regime's medians, the others', and how many of each."""
    def decide_long(t: Times) -> object:
        return ilp_from(t), channels_from(_long_ratios(t))

    long: list[Times] = []
    tries: dict[str, list[tuple[int, Times]]] = {name: [] for name in others}
    for _ in range(2):
        long.append(long_once())
        ilp = ilp_from(_medians(long))
        for name, (measure_once, _) in others.items():
            tries[name].append((ilp, measure_once(ilp)))
    if decide_long(long[0]) != decide_long(long[1]):
        long += [long_once() for _ in range(CHANNEL_TRIES - 2)]
    ilp = ilp_from(_medians(long))
    for name, (measure_once, decide) in others.items():
        kept = [t for i, t in tries[name] if i == ilp]
        kept += [measure_once(ilp) for _ in range(2 - len(kept))]
        if decide(kept[0]) != decide(kept[1]):
            kept += [measure_once(ilp) for _ in range(CHANNEL_TRIES - 2)]
        tries[name] = kept
    return (_medians(long), {name: _medians(t) for name, t in tries.items()},
            {"long": len(long), **{name: len(t) for name, t in tries.items()}})


def _announce(what: str, duration: str, path: Path | None) -> None:
    """A first call that measures would otherwise pause for seconds without a word."""
    where = "not cached" if path is None else f"cached in {path.parent}"
    log.warning("plrnn: timing %s on this CPU, once (%s; %s; "
                "PLRNN_AUTO_CALIBRATION=0 skips it)", what, duration, where)


def _disturbed(cores: float, threads: int) -> bool:
    """Whether other work kept busy more of this process's CPUs than a measurement on `threads`
    threads leaves free (by more than OTHERS_LIMIT); False where unknown (nan)."""
    return cores > OTHERS_LIMIT + max(0, usable_cpus() - threads)


def _disturbance(others: Others, threads: int, path: Path | None) -> dict:
    """The record's word on what other work did during its measurement, said aloud where that
    disturbed it."""
    if _disturbed(others.cores, threads):
        log.warning("plrnn: other processes kept %.2f CPUs busy while %s was measured; its "
                    "answer is used, and measured again by the first process that finds the "
                    "CPUs quiet", others.cores,
                    f"the calibration at {threads} thread(s)" if path is None else path.name)
    return {"others_cores": round(others.cores, 3) if math.isfinite(others.cores) else None}


def _reusable(record: dict, threads: int) -> bool:
    """False for a record whose measurement others disturbed, read while the CPUs are quiet: the
    kernels can be measured by themselves now (costs a quarter second of waiting per process
    while the record stays disturbed)."""
    cores = record.get("others_cores")
    return cores is None or not _disturbed(cores, threads) or _disturbed(others_now(), threads)


def wide_rows() -> int:
    """How the CPU kernels step rows wider than one register strip here: one of WIDE_ROWS."""
    global _layout
    if not enabled():
        return WIDE_ROWS["sequential"]
    if _layout is None:
        _layout = _load_or_measure_layout()
    return WIDE_ROWS[_layout]


def _load_or_measure_layout() -> str:
    path = _record_path(layout_cache_file)
    layout = _layout_record(path)
    if layout is not None:
        return layout
    with exclusive(path):
        # Another thread of this process, or another process, may have measured it meanwhile.
        layout = _layout or _layout_record(path)
        if layout is not None:
            return layout
        return _measure_layout(path)


def _layout_record(path: Path | None) -> str | None:
    record = _read(path)
    try:
        if record is not None and record["wide_rows"] in WIDE_ROWS and _reusable(record, 1):
            return record["wide_rows"]
    except (ValueError, KeyError, TypeError):
        pass
    return None


def _measure_layout(path: Path | None) -> str:
    _announce("how the CPU kernels step wide rows", "under a second", path)
    with Others() as others:
        times = measure_layout()
    ratios = {shape: t["sequential"] / t["strips"] for shape, t in times.items()}
    layout = layout_from(ratios)
    _write_record(path, {
        "cpu": cpu_model().partition(":")[2].strip(),
        "torch": torch.__version__,
        "sequential_over_strips": {f"{T}x{C}": round(r, 3) for (T, C), r in ratios.items()},
        "wide_rows": layout,
        **_disturbance(others, 1, path),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    })
    log.info("plrnn: wide rows calibrated for this CPU (%s): sequential/strips %s -> %s", path,
             ratios, layout)
    return layout


def layout_from(ratios: dict[tuple[int, int], float]) -> str:
    """'strips' where they were at least MARGIN faster than sequential rows over the measured
    shapes (geometric mean of sequential time / strips time), else 'sequential'."""
    return "strips" if _geomean(ratios) >= MARGIN else "sequential"


def stream_schedule_from(ratios: dict[tuple[int, int], float]) -> str:
    """'pipelined' where it was at least MARGIN faster than the time split over the measured
    shapes (geometric mean of pipelined time / time-split time), else 'time_split'. A tie goes to
    the time split: what is measured is the forward and a reverse scan, and the backward, which
    is not, ran faster with the time split on the two VMs where both were benchmarked (Zen 4
    about 2x; Sapphire Rapids 1.5-1.6x at (65536, 128), 2 threads, in a run whose calibration had
    picked the pipelined schedule)."""
    return "pipelined" if _geomean(ratios) <= 1 / MARGIN else "time_split"


def beyond_from(ratios: dict[tuple[int, int], float]) -> str:
    """'private' where treating scans beyond one core's own cache as streamed was at least MARGIN
    faster (geometric mean of last-level time / private time; none measured: 'last_level').
    A tie keeps the last level: plain stores leave a scan's output cached for whoever reads it
    next, streaming stores do not."""
    return "private" if ratios and _geomean(ratios) >= MARGIN else "last_level"


def _beyond_ratios(times: dict[tuple[int, int], dict[str, float]]
                   ) -> dict[tuple[int, int], float]:
    return {shape: t["last_level"] / t["private"] for shape, t in times.items()}


def beyond_shapes() -> tuple[tuple[int, int], ...]:
    """Where measure_streamed_beyond compares: one shape of BEYOND_CHANNELS fp32 channels, the
    longest power-of-two length up to BEYOND_MAX_STEPS whose inputs and output fit in half the
    last-level cache, if they exceed BEYOND_MIN_PRIVATE times one core's own cache; none
    otherwise (a small last-level cache, or PLRNN_STREAM_BYTES set, which both settings obey)."""
    ops = torch.ops.plrnn
    before = ops.cpu_streamed_beyond(STREAMED_BEYOND["last_level"])
    last_level = ops.cpu_stream_bytes()
    ops.cpu_streamed_beyond(STREAMED_BEYOND["private"])
    private = ops.cpu_stream_bytes()
    ops.cpu_streamed_beyond(before)
    row = 3 * BEYOND_CHANNELS * 4
    T = BEYOND_MAX_STEPS
    while T > 1 and T * row > last_level // 2:
        T //= 2
    fits = BEYOND_MIN_PRIVATE * private < T * row <= last_level // 2
    return ((T, BEYOND_CHANNELS),) if fits else ()


def measure_streamed_beyond(schedule: int) -> dict[tuple[int, int], dict[str, float]]:
    """Median seconds of cpu_serial's forward and reverse scans into preallocated outputs (as
    measure_streaming) with each of STREAMED_BEYOND's settings, under the streaming `schedule`
    (restored afterwards) and this CPU's layout of wide rows, at beyond_shapes()."""
    from . import cpu

    cpu.load()
    shapes = beyond_shapes()
    if not shapes:
        return {}
    before = (torch.ops.plrnn.cpu_wide_rows(wide_rows()),
              torch.ops.plrnn.cpu_streaming_schedule(schedule))
    try:
        return _timed_settings("cpu_streamed_beyond", STREAMED_BEYOND, reverse_too=True,
                               shapes=shapes)
    finally:
        torch.ops.plrnn.cpu_wide_rows(before[0])
        torch.ops.plrnn.cpu_streaming_schedule(before[1])


def _geomean(ratios: dict) -> float:
    return math.exp(statistics.fmean(math.log(r) for r in ratios.values()))


def stream_from(measure_once: Callable[[], dict[tuple[int, int], dict[str, float]]]
                ) -> tuple[dict[tuple[int, int], float], int]:
    """Pipelined over time-split time per shape, the median over up to STREAM_TRIES measurements:
    another is taken while the geomean is within MARGIN either way. Returns the ratios and the
    number of measurements taken."""
    tries: list[dict[tuple[int, int], float]] = []
    while len(tries) < STREAM_TRIES:
        tries.append({shape: t["pipelined"] / t["time_split"]
                      for shape, t in measure_once().items()})
        ratios = {shape: statistics.median(r[shape] for r in tries) for shape in tries[0]}
        if not 1 / MARGIN < _geomean(ratios) < MARGIN:
            break
    return ratios, len(tries)


def measure_streaming() -> dict[tuple[int, int], dict[str, float]]:
    """Median seconds of cpu_serial's forward and the same scan reversed, both into preallocated
    outputs, with each of STREAMING's schedules, on the current thread count, at each of
    STREAM_SHAPES. The reverse scan walks rows in descending address order as the backward does:
    on the Zen 4 VM the schedules once ran the forward at about one speed and the backward at 2x
    apart. It stands in for the backward because the backward allocates its two gradients, and
    at these sizes each fresh 32 MiB costs page faults that took several times the kernels' own
    time and hid which schedule was faster. The time split steps rows as this CPU's layout of
    wide rows says, so that is applied while measuring (and restored)."""
    from . import cpu

    cpu.load()
    before = torch.ops.plrnn.cpu_wide_rows(wide_rows())
    try:
        return _timed_settings("cpu_streaming_schedule", STREAMING, reverse_too=True,
                               shapes=STREAM_SHAPES)
    finally:
        torch.ops.plrnn.cpu_wide_rows(before)


def measure_layout() -> dict[tuple[int, int], dict[str, float]]:
    """Median seconds per call of cpu_serial on one thread, forward into a preallocated output,
    with each layout of wide rows, at each of LAYOUT_SHAPES."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        return _timed_settings("cpu_wide_rows", WIDE_ROWS)
    finally:
        torch.set_num_threads(threads)


def _timed_settings(op_name: str, settings: dict[str, int], reverse_too: bool = False,
                    shapes: tuple[tuple[int, int], ...] = LAYOUT_SHAPES
                    ) -> dict[tuple[int, int], dict[str, float]]:
    """Times cpu_serial (forward, out=; then reversed if `reverse_too`) under each of `settings`
    applied through the kernels' setting op `op_name`, at each of `shapes`; the setting is
    restored afterwards."""
    from . import cpu

    cpu.load()
    op = getattr(torch.ops.plrnn, op_name)
    before = op(-1)
    g = torch.Generator().manual_seed(0)
    result = {}
    try:
        for T, C in shapes:
            a = torch.sigmoid(torch.randn(T, C, generator=g) + 2)
            x = torch.randn(T, C, generator=g)
            out = torch.empty_like(x)

            def call(a=a, x=x, out=out):
                torch.ops.plrnn.cpu_scan_out(a, x, None, False, False, out=out)
                if reverse_too:
                    torch.ops.plrnn.cpu_scan_out(a, x, None, True, False, out=out)

            result[(T, C)] = _rounds({name: (lambda v=v: op(v), call)
                                      for name, v in settings.items()})
    finally:
        op(before)
    return result


def _rounds(ways: dict[Hashable, tuple[Callable[[], object], Callable[[], object]]]
            ) -> dict[Hashable, float]:
    """Median seconds per call of each way's (setup, call), over interleaved rounds: a warm-up
    round of one call each, then _ROUNDS rounds of calls that fill about _ROUND_S (3 calls of
    0.3 ms each misjudged 4 channels). Each round starts one way later, so that no way always
    runs right after the same other one."""
    times: dict[Hashable, list[float]] = {name: [] for name in ways}
    calls = dict.fromkeys(ways, 1)
    order = list(ways)
    for r in range(1 + _ROUNDS):
        for name in order[r % len(order):] + order[:r % len(order)]:
            setup, call = ways[name]
            setup()
            start = time.perf_counter()
            for _ in range(calls[name]):
                call()
            times[name].append((time.perf_counter() - start) / calls[name])
        calls = {name: max(1, math.ceil(_ROUND_S / min(t))) for name, t in times.items()}
    return {name: statistics.median(t[1:]) for name, t in times.items()}


def ilp_from(times: dict[int, dict[str, float]]) -> int:
    """The widest of MEASURED_CHANNELS up to which cpu_parallel's in-thread chunks ("ilp") were
    at least MARGIN faster than its plain loop at every measured width; 0 where they never were.
    Ties (within MARGIN either way) at the narrowest widths, before the chunks first paid, do not
    end the run: rows of one float, packed several to a vector, never take the chunks in the AVX
    builds, so there the two ways run the same loop and say nothing about wider rows."""
    widest = 0
    for c in MEASURED_CHANNELS:
        plain, ilp = times[c]["plain"], times[c]["ilp"]
        if plain >= MARGIN * ilp:
            widest = c
        elif widest or ilp > MARGIN * plain:
            break
    return widest


def channels_from(ratios: dict[int, float],
                  measured: tuple[int, ...] = MEASURED_CHANNELS) -> frozenset[int]:
    """Channel counts for cpu_parallel from serial/parallel time ratios at the `measured` counts:
    each measured count decides for itself and the counts down to the previous measured one."""
    chosen: list[int] = []
    low = 1
    for c in measured:
        if ratios.get(c, 0.0) >= MARGIN:
            chosen.extend(range(low, c + 1))
        low = c + 1
    return frozenset(chosen)


def measure() -> dict[int, dict[str, float]]:
    """Median seconds per call of cpu_serial ("serial") and of cpu_parallel with ("ilp") and
    without ("plain") its in-thread chunks, at each of MEASURED_CHANNELS (forward, T = 65536)."""
    # name: (parallel, in-thread chunks up to this many channels)
    ways = {"serial": (False, FIXED_ILP), "ilp": (True, max(MEASURED_CHANNELS)), "plain": (True, 0)}
    return _timed(_STEPS, MEASURED_CHANNELS, ways)


def measure_in_thread_chunks() -> dict[int, dict[str, float]]:
    """Median seconds per call of cpu_parallel with ("ilp") and without ("plain") its in-thread
    chunks at each of MEASURED_CHANNELS (forward, T = 65536), at the current thread count."""
    return _timed(_STEPS, MEASURED_CHANNELS, {"ilp": (True, max(MEASURED_CHANNELS)),
                                              "plain": (True, 0)})


def measure_longest(ilp: int) -> dict[int, dict[str, float]]:
    """Median seconds per call of cpu_serial ("serial") and cpu_parallel ("parallel", in-thread
    chunks up to `ilp` channels) at each of MEASURED_CHANNELS (forward, T = 262144)."""
    ways = {"serial": (False, FIXED_ILP), "parallel": (True, ilp)}
    return _timed(_LONGEST_STEPS, MEASURED_CHANNELS, ways)


def measure_short(ilp: int) -> dict[int, dict[str, float]]:
    """Median seconds per call of cpu_serial ("serial") and cpu_parallel ("parallel", in-thread
    chunks up to `ilp` channels) at each of SHORT_MEASURED_CHANNELS (forward, T = 4096)."""
    ways = {"serial": (False, FIXED_ILP), "parallel": (True, ilp)}
    return _timed(_SHORT_STEPS, SHORT_MEASURED_CHANNELS, ways)


def _timed(steps: int, channels: tuple[int, ...],
           ways: dict[str, tuple[bool, int]]) -> dict[int, dict[str, float]]:
    from . import cpu

    cpu.load()
    scan = torch.ops.plrnn.cpu_scan_out.default  # cpu.parallel would apply this very calibration
    g = torch.Generator().manual_seed(0)
    # One set of rounds over every channel count and way, rather than the rounds of one count
    # after the other: a slow spell of a shared VM, in which the second core was busy for a second
    # or so, made cpu_parallel 0.82-0.85x cpu_serial at every measured width in one measurement
    # of six, where the others gave 1.10-1.33 (Zen 4 VM, T = 65536, 2 threads); timed width after
    # width, a spell decides whole widths, and auto runs the slower kernel there for as long as
    # the record is kept. Into preallocated outputs, as the streaming schedules are timed: a fresh
    # 32 MiB output per call (262144 x 32 floats) is mapped anew and page-faulted, and two threads
    # faulting together took longer than one, so cpu_parallel measured 0.61x cpu_serial there,
    # and auto then ran cpu_serial where cpu_parallel was 1.7x faster without the faults and as
    # fast with them (benchmark, Zen 4 VM, 2 threads).
    calls = {}
    before = torch.ops.plrnn.cpu_ilp_channels(-1)
    try:
        with torch.no_grad():
            for c in channels:
                a = torch.sigmoid(torch.randn(steps, c, generator=g) + 2)
                x = torch.randn(steps, c, generator=g)
                out = torch.empty_like(x)
                for name, (parallel, ilp) in ways.items():
                    calls[(c, name)] = (
                        lambda ilp=ilp: torch.ops.plrnn.cpu_ilp_channels(ilp),
                        lambda a=a, x=x, out=out, parallel=parallel: scan(
                            a, x, None, False, parallel, out=out))
            times = _rounds(calls)
    finally:
        torch.ops.plrnn.cpu_ilp_channels(before)
    return {c: {name: times[(c, name)] for name in ways} for c in channels}
