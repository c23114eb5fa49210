"""PackedSequence inputs, as torch.nn.LSTM takes them: the output keeps the input's layout, the
state is each sequence's own after its last step, and both equal running every sequence alone,
forward and every gradient."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pack_sequence

from .common import ALL_VARIANTS, F64_RTOL, make_model, random_state, seed_for

IN, HID, LAYERS = 3, 5, 2


def _states_close(a, b):
    if isinstance(a, torch.Tensor):
        return torch.allclose(a, b, rtol=F64_RTOL, atol=F64_RTOL)
    return all(_states_close(x, y) for x, y in zip(a, b, strict=True))


def _batch_state(model, states):
    """Per-sequence states (B = 1 each) stacked along the batch axis of the model's state."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(states, dim=1)
    return tuple(_batch_state(model, list(parts)) for parts in zip(*states))


def _flat(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for s in state for t in _flat(s)]


def _select(state, b):
    if isinstance(state, torch.Tensor):
        return state[:, b : b + 1]
    return tuple(_select(s, b) for s in state)


@pytest.mark.parametrize("with_state", [False, True], ids=["no_state", "state"])
@pytest.mark.parametrize("enforce_sorted", [False, True], ids=["unsorted", "sorted"])
@pytest.mark.parametrize("kind", ALL_VARIANTS, ids=lambda k: k.id)
def test_packed_equals_each_sequence_alone(kind, enforce_sorted, with_state):
    lengths = [6, 3, 3, 1] if enforce_sorted else [3, 6, 1, 3]
    seed = seed_for("packed", kind.id, enforce_sorted, with_state)
    model = make_model(kind, IN, HID, LAYERS, seed=seed)
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(n, IN, generator=g, dtype=torch.float64, requires_grad=True)
            for n in lengths]
    state = random_state(model, len(lengths), seed + 1) if with_state else None

    packed = pack_sequence(seqs, enforce_sorted=enforce_sorted)
    out, final = model(packed, state)
    assert isinstance(out, PackedSequence)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    for got, want in ((out.sorted_indices, packed.sorted_indices),
                      (out.unsorted_indices, packed.unsorted_indices)):
        assert (got is None and want is None) or torch.equal(got, want)

    alone = [model(s[:, None], None if state is None else _select(state, b))
             for b, s in enumerate(seqs)]
    want_out = pack_sequence([y[:, 0] for y, _ in alone], enforce_sorted=enforce_sorted)
    assert torch.allclose(out.data, want_out.data, rtol=F64_RTOL, atol=F64_RTOL)
    assert _states_close(final, _batch_state(model, [s for _, s in alone]))

    # Every gradient: inputs and parameters, through the outputs and the final states.
    def loss(y, st):
        return (y ** 2).sum() + sum((s ** 3).sum() for s in _flat(st))

    params = list(model.parameters())
    got = torch.autograd.grad(loss(out.data, final), seqs + params)
    want = torch.autograd.grad(loss(want_out.data, _batch_state(model, [s for _, s in alone])),
                               seqs + params)
    for gv, wv in zip(got, want, strict=True):
        assert torch.allclose(gv, wv, rtol=1e-9, atol=1e-9)


def test_batch_first_does_not_change_packed_inputs():
    kind = ALL_VARIANTS[0]
    model = make_model(kind, IN, HID, LAYERS, seed=1)
    first = make_model(kind, IN, HID, LAYERS, seed=1, batch_first=True)
    padded = torch.randn(5, 2, IN, dtype=torch.float64)
    packed = pack_padded_sequence(padded, [5, 2], enforce_sorted=True)
    assert torch.equal(model(packed)[0].data, first(packed)[0].data)


def test_packed_data_is_checked():
    model = make_model(ALL_VARIANTS[0], IN, HID, LAYERS, seed=2)
    bad = pack_sequence([torch.randn(4, IN + 1, dtype=torch.float64)])
    with pytest.raises(ValueError, match="input_size=3"):
        model(bad)
    with pytest.raises(TypeError, match="dtype"):
        model(pack_sequence([torch.randn(4, IN)]))
