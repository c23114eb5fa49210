"""Each layer in float64 against a per-time-step loop written from the paper's equations
(loops.py): outputs, final state, and the gradients of x, the initial state and every parameter."""

from __future__ import annotations

import pytest
import torch

from plrnn.layers import SRU

from .common import (
    ALL_VARIANTS,
    SRU_K,
    compare_runs,
    fwd_bwd,
    make_model,
    random_state,
    run_layer,
    seed_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # see tests/conftest.py


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "state"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["1_layer", "2_layers"])
@pytest.mark.parametrize("T", [1, 7], ids=lambda T: f"T={T}")
@pytest.mark.parametrize("kind", ALL_VARIANTS, ids=lambda k: k.id)
def test_layer_matches_loop(kind, T, num_layers, with_state):
    seed = seed_for("loop", kind.id, T, num_layers, with_state)
    model = make_model(kind, 3, 5, num_layers, seed)
    x = torch.randn(T, 2, 3, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    state = random_state(model, 2, seed + 2) if with_state else None
    want = fwd_bwd(kind.loop, model, x, state, seed + 3)
    got = fwd_bwd(run_layer, model, x, state, seed + 3)
    failures = compare_runs(got, want)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("input_size", [4, 3, 6], ids=lambda n: f"input={n}")
def test_sru_highway_with_equal_and_different_sizes(input_size):
    """hidden 4: the highway adds x itself (input 4) or the learned projection (input 3, 6)."""
    seed = seed_for("sru", input_size)
    model = make_model(SRU_K, input_size, 4, 2, seed)
    assert model.layers[0].projected == (input_size != 4)
    assert model.layers[0].linear.out_features == (3 if input_size == 4 else 4) * 4
    assert not model.layers[1].projected
    x = torch.randn(
        9, 3, input_size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    state = random_state(model, 3, seed + 1)
    want = fwd_bwd(SRU_K.loop, model, x, state, seed + 2)
    got = fwd_bwd(run_layer, model, x, state, seed + 2)
    failures = compare_runs(got, want)
    assert not failures, "\n".join(failures)


def test_sru_highway_is_the_input_itself():
    """With r = 0 (r bias -> -inf) and hidden = input, h is exactly x: the highway is x, not a
    projection (the check the loop comparison cannot make on its own, sharing the parameters)."""
    model = SRU(4, 4, forget_bias=0.0).double()
    with torch.no_grad():
        model.layers[0].linear.bias[8:12] = -torch.inf
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    out, _ = model(x)
    torch.testing.assert_close(out, x, rtol=0, atol=0)
