"""The C++ backends `cpu_serial` and `cpu_parallel` (csrc/cpu_scan.cpp, csrc/cpu_kernels_*.cpp).

Normally compiled at install time (setup.py) for several x86 ISA levels; the best level this CPU
runs is loaded. Without usable prebuilt kernels (a checkout that was never built, another torch,
PLRNN_PREBUILT=0) they are compiled at first use for this CPU (-march=native) and cached
(TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions) under a lock that cannot outlive
its holder (jit.py). The cache key includes the CPU's feature flags, so a home directory shared
by different machines never loads a foreign binary. `origin()` says which of the two happened.
"""

from __future__ import annotations

import hashlib
import math
import platform
from pathlib import Path

import torch
from torch.autograd import forward_ad

from . import calibration, jit, prebuilt, sources
from .autograd import refuse_double_backward
from .jit import build_at_first_use, build_once, missing_toolchain
from .transforms import batch_as_channels

SOURCES = [sources.CSRC / name for name in sources.CPU_COMPILED]
HEADERS = [sources.CSRC / name for name in sources.CPU_ALL if name not in sources.CPU_COMPILED]
_FLAGS = sources.CPU_FLAGS + ["-march=native"]  # built on the machine that runs it
_origin = ""


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


def origin() -> str:
    """How this process got the kernels: "prebuilt (<ISA level>)", "built at first use (<dir>)",
    or "" if they are not loaded (yet)."""
    return _origin


def _load_prebuilt() -> str | None:
    """Loads the best prebuilt library this CPU runs; returns why none was loaded, or None."""
    global _origin
    reason = prebuilt.unusable("cpu")
    if reason:
        return reason
    why = []
    built = prebuilt.build_info().get("cpu_isas", [])
    for level in prebuilt.cpu_levels():
        path = prebuilt.library(f"_cpu_{level}")
        if level not in built or path is None:  # a library left from an earlier build is not ours
            why.append(f"{level}: not built")
            continue
        try:
            torch.ops.load_library(str(path))
        except OSError as err:  # dlopen refused it; no static initialiser ran
            why.append(f"{level}: {err}")
            continue
        _origin = f"prebuilt ({level})"
        return None
    return "no prebuilt CPU library loads here (" + "; ".join(why) + ")"


_FIRST_USE_BUILD = dict(
    sources=[str(s) for s in SOURCES],
    headers=[str(h) for h in HEADERS],
    extra_cflags=_FLAGS,
    extra_ldflags=["-fopenmp", *sources.LINK_FLAGS],
)


def _first_use_base() -> str:
    return f"plrnn_cpu_{_cpu_fingerprint()}"


def first_use_name() -> str:
    """The first-use build's name, and its folder's under TORCH_EXTENSIONS_DIR."""
    return jit.first_use_name(_first_use_base(), **_FIRST_USE_BUILD)


def _build_and_register() -> str | None:
    """Loads the kernels (prebuilt, else built once); returns why they are unavailable, or None."""
    global _origin
    reason = _load_prebuilt()
    if reason is not None:
        reason, _origin = build_at_first_use(
            "C++ kernels", _first_use_base(), reason, missing_toolchain(), "about a minute",
            **_FIRST_USE_BUILD,
        )
        if reason is not None:
            return reason
    _register_python_side()
    return None


load = build_once(_build_and_register)


def _register_python_side() -> None:
    ops = torch.ops.plrnn

    @torch.library.register_fake("plrnn::cpu_scan")
    def _(decays, impulses, initial_state, reverse, parallel):
        return torch.empty_like(impulses)

    @torch.library.register_fake("plrnn::cpu_scan_out")
    def _(decays, impulses, initial_state, reverse, parallel, *, out):
        return None

    @torch.library.register_fake("plrnn::cpu_scan_backward")
    def _(decays, h, grad_h, initial_state, reverse, parallel):
        return (
            torch.empty_like(grad_h),
            torch.empty_like(decays),  # time-invariant decays get their own shape back
            grad_h.new_empty(grad_h.shape[1:]),
        )

    @torch.library.register_fake("plrnn::cpu_scan_varlen")
    def _(decays, impulses, initial_state, reverse, cu_seqlens, parallel):
        return torch.empty_like(impulses)

    @torch.library.register_fake("plrnn::cpu_scan_varlen_backward")
    def _(decays, h, grad_h, initial_state, reverse, cu_seqlens, parallel):
        states = (cu_seqlens.shape[0] - 1, *grad_h.shape[1:])
        return torch.empty_like(grad_h), torch.empty_like(decays), grad_h.new_empty(states)

    @torch.library.register_vmap("plrnn::cpu_scan")
    def _(info, in_dims, decays, impulses, initial_state, reverse, parallel):
        # Reached from the shortcut only: the full path runs vmap through transforms._Scan.
        a, x, h0 = batch_as_channels(info.batch_size, in_dims, decays, impulses, initial_state)
        h0 = None if h0 is None else h0.contiguous()
        return _scan(a.contiguous(), x.contiguous(), h0, reverse, parallel), 1

    # The forwards' rule is in C++ (csrc/scan_autograd.h).
    refuse_double_backward(ops.cpu_scan_backward.default)
    refuse_double_backward(ops.cpu_scan_varlen_backward.default)

    @torch.library.register_fake("plrnn::cpu_contiguous")
    def _(t):
        return torch.empty(t.shape, dtype=t.dtype)

    torch.library.register_autograd("plrnn::cpu_contiguous", lambda ctx, grad: grad)

    global _scan, _scan_out, _scan_varlen, _copy
    _scan = ops.cpu_scan.default
    _copy = ops.cpu_contiguous.default
    _scan_out = ops.cpu_scan_out.default
    _scan_varlen = ops.cpu_scan_varlen.default


_scan = None  # torch.ops.plrnn.cpu_scan.default once loaded (attribute lookups cost microseconds)
_scan_out = None  # torch.ops.plrnn.cpu_scan_out.default once loaded
_scan_varlen = None  # torch.ops.plrnn.cpu_scan_varlen.default once loaded
_copy = None  # torch.ops.plrnn.cpu_contiguous.default once loaded


# Below this size glibc serves buffers from its heap's recycled pages (the output cache's own
# threshold, csrc/cpu_output_cache.cpp): smaller strided inputs are copied as torch copies them.
_RECYCLED_BYTES = 1 << 20

_tuned_threads = 0  # the thread count cpu_parallel's in-thread chunking was last set for

# linear_recurrence's shortcut for the common call: the kernels that plain arguments (below) of
# each backend name, shape, dtype and thread count went to through the full path, as the op's
# `parallel` flag. Cleared whenever the kernels are tuned for another thread count, so that a
# hit never skips a tuning the full path would apply.
_shortcuts: dict[tuple, bool] = {}
_SHORTCUTS_MAX = 1024  # sequences of many lengths start it again rather than grow it


def _plain_key(backend, decays, impulses, initial_state, reverse) -> tuple | None:
    """The shortcut's key for CPU tensors of one dtype and shape (the initial state, if any,
    of a row's shape) with a backend named by a string and a bool `reverse`: arguments that
    the full path's checks pass and whose backend depends on nothing else. None otherwise."""
    if (backend.__class__ is str and (reverse is False or reverse is True)
            and isinstance(impulses, torch.Tensor) and isinstance(decays, torch.Tensor)
            and impulses.is_cpu and decays.is_cpu and decays.dtype is impulses.dtype
            and decays.shape == impulses.shape
            # large strided inputs take the full path (recycled copies, batch-first layouts in
            # place); small ones are copied here, as that path would
            and ((impulses.is_contiguous() and decays.is_contiguous())
                 or impulses.numel() * impulses.element_size() < _RECYCLED_BYTES)
            and (initial_state is None
                 or (isinstance(initial_state, torch.Tensor) and initial_state.is_cpu
                     and initial_state.dtype is impulses.dtype
                     and initial_state.shape == impulses.shape[1:]))):
        return backend, impulses.shape, impulses.dtype, torch.get_num_threads()
    return None


def shortcut(backend, decays, impulses, initial_state, reverse, out):
    """h from the kernel an earlier call with the same key went to, or None (take the full
    path). It skips the checks and the choice, a dozen Python calls: 0.79x the time of
    `linear_recurrence(a, x)` at (16, 4) fp32 on 2 threads, 0.90x at (65536, 4) (Emerald Rapids
    VM). With out=, the op's own test for shared memory stands in for check_out's: 0.74x the
    time of the shortcut running check_out, at (16, 4) and (256, 16) (Zen 4 VM;
    docs/benchmarks.md, "Python between kernel calls")."""
    if forward_ad._current_level >= 0:
        # The C++ op has no forward-mode rule, and torch drops tangents through it silently;
        # the full path takes them (transforms.py). 12 ns; torch.func's other transforms need no
        # test: grad fails in the op (below) and vmap has the op's rule (_register_python_side).
        return None
    try:
        key = _plain_key(backend, decays, impulses, initial_state, reverse)
    # A nested tensor of layout torch.strided has no shape, and a jagged one that a torch.func
    # transform wraps no contiguity: the checks say so.
    except (RuntimeError, AttributeError):
        return None
    parallel = None if key is None else _shortcuts.get(key)
    if parallel is None:
        return None
    # A tensor of another layout (sparse, mkldnn) fails here, in contiguous() or is_contiguous()
    # or as an op without a kernel for it, and takes the full path, whose checks name it. Only
    # such calls pay for that; checking the layouts of every call cost 0.15 us, 4% of a (16, 4)
    # fp32 call (Zen 4 VM, 2 threads).
    if out is None:
        try:
            h0 = None if initial_state is None else initial_state.contiguous()
            return _scan(decays.contiguous(), impulses.contiguous(), h0, reverse, parallel)
        except RuntimeError:
            return None
    # Only what the op takes as it is: it refuses memory shared with its inputs itself, and
    # anything else check_out might refuse takes the full path, whose error says what is wrong.
    try:
        if not (isinstance(out, torch.Tensor) and out.dtype is impulses.dtype
                and out.shape == impulses.shape and out.is_cpu and out.is_contiguous()
                and decays.is_contiguous() and impulses.is_contiguous()
                and (initial_state is None or initial_state.is_contiguous())
                and not (out.is_conj() or out.is_neg())):  # check_out says why
            return None
    except RuntimeError:
        return None
    if torch.is_grad_enabled() and (
        out.requires_grad or decays.requires_grad or impulses.requires_grad
        or (initial_state is not None and initial_state.requires_grad)
    ):
        return None
    try:
        _write_into(decays, impulses, initial_state, reverse, parallel, out)
    except NotImplementedError:  # no kernel for this layout; the op's own refusals still raise
        return None
    return out


def remember(backend, decays, impulses, initial_state, reverse, parallel: bool) -> None:
    """Records that these arguments went to the kernel `parallel` names (the full path has
    checked them and tuned the kernels for this thread count)."""
    key = _plain_key(backend, decays, impulses, initial_state, reverse)
    if key is not None:
        if len(_shortcuts) >= _SHORTCUTS_MAX:
            _shortcuts.clear()
        _shortcuts[key] = parallel


@torch._dynamo.assume_constant_result
def _tune_parallel() -> int:
    """Applies this CPU's measured in-thread chunking (calibration.ilp_channels) before the first
    cpu_parallel call at each thread count; under torch.compile once, at trace time."""
    global _tuned_threads
    threads = torch.get_num_threads()
    if threads != _tuned_threads:
        _tuned_threads = threads  # first: the calibration runs the kernels itself
        _shortcuts.clear()
        try:
            torch.ops.plrnn.cpu_ilp_channels(calibration.ilp_channels(threads))
        except BaseException:  # Ctrl-C in the measurement: the next call measures and applies
            _tuned_threads = 0
            raise
    return threads


_serial_tuned = 0  # the thread count cpu_serial's measured settings were last applied for


@torch._dynamo.assume_constant_result
def _tune_serial() -> int:
    """Applies this CPU's measured layout of wide rows (calibration.wide_rows, any kernel),
    cpu_serial's schedule for scans streamed from memory (calibration.streaming_schedule) and where
    scans count as streamed (calibration.streamed_beyond) before the first call of a CPU kernel
    at each thread count; under torch.compile once, at trace time."""
    global _serial_tuned
    threads = torch.get_num_threads()
    if threads != _serial_tuned:
        _serial_tuned = threads  # first: the calibration runs the kernels itself
        _shortcuts.clear()
        try:
            torch.ops.plrnn.cpu_wide_rows(calibration.wide_rows())
            torch.ops.plrnn.cpu_streaming_schedule(calibration.streaming_schedule(threads))
            torch.ops.plrnn.cpu_streamed_beyond(calibration.streamed_beyond(threads))
        except BaseException:  # Ctrl-C in the measurement: the next call measures and applies
            _serial_tuned = 0
            raise
    return threads


def contiguous(t):
    """t, or a contiguous copy of it for the kernels. Large copies go into a buffer recycled from
    freed outputs: a fresh buffer's pages fault in at the first write, as every .contiguous() of
    a large tensor pays. (T, 1, 32, 1) decays (one per head, as Mamba-2's) expanded for
    (T, 1, 32, 64) impulses, T = 16384, fp32, 2 threads, Zen 4 VM: 55 ms into a fresh buffer,
    6 ms into a recycled one, beside the 15 ms scan. Autograd takes the gradient back through
    the copy (summed to the decays' shape through the expand)."""
    if t.is_contiguous():
        return t
    if t.element_size() * t.numel() < _RECYCLED_BYTES:
        return t.contiguous()
    return _copy(t)


def _tune(impulses, parallel: bool) -> None:
    """Applies the measured settings the kernel about to run reads (measuring them at the first
    call of each thread count). The complex kernels read none of them (cpu_kernels_complex.cpp),
    so a complex call measures nothing."""
    if not impulses.is_complex():
        _tune_serial()
        if parallel:
            _tune_parallel()


def scan_packed(decays, impulses, initial_states, reverse, cu_seqlens, parallel):
    """A packed batch in one call: contiguous (T, *) inputs, (N, *) states, int64 CPU offsets."""
    _tune(impulses, parallel)
    return _scan_varlen(decays, impulses, initial_states, reverse, cu_seqlens, parallel)


class _BatchFirstScan(torch.autograd.Function):
    """The scan of B sequences lying batch-first, as the (B * T, *) rows of one packed batch,
    returning h as a (T, B, *) tensor of its own in that layout. A view of the packed output
    would be an autograd view, on which h.detach_() and in-place ops after no_grad raise, where
    any op's output takes them."""

    @staticmethod
    def forward(ctx, decays, impulses, initial_states, reverse, parallel, T):
        B = impulses.shape[0] // T
        offsets = torch.arange(0, B * T + 1, T, dtype=torch.int64)
        h = scan_packed(decays, impulses, initial_states, reverse, offsets, parallel)
        h = h.view(B, T, *h.shape[1:]).transpose(0, 1).detach()  # detached: not a view
        ctx.save_for_backward(decays, h, initial_states)
        ctx.reverse, ctx.parallel, ctx.offsets = reverse, parallel, offsets
        return h

    @staticmethod
    def backward(ctx, grad_h):
        decays, h, initial_states = ctx.saved_tensors
        T, B = h.shape[:2]

        def rows(t):  # (B, T, *) -> its (B * T, *) rows, a view where t is contiguous
            return t.reshape(B * T, *t.shape[2:])

        gx, ga, gh0 = torch.ops.plrnn.cpu_scan_varlen_backward(
            decays, rows(h.transpose(0, 1)), rows(contiguous(grad_h.transpose(0, 1))),
            initial_states, ctx.reverse, ctx.offsets, ctx.parallel)
        return ga, gx, gh0 if initial_states is not None else None, None, None, None


def scan_batch_first(decays, impulses, initial_states, reverse, parallel, T):
    """B sequences of T steps in one call: contiguous (B * T, *) impulses, decays of that shape
    or one (1, P) row, (B, *) states; h is (T, B, *) in the batch-first layout."""
    return _BatchFirstScan.apply(decays, impulses, initial_states, reverse, parallel, T)


def scan_into(decays, impulses, initial_state, reverse, parallel, out):
    """The kernel writing into `out` (contiguous (T, *)), allocating nothing."""
    _tune(impulses, parallel)
    _write_into(decays, impulses, initial_state, reverse, parallel, out)


def _write_into(decays, impulses, initial_state, reverse, parallel, out):
    _scan_out(decays, impulses, initial_state, reverse, parallel, out=out)
    # The op has no ADInplaceOrView kernel, so it leaves out's version counter alone; bumped
    # here so that autograd still refuses a backward through an earlier use of out.
    torch.autograd.graph.increment_version(out)


def serial(decays, impulses, initial_state, reverse):
    _tune(impulses, False)
    return _scan(decays, impulses, initial_state, reverse, False)


def parallel(decays, impulses, initial_state, reverse):
    _tune(impulses, True)
    return _scan(decays, impulses, initial_state, reverse, True)


def thread_round_trip_ns(round_trips: int = 2000) -> float:
    """Nanoseconds for one cache line to go from the first thread of torch's intra-op pool to the
    second and back (plrnn::cpu_thread_round_trip_ns, csrc/cpu_threads_probe.cpp), at the current
    thread count; nan with one thread or without the kernels. On a VM it says where the host has
    put the threads (one core, one die, two dies), which changes what two threads gain."""
    if torch.get_num_threads() < 2 or load() is not None:
        return math.nan
    return torch.ops.plrnn.cpu_thread_round_trip_ns(round_trips)


def empty_cache() -> int:
    """Hands the buffers of freed outputs that the CPU kernels keep for reuse back to the system
    allocator (csrc/cpu_output_cache.cpp); returns how many bytes that was."""
    if not _origin:  # kernels never loaded in this process: nothing is held
        return 0
    return torch.ops.plrnn.cpu_empty_output_cache()
