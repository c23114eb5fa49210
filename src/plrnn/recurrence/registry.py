"""The backend registry: what exists, what is available on a device (and why not), and `auto`."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import calibration, cpu, cuda, reference, torch_scan
from . import triton as triton_backend
from .validation import type_name


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    # (decays, impulses, initial_state | None, reverse) -> h, on (T, C) contiguous buffers.
    run: Callable
    # Returns why the backend cannot run on `device`, or None if it can.
    unavailable: Callable[[torch.device], str | None]
    # How its compiled code was obtained ("prebuilt (avx2)", "built at first use (<dir>)"), or ""
    # for Python backends and kernels not loaded.
    origin: Callable[[], str] = lambda: ""
    # Takes contiguous (T, *) inputs as they are, (*) initial state, and returns h of that shape.
    any_shape: bool = False
    # Takes complex64 / complex128 inputs (gradients in torch's conjugate convention).
    complex: bool = False


class BackendStatus(NamedTuple):
    name: str
    available: bool
    reason: str
    origin: str = ""  # for compiled backends: "prebuilt (<level>)" or "built at first use (<dir>)"
    complex: bool = False  # takes complex64 / complex128 inputs


def _any_device(device: torch.device) -> str | None:
    return None


_CPU = torch.device("cpu")  # what CPU tensors report: comparing with it is cheaper than .type


def _cpu_kernels(device: torch.device) -> str | None:
    if device != _CPU and device.type != "cpu":
        return f"C++ CPU kernel; inputs are on {device}"
    return cpu.load()


REGISTRY: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(
            "reference",
            "serial Python loop, autograd through the loop (ground truth)",
            reference.serial,
            _any_device,
            complex=True,
        ),
        Backend(
            "torch",
            "parallel scan from plain torch ops (log2 T doubling passes)",
            torch_scan.torch_scan,
            _any_device,
            complex=True,
        ),
        Backend(
            "cpu_serial",
            "C++ loop over time, threads over channel blocks",
            cpu.serial,
            _cpu_kernels,
            cpu.origin,
            any_shape=True,
            complex=True,
        ),
        Backend(
            "cpu_parallel",
            "C++ Algorithm 1: time chunks across threads and in registers",
            cpu.parallel,
            _cpu_kernels,
            cpu.origin,
            any_shape=True,
            complex=True,
        ),
        Backend(
            "cuda_serial",
            "CUDA, the paper's serial baseline: one thread per channel loops over time (fp32)",
            cuda.serial,
            cuda.unavailable,
            cuda.origin,
        ),
        Backend(
            "cuda_paper",
            "CUDA, the paper's Algorithm 1 kernel as published: 3 launches, 30 blocks (fp32)",
            cuda.paper,
            cuda.unavailable,
            cuda.origin,
        ),
        Backend(
            "cuda_parallel",
            "CUDA, tuned single-pass Algorithm 1: tiles chained in one launch, fused backward",
            cuda.parallel,
            cuda.unavailable,
            cuda.origin,
            complex=True,
        ),
        Backend(
            "triton",
            "Triton kernel: tl.associative_scan over time tiles, Algorithm 1 for few channels",
            triton_backend.scan,
            triton_backend.unavailable,
        ),
    )
}


def backends(device: str | torch.device = "cpu") -> list[BackendStatus]:
    """Every backend, whether it runs on `device` here, why not if it does not, and for the
    compiled ones how their code was obtained (prebuilt at install, or built at first use)."""
    device = torch.device(device)
    out = []
    for b in REGISTRY.values():
        reason = b.unavailable(device)
        available = reason is None
        out.append(BackendStatus(b.name, available, reason or b.description,
                                 b.origin() if available else "", b.complex))
    return out


# `auto` on CPU: cpu_parallel only with more than one thread, up to 256 channels and from 1024
# steps, and there only where it measured faster on this CPU (calibration.py says why a fixed
# rule could not be right on both machines we measured).
PARALLEL_MIN_STEPS = calibration.MIN_STEPS
PARALLEL_CHANNELS = calibration.FIXED_RULE  # with PLRNN_AUTO_CALIBRATION=0


@torch._dynamo.assume_constant_result
def _threads() -> int:
    # A trace-time constant under torch.compile (a recompile follows set_num_threads anyway).
    return torch.get_num_threads()


# Sorted tuples, not the calibration's frozensets: dynamo cannot guard `channels in` a frozenset
# it took as a constant result (an internal error at every shape where auto asks). Sorted once
# per set: sorting 224 channel counts at every call cost 4.4 us.
@functools.lru_cache(maxsize=32)
def _sorted(channels: frozenset[int]) -> tuple[int, ...]:
    return tuple(sorted(channels))


@torch._dynamo.assume_constant_result
def _parallel_channels() -> tuple[int, ...]:
    # Measured (once per CPU and thread count) outside any trace.
    return _sorted(calibration.parallel_channels(_threads(), calibration.MIN_STEPS))


@torch._dynamo.assume_constant_result
def _longest_parallel_channels() -> tuple[int, ...]:
    return _sorted(calibration.parallel_channels(_threads(), calibration.LONGEST_MIN_STEPS))


@torch._dynamo.assume_constant_result
def _short_parallel_channels() -> tuple[int, ...]:
    return _sorted(calibration.parallel_channels(_threads(), calibration.SHORT_MIN_STEPS))


@torch._dynamo.assume_constant_result
def _stream_bytes() -> int:
    # The C++ kernels' own threshold (the last-level cache or one core's own, as measured here, or
    # PLRNN_STREAM_BYTES), once this thread count's measured settings are applied.
    cpu._tune_serial()
    return torch.ops.plrnn.cpu_stream_bytes()


_WIDEST_MEASURED = max(calibration.MEASURED_CHANNELS)


def _reads_cache_size(T: int, channels: int) -> bool:
    # Rows wider than the long regime measures, with inputs and output that fit in the
    # last-level cache, are the case the short regime measures (at T = 4096). There, on 2
    # threads of the Zen 4 VM, cpu_serial's channel split ran no faster than one thread and
    # cpu_parallel's time chunks 1.3-2.5x faster than it: (16384, 64) 202 -> 154 us,
    # (16384, 128) 1456 -> 573 us, (32768, 64) 992 -> 421 us through auto.
    return T >= PARALLEL_MIN_STEPS and channels > _WIDEST_MEASURED


def choice_is_fixed(backend: str, T: int, channels: int) -> bool:
    """Whether `backend` names the same CPU kernel for (T, channels) inputs at every call at this
    thread count: all but auto's choice for the wide rows that ask the kernels' cache size,
    which PLRNN_STREAM_BYTES changes between calls."""
    return backend != "auto" or not _reads_cache_size(T, channels)


def _cpu_kernel(T: int, channels: int, itemsize: int = 4) -> str:
    if T >= PARALLEL_MIN_STEPS:
        # (Inputs and output counted as cpu_kernels_impl.h's exceeds_cache counts them.)
        if _reads_cache_size(T, channels) and 3 * T * channels * itemsize <= _stream_bytes():
            parallel = _short_parallel_channels()
        elif T >= calibration.LONGEST_MIN_STEPS:
            parallel = _longest_parallel_channels()
        else:
            parallel = _parallel_channels()
    elif T >= calibration.SHORT_MIN_STEPS and T * channels >= calibration.MIN_WORK:
        parallel = _short_parallel_channels()
    else:
        return "cpu_serial"
    return "cpu_parallel" if channels in parallel else "cpu_serial"


_warned_fallback = False


def choose_auto(device: torch.device, T: int, channels: int, itemsize: int = 4) -> str:
    """The backend `auto` runs for (T, channels) inputs of `itemsize` bytes each on `device`."""
    global _warned_fallback
    if device == _CPU or device.type == "cpu":
        reason = cpu.load()
        if reason is None:
            return _cpu_kernel(T, channels, itemsize)
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn(
                f"plrnn: the C++ CPU kernels are unavailable ({reason}); backend='auto' falls "
                "back to the 'torch' backend, which is slower.",
                RuntimeWarning,
                stacklevel=3,
            )
    elif device.type == "cuda":
        # cuda_parallel reads and writes memory once at any shape and fills the GPU from the
        # SM count (few channels: time split across blocks; many: channels too).
        reason = cuda.load()
        if reason is None:
            return "cuda_parallel"
        if not _warned_fallback:
            _warned_fallback = True
            warnings.warn(
                f"plrnn: the CUDA kernels are unavailable ({reason}); backend='auto' falls "
                "back to the 'torch' backend, which is slower.",
                RuntimeWarning,
                stacklevel=3,
            )
    return "torch"


def resolve(name: str, device: torch.device, T: int, channels: int,
            is_complex: bool = False, itemsize: int = 4) -> Backend:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type_name(name)}")
    if name == "auto":
        # The complex CPU kernels are bound by scalar arithmetic, not memory: their time split
        # (which runs on one thread where the work is small) was as fast or faster than
        # cpu_serial at every measured shape on 2 threads, up to 3x at (16384, 64) where the
        # channel split ran slower than one thread (cpu_kernels_complex.cpp, docs/op.md). So
        # complex inputs on CPU take it without asking the calibration, which times real kernels.
        if is_complex and device.type == "cpu" and cpu.load() is None:
            return REGISTRY["cpu_parallel"]
        chosen = REGISTRY[choose_auto(device, T, channels, itemsize)]
        if not is_complex:
            return chosen
        return chosen if chosen.complex else REGISTRY["torch"]  # torch's scan: any device
    if name not in REGISTRY:
        known = ", ".join(repr(n) for n in ("auto", *REGISTRY))
        raise ValueError(f"unknown backend {name!r}; choose one of {known}")
    backend = REGISTRY[name]
    reason = backend.unavailable(device)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} is not available for inputs on {device}: {reason}")
    if is_complex and not backend.complex:
        takes = ", ".join(repr(b.name) for b in REGISTRY.values() if b.complex)
        raise TypeError(f"backend {name!r} takes real inputs only; for complex ones use 'auto' "
                        f"or one of {takes}")
    return backend
