"""Sequence-parallel layers: GILR, GILR-LSTM, QRNN and SRU with their time axis split across the
ranks of a process group.

A layer asks two things of its time axis (plrnn.layers.base.LocalTime): the linear recurrence,
and a few steps before its first one. ShardedTime answers both across ranks: the recurrence with
plrnn.distributed.linear_recurrence (O(C) numbers exchanged), the steps before with a halo of only
those steps. Everything else a layer does is pointwise in time and stays local.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..layers.base import StackedRecurrence
from .group import agree, locate
from .halo import halo
from .scan import linear_recurrence


class ShardedTime:
    """The time axis of one forward call, split across `group` in rank order."""

    def __init__(self, group, backend: str, x: torch.Tensor) -> None:
        self.group, self.backend = group, backend
        self.place = locate(group, reverse=False)
        described = agree(
            {
                "T": x.shape[0],
                "channels": tuple(x.shape[1:]),
                "dtype": str(x.dtype),
                "device_type": x.device.type,
                "reverse": False,
                "grad": torch.is_grad_enabled(),
                "final": True,
            },
            None,
            self.place,
        )
        self.lengths = [d["T"] for d in described]

    def scan(self, decays, impulses, h0):
        return linear_recurrence(
            decays, impulses, h0, group=self.group, backend=self.backend, return_final_state=True
        )

    def window(self, x, m: int, before):
        if before is not None and not self.place.first:
            raise ValueError(
                f"the state before the sequence belongs to rank 0; rank {self.place.rank} "
                "must pass None"
            )
        return halo(x, m, before, self.place, self.lengths)


def shard_sequence(model: nn.Module, group=None) -> nn.Module:
    """Runs every plrnn layer inside `model` over a time axis split across `group` (default: the
    world), in rank order; group=None with `dist` uninitialised is an error. Returns the model.

    Each rank then passes its own time shard (T_r >= 1 steps; batch and features the same on every
    rank), the recurrent state only on rank 0, and gets its slice of the output; the returned
    final state is that of the whole sequence, on every rank. The parameter gradients of each
    rank are its share: `sync_gradients(model, group)` sums them into the single-process
    gradients. `unshard_sequence(model)` undoes it.
    """
    locate(group, reverse=False)  # fails now, not at the first forward
    for module in model.modules():
        if isinstance(module, StackedRecurrence):
            module.process_group = group if group is not None else dist.group.WORLD
    return model


def unshard_sequence(model: nn.Module) -> nn.Module:
    """Back to one process holding the whole sequence."""
    for module in model.modules():
        if isinstance(module, StackedRecurrence):
            module.process_group = None
    return model


def sync_gradients(model: nn.Module, group=None) -> None:
    """Sums every parameter's gradient over the ranks of the sequence group, so each rank holds
    the gradient of the whole sequence's loss (the sum of the ranks' losses), as one process
    would compute it. With data parallelism on top, run this over the sequence group and let DDP
    (or an all_reduce) average over the data-parallel group, in either order."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
