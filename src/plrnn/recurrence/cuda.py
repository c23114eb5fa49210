"""The CUDA backends `cuda_serial`, `cuda_paper` and `cuda_parallel` (csrc/scan_*.cu).

The kernels are plain CUDA (no torch headers) behind a thin torch binding (csrc/cuda_binding.cpp).
With a CUDA torch and nvcc at install time, setup.py compiles them (TORCH_CUDA_ARCH_LIST, by
default sm_80 and sm_90 plus PTX); otherwise, or for a GPU those architectures do not cover, they
are built at first use for the GPUs of this machine and cached (TORCH_EXTENSIONS_DIR, by default
~/.cache/torch_extensions) under the build lock of jit.py. `load()` says why they are unavailable
(no CUDA device, no nvcc, ...) without building anything it cannot use; `origin()` says how they
were obtained.

    cuda_serial    the paper's serial baseline: one thread per channel loops over time (fp32)
    cuda_paper     the authors' Algorithm 1 kernel as described: three launches, 30 blocks of
                   1024 threads, scratch cudaMalloc'd per call (fp32); for Table 1 as published
    cuda_parallel  the tuned single-pass kernel: fp16/bf16/fp32/fp64 and complex64/complex128
                   storage, fp32 (fp64 for fp64, complex in its own precision) accumulation,
                   tiles sized from the SM count, a fused backward pass; and for packed batches
                   of short sequences a kernel with one thread per sequence and column

cuda_serial and cuda_paper take float32 only, like the paper's kernels; other dtypes raise a
TypeError that names cuda_parallel. Their backward pass runs their own forward kernel in the
other direction plus one elementwise product, as the paper describes; cuda_parallel's backward
writes dL/dimpulses and dL/ddecays in one pass from the saved h.
"""

from __future__ import annotations

import os
import shutil

import torch

from . import prebuilt, sources
from .autograd import refuse_double_backward
from .jit import build_at_first_use, build_once, missing_toolchain

SOURCES = [sources.CSRC / name for name in sources.CUDA_COMPILED]
HEADERS = [sources.CSRC / name for name in sources.CUDA_ALL if name not in sources.CUDA_COMPILED]

SERIAL, PAPER, PARALLEL = 0, 1, 2  # the binding's `kernel` argument


_origin = ""


def origin() -> str:
    """How this process got the kernels: "prebuilt (<archs>)", "built at first use (<dir>)",
    or "" if they are not loaded (yet)."""
    return _origin


def missing_device() -> str | None:
    if getattr(torch.version, "hip", None):
        return "this is a ROCm build of torch; the plrnn CUDA kernels are CUDA-only"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def missing_prerequisite() -> str | None:
    """Why the CUDA kernels cannot be built or run here, or None. Builds nothing."""
    reason = missing_device()
    if reason:
        return reason
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    if not nvcc or not os.path.isfile(nvcc):
        return "nvcc not found (install the CUDA toolkit, or set CUDA_HOME to it)"
    return missing_toolchain()


def covers(arch_list: str, major: int, minor: int) -> bool:
    """Whether code built for TORCH_CUDA_ARCH_LIST `arch_list` runs on sm_<major><minor>: SASS of
    the same major version and a minor version no newer, or PTX of an older architecture."""
    for entry in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        if not entry:
            continue
        ptx = entry.endswith("+PTX")
        a_major, _, a_minor = entry.removesuffix("+PTX").partition(".")
        try:
            built = (int(a_major), int(a_minor or 0))
        except ValueError:
            continue
        if (built[0] == major and built[1] <= minor) or (ptx and built <= (major, minor)):
            return True
    return False


def _load_prebuilt(major: int, minor: int) -> str | None:
    global _origin
    reason = prebuilt.unusable("cuda")
    if reason:
        return reason
    archs = (prebuilt.build_info() or {}).get("cuda_archs")
    path = prebuilt.library("_cuda")
    if not archs or path is None:
        return "this installation has no prebuilt CUDA kernels"
    if not covers(archs, major, minor):
        return f"the prebuilt CUDA kernels ({archs}) do not cover this GPU (sm_{major}{minor})"
    try:
        torch.ops.load_library(str(path))
    except OSError as err:
        return f"the prebuilt CUDA kernels do not load: {err}"
    _origin = f"prebuilt ({archs})"
    return None


def _build_and_register() -> str | None:
    """Loads the CUDA kernels (prebuilt, else built once); returns why they are unavailable, or
    None."""
    global _origin
    reason = missing_device()
    if reason:
        return reason
    major, minor = torch.cuda.get_device_capability()
    reason = _load_prebuilt(major, minor)
    if reason is not None:
        reason, _origin = build_at_first_use(
            "CUDA kernels",
            f"plrnn_cuda_sm{major}{minor}",
            reason,
            missing_prerequisite(),
            "a few minutes",
            sources=[str(s) for s in SOURCES],
            headers=[str(h) for h in HEADERS],
            extra_cflags=["-O3"],
            extra_cuda_cflags=sources.CUDA_FLAGS,
            extra_ldflags=sources.LINK_FLAGS,
        )
        if reason is not None:
            return reason
    _register_python_side()
    return None


load = build_once(_build_and_register)


def _register_python_side() -> None:
    global _scan, _scan_packed
    _scan = register_ops("plrnn")
    _scan_packed = torch.ops.plrnn.cuda_scan_packed.default


def register_ops(namespace: str):
    """Fake kernels and the double backward's refusal for `namespace`::cuda_scan{,_backward} and
    cuda_scan_packed{,_backward} (the binding defines the ops; the tests also load an emulated
    build under another namespace). Returns the forward of cuda_scan."""
    ops = getattr(torch.ops, namespace)

    @torch.library.register_fake(f"{namespace}::cuda_scan_packed")
    def _(decays, impulses, initial_state, reverse, cu_seqlens):
        return torch.empty_like(impulses)

    @torch.library.register_fake(f"{namespace}::cuda_scan_packed_backward")
    def _(decays, h, grad_h, initial_state, reverse, cu_seqlens):
        states = grad_h.new_empty(cu_seqlens.shape[0] - 1, grad_h.shape[1])
        return torch.empty_like(grad_h), torch.empty_like(decays), states

    @torch.library.register_fake(f"{namespace}::cuda_scan")
    def _(decays, impulses, initial_state, reverse, kernel):
        return torch.empty_like(impulses)

    @torch.library.register_fake(f"{namespace}::cuda_scan_backward")
    def _(decays, h, grad_h, initial_state, reverse, kernel):
        return (
            torch.empty_like(grad_h),
            torch.empty_like(decays),  # time-invariant (1, C) decays get their own shape back
            grad_h.new_empty(grad_h.shape[1:]),
        )

    # The forwards' rule is in C++ (csrc/scan_autograd.h).
    refuse_double_backward(ops.cuda_scan_backward.default)
    refuse_double_backward(ops.cuda_scan_packed_backward.default)
    return ops.cuda_scan.default


_scan = None  # torch.ops.plrnn.cuda_scan.default once loaded
_scan_packed = None  # torch.ops.plrnn.cuda_scan_packed.default once loaded


def _fp32_only(name: str, impulses: torch.Tensor) -> None:
    if impulses.dtype != torch.float32:
        raise TypeError(
            f"backend {name!r} is the paper's float32-only kernel; got {impulses.dtype} "
            "(backend='cuda_parallel' takes float16, bfloat16, float32, float64, complex64 and "
            "complex128)"
        )


def serial(decays, impulses, initial_state, reverse):
    _fp32_only("cuda_serial", impulses)
    return _scan(decays, impulses, initial_state, reverse, SERIAL)


def paper(decays, impulses, initial_state, reverse):
    _fp32_only("cuda_paper", impulses)
    return _scan(decays, impulses, initial_state, reverse, PAPER)


def parallel(decays, impulses, initial_state, reverse):
    return _scan(decays, impulses, initial_state, reverse, PARALLEL)


def parallel_packed(decays, impulses, initial_states, reverse, offsets):
    """cuda_parallel's one launch for a packed batch: (T, C) buffers (decays (T or 1, P)),
    initial_states (N, C) or None, offsets a CPU int64 tensor of N + 1 offsets."""
    return _scan_packed(decays, impulses, initial_states, reverse, offsets)


# A first guess, not measured on a GPU: a launch from Python costs about as much as this many
# serial steps of one thread (~10 us against ~50 ns a step).
_LAUNCH_IN_STEPS = 200


def one_launch_for(bounds: list[int]) -> bool:
    """Whether cuda_parallel runs a packed batch as one launch of its packed kernel, where one
    thread walks each sequence's steps, rather than one Algorithm 1 call per sequence: while the
    longest sequence's serial walk costs less than the launches it saves."""
    longest = max(hi - lo for lo, hi in zip(bounds[:-1], bounds[1:]))
    return longest < _LAUNCH_IN_STEPS * (len(bounds) - 2)


def unavailable(device: torch.device) -> str | None:
    """The registry's availability check for the CUDA backends."""
    if device.type != "cuda":
        return f"CUDA kernel; inputs are on {device}"
    return load()
