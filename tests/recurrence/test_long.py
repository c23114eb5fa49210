"""T = 2**17 + 3 with 4 channels at torch's default thread count: every schedule of the C++
kernels (time split across threads, Algorithm 1 in registers within a thread) and the torch
scan's 17 doubling passes, against the float64 reference computed once per direction."""

from __future__ import annotations

import pytest
import torch

from .helpers import (
    F64_RTOL,
    adjoint64,
    cast,
    check_float64,
    check_low_precision,
    grads_of,
    make_inputs,
    ref64,
    run,
    seed_for,
)

T_LONG = 2**17 + 3
PARALLEL_BACKENDS = ("cpu_parallel", "torch")


@pytest.fixture(scope="module", params=[False, True], ids=["fwd", "rev"])
def long_case(request):
    reverse = request.param
    inputs32 = make_inputs(T_LONG, (4,), "near_one", True, seed_for("long", reverse), torch.float32)
    inputs64 = cast(inputs32, torch.float64)
    return reverse, inputs32, inputs64, ref64(*inputs64, reverse)


def test_long_forward_float64(long_case):
    reverse, _, (a, x, h0), truth = long_case
    failures = check_float64(a, x, h0, reverse, truth, backends=("cpu_serial", *PARALLEL_BACKENDS))
    assert not failures, "\n".join(failures)


def test_long_forward_float32(long_case):
    reverse, (a, x, h0), _, truth = long_case
    failures = check_low_precision(
        a, x, h0, reverse, truth, backends=("cpu_serial", *PARALLEL_BACKENDS)
    )
    assert not failures, "\n".join(failures)


def test_long_gradients(long_case):
    """Every gradient of cpu_serial and the parallel schedules at long T, against the float64
    adjoint recurrence (autograd through the reference loop would take minutes here)."""
    reverse, _, inputs, truth = long_case
    upstream = torch.randn(
        inputs[1].shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )
    want = adjoint64(*inputs, upstream, reverse)
    failures = []
    for name in ("cpu_serial", *PARALLEL_BACKENDS):
        out, got = grads_of(lambda a, x, h0: run(name, a, x, h0, reverse), inputs, upstream)
        assert torch.allclose(out, truth, rtol=0, atol=F64_RTOL * truth.abs().max())
        for what, g, w in zip(("decays", "impulses", "initial_state"), got, want, strict=True):
            err = (g - w).abs().max().item()
            tol = F64_RTOL * max(1.0, w.abs().max().item())
            if not err <= tol:
                failures.append(f"{name} d{what}: max error {err:.3e} > {tol:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_wide_rows_span_several_channel_blocks(reverse):
    """40001 channels: several of the kernels' 8192-channel blocks per thread, plus a ragged one,
    forward and every gradient against the float64 reference."""
    a, x, h0 = make_inputs(7, (40001,), "uniform", True, seed_for("wide", reverse))
    truth = ref64(a, x, h0, reverse)
    failures = check_float64(a, x, h0, reverse, truth)
    assert not failures, "\n".join(failures)
    upstream = torch.randn_like(truth)
    want = grads_of(lambda a, x, h0: ref64(a, x, h0, reverse), (a, x, h0), upstream)
    for backend in ("cpu_serial", "cpu_parallel"):
        got = grads_of(lambda a, x, h0: run(backend, a, x, h0, reverse), (a, x, h0), upstream)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=F64_RTOL, atol=F64_RTOL)
