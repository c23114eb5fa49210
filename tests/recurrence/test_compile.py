"""torch.compile through the custom ops (fake kernels + registered autograd), one small shape."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import plrnn

from .helpers import make_inputs, seed_for

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # dynamo's notes on the graph break
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # torch.jit, inside inductor
]


@pytest.mark.parametrize("backend", ["cpu_serial", "torch"])
def test_torch_compile_forward_and_backward_match_eager(backend):
    torch._dynamo.reset()
    a, x, _ = make_inputs(
        37, (5,), "uniform", False, seed_for("compile", backend), dtype=torch.float32
    )
    upstream = torch.randn(37, 5, generator=torch.Generator().manual_seed(1))

    def f(a, x):
        return plrnn.linear_recurrence(a, x, backend=backend)

    compiled = torch.compile(f)

    def fwd_bwd(fn):
        a_, x_ = a.clone().requires_grad_(True), x.clone().requires_grad_(True)
        h = fn(a_, x_)
        ga, gx = torch.autograd.grad(h, (a_, x_), upstream)
        return h.detach(), ga, gx

    want = fwd_bwd(f)
    got = fwd_bwd(compiled)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)


_AUTO_GRAPH_BREAK = pytest.mark.xfail(
    strict=True,
    raises=torch._dynamo.exc.Unsupported,
    reason=(
        "BUG: choose_auto() calls torch.get_num_threads(), which dynamo cannot put in a graph "
        "('torch.* op returned non-Tensor'), so fullgraph=True fails for the default backend"
    ),
)


@pytest.mark.parametrize(
    "backend",
    ["torch", "cpu_serial", "cpu_parallel", pytest.param("auto", marks=_AUTO_GRAPH_BREAK)],
)
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    a, x, h0 = make_inputs(16, (3,), "uniform", True, seed_for("fullgraph"), dtype=torch.float32)

    def f(a, x, h0):
        return plrnn.linear_recurrence(a, x, h0, backend=backend)

    got = torch.compile(f, fullgraph=True)(a, x, h0)
    torch.testing.assert_close(got, f(a, x, h0), rtol=1e-6, atol=1e-6)
