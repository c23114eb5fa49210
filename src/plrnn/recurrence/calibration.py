"""`auto` on CPU: which of cpu_serial and cpu_parallel is faster is measured once per CPU and
thread count, and cached on disk (as Triton caches its autotuning).

Why not a fixed rule: the two kernels differ most with few channels and long sequences, and
there the machines we measured disagree (`--sweep-auto`, results/<machine>/auto_sweep.md, T >=
16384, 2 threads): on an AMD EPYC VM cpu_parallel won at 32 channels (1.25x) and lost at 16
(0.8x); on an Intel Xeon (Skylake-SP) VM it won at 16 channels (1.1-1.3x) and tied or lost at 32
(0.9-1.0x). No rule was within 10% of the best on both. Elsewhere (more than 32 channels, short
sequences, one thread) cpu_serial is chosen without measuring: it moves the least memory, and
where cpu_parallel won there it was by page-fault luck of the allocator rather than by the
kernel.

The measurement: forward at T = 65536 for 2, 4, 8, 16 and 32 channels, inputs as real forget
gates (sigmoid(N(2, 1))), a fresh output per call as users call it, medians of interleaved
rounds; cpu_parallel is chosen for the channel counts up to a measured size where it was at
least 5% faster. About 2 s once; cached in PLRNN_CACHE_DIR (default ~/.cache/plrnn) under the
CPU's model and feature flags, the thread count and the kernels' source digest.
PLRNN_AUTO_CALIBRATION=0 uses the fixed rule below instead (the tests do, to be deterministic).

The same measurement decides how cpu_parallel works inside each thread: with few channels it can
also cut each thread's share of time into chunks run side by side in registers (Algorithm 1
again, reading each cache-sized block twice), which paid up to 32 channels on the AMD EPYC VM and
lost at every width on the Intel Skylake-SP VM (0.5-0.9x the plain loop, 1 and 2 threads, 1 to 32
channels). cpu_parallel is timed both ways; the in-thread chunks are kept up to the widest
measured width where they were at least 5% faster (`ilp_channels`), and the choice above uses
the faster way. The first cpu_parallel call in a process applies it (cpu.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from . import sources

log = logging.getLogger(__name__)

MIN_STEPS = 16384  # shorter sequences: cpu_serial (the threads' second pass does not pay)
MEASURED_CHANNELS = (2, 4, 8, 16, 32)  # each stands for the channel counts above the previous
MARGIN = 1.05  # cpu_parallel must be this much faster to be chosen
FIXED_RULE = tuple(range(17, 33))  # without calibration: the AMD EPYC measurement
FIXED_ILP = 32  # without calibration: in-thread chunks up to 32 channels (AMD EPYC)
_STEPS, _ROUNDS = 65536, 5
_ROUND_S = 0.02  # calls per round fill this long (3 calls of 0.3 ms each misjudged 4 channels)

_cache: dict[int, tuple[tuple[int, ...], int]] = {}


def enabled() -> bool:
    return os.environ.get("PLRNN_AUTO_CALIBRATION", "1") != "0"


def cache_file(threads: int) -> Path:
    root = Path(os.environ.get("PLRNN_CACHE_DIR") or Path.home() / ".cache" / "plrnn")
    cpu = hashlib.sha1((_cpu_model() + _cpu_flags()).encode()).hexdigest()[:10]
    kernels = sources.digest(sources.CPU_ALL)[:10]
    return root / f"auto-cpu-{cpu}-{kernels}-t{threads}.json"


def _cpuinfo_field(prefix: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(prefix)), "")
    except OSError:
        return ""


def _cpu_model() -> str:
    import platform

    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> str:
    return _cpuinfo_field("flags")


def parallel_channels(threads: int) -> tuple[int, ...]:
    """The channel counts (at T >= MIN_STEPS) for which cpu_parallel is the faster kernel here."""
    if threads < 2:
        return ()
    if not enabled():
        return FIXED_RULE
    return _choice(threads)[0]


def ilp_channels(threads: int) -> int:
    """The widest rows (channels) for which cpu_parallel chunks time inside each thread here."""
    if threads < 2 or not enabled():
        return FIXED_ILP
    return _choice(threads)[1]


def _choice(threads: int) -> tuple[tuple[int, ...], int]:
    if threads not in _cache:
        _cache[threads] = _load_or_measure(threads)
    return _cache[threads]


def _load_or_measure(threads: int) -> tuple[tuple[int, ...], int]:
    path = cache_file(threads)
    try:
        record = json.loads(path.read_text())
        return tuple(record["parallel_channels"]), int(record["ilp_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    times = measure()
    ilp = ilp_from(times)
    ratios = {c: t["serial"] / t["ilp" if c <= ilp else "plain"] for c, t in times.items()}
    chosen = channels_from(ratios)
    record = {
        "cpu": _cpu_model().partition(":")[2].strip(),
        "threads": threads,
        "torch": torch.__version__,
        "serial_over_parallel": {str(c): round(r, 3) for c, r in ratios.items()},
        "parallel_channels": list(chosen),
        "plain_over_chunked": {str(c): round(t["plain"] / t["ilp"], 3) for c, t in times.items()},
        "ilp_channels": ilp,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
            json.dump(record, tmp, indent=1)
        os.replace(tmp.name, path)  # atomic: a concurrent process reads one whole record
    except OSError as err:
        log.info("plrnn: could not cache the auto calibration in %s: %s", path, err)
    log.info("plrnn: auto calibrated for this CPU (%s): %s, in-thread chunks up to %d channels",
             path, record["serial_over_parallel"], ilp)
    return chosen, ilp


def ilp_from(times: dict[int, dict[str, float]]) -> int:
    """The widest of MEASURED_CHANNELS up to which cpu_parallel's in-thread chunks ("ilp") were
    at least MARGIN faster than its plain loop at every measured width; 0 where they never were."""
    widest = 0
    for c in MEASURED_CHANNELS:
        if times[c]["plain"] < MARGIN * times[c]["ilp"]:
            break
        widest = c
    return widest


def channels_from(ratios: dict[int, float]) -> tuple[int, ...]:
    """Channel counts for cpu_parallel from serial/parallel time ratios at MEASURED_CHANNELS:
    each measured count decides for itself and the counts down to the previous measured one."""
    chosen: list[int] = []
    low = 1
    for c in MEASURED_CHANNELS:
        if ratios.get(c, 0.0) >= MARGIN:
            chosen.extend(range(low, c + 1))
        low = c + 1
    return tuple(chosen)


def measure() -> dict[int, dict[str, float]]:
    """Median seconds per call of cpu_serial ("serial") and of cpu_parallel with ("ilp") and
    without ("plain") its in-thread chunks, at each of MEASURED_CHANNELS (forward, T = 65536)."""
    from . import cpu

    cpu.load()
    scan = torch.ops.plrnn.cpu_scan.default  # cpu.parallel would apply this very calibration
    # name: (parallel, in-thread chunks up to this many channels)
    ways = {"serial": (False, FIXED_ILP), "ilp": (True, max(MEASURED_CHANNELS)), "plain": (True, 0)}
    g = torch.Generator().manual_seed(0)
    result = {}
    before = torch.ops.plrnn.cpu_ilp_channels(-1)
    try:
        with torch.no_grad():
            for c in MEASURED_CHANNELS:
                a = torch.sigmoid(torch.randn(_STEPS, c, generator=g) + 2)
                x = torch.randn(_STEPS, c, generator=g)
                times: dict[str, list[float]] = {name: [] for name in ways}
                calls = dict.fromkeys(ways, 1)  # the warm-up round times one call of each
                for _ in range(1 + _ROUNDS):
                    for name, (parallel, ilp) in ways.items():
                        torch.ops.plrnn.cpu_ilp_channels(ilp)
                        start = time.perf_counter()
                        for _ in range(calls[name]):
                            scan(a, x, None, False, parallel)
                        times[name].append((time.perf_counter() - start) / calls[name])
                    calls = {name: max(3, math.ceil(_ROUND_S / min(t))) for name, t in times.items()}
                result[c] = {name: statistics.median(t[1:]) for name, t in times.items()}
    finally:
        torch.ops.plrnn.cpu_ilp_channels(before)
    return result
