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
from ..recurrence import transforms
from .group import Place, ShardMismatchError, agree, locate
from .halo import halo
from .scan import linear_recurrence


class ShardedTime:
    """The time axis of one forward call, split across `group` in rank order."""

    def __init__(self, group, backend: str, place: Place, lengths: list[int]) -> None:
        self.group, self.backend, self.place, self.lengths = group, backend, place, lengths

    # Under torch.compile the exchanges run eagerly (graph breaks), the layers' pointwise rest
    # compiled: dynamo cannot trace a process group or all_gather_object.
    @classmethod
    @torch.compiler.disable
    def open(cls, group, backend: str, x, state, checks, time_dim: int = 0, model=None):
        """The time axis of a layer's call on input `x` (time along `time_dim`) with `state`
        (None on every rank but 0), and what `checks(x, state)` returns (the layers: their
        per-layer states). Each rank runs its own checks, then every rank learns every rank's
        outcome and shard length in one exchange: a call refused on one rank raises on all.
        `model` (the layer type, its options, batch_first and parameter shapes) must be the same
        on every rank: ranks running different models would wait on each other's collectives
        forever."""
        place = locate(group, reverse=False)
        error, per_layer, described = None, None, {}
        try:
            if state is not None and not place.first:
                raise ValueError(
                    f"the state before the sequence belongs to rank 0; rank {place.rank} must "
                    "pass None"
                )
            if transforms.active():
                # Refused here, before any exchange, so that a rank under a transform fails
                # with the others instead of leaving them in the next collective (the halo's
                # exchange and autograd.Function cannot run under one, even on one rank).
                raise RuntimeError(
                    "layers sharded with plrnn.distributed take torch.autograd only, not "
                    "torch.func's transforms or forward-mode AD"
                )
            per_layer = checks(x, state)
            described = {
                "T": x.shape[time_dim],
                "channels": tuple(n for d, n in enumerate(x.shape) if d != time_dim),
                "dtype": str(x.dtype),
                "device_type": x.device.type,
                "grad_mode": torch.is_grad_enabled(),
                "model": model,
            }
        except (TypeError, ValueError, RuntimeError) as e:
            error = e
        everyone = agree(described, error, place)
        return cls(group, backend, place, [d["T"] for d in everyone]), per_layer

    def scan(self, decays, impulses, h0):
        return linear_recurrence(
            decays, impulses, h0, group=self.group, backend=self.backend, return_final_state=True
        )

    @torch.compiler.disable
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
    (or an all_reduce) average over the data-parallel group, in either order.

    group: default, the group `shard_sequence` gave the model's layers (the world if it gave
    none; an error if its layers were sharded over different groups).

    Every parameter that requires grad takes part, also where this rank's loss did not reach it
    (its grad None: zeros here); one that no rank's loss reached keeps grad None on every rank."""
    if group is None:
        group = _sharded_group(model)
    # The same parameters, in the same order, on every rank: ranks whose losses reach different
    # parameters (a head on the last rank's output alone) would otherwise sum unrelated
    # gradients of equal sizes, leave a parameter unsynced on some ranks, or wait forever on
    # buffers of different sizes.
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters(), torch.empty(0)).device
    _same_sizes(params, device, group)
    if not params:
        return
    pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    reached = torch.tensor([p.grad is not None for p in params], dtype=pieces[0].dtype,
                           device=pieces[0].device)
    flat = torch.cat([*pieces, reached])
    dist.all_reduce(flat, group=group)
    offset = 0
    for p, anywhere in zip(params, flat[flat.numel() - len(params) :].tolist()):
        summed = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        if p.grad is not None:
            p.grad.copy_(summed)
        elif anywhere:
            p.grad = summed.to(p.dtype, copy=True)


def _sharded_group(model: nn.Module):
    groups = {id(m.process_group.group): m.process_group.group for m in model.modules()
              if isinstance(m, StackedRecurrence) and m.process_group is not None}
    if len(groups) > 1:
        raise ValueError("the model's layers were sharded over different process groups; pass "
                         "sync_gradients the sequence group to sum over")
    return next(iter(groups.values()), None)


def _same_sizes(params: list, device: torch.device, group) -> None:
    """ShardMismatchError on every rank unless every rank syncs as many parameters of as many
    elements (one all_reduce of four numbers, the same size everywhere)."""
    sizes = [len(params), sum(p.numel() for p in params)]
    both = torch.tensor([*sizes, *(-n for n in sizes)], dtype=torch.int64, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    most, least = both[:2].tolist(), [-n for n in both[2:].tolist()]
    if most != least:
        raise ShardMismatchError(
            "every rank must sync the same parameters (those with requires_grad=True); the ranks "
            f"hold {least[0]}-{most[0]} of them, {least[1]}-{most[1]} elements (this rank: "
            f"{sizes[0]}, {sizes[1]})"
        )
