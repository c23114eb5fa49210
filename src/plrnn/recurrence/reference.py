"""Readable ground truth for the op.

`serial` is the recurrence exactly as written, one time step per iteration; gradients come from
torch's own autograd through the loop, so it is an independent oracle for every kernel's
hand-written backward. Run it in float64 to get the ground truth the tests compare against.

`algorithm1` is Algorithm 1 of Martin & Cundy (2018) in plain torch, for readers: the same
three phases (reduce chunks, scan chunk totals, re-scan chunks) that the C++ and CUDA kernels run.
"""

from __future__ import annotations

import torch


def serial(
    decays: torch.Tensor,
    impulses: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    reverse: bool = False,
) -> torch.Tensor:
    """h[t] = decays[t] * h[t-1] + impulses[t] over a (T, *) time-major input.

    Low-precision inputs are computed in float32 and returned in their own dtype.
    """
    dtype = impulses.dtype
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    # unbind, not a[t]: indexing's backward would write a full (T, *) gradient per step (O(T^2)).
    a, x = decays.to(compute).unbind(0), impulses.to(compute).unbind(0)
    if not x:
        return impulses.new_empty(impulses.shape)
    h = torch.zeros_like(x[0]) if initial_state is None else initial_state.to(compute)
    steps = range(len(x) - 1, -1, -1) if reverse else range(len(x))
    out = [None] * len(x)
    for t in steps:
        h = a[t] * h + x[t]
        out[t] = h
    return torch.stack(out).to(dtype)


def algorithm1(
    decays: torch.Tensor,
    impulses: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    num_chunks: int = 4,
) -> torch.Tensor:
    """Algorithm 1 (parallel linear recurrence on p processors), forward direction.

    Each chunk below is what one processor owns; the loops over chunks are the parallel parts.
    """
    T = impulses.shape[0]
    h0 = torch.zeros_like(impulses[0]) if initial_state is None else initial_state
    bounds = torch.linspace(0, T, num_chunks + 1).long().tolist()
    chunks = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    # 1. In parallel: each chunk's product of decays and its recurrence started from zero.
    products, reached = [], []
    for lo, hi in chunks:
        p, r = torch.ones_like(h0), torch.zeros_like(h0)
        for t in range(lo, hi):
            p = p * decays[t]
            r = decays[t] * r + impulses[t]
        products.append(p)
        reached.append(r)

    # 2. Serially over chunks: the state carried into each chunk.
    carry = [h0]
    for p, r in zip(products[:-1], reached[:-1]):
        carry.append(p * carry[-1] + r)

    # 3. In parallel: re-run every chunk from its carry and write h.
    h = torch.empty_like(impulses)
    for (lo, hi), c in zip(chunks, carry):
        for t in range(lo, hi):
            c = decays[t] * c + impulses[t]
            h[t] = c
    return h
