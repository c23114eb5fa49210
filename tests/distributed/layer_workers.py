"""Rank-side checks of the sequence-parallel layers (run by test_layers.py): each rank runs the
model on its time shard and must get its slice of the single-process output, the whole
sequence's final state, its slice of dL/dx, and, summed over ranks, every parameter gradient."""

from __future__ import annotations

import copy
import pickle

import torch

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
