"""The op h[t] = decays[t] * h[t-1] + impulses[t], with one signature over many backends."""

from __future__ import annotations

import math
from functools import partial

import torch

from . import cpu, cuda, jagged, transforms, triton
from .cpu import empty_cache
from .registry import REGISTRY, BackendStatus, backends, choice_is_fixed, resolve
from .validation import (
    JaggedInput,
    MixedUnderAutocast,
    autocast_dtype,
    check_inputs,
    check_out,
    in_dtype,
    type_name,
)
from .varlen import final_states, per_sequence

__all__ = ["linear_recurrence", "backends", "BackendStatus", "REGISTRY", "empty_cache"]


CU_SEQLENS_UNTRACED = (
    "plrnn.linear_recurrence: a packed batch (cu_seqlens) runs eagerly under torch.compile: its "
    "offsets are checked and read on the host; fullgraph=True cannot take it")


def linear_recurrence(
    decays: torch.Tensor,
    impulses: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    cu_seqlens: torch.Tensor | None = None,
    reverse: bool = False,
    backend: str = "auto",
    out: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Linear recurrence over the leading (time) axis.

    h[t] = decays[t] * h[t-1] + impulses[t], with h[-1] = initial_state (zeros if None);
    with reverse=True, h[t] = decays[t] * h[t+1] + impulses[t] from the end.

    Args:
        decays: [T, *] float or complex tensor (a, the gates; |a| < 1 for a stable complex
            recurrence, as in the LRU), or any shape that broadcasts to the impulses' as torch
            broadcasts: time-invariant (*) or (1, *) (S4D / LRU), (T, 1, C) shared over a batch
            of (T, B, C) impulses. Its gradient is reduced over the broadcast dimensions.
        impulses: [T, *] tensor, the decays' dtype and device (x). Or a batch of sequences of
            their own lengths as a jagged nested tensor (torch.nested, layout=torch.jagged),
            [B, j, *] with time ragged: it runs as the packed batch of its values and offsets,
            h comes back jagged alike, and the decays are jagged alike or time-invariant (*).
        initial_state: [*] or None; with cu_seqlens, [N, *] (one state per sequence) or None.
        cu_seqlens: None, or a packed batch of N sequences: an int32/int64 tensor of N+1
            offsets, 0 = cu_seqlens[0] <= ... <= cu_seqlens[N] = T; sequence n is rows
            [cu_seqlens[n], cu_seqlens[n+1]) and the recurrence restarts at its first step (its
            last with reverse=True) from initial_state[n]. Sequences may be empty. The offsets
            are read on the host (a GPU tensor synchronizes).
        reverse: run from t = T-1 down to 0.
        backend: "auto" or a name from `plrnn.backends(device)`.
        out: None, or a tensor with exactly the impulses' shape, dtype and device, sharing no
            memory with the inputs, to receive h; it is returned. The C++ CPU backends write
            into a contiguous `out` directly; the others compute h and copy it in. As with
            torch's own out= arguments there is no autograd: with grad mode on, no argument may
            require grad (run it under torch.no_grad()).

        return_final_state: also return the state after the last step, [*] (h[-1], or h[0]
            with reverse=True; initial_state or zeros when T = 0); with cu_seqlens, [N, *], each
            sequence's own (an empty sequence keeps its initial state). A new tensor, never a
            view of h or the initial state.

    Returns:
        h: [T, *], the impulses' dtype. float16/bfloat16 accumulate in float32.
        With return_final_state, (h, final_state).
    Gradients flow to decays, impulses and initial_state (not with out=); for complex inputs in
    torch's convention (the conjugate Wirtinger derivative, as torch.autograd gives for a * b).
    Complex inputs run on the backends that list complex=True in `plrnn.backends()`.
    """
    plain = (cu_seqlens is None and return_final_state is False
             and not torch.compiler.is_compiling())
    if plain:
        h = cpu.shortcut(backend, decays, impulses, initial_state, reverse, out)
        if h is not None:
            return h
    if cu_seqlens is not None and torch.compiler.is_compiling():
        torch._dynamo.graph_break(msg=CU_SEQLENS_UNTRACED)
    if torch.compiler.is_compiling():
        # dynamo cannot build the exception that signals mixed dtypes below (a graph break, an
        # error under fullgraph=True); a traced call pays for the test up front instead.
        wide = autocast_dtype(decays, impulses, initial_state)
        if wide is not None:
            decays, impulses, initial_state = in_dtype(wide, decays, impulses, initial_state)
    try:
        bounds = check_inputs(decays, impulses, initial_state, reverse, cu_seqlens)
    except MixedUnderAutocast as mixed:
        decays, impulses, initial_state = in_dtype(mixed.dtype, decays, impulses, initial_state)
        bounds = check_inputs(decays, impulses, initial_state, reverse, cu_seqlens)
    except JaggedInput:
        return jagged.run(linear_recurrence, decays, impulses, initial_state,
                          cu_seqlens=cu_seqlens, reverse=reverse, backend=backend, out=out,
                          return_final_state=return_final_state)
    transformed = transforms.active()
    if transformed and (jagged.wrapped(decays) or jagged.wrapped(impulses)):
        raise RuntimeError(jagged.TRANSFORMS_MESSAGE)
    if out is not None:
        if transformed:  # before check_out, which reads addresses that batched tensors lack
            raise RuntimeError(
                "linear_recurrence(): out= cannot be used under torch.func transforms or "
                "forward-mode AD; call it without out="
            )
        check_out(out, decays, impulses, initial_state)
    if not isinstance(return_final_state, bool):
        raise TypeError(
            f"return_final_state must be a bool, got {type_name(return_final_state)}"
        )
    shape = impulses.shape
    T, channels = shape[0], math.prod(shape[1:])
    chosen = resolve(backend, impulses.device, T, channels, impulses.is_complex(),
                     impulses.element_size())
    if T == 0 or channels == 0:
        h = out if out is not None else impulses + 0 * decays  # empty, still in the graph
    elif transformed:
        compute = partial(transforms.scan, partial(_compute, chosen), chosen.name)
        decays = decays.expand(shape)
        if bounds is None:
            h = compute(decays, impulses, initial_state, reverse)
        else:
            h = per_sequence(compute, decays, impulses, initial_state, bounds, reverse)
    elif _on_cpu_kernels(chosen) and bounds is None and _batch_first(impulses):
        h = _batch_first_run(chosen, decays, impulses, initial_state, reverse, out)
    else:
        a, x = decays, impulses
        if a.shape != shape:
            a = _kernel_decays(chosen.name, a, shape)
        if _on_cpu_kernels(chosen):
            a, x = cpu.contiguous(a), cpu.contiguous(x)
        h = _run(chosen, a, x, initial_state, bounds, reverse, out)
        parallel = _CPU_OUT_PARALLEL.get(chosen.name)
        if plain and parallel is not None and choice_is_fixed(backend, T, channels):
            cpu.remember(backend, decays, impulses, initial_state, reverse, parallel)
    if not return_final_state:
        return h
    if bounds is not None:
        return h, final_states(h, bounds, initial_state, reverse)
    # A tensor of its own, as torch.nn.LSTM's h_n: a view of h would keep all of h alive for a
    # caller that keeps only the state (as chunked inference does), and writing to one would
    # change the other (or the caller's initial_state, when T = 0).
    if T == 0:
        return h, impulses.new_zeros(shape[1:]) if initial_state is None else initial_state.clone()
    return h, (h[0] if reverse else h[-1]).clone()


def _run(chosen, decays, impulses, initial_state, bounds, reverse, out):
    if bounds is not None:
        return _packed(chosen, decays, impulses, initial_state, bounds, reverse, out)
    if out is not None:
        return _into(out, chosen, decays, impulses, initial_state, reverse)
    return _compute(chosen, decays, impulses, initial_state, reverse)


def _kernel_decays(name, decays, shape):
    """Broadcast decays as the chosen backend reads them. The backends in _PERIOD_DECAYS take
    - time-invariant decays (no time axis, or one of length 1) as one (1, C) row, built in O(C).
      Not in float16 where they need a gradient: from a (1, C) row autograd sums the rest of the
      broadcast in float16, which overflows per channel first, so they go as one (1, P) row
      where they repeat every P >= the backend's minimum flattened channels (as below: read in
      place, their gradient is summed over time and the batch in one float32 reduction), and
      are expanded to the impulses' shape otherwise (a copy; autograd then sums their
      per-element gradient in one pass). The CPU kernels read a (1, C) row up to 1.5x faster
      than a (1, 16) one on two threads (Zen 4 VM), so the other dtypes keep it.
    - decays of shape (T, 1, ..., 1, *trailing), with `trailing` the impulses' last dims (shared
      over a batch), as a (T, P) view, P = prod(trailing), read at channel c % P, once P is at
      least the backend's minimum.
    Anything else is expanded to the impulses' shape (a view, which kernels that need contiguous
    (T, *) buffers copy)."""
    padded = (1,) * (len(shape) - decays.dim()) + tuple(decays.shape)
    min_period = _PERIOD_DECAYS.get(name)
    if min_period is not None:
        period = _period(padded, shape)
        in_place = period is not None and period >= min_period
        if padded[0] == 1 and not _half_grad(decays):
            return decays.reshape(padded).expand(1, *shape[1:]).reshape(1, -1)
        if in_place:
            return decays.reshape(1 if padded[0] == 1 else shape[0], period)
    return decays.expand(shape)


def _on_cpu_kernels(chosen) -> bool:
    """Whether the C++ CPU kernels run this call eagerly: then strided inputs are copied into
    recycled buffers (cpu.contiguous), and batch-first ones are read in place."""
    return chosen.name in _CPU_OUT_PARALLEL and not torch.compiler.is_compiling()


def _half_grad(decays) -> bool:
    """float16 decays that need a gradient, which a (1, C) row would sum in float16."""
    return decays.dtype == torch.float16 and decays.requires_grad and torch.is_grad_enabled()


# Below this, batch-first impulses are copied to time-major instead: the packed call's fixed
# cost (its autograd.Function and offsets, about 35 us) outweighs copies from glibc's warm heap.
# Zen 4 VM, 2 threads, fp32 forward, view / caller's copies: (4, 16, 8) 41 / 8.6 us,
# (8, 256, 64) (0.5 MB) 73 / 62 us, (16, 512, 64) (2.1 MB) 140 / 220 us.
_BATCH_FIRST_BYTES = 1 << 20


def _batch_first(impulses) -> bool:
    """Whether (T, B, *) impulses of 1 MiB or more lie in memory as (B, T, *), each sequence's
    steps together: the view x.transpose(0, 1) of a batch-first tensor, as recurrent layers with
    batch_first=True and the (B, T, H, D) tensors of today's linear-attention code hold them."""
    return (impulses.dim() >= 3 and impulses.shape[0] > 1 and impulses.shape[1] > 1
            and not impulses.is_contiguous() and impulses.transpose(0, 1).is_contiguous()
            and impulses.numel() * impulses.element_size() >= _BATCH_FIRST_BYTES)


def _batch_first_run(chosen, decays, impulses, initial_state, reverse, out):
    """Batch-first impulses on the C++ CPU kernels: the B sequences as one packed batch, read and
    written where they lie, h returned in the impulses' layout (as torch's elementwise ops
    return theirs). Copying them to time-major first, a fresh buffer's faults and a strided
    copy, took 10x the scan: (B, T, C) = (8, 16384, 256) fp32 forward, 177 ms, against 16 ms in
    place and 15 ms for the same values time-major (Zen 4 VM, 2 threads)."""
    T, B, rest = impulses.shape[0], impulses.shape[1], impulses.shape[2:]
    x = impulses.transpose(0, 1).reshape(B * T, *rest)  # a view
    padded = (1,) * (impulses.dim() - decays.dim()) + tuple(decays.shape)
    if decays.shape == impulses.shape and decays.transpose(0, 1).is_contiguous():
        a = decays.transpose(0, 1).reshape(B * T, *rest)
    elif padded[0] == padded[1] == 1 and not _half_grad(decays):  # the same for every row
        a = decays.reshape(padded).expand(1, 1, *rest).reshape(1, -1).contiguous()
    else:
        a = cpu.contiguous(decays.expand(impulses.shape).transpose(0, 1)).reshape(B * T, *rest)
    h0 = None if initial_state is None else initial_state.contiguous()
    h = cpu.scan_batch_first(a, x, h0, reverse, _CPU_OUT_PARALLEL[chosen.name], T)
    if out is None:
        return h
    out.copy_(h)
    return out


def _period(padded, shape) -> int | None:
    """P where decays of shape `padded` (time, then ones, then the impulses' last dims) repeat
    every P flattened channels; None for any other broadcast."""
    j = len(shape)
    while j > 1 and padded[j - 1] == shape[j - 1]:
        j -= 1
    if any(d != 1 for d in padded[1:j]):
        return None
    return math.prod(shape[j:])


def _packed(chosen, decays, impulses, initial_state, bounds, reverse, out):
    parallel = _CPU_OUT_PARALLEL.get(chosen.name)
    channels = math.prod(impulses.shape[1:])
    if parallel is not None:  # the C++ ops take the offsets: one call for the whole batch
        h0 = None if initial_state is None else initial_state.contiguous()
        offsets = torch.tensor(bounds, dtype=torch.int64)
        h = cpu.scan_packed(decays.contiguous(), impulses.contiguous(), h0, reverse, offsets,
                            parallel)
    elif (op := _one_launch(chosen.name, bounds, channels, impulses.device)) is not None:
        a, x, _ = _kernel_buffers(decays, impulses, None)
        h0 = None if initial_state is None else initial_state.reshape(-1, channels).contiguous()
        h = op(a, x, h0, reverse, torch.tensor(bounds, dtype=torch.int64)).reshape(impulses.shape)
    else:
        h = per_sequence(partial(_compute, chosen), decays, impulses, initial_state, bounds,
                         reverse)
    if out is None:
        return h
    out.copy_(h)
    return out


def _one_launch(name, bounds, channels, device):
    """The GPU op that runs this packed batch in one launch, a thread or program per sequence
    walking its rows (taking (T, C) buffers, (N, C) initial states and the offsets on the host),
    or None where one call per sequence is the better schedule."""
    if name == "triton" and triton.one_launch_for(bounds, channels, device):
        return triton.triton_scan_packed
    if name == "cuda_parallel" and cuda.one_launch_for(bounds):
        return cuda.parallel_packed
    return None


def _compute(chosen, decays, impulses, initial_state, reverse):
    if chosen.name == "reference":
        return chosen.run(decays, impulses, initial_state, reverse)
    if chosen.any_shape:
        h0 = None if initial_state is None else initial_state.contiguous()
        return chosen.run(decays.contiguous(), impulses.contiguous(), h0, reverse)
    h = chosen.run(*_kernel_buffers(decays, impulses, initial_state), reverse)
    return h if impulses.dim() == 2 else h.reshape(impulses.shape)


def _kernel_buffers(decays, impulses, initial_state):
    """The inputs as the kernels take them: (T, C), (T, C) and (C,) or None, contiguous."""
    # Reshapes are skipped where they are no-ops because each costs microseconds of dispatch on
    # short sequences.
    if impulses.dim() != 2 or decays.shape != impulses.shape:
        T, channels = impulses.shape[0], math.prod(impulses.shape[1:])
        if decays.shape == impulses.shape:  # else already (1 or T, P): _kernel_decays
            decays = decays.reshape(T, channels)
        impulses = impulses.reshape(T, channels)
        if initial_state is not None:
            initial_state = initial_state.reshape(channels)
    h0 = None if initial_state is None else initial_state.contiguous()
    return decays.contiguous(), impulses.contiguous(), h0


# The backends whose C++ op writes into a given tensor, and its `parallel` flag for each.
_CPU_OUT_PARALLEL = {"cpu_serial": False, "cpu_parallel": True}
# The backends whose kernels read (T or 1, P) decays in place, and the least period P each takes.
# The C++ CPU kernels cut their channel loops at every multiple of P, and runs shorter than 16
# channels leave the vector units idle, so shorter periods are expanded for them; the GPU kernels
# compute each thread's decay column once and take any period.
_PERIOD_DECAYS = {"cpu_serial": 16, "cpu_parallel": 16, "cuda_parallel": 1, "triton": 1}


def _into(out, chosen, decays, impulses, initial_state, reverse):
    parallel = _CPU_OUT_PARALLEL.get(chosen.name)
    if parallel is None:
        out.copy_(_compute(chosen, decays, impulses, initial_state, reverse))
        return out
    # The op takes contiguous (T, *) buffers as they are, as _compute's any_shape backends do:
    # reshaping the inputs to (T, C) and out to match cost 5-8 us of dispatch at (16, 1, 128),
    # where the whole call takes 7 us.
    h0 = None if initial_state is None else initial_state.contiguous()
    if out.is_contiguous():
        target = out
    else:
        target = torch.empty_like(out, memory_format=torch.contiguous_format)
    cpu.scan_into(decays.contiguous(), impulses.contiguous(), h0, reverse, parallel, target)
    if target is not out:
        out.copy_(target)
    return out
