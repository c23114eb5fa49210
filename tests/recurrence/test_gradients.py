"""Gradients of every backend against torch.autograd through the float64 reference loop."""

from __future__ import annotations

import itertools

import pytest
import torch

from plrnn.recurrence import reference

from .helpers import (
    ALL_BACKENDS,
    BACKENDS,
    F64_RTOL,
    adjoint64,
    check_requires_grad,
    gradient_allowed,
    grads_of,
    make_inputs,
    run,
    second_derivatives,
    seed_for,
    shape_id,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

GRAD_NAMES = ("decays", "impulses", "initial_state")

GRAD_CASES = list(itertools.product([1, 2, 3, 33, 1000, 4097], [(1,), (3, 11), (2, 4, 16)]))


def _case_id(case):
    T, shape = case
    return f"T={T}-{shape_id(shape)}"


def _reference_grads(inputs, upstream, reverse):
    return grads_of(lambda a, x, h0: reference.serial(a, x, h0, reverse), inputs, upstream)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("decay_kind", ["uniform", "near_one"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=_case_id)
def test_gradients_match_reference_autograd(case, decay_kind, with_h0, reverse):
    T, shape = case
    seed = seed_for("grad", T, shape, decay_kind, with_h0, reverse)
    inputs = make_inputs(T, shape, decay_kind, with_h0, seed)
    upstream = torch.randn(
        (T, *shape), generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64
    )
    _, want = _reference_grads(inputs, upstream, reverse)
    names = GRAD_NAMES if with_h0 else GRAD_NAMES[:2]
    assert len(want) == len(names)

    failures = []
    for backend in BACKENDS:
        _, got = grads_of(lambda a, x, h0: run(backend, a, x, h0, reverse), inputs, upstream)
        for name, g, w in zip(names, got, want):
            tol = F64_RTOL * max(1.0, w.abs().max().item())
            if g.shape != w.shape or g.dtype != w.dtype:
                failures.append(f"{backend} d{name}: {g.dtype} {tuple(g.shape)}")
            elif not (g - w).abs().max().item() <= tol:
                err = (g - w).abs().max().item()
                failures.append(f"{backend} d{name}: max error {err:.3e} > {tol:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"]
)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("T", [33, 1000], ids=lambda T: f"T={T}")
def test_low_precision_gradients(T, reverse, dtype):
    """Gradients at low precision: within 2x the error of autograd through the reference loop at
    that precision (plus a few ulps of each gradient's scale), against the float64 truth."""
    shape = (3, 5)
    seed = seed_for("grad_lp", T, reverse, str(dtype))
    inputs = make_inputs(T, shape, "uniform", True, seed, dtype=dtype)
    upstream = torch.randn((T, *shape), generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    inputs64 = tuple(t.double() for t in inputs)
    _, truth = _reference_grads(inputs64, upstream.double(), reverse)
    _, baseline = _reference_grads(inputs, upstream, reverse)

    failures = []
    for backend in BACKENDS:
        _, got = grads_of(lambda a, x, h0: run(backend, a, x, h0, reverse), inputs, upstream)
        for name, g, b, w in zip(GRAD_NAMES, got, baseline, truth):
            assert g.dtype == dtype, f"{backend} d{name} is {g.dtype}"
            allowed = gradient_allowed(b, w, T)
            err = (g.double() - w).abs().max().item()
            if not err <= allowed:
                failures.append(f"{backend} d{name}: error {err:.3e} > allowed {allowed:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("channels", [1, 3, 70], ids=lambda c: f"C={c}")
@pytest.mark.parametrize("T", [1, 2, 5, 17], ids=lambda T: f"T={T}")
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gradcheck(backend, T, channels, reverse):
    a, x, h0 = make_inputs(T, (channels,), "uniform", True, seed_for("gradcheck", T, channels))
    inputs = tuple(t.requires_grad_(True) for t in (a, x, h0))
    # Full Jacobians up to 35 columns wide; the 70-channel cases check random projections of the
    # Jacobian instead (fast mode), which is as sensitive to a wrong formula and 2500x cheaper.
    assert torch.autograd.gradcheck(
        lambda a, x, h0: run(backend, a, x, h0, reverse),
        inputs,
        eps=1e-6,
        atol=1e-8,
        rtol=1e-6,
        fast_mode=channels > 35,
    )


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gradcheck_without_initial_state_multidim(backend):
    a, x, _ = make_inputs(9, (2, 3), "uniform", False, seed_for("gradcheck_md"))
    inputs = (a.requires_grad_(True), x.requires_grad_(True))
    for reverse in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, x: run(backend, a, x, None, reverse), inputs, eps=1e-6, atol=1e-8, rtol=1e-6
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_is_correct_or_refused(backend):
    """create_graph=True through a backend must either give the reference's second derivatives or
    raise; silently wrong higher-order gradients are a bug."""
    a, x, _ = make_inputs(6, (2,), "uniform", False, seed_for("double_backward"))
    got, want = second_derivatives(lambda a_, x_: run(backend, a_, x_), reference.serial, a, x)
    if got is not None:
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grad_mode", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("which", ["none", "decays", "impulses", "initial_state"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_output_requires_grad_exactly_when_an_input_does(backend, which, grad_mode):
    """The C++ backends skip their autograd bookkeeping for calls that need no gradient; the
    output must still require grad exactly when torch's own ops would make it, and then carry
    the gradient to the input that asked for it."""
    a, x, h0 = make_inputs(7, (3,), "uniform", True, seed_for("requires_grad", which))
    check_requires_grad(lambda decays, impulses, initial_state:
                        run(backend, decays, impulses, initial_state), reference.serial,
                        {"decays": a, "impulses": x, "initial_state": h0}, which, grad_mode)


@pytest.mark.parametrize("with_h0", [False, True], ids=["zero", "h0"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("T", [1, 2, 37], ids=lambda T: f"T={T}")
def test_adjoint_reference_is_autograd_through_the_loop(T, reverse, with_h0):
    """adjoint64, the truth of the long and multi-thread gradient tests, against autograd
    through the float64 reference loop."""
    seed = seed_for("adjoint", T, reverse, with_h0)
    inputs = make_inputs(T, (2, 3), "uniform", with_h0, seed)
    upstream = torch.randn((T, 2, 3), generator=torch.Generator().manual_seed(seed + 1),
                           dtype=torch.float64)
    _, want = grads_of(lambda *t: reference.serial(*t, reverse), inputs, upstream)
    got = adjoint64(*inputs, upstream, reverse)
    assert len(got) == len(want) == (3 if with_h0 else 2)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
