"""The C++ kernels flush subnormals to zero while they run (no microcode-assist slow path), and
leave the caller's floating-point state as they found it, on the calling thread and on torch's
worker threads. The `torch` backend keeps its decay products normal in the arithmetic instead
(products below sqrt(smallest normal) are set to zero), touching no floating-point state.

Numerical effect: values below 1.2e-38 (float32) or 2.2e-308 (float64) in magnitude read and
write as 0, so results still meet the float64 reference within the usual tolerance of the
output's scale.
"""

from __future__ import annotations

import pytest
import torch

import plrnn
from plrnn.recurrence import torch_scan

from .helpers import adjoint64, max_err, ref64, scale_of

KERNELS = ("cpu_serial", "cpu_parallel", "torch")
TINY = {torch.float32: 1e-39, torch.float64: 1e-310}  # subnormal in each dtype


def _subnormals_survive(dtype: torch.dtype, numel: int) -> bool:
    """Whether torch's own arithmetic keeps subnormals: on the calling thread for a small
    numel, on torch's worker threads too for a large one."""
    tiny = torch.full((numel,), TINY[dtype], dtype=dtype)
    return bool((tiny * torch.ones_like(tiny) != 0).all())


@pytest.fixture
def restore_flush():
    yield
    torch.set_flush_denormal(False)


def _call_both_passes(backend: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    a = (0.5 + 0.5 * torch.rand(20000, 8, generator=g, dtype=dtype)).requires_grad_()
    x = torch.randn(20000, 8, generator=g, dtype=dtype).requires_grad_()
    plrnn.linear_recurrence(a, x, backend=backend).sum().backward()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", KERNELS)
def test_caller_flush_state_is_restored(backend, dtype, threads, num_threads, restore_flush):
    num_threads(threads)
    # torch.set_flush_denormal sets the calling thread only, so the workers are checked where
    # the caller keeps subnormals: the kernel's workers must not be left flushing.
    for caller_flushes, numel in ((False, 1 << 20), (True, 64), (False, 64)):
        if not torch.set_flush_denormal(caller_flushes):
            pytest.skip("this CPU cannot flush denormals")
        assert _subnormals_survive(dtype, numel) is not caller_flushes  # the probe sees it
        _call_both_passes(backend, dtype)
        assert _subnormals_survive(dtype, numel) is not caller_flushes, (
            f"{backend} changed the caller's flush-to-zero setting ({caller_flushes})"
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_results_with_subnormal_products_meet_the_reference(backend, dtype, threads, num_threads):
    """Long chunks of forget-gate-like decays: the running products cross the subnormal range
    (what made cpu_parallel slow), and tiny impulses put the state itself there."""
    num_threads(threads)
    g = torch.Generator().manual_seed(1)
    T, C = 40000, 5
    a = torch.sigmoid(torch.randn(T, C, generator=g, dtype=torch.float64) + 2)
    x = torch.randn(T, C, generator=g, dtype=torch.float64)
    x[: T // 2] *= TINY[dtype] * 1e3  # the first half's state lives near the subnormal range
    a_, x_ = a.to(dtype), x.to(dtype)
    h = plrnn.linear_recurrence(a_, x_, backend=backend)
    truth = ref64(a_, x_)
    eps = torch.finfo(dtype).eps
    assert max_err(h, truth) <= 64 * eps * scale_of(truth)

    a_.requires_grad_()
    x_.requires_grad_()
    grad = torch.randn(T, C, generator=g, dtype=torch.float64).to(dtype)
    ga, gx = torch.autograd.grad(plrnn.linear_recurrence(a_, x_, backend=backend), (a_, x_), grad)
    # The true gradients in float64 without autograd through 40000 steps.
    ta, tx = adjoint64(a_.detach(), x_.detach(), None, grad)
    assert max_err(gx, tx) <= 64 * eps * scale_of(tx)
    assert max_err(ga, ta) <= 64 * eps * scale_of(ta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_backend_decay_products_stay_normal(dtype, monkeypatch):
    """Forget-gate decays whose running products cross the subnormal range: every product the
    doubling scan keeps is zero or normal, forward and backward."""
    kept = []
    flush = torch_scan._flush

    def spy(products, tiny):
        flush(products, tiny)
        kept.append(products.detach().clone().flatten())

    monkeypatch.setattr(torch_scan, "_flush", spy)
    g = torch.Generator().manual_seed(2)
    T = 4096 if dtype == torch.float32 else 65536
    a = torch.sigmoid(torch.randn(T, 3, generator=g, dtype=dtype) + 2).requires_grad_()
    x = torch.randn(T, 3, generator=g, dtype=dtype)
    plrnn.linear_recurrence(a, x, backend="torch").sum().backward()
    products = torch.cat(kept)
    tiny = torch.finfo(dtype).tiny
    assert not ((products != 0) & (products.abs() < tiny)).any()
    # the gates do reach the range: some products were set to zero, and others kept just above it
    assert (products == 0).any()
    assert ((products != 0) & (products.abs() < tiny**0.5 * 1e3)).any()


def test_workers_started_inside_a_call_do_not_keep_flushing():
    """OpenMP starts a worker thread at the first parallel region that needs it, and a new thread
    copies the floating-point state of the thread that starts it. In a fresh process whose first
    2-thread region is inside a kernel call (inputs under torch's own parallel grain, so that the
    op's checks run on one thread; cpu_serial's threads take blocks of rows in turn even so),
    torch's 2-thread arithmetic must still keep subnormals afterwards. It did not while the
    calling thread flushed across the kernel's parallel regions."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import torch, plrnn
        torch.set_num_threads(2)
        a = torch.full((64, 256), 0.9, requires_grad=True)
        x = torch.ones(64, 256, requires_grad=True)
        plrnn.linear_recurrence(a, x, backend="cpu_serial").sum().backward()
        tiny = torch.full((1 << 20,), 1e-39)
        print("kept" if bool((tiny * torch.ones_like(tiny) != 0).all()) else "flushed")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=540)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "kept", "cpu_serial left a worker flushing subnormals"
