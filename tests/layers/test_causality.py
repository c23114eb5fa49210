"""output[t] depends on x[:t+1] only (and, for QRNN, on x[t-taps+1..t] through the gates)."""

from __future__ import annotations

import pytest
import torch

from .common import ALL_VARIANTS, EVERY_TYPE, make_model, seed_for

pytestmark = pytest.mark.usefixtures("single_thread")  # see tests/conftest.py

BACKENDS = ["cpu_serial", "cpu_parallel", "torch", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_future_inputs_do_not_change_past_outputs(kind, backend):
    seed = seed_for("perturb", kind.id, backend)
    model = make_model(kind, 3, 5, 2, seed, backend=backend)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 2, 3, generator=g, dtype=torch.float64)
    out, _ = model(x)
    for t0 in (0, 1, 17, 39):
        x2 = x.clone()
        x2[t0:] += torch.randn(x2[t0:].shape, generator=g, dtype=torch.float64)
        out2, _ = model(x2)
        assert torch.equal(out2[:t0], out[:t0]), f"outputs before t={t0} changed"
        assert (out2[t0] - out[t0]).abs().max() > 1e-6, f"output at t={t0} ignored x[{t0}]"


@pytest.mark.parametrize("kind", ALL_VARIANTS, ids=lambda k: k.id)
def test_jacobian_is_block_lower_triangular(kind):
    """d output[t] / d x[s] is exactly zero for s > t and nonzero on the diagonal; a single
    layer's gates see the input x[t] through every tap."""
    T, B = 6, 2
    model = make_model(kind, 3, 4, 2, seed_for("jacobian", kind.id))
    x = torch.randn(T, B, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x: model(x)[0], x)  # [T, B, H, T, B, in]
    per_step = jac.abs().sum(dim=(1, 2, 4, 5))  # [t, s]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    assert torch.all(per_step[future] == 0), f"output depends on future inputs:\n{per_step}"
    assert torch.all(per_step.diagonal() > 0), f"output ignores the current input:\n{per_step}"
    # Across the batch nothing mixes: d output[t, b] / d x[s, b'] = 0 for b != b'.
    cross = jac.abs().sum(dim=(0, 2, 3, 5))  # [b, b']
    assert torch.all(cross[~torch.eye(B, dtype=torch.bool)] == 0)
