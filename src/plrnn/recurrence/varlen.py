"""Packed variable-length batches: N sequences back to back along time, delimited by cu_seqlens.

The convention of flash-attention and FLA: sequence n occupies rows [cu_seqlens[n],
cu_seqlens[n+1]) of a (total_T, *) input, and the recurrence restarts at each sequence's first
step (its last with reverse=True) from initial_state[n], or from zeros. Sequences are independent,
so each backend runs them on views of the packed buffers: the C++ CPU ops take the offsets
themselves (one call, sequences spread over threads), triton and cuda_parallel too while the
sequences are short (one launch, a program or thread per sequence), the others run once per
sequence.
"""

from __future__ import annotations

import torch

_INDEX_DTYPES = (torch.int32, torch.int64)


def check_cu_seqlens(cu_seqlens, T: int) -> list[int]:
    """The offsets as a list of Python ints, after checking them against a length-T input.

    Reading them is a host copy, so on a GPU it synchronizes (as flash-attention's varlen API
    asks for max_seqlen on the host for the same reason).
    """
    if not isinstance(cu_seqlens, torch.Tensor):
        from .validation import type_name  # validation imports this module

        raise TypeError(
            f"cu_seqlens must be a 1-D int32 or int64 tensor of N+1 offsets, got "
            f"{type_name(cu_seqlens)}"
        )
    if cu_seqlens.dtype not in _INDEX_DTYPES:
        raise TypeError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(
            "cu_seqlens must be 1-D with N+1 >= 2 offsets (0, end of sequence 0, ..., T); got "
            f"shape {tuple(cu_seqlens.shape)}"
        )
    if _batched(cu_seqlens):
        raise ValueError(
            "cu_seqlens cannot be batched under torch.func.vmap: each call takes one packed "
            "batch's offsets (vmap over the inputs with in_dims=None for cu_seqlens)"
        )
    if cu_seqlens.is_meta:
        raise ValueError("cu_seqlens must hold its offsets (a CPU or CUDA tensor), got a meta tensor")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != T:
        raise ValueError(
            f"cu_seqlens must start at 0 and end at T = impulses.shape[0] = {T}; got "
            f"{bounds[0]} ... {bounds[-1]}"
        )
    for n, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi < lo:
            raise ValueError(
                f"cu_seqlens must be non-decreasing; cu_seqlens[{n + 1}] = {hi} < "
                f"cu_seqlens[{n}] = {lo}"
            )
    return bounds


def _batched(t: torch.Tensor) -> bool:
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        if functorch.is_batchedtensor(t):
            return True
        t = functorch.get_unwrapped(t)
    return False


def check_initial_states(initial_state, impulses, num_sequences: int) -> None:
    want = (num_sequences, *impulses.shape[1:])
    if initial_state is not None and tuple(initial_state.shape) != want:
        raise ValueError(
            f"with a packed batch (cu_seqlens or jagged inputs), initial_state must have shape (N, *impulses.shape[1:]) = {want}, "
            f"one state per sequence; got {tuple(initial_state.shape)}"
        )


def per_sequence(compute, decays, impulses, initial_state, bounds, reverse):
    """h from `compute(a, x, h0, reverse)` run on each non-empty sequence's rows (views).
    Decays with one row per step (the impulses' shape, or (T, P)) are cut the same way; one row
    for every step serves each sequence."""
    per_row = decays.shape == impulses.shape or (
        decays.dim() == 2 and decays.shape[0] == impulses.shape[0]
    )
    pieces = []
    for n, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        if hi > lo:
            h0 = None if initial_state is None else initial_state[n]
            a = decays[lo:hi] if per_row else decays
            pieces.append(compute(a, impulses[lo:hi], h0, reverse))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def final_states(h, bounds, initial_state, reverse):
    """(N, *): each sequence's state after its last step; an empty one keeps its initial state.
    The offsets are host ints, so nothing here waits on a GPU."""
    pairs = list(zip(bounds[:-1], bounds[1:]))
    empty = [lo == hi for lo, hi in pairs]
    start = (h.new_zeros((len(pairs), *h.shape[1:])) if initial_state is None
             else initial_state)
    if all(empty):
        return start.clone()  # never the caller's own tensor
    last = h.shape[0] - 1
    rows = [min(max(lo if reverse else hi - 1, 0), last) for lo, hi in pairs]
    picked = h[torch.tensor(rows, device=h.device)]
    if not any(empty):
        return picked
    mask = torch.tensor(empty, device=h.device).reshape(-1, *([1] * (h.dim() - 1)))
    return torch.where(mask, start, picked)
