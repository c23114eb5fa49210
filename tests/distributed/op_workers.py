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


def op_under_autocast(rank, world):
    """Inside torch.autocast, mixed real float dtypes run in the widest, as with one process: a
    float32 decay parameter beside bfloat16 impulses, and a float32 initial state that only the
    first rank holds (the others, all bfloat16, must run in float32 as well). Outputs, final
    states (the same on every rank) and gradients, each in its input's dtype, against one
    process under autocast."""
    import torch.distributed as dist

    lengths = [3, 1, 5][:world]
    T, start = sum(lengths), sum(lengths[:rank])
    rows = slice(start, start + lengths[rank])
    bf16, f32 = torch.bfloat16, torch.float32
    for reverse, dtypes in itertools.product((False, True), ((f32, bf16, None), (bf16, bf16, f32))):
        a, x, h0, w, v = whole_sequence(11, T, (4,), "near_one", dtypes[2] is not None)
        leaves = [t.to(d).requires_grad_() for t, d in zip((a, x, h0), dtypes) if d is not None]
        with torch.autocast("cpu", dtype=bf16):
            h, final = plrnn.linear_recurrence(
                *leaves, reverse=reverse, return_final_state=True, backend="reference"
            )
        want = torch.autograd.grad((h * w).sum() + (final * v).sum(), leaves)

        first = rank == (world - 1 if reverse else 0)
        mine = [t.detach()[rows].clone().requires_grad_() for t in leaves[:2]]
        if len(leaves) == 3 and first:
            mine.append(leaves[2].detach().clone().requires_grad_())
        with torch.autocast("cpu", dtype=bf16):
            got_h, got_final = pd.linear_recurrence(
                mine[0], mine[1], mine[2] if len(mine) == 3 else None, reverse=reverse,
                return_final_state=True, backend="cpu_serial",
            )
        tag = f"rank {rank}/{world} reverse={reverse} dtypes={dtypes}"
        assert got_h.dtype == h.dtype == got_final.dtype == f32, tag
        got = torch.autograd.grad(
            (got_h * w[rows]).sum() + (got_final * v).sum() / world, mine
        )
        finals = [torch.empty_like(got_final) for _ in range(world)]
        dist.all_gather(finals, got_final.detach())
        assert all(torch.equal(f, finals[0]) for f in finals), f"{tag}: final states differ"
        checks = [("h", got_h, h[rows]), ("final", got_final, final)]
        checks += [(f"grad {i}", g, wv[rows]) for i, (g, wv) in enumerate(zip(got[:2], want))]
        if len(mine) == 3:
            checks.append(("grad h0", got[2], want[2]))
        for name, g, wv in checks:
            assert g.dtype == wv.dtype, f"{tag}: {name} dtype {g.dtype}, want {wv.dtype}"
            err = relerr(g.detach().double(), wv.detach().double())
            tol = 1e-5 if wv.dtype == f32 else 1e-2  # the last bit of a bfloat16 gradient
            assert err <= tol, f"{tag}: {name} relative error {err:.2e}"


def half_precision_accumulates_in_float32(rank, world):
    """float16/bfloat16 shards reduce to their totals in float32, as the local kernels accumulate:
    with one row per chunk of the streaming reduction, a state rounded to the inputs' dtype
    between chunks would be rounded at every step. Against the float64 recurrence of the same
    (rounded) inputs, a shard may then be off by the rounding of its output and of its carry-in,
    under one unit in the last place."""
    scan_module.CHUNK_ELEMENTS = 4  # one row per chunk
    lengths = [700, 500, 800][:world]
    T, start = sum(lengths), sum(lengths[:rank])
    rows = slice(start, start + lengths[rank])
    failures = []
    for dtype, reverse in itertools.product((torch.bfloat16, torch.float16), (False, True)):
        a, x, _, _, _ = whole_sequence(5, T, (4,), "near_one", False)
        a = (1 - 10 * (1 - a)).to(dtype)  # decays in [0.99, 1], memory ~100 steps
        x = x.abs().to(dtype)
        want = plrnn.linear_recurrence(a.double(), x.double(), reverse=reverse,
                                       backend="reference")
        got = pd.linear_recurrence(a[rows], x[rows], reverse=reverse, backend="cpu_serial")
        err = relerr(got.double(), want[rows])
        if not err <= 0.75 * torch.finfo(dtype).eps:
            failures.append(f"rank {rank} {dtype} reverse={reverse}: relative error {err:.2e}")
    assert not failures, "\n".join(failures)


def one_dimensional_shards(rank, world):
    """(T_r,) shards, one channel and no trailing dims, as plrnn.linear_recurrence takes them:
    the call without the final state had failed on every rank."""
    lengths = [3, 1, 4][:world]
    T, start = sum(lengths), sum(lengths[:rank])
    rows = slice(start, start + lengths[rank])
    g = torch.Generator().manual_seed(7)
    a, x = torch.rand(T, generator=g, dtype=torch.float64), torch.randn(T, generator=g,
                                                                        dtype=torch.float64)
    h0 = torch.randn((), generator=g, dtype=torch.float64)
    up = torch.randn(T, generator=g, dtype=torch.float64)
    for reverse in (False, True):
        first = (world - 1) if reverse else 0
        whole = [t.clone().requires_grad_() for t in (a, x, h0)]
        want = plrnn.linear_recurrence(*whole, reverse=reverse, backend="reference")
        want_grads = torch.autograd.grad(want, whole, up)
        mine = [t[rows].clone().requires_grad_() for t in (a, x)]
        h0_r = whole[2].detach().clone().requires_grad_() if rank == first else None
        h = pd.linear_recurrence(*mine, h0_r, reverse=reverse)
        assert h.shape == (lengths[rank],)
        got = torch.autograd.grad(h, [*mine, *([h0_r] if h0_r is not None else [])], up[rows])
        assert relerr(h, want[rows]) <= RTOL
        for got_g, want_g in zip(got, (want_grads[0][rows], want_grads[1][rows], want_grads[2])):
            assert relerr(got_g, want_g) <= RTOL, (rank, reverse)
