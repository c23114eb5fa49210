"""Shapes, batch_first, stacking, dropout and carrying the state between calls."""

from __future__ import annotations

import pytest
import torch

from plrnn.layers import GILR, GILRLSTM, QRNN, SRU

from .common import (
    ALL_VARIANTS,
    EVERY_TYPE,
    compare_runs,
    flat,
    fwd_bwd,
    make_model,
    random_state,
    seed_for,
    unflat,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # see tests/conftest.py


def state_shapes(model, batch) -> list[tuple[int, ...]]:
    stacked = (model.num_layers, batch, model.hidden_size)
    if isinstance(model, GILRLSTM):
        return [stacked, stacked]
    if isinstance(model, QRNN):
        return [stacked] + [
            (model.num_taps - 1, batch, model.layer_input_size(i)) for i in range(model.num_layers)
        ]
    return [stacked]


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("sizes", [(1, 1, 1, 1), (5, 3, 7, 2), (2, 9, 4, 3)], ids=str)
@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_output_and_state_shapes(kind, sizes, num_layers):
    T, B, n_in, H = sizes
    model = make_model(kind, n_in, H, num_layers, 0, dtype=torch.float32)
    out, state = model(torch.randn(T, B, n_in))
    assert out.shape == (T, B, H) and out.dtype == torch.float32
    assert [tuple(t.shape) for t in flat(state)] == state_shapes(model, B)
    assert all(t.dtype == torch.float32 for t in flat(state))


# (T, B, input, hidden): small, and large enough (each recurrence's inputs over 1 MiB in float64)
# for the op's large-input paths.
BATCH_FIRST_SIZES = [(7, 5, 3, 4), (520, 4, 3, 64)]


@pytest.mark.parametrize("sizes", BATCH_FIRST_SIZES, ids=str)
@pytest.mark.parametrize("kind", ALL_VARIANTS, ids=lambda k: k.id)
def test_batch_first_is_the_transposed_time_major_run(kind, sizes):
    """Output, final state and every gradient, from batch-first memory, against the time-major
    run."""
    T, B, n_in, H = sizes
    seed = seed_for("batch_first", kind.id, sizes)
    model = make_model(kind, n_in, H, 2, seed)
    bf = make_model(kind, n_in, H, 2, seed, batch_first=True)
    x = torch.randn(T, B, n_in, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    state = random_state(model, B, seed)  # the state stays (layers, B, H)

    def batch_first(m, x, s):
        out, final = m(x.transpose(0, 1).contiguous(), s)
        assert out.shape == (B, T, H)
        return out.transpose(0, 1), final

    want = fwd_bwd(lambda m, x, s: m(x, s), model, x, state, seed + 1)
    got = fwd_bwd(batch_first, bf, x, state, seed + 1)
    failures = compare_runs(got, want, rtol=1e-12)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("split", [1, 3, 6], ids=lambda s: f"split={s}")
@pytest.mark.parametrize("kind", ALL_VARIANTS, ids=lambda k: k.id)
def test_two_halves_with_carried_state_equal_one_run(kind, split):
    """Forward and backward: the second half starts from the first half's final state, and the
    gradients through the carried state equal those of the whole run (QRNN window 10 > T too)."""
    T = 7
    seed = seed_for("halves", kind.id, split)
    model = make_model(kind, 3, 4, 2, seed)
    x = torch.randn(T, 2, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    state = random_state(model, 2, seed + 1)

    def halves(model, x, state):
        out1, mid = model(x[:split], state)
        out2, final = model(x[split:], mid)
        return torch.cat([out1, out2]), final

    want = fwd_bwd(lambda m, x, s: m(x, s), model, x, state, seed + 2)
    got = fwd_bwd(halves, model, x, state, seed + 2)
    failures = compare_runs(got, want)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_zero_state_equals_no_state(kind):
    model = make_model(kind, 3, 4, 2, 1)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    like = random_state(model, 2, 0)
    out, _ = model(x, unflat(like, [torch.zeros_like(t) for t in flat(like)]))
    torch.testing.assert_close(out, model(x)[0], rtol=0, atol=0)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    model = GILR(3, 16, 2, dropout=0.5).double()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    model.eval()
    a, b = model(x)[0], model(x)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])
    one_layer = GILR(3, 16, 1, dropout=0.5).double().train()  # nothing between layers
    torch.testing.assert_close(one_layer(x)[0], one_layer(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("cls", "kwargs", "forget_block", "blocks", "value"),
    [
        (GILR, {}, 0, 2, 0.0),
        (GILR, {"forget_bias": 2.0}, 0, 2, 2.0),
        (GILRLSTM, {}, 0, 4, 5.0),
        (QRNN, {}, 1, 3, 0.0),
        (SRU, {}, 1, 3, 5.0),
        (SRU, {"forget_bias": 1.5}, 1, 4, 1.5),
    ],
)
def test_initialisation(cls, kwargs, forget_block, blocks, value):
    """Weights U(-0.05, 0.05); biases zero except the forget gate's."""
    input_size = 6 if blocks == 4 and cls is SRU else 8
    model = cls(input_size, 8, 2, **kwargs)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    for w in weights:
        assert w.abs().max() <= 0.05 and w.std() > 0.02
    layer = model.layers[0]
    bias = (
        layer.gates.bias if cls is GILRLSTM else (layer.bias if cls is QRNN else layer.linear.bias)
    )
    expected = torch.zeros(blocks * 8)
    expected[forget_block * 8 : (forget_block + 1) * 8] = value
    torch.testing.assert_close(bias.detach(), expected, rtol=0, atol=0)
    if cls is GILRLSTM:
        torch.testing.assert_close(layer.gilr.bias.detach(), torch.zeros(16), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("window", "taps", "n"),
    [
        (1, "full", 1),
        (2, "full", 2),
        (10, "full", 10),
        (1, "authors", 1),
        (2, "authors", 1),
        (3, "authors", 2),
        (10, "authors", 9),
    ],
)
def test_qrnn_taps(window, taps, n):
    model = QRNN(3, 4, window=window, taps=taps)
    assert model.num_taps == n
    assert model.layers[0].weight.shape == (n, 12, 3)


@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_reset_parameters_of_the_stack(kind):
    """model.reset_parameters(), as torch.nn.LSTM's, and the meta-device recipe built on it."""
    fresh = kind.cls(3, 4, 2, **kind.kwargs)
    model = make_model(kind, 3, 4, 2, 0, dtype=torch.float32)  # weights far outside +-0.05
    model.reset_parameters()
    meta = kind.cls(3, 4, 2, **kind.kwargs).to("meta").to_empty(device="cpu")
    meta.reset_parameters()
    for m in (model, meta):
        for (name, p), want in zip(m.named_parameters(), fresh.parameters()):
            if name.endswith("weight"):  # drawn anew, not to_empty's memory
                assert p.abs().max() <= 0.05 and p.std() > 0.01, name
            else:
                torch.testing.assert_close(p, want, rtol=0, atol=0, msg=name)
