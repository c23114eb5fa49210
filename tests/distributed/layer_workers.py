"""Rank-side checks of the sequence-parallel layers (run by test_layers.py): each rank runs the
model on its time shard and must get its slice of the single-process output, the whole
sequence's final state, its slice of dL/dx, and, summed over ranks, every parameter gradient."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.distributed as dist

import plrnn
import plrnn.distributed as pd

RTOL = 1e-12


def models(input_size=3, hidden=5):
    torch.manual_seed(0)
    made = {
        "GILR": plrnn.GILR(input_size, hidden, num_layers=2, forget_bias=1.0),
        "GILRLSTM previous_step": plrnn.GILRLSTM(input_size, hidden, num_layers=2),
        "GILRLSTM same_step": plrnn.GILRLSTM(input_size, hidden, surrogate="same_step"),
        "QRNN window=3": plrnn.QRNN(input_size, hidden, num_layers=2, window=3),
        "QRNN authors taps": plrnn.QRNN(input_size, hidden, window=3, taps="authors"),
        "SRU": plrnn.SRU(input_size, hidden, num_layers=2),
    }
    for m in made.values():
        m.double()
        with torch.no_grad():  # away from the initialisation's zero biases
            for p in m.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return made


def initial_state(name, model, batch, g):
    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    L, H = model.num_layers, model.hidden_size
    if name.startswith("GILRLSTM"):
        return (r(L, batch, H), r(L, batch, H))
    if name.startswith("QRNN"):
        taps = model.layers[0].taps
        return (r(L, batch, H), [r(taps - 1, batch, model.layer_input_size(i)) for i in range(L)])
    return r(L, batch, H)


def flat(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for s in state for t in flat(s)]


def layers_match_one_process(rank, world, lengths, with_state):
    T, B = sum(lengths), 2
    start = sum(lengths[:rank])
    rows = slice(start, start + lengths[rank])
    failures = []
    for name, model in models().items():
        g = torch.Generator().manual_seed(len(name))
        x = torch.randn(T, B, model.input_size, generator=g, dtype=torch.float64)
        w = torch.randn(T, B, model.hidden_size, generator=g, dtype=torch.float64)
        state = initial_state(name, model, B, g) if with_state else None

        one = copy.deepcopy(model)
        xs = x.clone().requires_grad_()
        state_one = _leaves(state)
        y, final = one(xs, state_one)
        loss = (y * w).sum() + sum((f * f).sum() for f in flat(final))
        loss.backward()

        sharded = pd.shard_sequence(copy.deepcopy(model))
        mine = x[rows].clone().requires_grad_()
        state_r = _leaves(state) if rank == 0 else None
        y_r, final_r = sharded(mine, state_r)
        my_loss = (y_r * w[rows]).sum() + sum((f * f).sum() for f in flat(final_r)) / world
        my_loss.backward()
        pd.sync_gradients(sharded)

        checks = [("output", y_r, y[rows]), ("dL/dx", mine.grad, xs.grad[rows])]
        checks += [
            (f"final state {i}", a, b) for i, (a, b) in enumerate(zip(flat(final_r), flat(final)))
        ]
        if state_r is not None:
            got, want = flat(state_r), flat(state_one)
            checks += [
                (f"dL/d(state {i})", a.grad, b.grad) for i, (a, b) in enumerate(zip(got, want))
            ]
        for (pname, p), q in zip(sharded.named_parameters(), one.parameters()):
            checks.append((f"grad {pname}", p.grad, q.grad))
        for what, got, want in checks:
            err = (got - want).abs().max().item() / max(1.0, want.abs().max().item())
            if not err <= RTOL:
                failures.append(
                    f"rank {rank} {name} lengths={lengths}: {what} rel. error {err:.2e}"
                )
    assert not failures, "\n".join(failures)


def _leaves(state):
    """A copy of a (nested) state whose tensors are leaves that record their gradients."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.clone().requires_grad_()
    return type(state)(_leaves(s) for s in state)


def window_gradient_asked_on_rank_0_alone(rank, world):
    """QRNN(3) with inputs that need no gradient and a learned window state on rank 0: the
    halo's backward runs on every rank (the others' losses read rank 0's window through it),
    and a second backward through a retained graph adds the same again."""
    lengths = [1, 3, 2][:world]
    T, start = sum(lengths), sum(lengths[:rank])
    rows = slice(start, start + lengths[rank])
    torch.manual_seed(0)
    model = plrnn.QRNN(3, 4, window=3).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, 2, 3, generator=g, dtype=torch.float64)
    w = torch.randn(T, 2, 4, generator=g, dtype=torch.float64)
    c0 = torch.randn(1, 2, 4, generator=g, dtype=torch.float64)
    window = torch.randn(2, 2, 3, generator=g, dtype=torch.float64)

    one = copy.deepcopy(model)
    win_one = window.clone().requires_grad_()
    y, _ = one(x, (c0, [win_one]))
    (y * w).sum().backward()

    sharded = pd.shard_sequence(copy.deepcopy(model))
    win = window.clone().requires_grad_() if rank == 0 else None
    y_r, _ = sharded(x[rows], (c0, [win]) if rank == 0 else None)
    loss = (y_r * w[rows]).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    pd.sync_gradients(sharded)
    checks = [(f"grad {n}", p.grad, 2 * q.grad)
              for (n, p), q in zip(sharded.named_parameters(), one.parameters())]
    if rank == 0:
        checks.append(("dL/d(window)", win.grad, 2 * win_one.grad))
    for what, got, want in checks:
        err = (got - want).abs().max().item() / max(1.0, want.abs().max().item())
        assert err <= RTOL, f"rank {rank} lengths={lengths}: {what} rel. error {err:.2e}"


def copies_stay_sharded_and_pickles_load_unsharded(rank, world):
    """copy.deepcopy of a sharded model runs over the same group; pickling drops the group."""
    torch.manual_seed(0)
    sharded = pd.shard_sequence(plrnn.GILRLSTM(3, 4).double())
    twin = copy.deepcopy(sharded)
    x = torch.randn(2 + rank, 2, 3, dtype=torch.float64)
    for m in (sharded, twin):
        _, final = m(x)
        assert final[0].shape == (1, 2, 4)
    assert torch.equal(sharded(x)[0], twin(x)[0])
    loaded = pickle.loads(pickle.dumps(sharded))  # a process group lives in its process
    assert loaded.process_group is None
    alone = pd.unshard_sequence(copy.deepcopy(sharded))
    assert sharded.process_group is not None
    assert torch.equal(loaded(x)[0], alone(x)[0])


def _cast(state, dtype):
    if state is None or isinstance(state, torch.Tensor):
        return None if state is None else state.to(dtype)
    return type(state)(_cast(s, dtype) for s in state)


def _rel(got, want) -> float:
    got, want = got.double(), want.double()
    return (got - want).abs().max().item() / max(1.0, want.abs().max().item())


RTOL_BF16 = 0.05  # a few bfloat16 roundings of the states and gates; a restarted state is O(1)


def layers_under_autocast(rank, world, lengths):
    """float32 models under torch.autocast(bfloat16), two calls with the state carried from the
    first (in autocast's dtype) to the second, against one process doing the same: outputs,
    final states, dL/dx, dL/d(initial state) and every parameter gradient."""
    T, start = sum(lengths), sum(lengths[:rank])
    rows = slice(start, start + lengths[rank])
    failures = []
    for name, model in models().items():
        model.float()
        g = torch.Generator().manual_seed(len(name))
        x = torch.randn(2, T, 2, model.input_size, generator=g)
        w = torch.randn(2, T, 2, model.hidden_size, generator=g)
        state = _cast(initial_state(name, model, 2, g), torch.float32)

        def run(m, xs, first_state, parts, share):
            outs, carried = [], first_state
            with torch.autocast("cpu", dtype=torch.bfloat16):
                for i in range(2):
                    y, carried = m(xs[i][parts], carried if rank == 0 or share == 1 else None)
                    outs.append(y)
            loss = sum((y.float() * w[i][parts]).sum() for i, y in enumerate(outs))
            (loss + sum(f.float().pow(2).sum() for f in flat(carried)) / share).backward()
            return outs, carried

        one = copy.deepcopy(model)
        xs, state_one = x.clone().requires_grad_(), _leaves(state)
        y, final = run(one, xs, state_one, slice(None), 1)

        sharded = pd.shard_sequence(copy.deepcopy(model))
        mine, state_r = x.clone().requires_grad_(), _leaves(state) if rank == 0 else None
        y_r, final_r = run(sharded, mine, state_r, rows, world)
        pd.sync_gradients(sharded)

        checks = [(f"output {i}", y_r[i], y[i][rows]) for i in range(2)]
        checks += [(f"dL/dx {i}", mine.grad[i][rows], xs.grad[i][rows]) for i in range(2)]
        checks += [(f"final state {i}", a, b)
                   for i, (a, b) in enumerate(zip(flat(final_r), flat(final)))]
        if state_r is not None:
            checks += [(f"dL/d(state {i})", a.grad, b.grad)
                       for i, (a, b) in enumerate(zip(flat(state_r), flat(state_one)))]
        for (pname, p), q in zip(sharded.named_parameters(), one.parameters()):
            checks.append((f"grad {pname}", p.grad, q.grad))
        for what, got, want in checks:
            err = _rel(got, want)
            if not err <= RTOL_BF16:
                failures.append(f"rank {rank} {name} lengths={lengths}: {what} rel. error {err:.2e}")
    assert not failures, "\n".join(failures)


def compiled_sharded_model(rank, world):
    """torch.compile of a sharded model: the exchanges run eagerly (graph breaks), the rest
    compiled, and the outputs, final state and gradients are one process's."""
    lengths = [3, 1, 4][:world]
    T, start = sum(lengths), sum(lengths[:rank])
    rows = slice(start, start + lengths[rank])
    torch.manual_seed(0)
    model = plrnn.QRNN(3, 4, num_layers=2, window=3).double()
    x = torch.randn(T, 2, 3, dtype=torch.float64)
    one = copy.deepcopy(model)
    y, final = one(x)
    (y.sum() + sum(f.sum() for f in flat(final))).backward()

    sharded = pd.shard_sequence(copy.deepcopy(model))
    compiled = torch.compile(sharded)
    for _ in range(2):  # the second call reuses the compiled graphs
        sharded.zero_grad()
        y_r, final_r = compiled(x[rows])
        (y_r.sum() + sum(f.sum() for f in flat(final_r)) / world).backward()
        pd.sync_gradients(sharded)
        checks = [("output", y_r, y[rows])]
        checks += [(f"final {i}", a, b) for i, (a, b) in enumerate(zip(flat(final_r), flat(final)))]
        checks += [(f"grad {n}", p.grad, q.grad)
                   for (n, p), q in zip(sharded.named_parameters(), one.parameters())]
        for what, got, want in checks:
            err = _rel(got, want)
            assert err <= RTOL, f"rank {rank}: {what} rel. error {err:.2e}"


def gradients_reached_on_some_ranks_only(rank, world):
    """sync_gradients when the ranks' losses reach different parameters: an auxiliary head on
    rank 0's output and a classifier on the last rank's, of the same shapes, and a head no loss
    reaches. Each head gets the one-process gradient on every rank, never the sum of both, and
    the unreached one keeps grad None everywhere."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({
        "rnn": plrnn.GILR(3, 4), "first": torch.nn.Linear(4, 2), "last": torch.nn.Linear(4, 2),
        "unused": torch.nn.Linear(4, 2),
    }).double()
    lengths = [2, 1, 3][:world]
    T, start = sum(lengths), sum(lengths[:rank])
    x = torch.randn(T, 2, 3, dtype=torch.float64)

    one = copy.deepcopy(model)
    y, _ = one["rnn"](x)
    (one["first"](y[0]).sum() + one["last"](y[-1]).square().sum()).backward()

    sharded = pd.shard_sequence(copy.deepcopy(model))
    y_r, _ = sharded["rnn"](x[start : start + lengths[rank]])
    loss = y_r.sum() * 0  # every rank runs the backward, as with DDP
    if rank == 0:
        loss = loss + sharded["first"](y_r[0]).sum()
    if rank == world - 1:
        loss = loss + sharded["last"](y_r[-1]).square().sum()
    loss.backward()
    pd.sync_gradients(sharded)
    for (name, p), q in zip(sharded.named_parameters(), one.parameters()):
        if q.grad is None:
            assert p.grad is None, f"rank {rank}: {name} got a gradient no loss sent"
            continue
        assert p.grad is not None, f"rank {rank}: {name} has no gradient"
        err = _rel(p.grad, q.grad)
        assert err <= RTOL, f"rank {rank}: grad {name} rel. error {err:.2e}"


def sync_over_the_sharded_group(rank, world):
    """Four ranks: two replicas, each a sequence split over two ranks ({0, 1} and {2, 3}).
    sync_gradients(model) with no group had summed over the world, both replicas' gradients
    together; it sums over the group the model was sharded with. Ranks syncing different
    parameters are refused on every rank, and a model sharded over two groups needs a group."""
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    mine = groups[rank // 2]
    torch.manual_seed(0)
    model = plrnn.GILR(3, 4).double()
    replica = rank // 2
    x = torch.randn(2, 6, 2, 3, dtype=torch.float64)[replica]  # each replica its own sequence

    one = copy.deepcopy(model)
    one(x)[0].square().sum().backward()

    sharded = pd.shard_sequence(copy.deepcopy(model), group=mine)
    sharded(x[3 * (rank % 2) : 3 * (rank % 2) + 3])[0].square().sum().backward()
    pd.sync_gradients(sharded)
    for (name, p), q in zip(sharded.named_parameters(), one.parameters()):
        err = _rel(p.grad, q.grad)
        assert err <= RTOL, f"rank {rank}: grad {name} rel. error {err:.2e}"

    frozen = copy.deepcopy(sharded)
    frozen.layers[0].linear.bias.requires_grad_(rank % 2 == 0)
    with pytest.raises(pd.ShardMismatchError, match="every rank must sync the same parameters"):
        pd.sync_gradients(frozen)
    pd.sync_gradients(sharded)  # no rank was left in a collective

    two = torch.nn.Sequential(pd.shard_sequence(plrnn.GILR(3, 4), group=mine),
                              pd.shard_sequence(plrnn.GILR(4, 4)))
    with pytest.raises(ValueError, match="sharded over different process groups"):
        pd.sync_gradients(two)
