"""The C++ backends `cpu_serial` and `cpu_parallel` (csrc/cpu_scan.cpp).

Built with torch.utils.cpp_extension at first use and cached (TORCH_EXTENSIONS_DIR, by default
~/.cache/torch_extensions), so `pip install` needs no compiler and no second torch. The build
targets this CPU (-march=native); the cache key includes the CPU's feature flags so a shared home
directory across different machines never loads a foreign binary.
"""

from __future__ import annotations

import hashlib
import logging
import platform
from pathlib import Path

import torch

from .autograd import refuse_double_backward
from .jit import build_extension, build_once, missing_toolchain

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).parent / "csrc" / "cpu_scan.cpp"
_FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"]


def _cpu_fingerprint() -> str:
    try:
        flags = next(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        flags = platform.processor() or platform.machine()
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def _build_and_register() -> str | None:
    """Builds (once) and loads the kernels; returns why they are unavailable, or None."""
    reason = missing_toolchain()
    if reason:
        return reason
    log.info("plrnn: building the C++ kernels (first use only; cached afterwards)")
    reason = build_extension(
        "C++ kernels",
        name=f"plrnn_cpu_{_cpu_fingerprint()}",
        sources=[str(_SOURCE)],
        extra_cflags=_FLAGS,
        extra_ldflags=["-fopenmp"],
    )
    if reason is None:
        _register_python_side()
    return reason


load = build_once(_build_and_register)


def _register_python_side() -> None:
    ops = torch.ops.plrnn

    @torch.library.register_fake("plrnn::cpu_scan")
    def _(decays, impulses, initial_state, reverse, parallel):
        return torch.empty_like(impulses)

    @torch.library.register_fake("plrnn::cpu_scan_backward")
    def _(decays, h, grad_h, initial_state, reverse, parallel):
        return (
            torch.empty_like(grad_h),
            torch.empty_like(grad_h),
            grad_h.new_empty(grad_h.shape[1:]),
        )

    refuse_double_backward(ops.cpu_scan_backward.default)  # the forward's rule is in C++
    global _scan
    _scan = ops.cpu_scan.default


_scan = None  # torch.ops.plrnn.cpu_scan.default once loaded (attribute lookups cost microseconds)


def serial(decays, impulses, initial_state, reverse):
    return _scan(decays, impulses, initial_state, reverse, False)


def parallel(decays, impulses, initial_state, reverse):
    return _scan(decays, impulses, initial_state, reverse, True)
