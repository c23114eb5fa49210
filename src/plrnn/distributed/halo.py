"""Halos: the few steps before a shard that a layer reads besides the recurrence (QRNN(k) the
k-1 inputs before its first step, the GILR-LSTM the surrogate's previous step).

One all_gather carries every rank's last m rows (and, from the first rank, the m rows before the
sequence), so a shard shorter than its halo still gets its steps from further back. The gradient
that a rank's layer sends into another rank's rows goes back with one all_reduce, which every
rank enters as soon as one rank's rows require grad: the all_gather carries each rank's flag.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable

from .group import STATS, Place, gather_tensors


def _gather_edges(before, x, m: int, place: Place, mine: bool) -> tuple[torch.Tensor, bool]:
    """(world, 2m, *): per rank, [m rows before the sequence (first rank only, else zeros), the
    last m rows of its shard, zero-padded in front when the shard is shorter]; and whether any
    rank's rows require grad (`mine`: whether this rank's do)."""
    n = min(m, x.shape[0])
    with torch.no_grad():
        edge = x.new_zeros((2 * m, *x.shape[1:]))
        if before is not None:
            edge[:m] = before
        edge[2 * m - n :] = x[x.shape[0] - n :]
        flat = torch.cat([edge.reshape(-1), edge.new_full((1,), float(mine))])
        parts = torch.stack(gather_tensors("halo", flat, place))
    asked = torch.is_grad_enabled() and bool(parts[:, -1].any())
    return parts[:, :-1].reshape(place.world, *edge.shape), asked


class _EdgesGrad(torch.autograd.Function):
    """The gathered edges as a function of this rank's rows; `anchor`: a leaf requiring grad,
    passed where this rank's rows need none while another rank's do."""

    @staticmethod
    def forward(ctx, edges, before, x, anchor, m: int, place: Place):
        ctx.m, ctx.n, ctx.T = m, min(m, x.shape[0]), x.shape[0]
        ctx.place, ctx.has_before = place, before is not None
        return edges.clone()

    @staticmethod
    @once_differentiable  # a second backward raises, as through plrnn.linear_recurrence
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.place.group)  # every rank's reads of every rank's rows
        STATS.add("halo backward", grad.numel() * grad.element_size(), ctx.place.world - 1)
        mine = grad[ctx.place.rank]
        m, n, T = ctx.m, ctx.n, ctx.T
        gx = mine.new_zeros((T, *mine.shape[1:]))
        gx[T - n :] = mine[2 * m - n :]
        return None, (mine[:m] if ctx.has_before else None), gx, None, None, None


def halo(x, m: int, before, place: Place, lengths: list[int]):
    """(rows before this shard, last m rows of the whole sequence), each (m, *x.shape[1:]).

    x: this rank's shard in time order; before: the m rows preceding the sequence (first rank
    only; zeros when None); lengths: every rank's shard length, by group rank."""
    if m == 0:
        return x[:0], x[:0]
    mine = any(t is not None and t.requires_grad for t in (before, x))
    edges, asked = _gather_edges(before, x, m, place, mine)
    if asked:
        anchor = None if mine else x.new_zeros((), requires_grad=True)
        edges = _EdgesGrad.apply(edges, before, x, anchor, m, place)
    # Group rank order is time order: the first rank's rows before the sequence, then every
    # rank's own last rows.
    pieces = [edges[0, :m]] + [edges[r, 2 * m - min(m, T) :] for r, T in enumerate(lengths)]
    ahead = torch.cat(pieces[: place.rank + 1])
    everything = torch.cat(pieces)
    return ahead[ahead.shape[0] - m :], everything[everything.shape[0] - m :]
