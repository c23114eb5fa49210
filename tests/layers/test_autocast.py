"""Mixed precision: the layers under torch.autocast, as torch.nn.LSTM, take the autocast dtype's
inputs and states as well as the parameters' own."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from .common import EVERY_TYPE, flat, make_model, random_state, seed_for, unflat

pytestmark = pytest.mark.usefixtures("single_thread")  # see tests/conftest.py


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_autocast_after_a_linear_with_fresh_and_carried_state(kind):
    """A bfloat16 input (what a Linear before the layer gives under autocast), a float32 initial
    state, then the bfloat16 state of the first half carried into the second: the float32 run up
    to bfloat16 rounding, and gradients for every parameter and the initial state."""
    seed = seed_for("autocast", kind.id)
    torch.manual_seed(seed)
    proj = torch.nn.Linear(3, 4)
    model = make_model(kind, 4, 6, 2, seed, dtype=torch.float32)
    x = torch.randn(7, 2, 3)
    like = random_state(model, 2, seed, torch.float32)
    state = unflat(like, [t.requires_grad_() for t in flat(like)])
    want, _ = model(proj(x), state)
    with autocast():
        first, mid = model(proj(x[:4]), state)
        second, final = model(proj(x[4:]), mid)
    assert first.dtype == torch.bfloat16
    # Every state in autocast's dtype, from a float32 one: a QRNN's windows too, as with the
    # sharded halo (torch.cat had promoted a carried float32 window).
    assert all(t.dtype == torch.bfloat16 for t in (*flat(mid), *flat(final)))
    got = torch.cat([first, second]).float()
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)
    got.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in flat(state))


@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_autocast_float32_input_of_the_hidden_size(kind):
    """A float32 input straight into the layers, input_size = hidden_size: SRU's highway term
    (1 - r) * x had taken x's float32 and promoted the output, and the next layer's, back to it;
    every layer's output is in autocast's dtype, as torch.nn.LSTM's."""
    seed = seed_for("autocast-f32-input", kind.id)
    model = make_model(kind, 4, 4, 2, seed, dtype=torch.float32)
    x = torch.randn(6, 2, 4)
    want, _ = model(x)
    with autocast():
        got, state = model(x)
    assert got.dtype == torch.bfloat16
    # A QRNN's windows keep their inputs' dtype (docs/layers.md); its c is the recurrence's.
    recurrent = [state[0]] if kind.id.startswith("QRNN") else flat(state)
    assert all(t.dtype == torch.bfloat16 for t in recurrent)
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_autocast_packed_bfloat16_data(kind):
    model = kind.cls(4, 5, 2, **kind.kwargs)
    proj = torch.nn.Linear(3, 4)
    xs = [torch.randn(n, 3, generator=torch.Generator().manual_seed(n)) for n in (3, 1, 4)]
    want, _ = model(pack_sequence([proj(x) for x in xs], enforce_sorted=False))
    with autocast():
        out, _ = model(pack_sequence([proj(x) for x in xs], enforce_sorted=False))
    assert out.data.shape == (8, 5) and out.data.dtype == torch.bfloat16
    torch.testing.assert_close(out.data.float(), want.data, rtol=0.05, atol=0.05)


def test_autocast_still_refuses_other_dtypes():
    model = EVERY_TYPE[0].cls(3, 4)
    with autocast(), pytest.raises(
        TypeError,
        match=r"^x must have the parameters' dtype torch\.float32 or autocast's torch\.bfloat16; "
        r"got torch\.float64",
    ):
        model(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^state must have the parameters' dtype torch\.float32; "):
        model(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=torch.bfloat16))
