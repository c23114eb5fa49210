"""Halos: the few steps before a shard that a layer reads besides the recurrence (QRNN(k) the
k-1 inputs before its first step, the GILR-LSTM the surrogate's previous step).

One all_gather carries every rank's last m rows (and, from the first rank, the m rows before the
sequence), so a shard shorter than its halo still gets its steps from further back. The gradient
that a rank's layer sends into another rank's rows goes back with one all_reduce.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .group import STATS, Place, gather_tensors


class _GatherEdges(torch.autograd.Function):
    """(world, 2m, *): per rank, [m rows before the sequence (first rank only, else zeros),
    the last m rows of its shard, zero-padded in front when the shard is shorter]."""

    @staticmethod
    def forward(ctx, before, x, m: int, place: Place):
        n = min(m, x.shape[0])
        edge = x.new_zeros((2 * m, *x.shape[1:]))
        if before is not None:
            edge[:m] = before
        edge[2 * m - n :] = x[x.shape[0] - n :]
        ctx.m, ctx.n, ctx.T, ctx.place, ctx.has_before = m, n, x.shape[0], place, before is not None
        return torch.stack(gather_tensors("halo", edge, place))

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.place.group)  # every rank's reads of every rank's rows
        STATS.add("halo backward", grad.numel() * grad.element_size(), ctx.place.world - 1)
        mine = grad[ctx.place.rank]
        m, n, T = ctx.m, ctx.n, ctx.T
        gx = mine.new_zeros((T, *mine.shape[1:]))
        gx[T - n :] = mine[2 * m - n :]
        return (mine[:m] if ctx.has_before else None), gx, None, None


def halo(x, m: int, before, place: Place, lengths: list[int]):
    """(rows before this shard, last m rows of the whole sequence), each (m, *x.shape[1:]).

    x: this rank's shard in time order; before: the m rows preceding the sequence (first rank
    only; zeros when None); lengths: every rank's shard length, by group rank."""
    if m == 0:
        return x[:0], x[:0]
    edges = _GatherEdges.apply(before, x, m, place)
    # Group rank order is time order: the first rank's rows before the sequence, then every
    # rank's own last rows.
    pieces = [edges[0, :m]] + [edges[r, 2 * m - min(m, T) :] for r, T in enumerate(lengths)]
    ahead = torch.cat(pieces[: place.rank + 1])
    everything = torch.cat(pieces)
    return ahead[ahead.shape[0] - m :], everything[everything.shape[0] - m :]
