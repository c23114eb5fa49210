"""Rank-side checks that a bad call fails on every rank, before any kernel, with no rank left
waiting (run by test_errors.py). After each refused call a good one must still go through, which
it could not if any rank were stuck in a collective."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.distributed as dist

import plrnn
import plrnn.distributed as pd


def good_call(rank):
    a = torch.rand(3 + rank, 4, dtype=torch.float64)
    h = pd.linear_recurrence(a, torch.ones_like(a))
    assert h.shape == a.shape


def without_grad_on_rank_1(rank, a, x):
    with torch.set_grad_enabled(rank != 1):
        return pd.linear_recurrence(a, x)


def every_rank_refuses(rank, world):
    def shard(T=5, C=4, dtype=torch.float64):
        return torch.rand(T, C, dtype=dtype), torch.randn(T, C, dtype=dtype)

    a, x = shard()
    bad_calls = {
        # what differs between ranks (rank 1 differs): every rank raises ShardMismatchError
        "channels differ": (lambda: pd.linear_recurrence(*shard(C=4 + rank)),
                            "shape beyond the time axis"),
        "dtypes differ": (
            lambda: pd.linear_recurrence(*shard(dtype=torch.float32 if rank else torch.float64)),
            "dtype",
        ),
        "reverse differs": (lambda: pd.linear_recurrence(a, x, reverse=bool(rank)), "reverse"),
        "grad mode off on a rank while another asks for gradients": (
            lambda: without_grad_on_rank_1(rank, a.clone().requires_grad_(rank == 0), x),
            "grad mode",
        ),
        "final state asked by one rank": (
            lambda: pd.linear_recurrence(a, x, return_final_state=rank == 0),
            "final_state",
        ),
        # one rank's own argument is wrong: it raises the single-process error, the others say
        # which rank refused and why
        "decays and impulses differ on rank 1": (
            lambda: pd.linear_recurrence(a, x[:, : 4 - rank]),
            "broadcast to it",
        ),
        "initial state on rank 1": (
            lambda: pd.linear_recurrence(a, x, torch.zeros(4, dtype=torch.float64)),
            "initial_state belongs to",
        ),
        "unknown backend on rank 1": (
            lambda: pd.linear_recurrence(a, x, backend="cpu_serial" if rank == 0 else "nope"),
            "unknown backend",
        ),
        "integer decays on rank 0": (
            lambda: pd.linear_recurrence(a.long() if rank == 0 else a, x),
            "float16, bfloat16, float32, float64",
        ),
        # The single-process op's signal to take its jagged path had reached the user.
        "jagged impulses on rank 1": (
            lambda: pd.linear_recurrence(a[:, 0], jagged(x) if rank else x[:, 0]),
            "takes dense (T_r, *) shards, not jagged nested tensors",
        ),
    }
    for what, (call, needle) in bad_calls.items():
        with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
            call()
        assert needle in str(info.value), f"rank {rank}, {what}: {info.value}"
        good_call(rank)

    # A process outside the group it passes: only that rank can tell, and it must not wait.
    solo = dist.new_group([0])
    if rank == 1:
        with pytest.raises(ValueError, match="not a member of the process group"):
            pd.linear_recurrence(a, x, group=solo)
    good_call(rank)


def jagged(x):
    return torch.nested.nested_tensor([x[:2], x[2:]], layout=torch.jagged)


def every_rank_refuses_a_bad_layer_call(rank, world):
    """A sharded layer's call refused on one rank raises on every rank before any collective,
    and the next good call (forward and backward) goes through on all of them."""
    from torch.nn.utils.rnn import pack_sequence

    torch.manual_seed(0)  # the same parameters on every rank
    model = pd.shard_sequence(plrnn.QRNN(3, 4, num_layers=2, window=3).double())
    other = pd.shard_sequence(plrnn.QRNN(3, 4, num_layers=2 + rank, window=3).double())
    surrogate = "same_step" if rank else "previous_step"
    surrogates = pd.shard_sequence(plrnn.GILRLSTM(3, 4, surrogate=surrogate).double())
    batch_first = pd.shard_sequence(plrnn.QRNN(3, 4, batch_first=bool(rank)).double())

    def x(T=5, features=3, dtype=torch.float64):
        return torch.randn(T, 2, features, dtype=dtype)

    state = (torch.zeros(2, 2, 4, dtype=torch.float64),
             [torch.zeros(2, 2, 3, dtype=torch.float64), torch.zeros(2, 2, 4, dtype=torch.float64)])

    def good():
        y, _ = model(x(4 + rank), state if rank == 0 else None)
        y.sum().backward()

    bad_calls = {
        "wrong input size on rank 1": (lambda: model(x(features=3 - rank)), "input_size=3"),
        "no time step on rank 1": (lambda: model(x(T=5 - 5 * rank)), "at least one time step"),
        "float32 on rank 0": (
            lambda: model(x(dtype=torch.float32 if rank == 0 else torch.float64)), "dtype"
        ),
        "state on rank 1": (lambda: model(x(), state), "belongs to rank 0"),
        "a bad state on rank 0": (
            lambda: model(x(), (state[0][:1], state[1]) if rank == 0 else None), "shape"
        ),
        "packed input on rank 1": (
            lambda: model(pack_sequence([x()[:, 0]]) if rank == 1 else x()), "PackedSequence"
        ),
        "batch differs": (lambda: model(torch.randn(5, 2 + rank, 3, dtype=torch.float64)),
                          "shape beyond the time axis"),
        "grad mode differs": (lambda: grad_mode_on_rank_0(rank, model, x()), "grad mode"),
        "a deeper model on rank 1": (lambda: other(x()), "same model"),
        # Same parameter shapes, other exchanges: rank 1 had aborted in gloo.
        "another surrogate on rank 1": (lambda: surrogates(x()), "same model"),
        # Same parameter shapes, square input: the ranks had read different axes as time.
        "batch_first on rank 1": (lambda: batch_first(x(T=2)), "same model"),
    }
    for what, (call, needle) in bad_calls.items():
        with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
            call()
        assert needle in str(info.value), f"rank {rank}, {what}: {info.value}"
        good()


def grad_mode_on_rank_0(rank, model, x):
    with torch.set_grad_enabled(rank == 0):
        return model(x)


def a_transform_on_one_rank_is_refused_on_every_rank(rank, world):
    """torch.func's transforms and forward-mode AD are refused across processes (torch refuses
    the sharded op's autograd.Function there): on every rank, before any collective, when one
    rank alone runs under one, and after that a good call (forward and backward) goes through."""
    import torch.autograd.forward_ad as fwAD

    a = torch.rand(3 + rank, 4, dtype=torch.float64)
    x = torch.randn_like(a)
    model = pd.shard_sequence(plrnn.QRNN(4, 3, window=2).double())

    def dual(f):
        with fwAD.dual_level():
            return f(fwAD.make_dual(a, torch.ones_like(a)))

    transforms = {
        "grad": lambda f: torch.func.grad(lambda t: f(t).sum())(a),
        "vmap": lambda f: torch.func.vmap(f)(a[None]),
        "forward-mode AD": dual,
    }
    calls = {
        "op": lambda t: pd.linear_recurrence(t, x),
        "layer": lambda t: model(t[:, None])[0],
    }
    for (tname, transform), (cname, call) in itertools.product(transforms.items(), calls.items()):
        with pytest.raises((RuntimeError, ValueError)) as info:
            if rank == 0:
                transform(call)
            else:
                call(a.clone().requires_grad_()).sum().backward()
        needle = "torch.autograd only" if rank == 0 else "rank 0: RuntimeError"
        assert needle in str(info.value), f"rank {rank}, {tname} of the {cname}: {info.value}"
        good_call(rank)
        y, _ = model(torch.randn(2 + rank, 1, 4, dtype=torch.float64))
        y.sum().backward()


def double_backward_is_refused(rank, world):
    """A second backward through the sharded op or a sharded layer raises, as through
    plrnn.linear_recurrence: the first backward's gradients had come back without a graph, and a
    gradient penalty on them was dropped without a word."""
    a = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    qrnn = pd.shard_sequence(plrnn.QRNN(3, 4, window=2).double())  # its halo: one more Function
    calls = (
        lambda: pd.linear_recurrence(a, x),
        lambda: qrnn(x[:, None])[0],
    )
    for call in calls:
        (g,) = torch.autograd.grad(call().square().sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="differentiate twice"):
            g.square().sum().backward()
        good_call(rank)
