"""The `triton` backend: one Triton kernel for the forward scan, its backward, and Algorithm 1.

Kernel layout: a program owns BLOCK_C adjacent channels (one coalesced row segment per time
step, since the buffers are time-major (T, C)) and walks its range of time in BLOCK_T tiles. Each
tile is scanned with tl.associative_scan under the composition of affine maps

    (a1, x1) then (a2, x2)  =  (a1 * a2, a2 * x1 + x2)   (x2 where x1 = 0),

so row t of the scanned tile holds (A, X) with h[t] = A * h_in + X for the state h_in carried
into the tile; the tile's last row is the carry into the next tile (rows past the end are padded
with the identity (1, 0), so the last row always equals the last valid one).

With few channels one program per channel block leaves the GPU idle, so time is also split into
chunks (Algorithm 1 of the paper, three launches of the same kernel):
  1. TOTALS: each (channel block, chunk) writes its chunk's composed map (product of decays,
     scan from zero), in the accumulation dtype;
  2. those per-chunk maps are scanned (the same kernel, one chunk) into each chunk's carry-in;
  3. every chunk re-scans from its carry-in and writes h.

The backward pass (paper section 3.3) is the same kernel with GRAD set: it walks time the other
way with the decays shifted by one step, g[t] = a[t+1] g[t+1] + dL/dh[t] (forward direction),
and writes dL/dx = g, dL/da[t] = h[t-1] g[t] from the saved h, and dL/dh0 = a[0] g[0].

Decays are read where they lie: (T, C), or (T, P) / (1, P) with the period P dividing C, where
channel c reads decay column c % P and a one-row tensor serves every step (time-invariant decays,
or decays shared by the C / P blocks of P channels of a batch). dL/da is written per step and
channel and summed to the decays' shape.

Storage dtypes: float16/bfloat16/float32 accumulate in float32; float64 accumulates in float64.

Where it runs: on CUDA tensors when triton imports and torch sees a GPU; on CPU tensors only
under Triton's interpreter, i.e. with TRITON_INTERPRET=1 in the environment (slow: for tests and
debugging). Triton reads TRITON_INTERPRET when @triton.jit decorates a function (for its own
library, when triton is imported), which would make the mode depend on import order. This
module instead keeps the kernel as a plain function and wraps it both ways on first use
(JITFunction for the GPU, InterpretedFunction for the interpreter), and reads TRITON_INTERPRET
at every call: setting or unsetting it later in the process takes effect, and GPU tests run
compiled kernels in the same process as interpreter tests. With TRITON_INTERPRET=1 CUDA tensors
go through the interpreter too, as with Triton's own kernels. Importing triton (about half a
second) is deferred to the first use, so `import plrnn` does not pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os

import torch

from .autograd import register_scan_autograd
from .varlen import check_cu_seqlens

# triton.language and the kernel's combine functions as Triton functions, bound by _kernel()
# at first use; the kernel resolves them from this module's globals when it is compiled or
# interpreted.
tl = None
_compose = None
_add = None

INTERPRET_HINT = "set TRITON_INTERPRET=1 to run the Triton kernel on CPU under the interpreter"

# Tile sizes. The interpreter executes tl.associative_scan element by element in Python, so
# small tiles keep padding cheap there (and let small test shapes span several tiles).
_INTERPRETER_BLOCK_T = 16
_INTERPRETER_MAX_BLOCK_C = 8
# The GPU values are first guesses, untuned: the session that wrote this kernel had no GPU (it
# was checked under the interpreter and compiled for sm_90 without running). Measure first.
_GPU_MAX_BLOCK_C = 32  # 128 contiguous bytes of float32 per time step
_GPU_TILE_ELEMENTS = 2048
_GPU_MAX_BLOCK_T = 512
# Algorithm 1 on the GPU: split time when channel blocks alone give fewer programs than
# _PROGRAMS_PER_SM per multiprocessor, into chunks of at least _MIN_CHUNK_TILES tiles.
_PROGRAMS_PER_SM = 4
_MIN_CHUNK_TILES = 4
_MAX_CHUNKS = 65535  # chunks are the grid's second axis, which CUDA limits to 65535


# ------------------------------------------------------------------------------ availability


@functools.cache
def _import_error() -> str | None:
    """Why `import triton` fails here, or None. Cached: a failed import does not heal."""
    try:
        importlib.import_module("triton.language")
    except ImportError as err:
        if err.name in ("triton", "triton.language"):
            return "triton is not installed (pip install triton; Linux x86_64 wheels)"
        return f"importing triton failed: {err}"
    except Exception as err:  # noqa: BLE001 - a broken install: unavailable, and why
        return f"importing triton failed: {type(err).__name__}: {err}"
    return None


def interpreting() -> bool:
    """Whether TRITON_INTERPRET asks for Triton's interpreter, read now (as triton.knobs does)."""
    value = os.environ.get("TRITON_INTERPRET", "0").strip().lower()
    return value in ("1", "true", "on", "yes", "y")


def unavailable(device: torch.device) -> str | None:
    """Why the Triton kernel cannot run on `device` here, or None if it can."""
    if device.type not in ("cpu", "cuda"):
        return f"Triton kernel; inputs are on {device}"
    reason = _import_error()
    if reason is not None:
        return reason
    if device.type == "cpu":
        return None if interpreting() else INTERPRET_HINT
    if not interpreting() and not torch.cuda.is_available():
        return "Triton kernel for CUDA tensors, but torch sees no CUDA GPU"
    return None


# ---------------------------------------------------------------------------------- the kernel


def _compose_maps(a1, x1, a2, x2):
    # (a1, x1) first, then (a2, x2): h -> a2 * (a1 * h + x1) + x2. A zero x1 leaves x2, as the
    # serial loop does, which never multiplies a zero state by a2: for decays above 1 that
    # product overflows to inf over enough steps, and inf * 0 would be NaN where the loop has x2.
    return a1 * a2, tl.where(x1 == 0, x2, a2 * x1 + x2)


def _add_values(u, v):
    return u + v


# The kernel calls only Triton's builtins and passes this module's combine functions to
# tl.associative_scan / tl.reduce. It calls no other Triton function, its own or
# triton.language.standard's (tl.zeros, tl.sum, ...): those are wrapped for one mode (compiled or
# interpreted) when they are defined, i.e. when triton is imported, and calling one from the
# other mode fails. Kept to builtins, one kernel runs both ways whatever the import order.
def _scan_kernel(
    a_ptr,  # decays: [T or 1, P] rows; channel c reads column c % P
    x_ptr,  # [T, C] impulses (GRAD: dL/dh)
    h_ptr,  # GRAD only: [T, C] the forward's output h
    h0_ptr,  # GRAD and HAS_H0 only: [C] the forward's initial state (PACKED: [N, C])
    init_ptr,  # HAS_INIT only: [chunks, C] the state carried into each chunk (PACKED: [N, C])
    out_ptr,  # [T, C] h (GRAD: dL/dx = g); TOTALS: [chunks, C] each chunk's scan from zero
    out2_ptr,  # GRAD: [T, C] dL/da; TOTALS: [chunks, C] each chunk's product of decays
    dh0_ptr,  # GRAD only: [C] dL/dh0 (PACKED: [N, C])
    cu_ptr,  # PACKED only: [N + 1] int64 offsets; sequence n is rows cu[n] .. cu[n+1]-1
    T,
    C,
    a_row,  # elements from one step's decays to the next: P, or 0 for one row at every step
    a_period,  # P
    chunk_len,  # steps per chunk, a multiple of BLOCK_T (T when not chunked)
    DESCENDING: tl.constexpr,  # walk time from T-1 down to 0
    GRAD: tl.constexpr,
    TOTALS: tl.constexpr,
    HAS_INIT: tl.constexpr,
    HAS_H0: tl.constexpr,
    PACKED: tl.constexpr,  # program_id(1) is a sequence of a packed batch, not a time chunk
    FP64: tl.constexpr,  # accumulate in float64 (else float32)
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    if FP64:
        acc_dtype = tl.float64
    else:
        acc_dtype = tl.float32
    chunk = tl.program_id(1)
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    # Steps lo .. lo+n-1 are this program's; the recurrence sees nothing outside seq_lo .. seq_hi
    # (the whole input, or the program's own sequence).
    if PACKED:
        lo = tl.load(cu_ptr + chunk)
        seq_hi = tl.load(cu_ptr + chunk + 1)
        n = seq_hi - lo
        seq_lo = lo
    else:
        lo = chunk * chunk_len
        n = tl.minimum(chunk_len, T - lo)
        seq_lo = 0
        seq_hi = T
    # One step in walking order, in units of time.
    if DESCENDING:
        step = -1
    else:
        step = 1

    if HAS_INIT:
        carry = tl.load(init_ptr + chunk.to(tl.int64) * C + cols, mask=col_ok, other=0)
        carry = carry.to(acc_dtype)
    else:
        carry = tl.full([BLOCK_C], 0, dtype=acc_dtype)
    product = tl.full([BLOCK_C], 1, dtype=acc_dtype)
    if GRAD and HAS_H0:
        if PACKED:
            h0 = tl.load(h0_ptr + chunk.to(tl.int64) * C + cols, mask=col_ok, other=0)
        else:
            h0 = tl.load(h0_ptr + cols, mask=col_ok, other=0)
        h0 = h0.to(acc_dtype)
    rows = tl.arange(0, BLOCK_T)
    is_last_row = (rows == BLOCK_T - 1)[:, None]
    a_cols = cols % a_period

    for start in tl.range(0, n, BLOCK_T):
        i = start + rows  # position in walking order within the chunk
        if DESCENDING:
            t = lo + n - 1 - i
        else:
            t = lo + i
        mask = (i < n)[:, None] & col_ok[None, :]
        offsets = t.to(tl.int64)[:, None] * C + cols[None, :]
        a_offsets = t.to(tl.int64)[:, None] * a_row + a_cols[None, :]
        if GRAD:
            # The decay that carries g into step t is the one of the step walked before it,
            # a[t - step]; the first step walked has none (g starts from zero there).
            t_before = t - step
            has_before = ((t_before >= seq_lo) & (t_before < seq_hi))[:, None]
            a = tl.load(a_ptr + a_offsets - step * a_row, mask=mask & has_before, other=0)
        else:
            a = tl.load(a_ptr + a_offsets, mask=mask, other=1)
        x = tl.load(x_ptr + offsets, mask=mask, other=0).to(acc_dtype)
        a = tl.where(mask, a.to(acc_dtype), 1)  # padding must be the identity map (1, 0)
        A, X = tl.associative_scan((a, x), 0, _compose)
        h = tl.where(carry[None, :] == 0, X, A * carry[None, :] + X)  # as in _compose_maps
        # The last row, as a sum of it and zeros (exact in any order).
        carry = tl.reduce(tl.where(is_last_row, h, 0), 0, _add)
        if TOTALS:
            product = product * tl.reduce(tl.where(is_last_row, A, 0), 0, _add)
        else:
            tl.store(out_ptr + offsets, h.to(out_ptr.dtype.element_ty), mask=mask)
            if GRAD:
                # dL/da[t] = h[t + step] * g[t]: the state one step back in forward time,
                # h0 (or zero) before the first step.
                t_prev = t + step
                has_prev = ((t_prev >= seq_lo) & (t_prev < seq_hi))[:, None]
                h_prev = tl.load(h_ptr + offsets + step * C, mask=mask & has_prev, other=0)
                h_prev = h_prev.to(acc_dtype)
                if HAS_H0:
                    h_prev = tl.where(has_prev, h_prev, h0[None, :])
                tl.store(out2_ptr + offsets, (h_prev * h).to(out2_ptr.dtype.element_ty), mask=mask)

    if TOTALS:
        total_offsets = chunk.to(tl.int64) * C + cols
        tl.store(out_ptr + total_offsets, carry.to(out_ptr.dtype.element_ty), mask=col_ok)
        tl.store(out2_ptr + total_offsets, product.to(out2_ptr.dtype.element_ty), mask=col_ok)
    elif GRAD:
        # dL/dh0 = a[t_end] * g[t_end] at the last step walked (t = 0 when descending); only the
        # chunk that holds it writes. In a packed batch every sequence writes its own (zero for
        # an empty one).
        if DESCENDING:
            t_end = lo  # 0 in that chunk
            end_chunk = 0
        else:
            t_end = lo + n - 1  # T - 1 in that chunk
            end_chunk = tl.num_programs(1) - 1
        if PACKED:
            has_steps = (n + cols * 0) > 0  # as a vector: the interpreter rejects a scalar mask
            a_end = tl.load(a_ptr + t_end.to(tl.int64) * a_row + a_cols, mask=col_ok & has_steps,
                            other=0)
            grad_h0 = a_end.to(acc_dtype) * carry
            tl.store(dh0_ptr + chunk.to(tl.int64) * C + cols,
                     grad_h0.to(dh0_ptr.dtype.element_ty), mask=col_ok)
        elif chunk == end_chunk:
            a_end = tl.load(a_ptr + t_end.to(tl.int64) * a_row + a_cols, mask=col_ok, other=0)
            grad_h0 = a_end.to(acc_dtype) * carry
            tl.store(dh0_ptr + cols, grad_h0.to(dh0_ptr.dtype.element_ty), mask=col_ok)


# ------------------------------------------------------------------------------------ launching


@functools.cache
def _kernel(interpret: bool):
    """The kernel wrapped for the interpreter or the compiler (built once per mode)."""
    global tl, _compose, _add
    reason = _import_error()
    if reason is not None:
        raise RuntimeError(f"the triton backend is unavailable: {reason}")
    import triton.language
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    tl = triton.language
    if _compose is None:
        # The interpreter calls combine functions through their `.fn`, which a JITFunction has
        # too, so one compiled wrapper serves both modes.
        _compose, _add = JITFunction(_compose_maps), JITFunction(_add_values)
    return InterpretedFunction(_scan_kernel) if interpret else JITFunction(_scan_kernel)


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _tiles(C: int, interpret: bool) -> tuple[int, int]:
    if interpret:
        return _INTERPRETER_BLOCK_T, min(_INTERPRETER_MAX_BLOCK_C, _next_power_of_2(C))
    block_c = min(_GPU_MAX_BLOCK_C, max(4, _next_power_of_2(C)))
    return min(_GPU_MAX_BLOCK_T, _GPU_TILE_ELEMENTS // block_c), block_c


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _chunk_len(T: int, C: int, chunks: int, block_t: int, block_c: int, device, interpret) -> int:
    """Steps per time chunk: `chunks` > 0 asks for that many (rounded to whole tiles); 0 chooses:
    one chunk under the interpreter, which runs programs one after the other anyway."""
    if chunks == 0:
        if interpret or device.type != "cuda":
            chunks = 1
        else:
            target = _PROGRAMS_PER_SM * _multiprocessors(device.index or 0)
            channel_blocks = -(-C // block_c)
            max_chunks = max(1, T // (_MIN_CHUNK_TILES * block_t))
            chunks = min(max_chunks, max(1, target // channel_blocks))
    chunks = min(max(1, chunks), _MAX_CHUNKS)
    per_chunk = -(-T // chunks)
    return -(-per_chunk // block_t) * block_t


def _launch(
    kernel, a, x, *, h=None, h0=None, init=None, out, out2=None, dh0=None, cu_seqlens=None,
    chunk_len, descending, grad=False, totals=False, block_t, block_c,
):
    """One launch: time chunks of chunk_len steps, or with cu_seqlens one program row per
    sequence of the packed batch."""
    T, C = x.shape
    rows = -(-T // chunk_len) if cu_seqlens is None else cu_seqlens.shape[0] - 1
    grid = (-(-C // block_c), rows)
    a_row = a.shape[1] if a.shape[0] == T else 0
    dummy = out
    kernel[grid](
        a, x,
        dummy if h is None else h,
        dummy if h0 is None else h0,
        dummy if init is None else init,
        out,
        dummy if out2 is None else out2,
        dummy if dh0 is None else dh0,
        dummy if cu_seqlens is None else cu_seqlens,
        T, C, a_row, a.shape[1], chunk_len,
        DESCENDING=descending,
        GRAD=grad,
        TOTALS=totals,
        HAS_INIT=init is not None,
        HAS_H0=h0 is not None,
        PACKED=cu_seqlens is not None,
        FP64=a.dtype == torch.float64,
        BLOCK_T=block_t,
        BLOCK_C=block_c,
        # Fused multiply-adds round once per step; stated because Triton 3.10 changes the default.
        enable_fp_fusion=True,
    )  # fmt: skip


def _carries_in(kernel, a, x, *, init, chunk_len, descending, grad, block_t, block_c):
    """Algorithm 1, steps 1-2: the state carried into each time chunk, [chunks, C]."""
    T, C = x.shape
    chunks = -(-T // chunk_len)
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    scanned = torch.empty(chunks, C, dtype=acc, device=a.device)
    products = torch.empty_like(scanned)
    _launch(
        kernel, a, x, out=scanned, out2=products, chunk_len=chunk_len, descending=descending,
        grad=grad, totals=True, block_t=block_t, block_c=block_c,
    )  # fmt: skip
    # The chunk maps scanned in walking order give the state at the end of every chunk.
    ends = torch.empty_like(scanned)
    _launch(
        kernel, products, scanned, init=None if init is None else init.reshape(1, C), out=ends,
        chunk_len=chunks, descending=descending, block_t=block_t, block_c=block_c,
    )  # fmt: skip
    start = torch.zeros(1, C, dtype=acc, device=a.device) if init is None else init.reshape(1, C)
    start = start.to(acc)
    if descending:
        return torch.cat([ends[1:], start])
    return torch.cat([start, ends[:-1]])


def _prepare(matrices: dict, decays, initial_state):
    """The kernel for this call and contiguous buffers (the matrices', then the decays', then
    the initial state); direct callers of the ops get checks that name the argument
    (linear_recurrence has validated its inputs already)."""
    first_name, first = next(iter(matrices.items()))
    if first.dim() != 2:
        raise ValueError(f"{first_name} must be a (T, C) buffer; got shape {tuple(first.shape)}")
    for name, t in {**matrices, "decays": decays}.items():
        if t.dtype != first.dtype or t.device != first.device:
            raise ValueError(
                f"{name} must match {first_name}: {first.dtype} on {first.device}; got "
                f"{t.dtype} on {t.device}"
            )
        if name != "decays" and t.shape != first.shape:
            raise ValueError(
                f"{name} must have {first_name}'s shape {tuple(first.shape)}; got "
                f"{tuple(t.shape)}"
            )
    if not _decays_fit(decays.shape, first.shape):
        raise ValueError(
            f"decays must have shape (T, C) = {tuple(first.shape)}, or (T or 1, P) with P "
            f"dividing C; got {tuple(decays.shape)}"
        )
    if initial_state is not None and initial_state.shape != first.shape[1:]:
        raise ValueError(
            f"initial_state must have shape {tuple(first.shape[1:])}; "
            f"got {tuple(initial_state.shape)}"
        )
    reason = unavailable(first.device)
    if reason is not None:
        raise RuntimeError(f"the triton backend cannot run on {first.device} tensors: {reason}")
    interpret = interpreting()
    buffers = [t.contiguous() for t in (*matrices.values(), decays)]
    h0 = None if initial_state is None else initial_state.contiguous()
    return _kernel(interpret), interpret, (*buffers, h0)


def _decays_fit(shape, like) -> bool:
    T, C = like
    if len(shape) != 2 or shape[0] not in (1, T):
        return False
    return C % shape[1] == 0 if shape[1] > 0 else C == 0


def _reduce_to_decays(grad_a, decays):
    """dL/da per step and channel, summed over the steps and channel blocks that share a decay."""
    if grad_a.shape == decays.shape:
        return grad_a
    T, C = grad_a.shape
    P = decays.shape[1]
    if P == 0:
        return grad_a.new_zeros(decays.shape)
    terms = grad_a.view(T, C // P, P)
    if decays.shape[0] == T and T > 1:
        return terms.sum(1)
    return terms.sum((0, 1)).view(decays.shape)


def _device_guard(device):
    # Triton launches on the current device's current stream.
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _forward(decays, impulses, initial_state, reverse, chunks):
    kernel, interpret, (x, a, h0) = _prepare({"impulses": impulses}, decays, initial_state)
    T, C = x.shape
    h = torch.empty_like(x)
    if T == 0 or C == 0:
        return h
    block_t, block_c = _tiles(C, interpret)
    chunk_len = _chunk_len(T, C, chunks, block_t, block_c, x.device, interpret)
    with _device_guard(x.device):
        init = h0
        if chunk_len < T:
            init = _carries_in(
                kernel, a, x, init=h0, chunk_len=chunk_len, descending=reverse, grad=False,
                block_t=block_t, block_c=block_c,
            )  # fmt: skip
        _launch(
            kernel, a, x, init=None if init is None else init.reshape(-1, C), out=h,
            chunk_len=chunk_len, descending=reverse, block_t=block_t, block_c=block_c,
        )  # fmt: skip
    return h


def _check_packed(cu_seqlens, initial_state, like) -> int:
    """N, after checking the offsets (on the host: the kernel trusts them) and the states."""
    N = len(check_cu_seqlens(cu_seqlens, like.shape[0])) - 1
    if initial_state is not None and tuple(initial_state.shape) != (N, like.shape[1]):
        raise ValueError(
            f"initial_state must have shape (N, C) = {(N, like.shape[1])}; got "
            f"{tuple(initial_state.shape)}"
        )
    return N


def _forward_packed(decays, impulses, initial_state, reverse, cu_seqlens):
    kernel, interpret, (x, a, _) = _prepare({"impulses": impulses}, decays, None)
    _check_packed(cu_seqlens, initial_state, x)
    T, C = x.shape
    h = torch.empty_like(x)
    if T == 0 or C == 0:
        return h
    block_t, block_c = _tiles(C, interpret)
    init = None if initial_state is None else initial_state.contiguous()
    with _device_guard(x.device):
        _launch(
            kernel, a, x, init=init, out=h, cu_seqlens=cu_seqlens.to(x.device), chunk_len=T,
            descending=reverse, block_t=block_t, block_c=block_c,
        )  # fmt: skip
    return h


def _backward_packed(decays, h, grad_h, initial_state, reverse, cu_seqlens):
    kernel, interpret, (g_in, h, a, _) = _prepare({"grad_h": grad_h, "h": h}, decays, None)
    N = _check_packed(cu_seqlens, initial_state, g_in)
    T, C = g_in.shape
    grad_x, grad_a = torch.empty_like(g_in), torch.empty_like(g_in)
    grad_h0 = g_in.new_zeros(N, C)
    if T == 0 or C == 0:
        return grad_x, g_in.new_zeros(decays.shape), grad_h0
    block_t, block_c = _tiles(C, interpret)
    h0 = None if initial_state is None else initial_state.contiguous()
    with _device_guard(g_in.device):
        _launch(
            kernel, a, g_in, h=h, h0=h0, out=grad_x, out2=grad_a, dh0=grad_h0,
            cu_seqlens=cu_seqlens.to(g_in.device), chunk_len=T, descending=not reverse, grad=True,
            block_t=block_t, block_c=block_c,
        )  # fmt: skip
    return grad_x, _reduce_to_decays(grad_a, a), grad_h0


def _backward(decays, h, grad_h, initial_state, reverse, chunks):
    kernel, interpret, (g_in, h, a, h0) = _prepare({"grad_h": grad_h, "h": h}, decays,
                                                   initial_state)
    T, C = g_in.shape
    grad_x, grad_a = torch.empty_like(g_in), torch.empty_like(g_in)
    grad_h0 = g_in.new_zeros(C)
    if T == 0 or C == 0:
        return grad_x, g_in.new_zeros(decays.shape), grad_h0
    block_t, block_c = _tiles(C, interpret)
    chunk_len = _chunk_len(T, C, chunks, block_t, block_c, g_in.device, interpret)
    descending = not reverse  # g runs against the forward's direction
    with _device_guard(g_in.device):
        init = None
        if chunk_len < T:
            init = _carries_in(
                kernel, a, g_in, init=None, chunk_len=chunk_len, descending=descending,
                grad=True, block_t=block_t, block_c=block_c,
            )  # fmt: skip
        _launch(
            kernel, a, g_in, h=h, h0=h0, init=init, out=grad_x, out2=grad_a, dh0=grad_h0,
            chunk_len=chunk_len, descending=descending, grad=True, block_t=block_t,
            block_c=block_c,
        )  # fmt: skip
    return grad_x, _reduce_to_decays(grad_a, a), grad_h0


# ---------------------------------------------------------------------------------- custom ops


@torch.library.custom_op("plrnn::triton_scan", mutates_args=())
def triton_scan(
    decays: torch.Tensor,
    impulses: torch.Tensor,
    initial_state: torch.Tensor | None,
    reverse: bool,
    chunks: int,
) -> torch.Tensor:
    """h over [T, C] buffers (decays: [T or 1, P], P dividing C); `chunks` time chunks
    (Algorithm 1), 0 = chosen per device."""
    return _forward(decays, impulses, initial_state, reverse, chunks)


@torch.library.custom_op("plrnn::triton_scan_backward", mutates_args=())
def triton_scan_backward(
    decays: torch.Tensor,
    h: torch.Tensor,
    grad_h: torch.Tensor,
    initial_state: torch.Tensor | None,
    reverse: bool,
    chunks: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(decays, h, grad_h, initial_state, reverse, chunks)


@triton_scan.register_fake
def _(decays, impulses, initial_state, reverse, chunks):
    return torch.empty_like(impulses)


@triton_scan_backward.register_fake
def _(decays, h, grad_h, initial_state, reverse, chunks):
    return torch.empty_like(grad_h), torch.empty_like(decays), grad_h.new_empty(grad_h.shape[1:])


register_scan_autograd(triton_scan, triton_scan_backward)


@torch.library.custom_op("plrnn::triton_scan_packed", mutates_args=())
def triton_scan_packed(
    decays: torch.Tensor,
    impulses: torch.Tensor,
    initial_state: torch.Tensor | None,
    reverse: bool,
    cu_seqlens: torch.Tensor,
) -> torch.Tensor:
    """h over a packed batch in one launch: [T, C] buffers (decays: [T or 1, P]), N sequences
    delimited by cu_seqlens, N + 1 int64 offsets on the host (checked here: the kernel trusts
    them), initial_state [N, C] or None. One program per (channel block, sequence) walks that sequence
    alone."""
    return _forward_packed(decays, impulses, initial_state, reverse, cu_seqlens)


@torch.library.custom_op("plrnn::triton_scan_packed_backward", mutates_args=())
def triton_scan_packed_backward(
    decays: torch.Tensor,
    h: torch.Tensor,
    grad_h: torch.Tensor,
    initial_state: torch.Tensor | None,
    reverse: bool,
    cu_seqlens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward_packed(decays, h, grad_h, initial_state, reverse, cu_seqlens)


@triton_scan_packed.register_fake
def _(decays, impulses, initial_state, reverse, cu_seqlens):
    return torch.empty_like(impulses)


@triton_scan_packed_backward.register_fake
def _(decays, h, grad_h, initial_state, reverse, cu_seqlens):
    N = cu_seqlens.shape[0] - 1
    return torch.empty_like(grad_h), torch.empty_like(decays), grad_h.new_empty(N, grad_h.shape[1])


register_scan_autograd(triton_scan_packed, triton_scan_packed_backward)


def scan(decays, impulses, initial_state, reverse):
    """The registry's entry point: time chunks chosen per device."""
    return triton_scan(decays, impulses, initial_state, reverse, 0)


def one_launch_for(bounds: list[int], C: int, device: torch.device) -> bool:
    """Whether a packed batch runs best as one launch (a program per channel block and
    sequence, each walking its sequence's steps) rather than one call per sequence: when even
    the longest sequence, alone, would run as one chunk, Algorithm 1 would not split it anyway."""
    interpret = interpreting()
    longest = max(hi - lo for lo, hi in zip(bounds[:-1], bounds[1:]))
    if longest == 0:
        return True
    block_t, block_c = _tiles(C, interpret)
    return _chunk_len(longest, C, 0, block_t, block_c, device, interpret) >= longest
