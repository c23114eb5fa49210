"""Per-sample gradients of every layer type, the torch.func recipe (functional_call, vmap of
grad), on each backend against one ordinary backward per sample on the reference loop."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

import plrnn

from .common import EVERY_TYPE, make_model, seed_for

pytestmark = pytest.mark.usefixtures("single_thread")  # see tests/conftest.py

BACKENDS = [s.name for s in plrnn.backends("cpu") if s.available and s.name != "reference"]
BACKENDS.append("auto")


@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_per_sample_gradients(kind):
    N, T = 3, 17
    seed = seed_for("per-sample", kind.id)
    model = make_model(kind, 4, 5, 2, seed)
    x = torch.randn(T, N, 1, 4, generator=torch.Generator().manual_seed(seed + 1),
                    dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(params, x):  # one sample: (T, 1, features)
        out, _ = functional_call(model, params, (x,))
        return (out ** 2).sum()

    model.backend = "reference"
    want = []
    for n in range(N):
        model.zero_grad()
        out, _ = model(x[:, n])
        (out ** 2).sum().backward()
        want.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for backend in BACKENDS:
        model.backend = backend
        got = vmap(grad(loss), in_dims=(None, 1))(params, x)
        for n in range(N):
            for k in params:
                torch.testing.assert_close(got[k][n], want[n][k], rtol=1e-9, atol=1e-11,
                                           msg=lambda m: f"{backend}, sample {n}, {k}: {m}")
