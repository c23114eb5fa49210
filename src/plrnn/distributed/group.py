"""Where this process sits in the sequence, and the checks that every rank agrees before any of
them runs a kernel or waits in a collective.

Ranks hold contiguous time shards in the order of their rank within the process group. A check
that fails on one rank must fail on all of them: a rank that raised alone would leave the others
waiting forever in the next collective. So each rank runs its local checks, catches what they
raise, and every rank gathers every rank's description (shapes, dtype, device type, flags, error)
in one `all_gather_object` and raises the same error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist


class ShardMismatchError(ValueError):
    """The ranks' shards do not form one sequence (raised on every rank alike)."""


@dataclass
class CommStats:
    """What this rank's collectives carried, in bytes of tensor payload.

    `sent` counts what this rank contributes times the number of other ranks that receive it
    (the logical traffic, whatever algorithm the backend uses); `calls` counts collectives,
    including the metadata check."""

    sent: int = 0
    calls: int = 0
    per_op: dict[str, int] = field(default_factory=dict)

    def add(self, op: str, nbytes: int, receivers: int) -> None:
        self.sent += nbytes * receivers
        self.calls += 1
        self.per_op[op] = self.per_op.get(op, 0) + nbytes * receivers


STATS = CommStats()


def comm_stats(reset: bool = False) -> CommStats:
    """The running totals of this process (a copy); reset=True starts them again from zero."""
    snapshot = CommStats(STATS.sent, STATS.calls, dict(STATS.per_op))
    if reset:
        STATS.sent, STATS.calls = 0, 0
        STATS.per_op.clear()
    return snapshot


@dataclass(frozen=True)
class Place:
    """This rank's shard among `world` shards: `pos` counts in the recurrence's own order, so
    pos 0 holds the first steps the recurrence takes (the last shard when reverse=True)."""

    group: object
    rank: int  # within the group
    world: int
    pos: int
    reverse: bool

    @property
    def first(self) -> bool:
        return self.pos == 0

    @property
    def last(self) -> bool:
        return self.pos == self.world - 1

    def in_recurrence_order(self, by_rank: list) -> list:
        """A per-rank list reordered so that index p is the shard at recurrence position p."""
        return by_rank[::-1] if self.reverse else list(by_rank)


def locate(group, reverse: bool) -> Place:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "plrnn.distributed needs an initialised default process group: call "
            "torch.distributed.init_process_group (torchrun sets the environment for it)"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError(
            f"this process (global rank {dist.get_rank()}) is not a member of the process group "
            "it was given; every rank holding a shard must be in the group, in time order"
        )
    world = dist.get_world_size(group)
    return Place(group, rank, world, world - 1 - rank if reverse else rank, reverse)


def gather_tensors(op: str, t: torch.Tensor, place: Place) -> list[torch.Tensor]:
    """Every rank's `t` (same shape, dtype and device on all of them), indexed by group rank."""
    parts = [torch.empty_like(t) for _ in range(place.world)]
    dist.all_gather(parts, t.contiguous(), group=place.group)
    STATS.add(op, t.numel() * t.element_size(), place.world - 1)
    return parts


def agree(description: dict, error: BaseException | None, place: Place) -> list[dict]:
    """Gathers every rank's description of its call and raises on every rank, with the same
    message, if any rank failed its own checks or the ranks disagree. Returns the descriptions,
    indexed by group rank."""
    mine = dict(description, error=None if error is None else f"{type(error).__name__}: {error}")
    everyone: list[dict] = [None] * place.world  # type: ignore[list-item]
    # Under torch.func.grad the byte tensors that carry the objects would be wrapped, without
    # storage to read back; the exchange must still complete to refuse the call on every rank.
    with torch._C._DisableFuncTorch():
        dist.all_gather_object(everyone, mine, group=place.group)
    STATS.add("check", 0, place.world - 1)
    failed = [(r, d["error"]) for r, d in enumerate(everyone) if d["error"]]
    if failed:
        if error is not None:
            raise error  # this rank's own error, as a single process would raise it
        lines = "; ".join(f"rank {r}: {msg}" for r, msg in failed)
        raise ShardMismatchError(f"another rank's shard was refused ({lines})")
    for key, what in CONSISTENT.items():
        if key not in mine:
            continue
        if key == "dtype" and all(d.get("autocast") for d in everyone):
            continue  # under torch.autocast the ranks run in the widest of their float dtypes
        values = [d[key] for d in everyone]
        if any(v != values[0] for v in values):
            listing = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
            raise ShardMismatchError(f"every rank must pass the same {what}; got {listing}")
    return everyone


CONSISTENT = {
    "channels": "shape beyond the time axis",
    "dtype": "dtype",
    "device_type": "device type",
    "reverse": "reverse flag",
    "grad_mode": "grad mode (torch.is_grad_enabled(); all ranks run the backward together)",
    "final": "final_state request",
    "model": "model (layer type, its options, batch_first and parameter shapes)",
}


def wants_grad(everyone: list[dict]) -> bool:
    """Whether the call records a graph on every rank: as soon as one rank's inputs require
    grad, every rank must take part in the backward's collective, even a rank whose own inputs
    need no gradient (its loss still reaches the carry-in of the rank that asked). A rank that
    cannot, being in no-grad mode, is refused on every rank."""
    asking = [r for r, d in enumerate(everyone) if d["wants_grad"]]
    if not asking:
        return False
    off = [r for r, d in enumerate(everyone) if not d["grad_enabled"]]
    if off:
        raise ShardMismatchError(
            f"the inputs of rank(s) {asking} require grad, but rank(s) {off} run without grad "
            "mode (torch.no_grad or inference_mode): every rank must run the backward together"
        )
    return True
