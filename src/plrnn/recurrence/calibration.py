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
least 5% faster. About 0.2 s once; cached in PLRNN_CACHE_DIR (default ~/.cache/plrnn) under the
CPU's model and feature flags, the thread count and the kernels' source digest.
PLRNN_AUTO_CALIBRATION=0 uses the fixed rule below instead (the tests do, to be deterministic).
"""

from __future__ import annotations

import hashlib
import json
import logging
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
_STEPS, _ROUNDS, _CALLS = 65536, 5, 3

_cache: dict[int, tuple[int, ...]] = {}


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
    if threads not in _cache:
        _cache[threads] = _load_or_measure(threads)
    return _cache[threads]


def _load_or_measure(threads: int) -> tuple[int, ...]:
    path = cache_file(threads)
    try:
        return tuple(json.loads(path.read_text())["parallel_channels"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    ratios = measure()
    chosen = channels_from(ratios)
    record = {
        "cpu": _cpu_model().partition(":")[2].strip(),
        "threads": threads,
        "torch": torch.__version__,
        "serial_over_parallel": {str(c): round(r, 3) for c, r in ratios.items()},
        "parallel_channels": list(chosen),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
            json.dump(record, tmp, indent=1)
        os.replace(tmp.name, path)  # atomic: a concurrent process reads one whole record
    except OSError as err:
        log.info("plrnn: could not cache the auto calibration in %s: %s", path, err)
    log.info("plrnn: auto calibrated for this CPU (%s): %s", path, record["serial_over_parallel"])
    return chosen


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


def measure() -> dict[int, float]:
    """cpu_serial time / cpu_parallel time at each of MEASURED_CHANNELS (forward, T = 65536)."""
    from . import cpu

    g = torch.Generator().manual_seed(0)
    ratios = {}
    with torch.no_grad():
        for c in MEASURED_CHANNELS:
            a = torch.sigmoid(torch.randn(_STEPS, c, generator=g) + 2)
            x = torch.randn(_STEPS, c, generator=g)
            times: dict[str, list[float]] = {"serial": [], "parallel": []}
            runs = {"serial": cpu.serial, "parallel": cpu.parallel}
            for run in runs.values():
                run(a, x, None, False)  # warm-up
            for _ in range(_ROUNDS):
                for name, run in runs.items():
                    start = time.perf_counter()
                    for _ in range(_CALLS):
                        run(a, x, None, False)
                    times[name].append(time.perf_counter() - start)
            ratios[c] = statistics.median(times["serial"]) / statistics.median(times["parallel"])
    return ratios
