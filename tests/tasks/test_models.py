"""make_model and SequenceClassifier: the read-out of the last step, init options, seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plrnn.tasks import SequenceClassifier, SyntheticBatches, make_model


class FirstChannels(nn.Module):
    """A body with known output: out[t] = x[t, :, :H], so the classifier is a linear map."""

    def __init__(self, hidden):
        super().__init__()
        self.hidden = hidden

    def forward(self, x):
        return x[..., : self.hidden], None


def test_logits_are_the_head_applied_to_the_last_step_only():
    torch.manual_seed(0)
    model = SequenceClassifier(FirstChannels(5), hidden=5).double()
    x = torch.randn(7, 3, 128, dtype=torch.float64)
    W, b = model.head.weight.detach(), model.head.bias.detach()
    expected = torch.stack([W @ x[-1, i, :5] + b for i in range(3)])
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    x2 = x.clone()
    x2[:-1] = torch.randn(6, 3, 128, dtype=torch.float64)  # earlier steps do not reach the head
    torch.testing.assert_close(model(x2), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gilr_lstm"])
def test_batch_and_its_dense_view_give_the_same_logits(kind):
    model = make_model(kind, 16, seed=0, dtype=torch.float64)
    batch = next(SyntheticBatches(12, 4, seed=1))
    logits = model(batch)
    assert logits.shape == (4, 2) and logits.dtype == torch.float64
    torch.testing.assert_close(logits, model(batch.dense(torch.float64)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lstm", "gilr_lstm"])
def test_seeded_init_is_reproducible_and_leaves_the_global_rng_alone(kind):
    state = torch.random.get_rng_state()
    a = make_model(kind, 8, seed=3)
    b = make_model(kind, 8, seed=3)
    c = make_model(kind, 8, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_lstm_forget_bias_and_init_scale():
    H = 6
    model = make_model("lstm", H, forget_bias=5.0, init_scale=0.1, seed=0)
    lstm = model.body
    assert isinstance(lstm, nn.LSTM) and lstm.num_layers == 2 and lstm.input_size == 128
    for layer in range(2):
        b_ih = getattr(lstm, f"bias_ih_l{layer}")
        b_hh = getattr(lstm, f"bias_hh_l{layer}")
        # torch's gate order is i, f, g, o: the forget gate is the second block of H.
        assert torch.equal(b_ih[H : 2 * H], torch.full((H,), 5.0))
        assert torch.equal(b_hh, torch.zeros(4 * H))
        assert torch.equal(b_ih[:H], torch.zeros(H)) and torch.equal(b_ih[2 * H :], torch.zeros(2 * H))
        for w in (getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")):
            assert w.abs().max() <= 0.1 and w.abs().max() > 0.05


def test_lstm_default_init_is_torchs():
    model = make_model("lstm", 8, seed=0)
    bound = 1 / 8**0.5
    assert model.body.bias_ih_l0.abs().max() <= bound and model.body.bias_ih_l0.abs().max() > 0


def test_gilr_lstm_options_reach_the_layer():
    model = make_model("gilr_lstm", 8, backend="torch", forget_bias=10.0, surrogate="same_step")
    body = model.body
    assert type(body).__name__ == "GILRLSTM"
    assert body.num_layers == 2 and body.hidden_size == 8 and body.input_size == 128
    assert body.backend == "torch" and body.surrogate == "same_step" and body.forget_bias == 10.0
    # The forget gate's bias is the first block of the [f, i, o, z] gate layer.
    assert torch.equal(body.layers[0].gates.bias[:8], torch.full((8,), 10.0))


def test_device_and_dtype():
    model = make_model("lstm", 4, dtype=torch.float64, device="cpu")
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"kind": "gru"}, ValueError, "kind"),
        ({"hidden": 0}, ValueError, "hidden"),
        ({"num_layers": 0}, ValueError, "num_layers"),
        ({"kind": "lstm", "backend": "cpu_serial"}, ValueError, "backend"),
        ({"kind": "lstm", "surrogate": "same_step"}, ValueError, "surrogate"),
        ({"kind": "gilr_lstm", "init_scale": 0.1}, ValueError, "init_scale"),
        ({"kind": "lstm", "init_scale": -1.0}, ValueError, "init_scale"),
        ({"dtype": torch.int32}, TypeError, "dtype"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, exc, name):
    args = {"kind": "lstm", "hidden": 4, **kwargs}
    with pytest.raises(exc, match=name):
        make_model(**args)
