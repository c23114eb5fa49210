"""torch.compile through the custom ops (fake kernels + registered autograd), one small shape."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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


@pytest.mark.parametrize(
    "backend",
    ["torch", "cpu_serial", "cpu_parallel", "auto"],
)
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    a, x, h0 = make_inputs(16, (3,), "uniform", True, seed_for("fullgraph"), dtype=torch.float32)

    def f(a, x, h0):
        return plrnn.linear_recurrence(a, x, h0, backend=backend)

    got = torch.compile(f, fullgraph=True)(a, x, h0)
    torch.testing.assert_close(got, f(a, x, h0), rtol=1e-6, atol=1e-6)


def test_torch_compile_fullgraph_as_first_use():
    """In a fresh interpreter the kernels' load() first runs inside the traced region (the build
    itself comes from the cache that this session's fixture filled)."""
    script = textwrap.dedent(
        """
        import torch, plrnn
        from plrnn.recurrence import reference
        a = torch.rand(16, 3, dtype=torch.float64)
        x = torch.randn(16, 3, dtype=torch.float64)
        f = torch.compile(lambda a, x: plrnn.linear_recurrence(a, x), fullgraph=True)
        print("ERR", (f(a, x) - reference.serial(a, x)).abs().max().item())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = float(next(s for s in proc.stdout.splitlines() if s.startswith("ERR ")).split()[1])
    assert err <= 1e-12


@pytest.mark.parametrize("shape", [(16384, 4), (4096, 16), (2048, 1024)], ids=str)
def test_auto_compiles_where_it_asks_its_calibration(shape):
    """At these sizes auto reads the measured channel sets (and, at (2048, 1024), the kernels'
    cache size) at trace time; a frozenset there was an internal dynamo error."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(seed_for("compile auto", shape))
    a, x = torch.rand(*shape, generator=g), torch.randn(*shape, generator=g)
    got = torch.compile(lambda a, x: plrnn.linear_recurrence(a, x), fullgraph=True)(a, x)
    torch.testing.assert_close(got, plrnn.linear_recurrence(a, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpu_serial", "torch"])
def test_out_compiles_without_a_graph_break(backend):
    torch._dynamo.reset()
    a, x, _ = make_inputs(9, (3,), "uniform", False, seed_for("compile out"), dtype=torch.float32)

    def f(a, x, out):
        plrnn.linear_recurrence(a, x, backend=backend, out=out)
        return out * 2

    got = torch.compile(f, fullgraph=True)(a, x, torch.empty(9, 3))
    torch.testing.assert_close(got, 2 * plrnn.linear_recurrence(a, x), rtol=1e-6, atol=1e-6)


def test_a_packed_batch_runs_eagerly_and_fullgraph_says_why():
    def f(a, x, h0, cu):
        return plrnn.linear_recurrence(a, x, h0, cu_seqlens=cu, return_final_state=True)

    g = torch.Generator().manual_seed(seed_for("compiled packed batch"))
    args = (torch.rand(9, 2, 5, generator=g), torch.randn(9, 2, 5, generator=g),
            torch.randn(3, 2, 5, generator=g), torch.tensor([0, 3, 3, 9]))
    torch._dynamo.reset()
    with pytest.raises(Exception, match="packed batch \\(cu_seqlens\\) runs eagerly"):
        torch.compile(f, fullgraph=True)(*args)
    torch._dynamo.reset()
    for got, want in zip(torch.compile(f)(*args), f(*args)):
        assert torch.equal(got, want)
