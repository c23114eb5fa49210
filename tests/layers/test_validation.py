"""Bad input and bad options: each error names the argument and what was expected."""

from __future__ import annotations

import pytest
import torch

from plrnn.layers import GILR, GILRLSTM, QRNN, SRU

from .common import EVERY_TYPE, random_state

LAYERS = [(k.cls, k.kwargs) for k in EVERY_TYPE]
IDS = [k.id for k in EVERY_TYPE]


def build(cls, kwargs, **more):
    return cls(3, 4, 2, **{**kwargs, **more})


@pytest.mark.parametrize(("cls", "kwargs"), LAYERS, ids=IDS)
def test_wrong_input_size(cls, kwargs):
    with pytest.raises(
        ValueError,
        match=r"^x\.shape\[-1\] must be input_size=3, \(T, B, input_size\) with input_size=3; "
        r"got shape \(5, 2, 4\)$",
    ):
        build(cls, kwargs)(torch.randn(5, 2, 4))


@pytest.mark.parametrize(("cls", "kwargs"), LAYERS, ids=IDS)
@pytest.mark.parametrize("shape", [(5, 3), (3,), (1, 5, 2, 3)], ids=str)
def test_wrong_rank(cls, kwargs, shape):
    with pytest.raises(
        ValueError, match=r"^x must be 3-D, \(T, B, input_size\) with input_size=3; got shape "
    ):
        build(cls, kwargs)(torch.randn(shape))


def test_wrong_rank_batch_first_names_the_layout():
    with pytest.raises(ValueError, match=r"^x must be 3-D, \(B, T, input_size\) with input_size=3"):
        GILR(3, 4, batch_first=True)(torch.randn(5, 3))


def test_not_a_tensor():
    with pytest.raises(
        TypeError,
        match=r"^x must be a torch\.Tensor of shape \(T, B, input_size\) with input_size=3, got list$",
    ):
        GILR(3, 4)([[0.0, 1.0, 2.0]])


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(("cls", "kwargs"), LAYERS, ids=IDS)
def test_nested_input_is_refused(cls, kwargs, batch_first):
    """A jagged (B, j, input_size) tensor passed every shape check: GILR and SRU returned the
    last sequence's whole output as the state, the others failed inside torch."""
    x = torch.nested.nested_tensor([torch.randn(3, 3), torch.randn(5, 3)], layout=torch.jagged)
    with pytest.raises(TypeError, match=r"not a nested tensor; pack its sequences with torch\.nn"
                       r"\.utils\.rnn\.pack_sequence\(x\.unbind\(\), enforce_sorted=False\)$"):
        build(cls, kwargs, batch_first=batch_first)(x)


@pytest.mark.parametrize(("cls", "kwargs"), LAYERS, ids=IDS)
def test_options_are_fixed_after_construction(cls, kwargs):
    """Each layer keeps its own copy of the type's options: a new value would show in repr while
    the layers ran with the old one. The call-time settings stay assignable."""
    model = build(cls, kwargs)
    for name, value in model.options().items():
        with pytest.raises(AttributeError, match=rf"^{cls.__name__}\.{name} is fixed at "
                           rf"construction .*; build a new {cls.__name__} with {name}="):
            setattr(model, name, value)
        assert getattr(model, name) == value
    model.backend, model.dropout, model.batch_first = "cpu_serial", 0.5, True
    assert "backend='cpu_serial'" in repr(model) and "batch_first=True" in repr(model)


def test_no_time_steps():
    with pytest.raises(ValueError, match=r"^x must have at least one time step"):
        SRU(3, 4)(torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match=r"^x must have at least one time step"):
        SRU(3, 4, batch_first=True)(torch.randn(2, 0, 3))


@pytest.mark.parametrize(("cls", "kwargs"), LAYERS, ids=IDS)
def test_wrong_dtype(cls, kwargs):
    with pytest.raises(
        TypeError, match=r"^x must have the parameters' dtype torch\.float32; got torch\.float64"
    ):
        build(cls, kwargs)(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(
        TypeError, match=r"^x must have the parameters' dtype torch\.float32; got torch\.int64"
    ):
        build(cls, kwargs)(torch.ones(5, 2, 3, dtype=torch.int64))


def test_wrong_device():
    with pytest.raises(ValueError, match=r"^x must be on the parameters' device cpu; got meta$"):
        GILR(3, 4)(torch.randn(5, 2, 3, device="meta"))


@pytest.mark.parametrize("cls", [GILR, SRU])
def test_wrong_state_shape_tensor_state(cls):
    model = cls(3, 4, 2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match=r"^state must have shape \(2, 2, 4\); got \(1, 2, 4\)$"):
        model(x, torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"^state must have shape \(2, 2, 4\); got \(2, 4\)$"):
        model(x, torch.zeros(2, 4))
    with pytest.raises(
        TypeError, match=r"^state must be a torch\.Tensor of shape \(2, 2, 4\), got tuple$"
    ):
        model(x, (torch.zeros(2, 2, 4),))
    with pytest.raises(
        TypeError,
        match=r"^state must have the parameters' dtype torch\.float32; got torch\.float64",
    ):
        model(x, torch.zeros(2, 2, 4, dtype=torch.float64))


def test_wrong_state_gilr_lstm():
    model = GILRLSTM(3, 4, 2)
    x = torch.randn(5, 2, 3)
    good = torch.zeros(2, 2, 4)
    with pytest.raises(
        TypeError,
        match=r"^state must be a tuple \(s, c\) of two \(num_layers, B, hidden_size\) tensors, got Tensor$",
    ):
        model(x, good)
    with pytest.raises(TypeError, match=r"got tuple of length 3$"):
        model(x, (good, good, good))
    with pytest.raises(
        ValueError, match=r"^state\[1\] \(c\) must have shape \(2, 2, 4\); got \(2, 3, 4\)$"
    ):
        model(x, (good, torch.zeros(2, 3, 4)))


def test_wrong_state_qrnn():
    model = QRNN(3, 4, 2, window=3)
    x = torch.randn(5, 2, 3)
    c = torch.zeros(2, 2, 4)
    windows = (torch.zeros(2, 2, 3), torch.zeros(2, 2, 4))
    model(x, (c, windows))  # the right structure passes
    with pytest.raises(TypeError, match=r"^state must be a tuple \(c, windows\)"):
        model(x, c)
    with pytest.raises(
        TypeError,
        match=r"^state\[1\] \(windows\) must be a tuple of num_layers=2 tensors, got tuple of length 1$",
    ):
        model(x, (c, windows[:1]))
    with pytest.raises(
        ValueError,
        match=r"^state\[1\]\[1\] \(window of layer 1\) must have shape \(2, 2, 4\); got \(2, 2, 3\)$",
    ):
        model(x, (c, (windows[0], windows[0])))


@pytest.mark.parametrize(("cls", "kwargs"), LAYERS, ids=IDS)
def test_state_of_the_wrong_batch(cls, kwargs):
    model = build(cls, kwargs)
    with pytest.raises(ValueError, match=r"must have shape \(.*\b3\b.*\); got "):
        model(torch.randn(5, 3, 3), random_state(model, 2, 0, dtype=torch.float32))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: GILR(0, 4), ValueError, r"^input_size must be >= 1, got 0$"),
        (lambda: GILR(3, 2.5), TypeError, r"^hidden_size must be an int, got float$"),
        (lambda: SRU(3, 4, num_layers=0), ValueError, r"^num_layers must be >= 1, got 0$"),
        (lambda: SRU(3, 4, dropout=1.5), ValueError, r"^dropout must be in \[0, 1\], got 1\.5$"),
        (
            lambda: GILR(3, 4, activation="relu"),
            ValueError,
            r"^activation must be one of 'tanh', 'elu'; got 'relu'$",
        ),
        (
            lambda: GILRLSTM(3, 4, surrogate="paper"),
            ValueError,
            r"^surrogate must be one of 'previous_step', 'same_step'; got 'paper'$",
        ),
        (
            lambda: GILRLSTM(3, 4, surrogate_activation="sigmoid"),
            ValueError,
            r"^surrogate_activation must be one of ",
        ),
        (lambda: QRNN(3, 4, window=0), ValueError, r"^window must be >= 1, got 0$"),
        (lambda: QRNN(3, 4, window=2.0), TypeError, r"^window must be an int, got float$"),
        (
            lambda: QRNN(3, 4, taps="true"),
            ValueError,
            r"^taps must be one of 'full', 'authors'; got 'true'$",
        ),
    ],
)
def test_bad_options(make, error, message):
    with pytest.raises(error, match=message):
        make()
