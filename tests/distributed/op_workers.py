"""Rank-side checks of plrnn.distributed.linear_recurrence (run by test_op.py through
launch.run_ranks). Every rank builds the whole sequence from a seed, runs the single-process op
on it in float64, and compares its own slice and gradients."""

from __future__ import annotations

import itertools
import zlib

import torch

import plrnn
import plrnn.distributed as pd
from plrnn.distributed import scan as scan_module

RTOL = 1e-12


def shard_lengths(world: int) -> list[list[int]]:
    """Uneven splits, T_r = 1 and (with several ranks) an empty shard among them."""
    return {
        1: [[1], [37]],
        2: [[1, 9], [13, 4]],
        3: [[5, 1, 7], [2, 0, 3]],
        4: [[1, 3, 1, 6], [6, 5, 4, 3]],
    }[world]


def whole_sequence(seed, T, channels, decays, with_h0):
    g = torch.Generator().manual_seed(seed)
    shape = (T, *channels)
    if decays == "near_one":
        a = 1 - 1e-3 * torch.rand(shape, generator=g, dtype=torch.float64)
    elif decays == "near_zero":
        a = 1e-3 * torch.rand(shape, generator=g, dtype=torch.float64)
    else:
        a = torch.rand(shape, generator=g, dtype=torch.float64)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    h0 = torch.randn(channels, generator=g, dtype=torch.float64) if with_h0 else None
    w = torch.randn(shape, generator=g, dtype=torch.float64)  # dL/dh
    v = torch.randn(channels, generator=g, dtype=torch.float64)  # dL/d(final state)
    return a, x, h0, w, v


def relerr(got, want) -> float:
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    return (got - want).abs().max().item() / scale if want.numel() else 0.0


def compare(rank, world, lengths, reverse, with_h0, want_final, decays, backend, sharded):
    """Failures (strings) of `sharded(a, x, h0, ...)` against one process on the whole
    sequence."""
    T, channels = sum(lengths), (3, 1)
    seed = zlib.crc32(repr((lengths, reverse, with_h0, decays)).encode())  # equal on every rank
    a, x, h0, w, v = whole_sequence(seed, T, channels, decays, with_h0)
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (a, x, h0)]
    h = plrnn.linear_recurrence(*leaves, reverse=reverse, backend="reference")
    final = h[0] if reverse else h[-1]
    loss = (h * w).sum() + ((final * v).sum() if want_final else 0)
    want = torch.autograd.grad(loss, [t for t in leaves if t is not None], allow_unused=True)

    start = sum(lengths[:rank])
    rows = slice(start, start + lengths[rank])
    first = rank == (world - 1 if reverse else 0)
    mine = [a[rows].clone().requires_grad_(), x[rows].clone().requires_grad_()]
    my_h0 = h0.clone().requires_grad_() if with_h0 and first else None
    got_h, got_final = sharded(mine[0], mine[1], my_h0, reverse, want_final, backend)
    my_loss = (got_h * w[rows]).sum()
    if want_final:
        my_loss = my_loss + (got_final * v).sum() / world  # the ranks' losses sum to one's
    inputs = mine + ([my_h0] if my_h0 is not None else [])
    got = torch.autograd.grad(my_loss, inputs, allow_unused=True)

    tag = (
        f"rank {rank}/{world} lengths={lengths} reverse={reverse} h0={with_h0} "
        f"final={want_final} {decays} {backend}"
    )
    failures = []
    checks = [("h", got_h, h[rows]), ("dL/da", got[0], want[0][rows])]
    checks.append(("dL/dx", got[1], want[1][rows]))
    if want_final:
        checks.append(("final state", got_final, final))
    if my_h0 is not None:
        checks.append(("dL/dh0", got[2], want[2]))
    for name, g, wv in checks:
        if g is None:
            failures.append(f"{tag}: {name} missing")
            continue
        err = relerr(g.detach(), wv.detach())
        if not err <= RTOL:
            failures.append(f"{tag}: {name} relative error {err:.2e}")
    return failures


def distributed_op(a, x, h0, reverse, want_final, backend):
    if want_final:
        return pd.linear_recurrence(
            a, x, h0, reverse=reverse, backend=backend, return_final_state=True
        )
    return pd.linear_recurrence(a, x, h0, reverse=reverse, backend=backend), None


def restarting_op(a, x, h0, reverse, want_final, backend):
    """The bug model-parallel frameworks ship: every shard starts from zero."""
    h = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=backend)
    final = h[0] if reverse else h[-1]
    return h, final


def op_matches_one_process(rank, world):
    scan_module.CHUNK_ELEMENTS = 7  # several chunks per shard in the streaming reductions
    failures = []
    cases = itertools.product(
        shard_lengths(world),
        (False, True),  # reverse
        (False, True),  # initial state
        (False, True),  # final state in the loss
        ("uniform", "near_one", "near_zero"),
    )
    for lengths, reverse, with_h0, want_final, decays in cases:
        backend = "torch" if decays == "near_zero" else "cpu_serial"
        failures += compare(
            rank, world, lengths, reverse, with_h0, want_final, decays, backend, distributed_op
        )
    assert not failures, "\n".join(failures)


def bytes_are_counted(rank, world):
    """One forward and backward exchange 2C numbers each way per rank, whatever T is."""
    C = 6
    a = torch.rand(50 + rank, C, dtype=torch.float64, requires_grad=True)
    x = torch.randn(50 + rank, C, dtype=torch.float64, requires_grad=True)
    pd.comm_stats(reset=True)
    pd.linear_recurrence(a, x).sum().backward()
    stats = pd.comm_stats()
    each = 2 * C * 8 * (world - 1)
    assert stats.per_op == {"check": 0, "forward": each, "backward": each}, stats


def restarting_state_fails(rank, world):
    """Negative control: the bug model-parallel frameworks ship, a state restarted at every
    shard, fails the very comparison the op passes (on every rank: later shards in the forward,
    earlier ones in the gradients)."""
    lengths = shard_lengths(world)[0]  # no empty shard: every rank has something to get wrong
    failures = compare(
        rank, world, lengths, False, True, False, "uniform", "cpu_serial", restarting_op
    )
    assert failures, f"rank {rank}: restarting the state at each shard passed the test"
    assert not compare(
        rank, world, lengths, False, True, False, "uniform", "cpu_serial", distributed_op
    )


def gradients_asked_by_some_ranks(rank, world):
    """Gradients wanted on some ranks only (a learned initial state with fixed inputs, or one
    rank's decays): every rank's loss still reaches them. And a second backward through a
    retained graph adds the same gradients again."""
    lengths = [4, 2, 5][:world]
    T, start = sum(lengths), sum(lengths[:rank])
    rows = slice(start, start + lengths[rank])
    a, x, h0, w, _ = whole_sequence(7, T, (3,), "near_one", True)
    failures = []
    # (tensor that asks, on which rank): "h0" on rank 0, "a" on the last rank
    for name, asking in (("h0", 0), ("a", world - 1)):
        leaf = (h0 if name == "h0" else a).clone().requires_grad_()
        whole = plrnn.linear_recurrence(
            leaf if name == "a" else a, x, leaf if name == "h0" else h0, backend="reference"
        )
        (want,) = torch.autograd.grad((whole * w).sum(), [leaf])
        mine_a = a[rows].clone().requires_grad_(name == "a" and rank == asking)
        mine_h0 = h0.clone().requires_grad_(name == "h0") if rank == 0 else None
        h = pd.linear_recurrence(mine_a, x[rows], mine_h0, backend="cpu_serial")
        loss = (h * w[rows]).sum()
        assert loss.requires_grad, f"rank {rank}: {name} asked on rank {asking}, no graph here"
        loss.backward(retain_graph=True)
        loss.backward()
        if rank == asking:
            got = mine_h0.grad if name == "h0" else mine_a.grad
            wanted = 2 * (want if name == "h0" else want[rows])
            err = relerr(got, wanted)
            if not err <= RTOL:
                failures.append(f"rank {rank}: dL/d{name} (asked alone), relative error {err:.2e}")
    assert not failures, "\n".join(failures)
