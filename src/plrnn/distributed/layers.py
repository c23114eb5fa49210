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
from .group import Place, agree, locate
from .halo import halo
from .scan import linear_recurrence


class ShardedTime:
    """The time axis of one forward call, split across `group` in rank order."""

    def __init__(self, group, backend: str, place: Place, lengths: list[int]) -> None:
        self.group, self.backend, self.place, self.lengths = group, backend, place, lengths

    @classmethod
    def open(cls, group, backend: str, x, state, checks, time_dim: int = 0):
        """The time axis of a layer's call on input `x` (time along `time_dim`) with `state`
        (None on every rank but 0), and what `checks(x, state)` returns (the layers: their
        per-layer states). Each rank runs its own checks, then every rank learns every rank's
        outcome and shard length in one exchange: a call refused on one rank raises on all."""
        place = locate(group, reverse=False)
        error, per_layer, described = None, None, {}
        try:
            if state is not None and not place.first:
                raise ValueError(
                    f"the state before the sequence belongs to rank 0; rank {place.rank} must "
                    "pass None"
                )
            per_layer = checks(x, state)
            described = {
                "T": x.shape[time_dim],
                "channels": tuple(n for d, n in enumerate(x.shape) if d != time_dim),
                "dtype": str(x.dtype),
                "device_type": x.device.type,
                "grad_mode": torch.is_grad_enabled(),
            }
        except (TypeError, ValueError, RuntimeError) as e:
            error = e
        everyone = agree(described, error, place)
        return cls(group, backend, place, [d["T"] for d in everyone]), per_layer

    def scan(self, decays, impulses, h0):
        return linear_recurrence(
            decays, impulses, h0, group=self.group, backend=self.backend, return_final_state=True
        )

    def window(self, x, m: int, before):
        return halo(x, m, before, self.place, self.lengths)


class SharedGroup:
    """A layer's process group. A copy of the model (copy.deepcopy) shares it; a pickled model
    (torch.save) loads unsharded, as a process group lives in the process that made it."""

    def __init__(self, group) -> None:
        self.group = group

    def __deepcopy__(self, memo) -> SharedGroup:
        return self

    def __reduce__(self):
        return _unsharded, ()


def _unsharded() -> None:
    return None


def shard_sequence(model: nn.Module, group=None) -> nn.Module:
    """Runs every plrnn layer inside `model` over a time axis split across `group` (default: the
    world), in rank order; group=None with `dist` uninitialised is an error. Returns the model.

    Each rank then passes its own time shard (T_r >= 1 steps; batch and features the same on every
    rank), the recurrent state only on rank 0, and gets its slice of the output; the returned
    final state is that of the whole sequence, on every rank. The parameter gradients of each
    rank are its share: `sync_gradients(model, group)` sums them into the single-process
    gradients. `unshard_sequence(model)` undoes it. A copy of the model (copy.deepcopy) runs
    over the same group; a pickled one (torch.save) loads unsharded.
    """
    locate(group, reverse=False)  # fails now, not at the first forward
    for module in model.modules():
        if isinstance(module, StackedRecurrence):
            module.process_group = SharedGroup(group if group is not None else dist.group.WORLD)
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
