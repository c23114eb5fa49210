"""Narrow rows, as the CPU kernels cut them (cpu_kernels_impl.h): rows of one float (float32, or
16-bit storage) are scanned eight to a 32-byte vector in the AVX builds (packed_steps), other
rows of one register vector (up to 8 floats or 4 doubles) step four rows at a time
(lookahead_steps), and rows of up to one strip whose width is not a multiple of the vector width
overlap their last vector with the one before it (strip_steps, tile_steps). Lengths around the
groups of four and eight and the kernels' blocks of 256 rows, per-step and time-invariant decays,
forward and every gradient against the float64 reference, and NaN at every row of the first
packed vectors."""

from __future__ import annotations

import pytest
import torch

from plrnn.recurrence import reference

from .helpers import F64_RTOL, FLOOR_ULPS, grads_of, max_err, run, scale_of, seed_for

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

CPU_BACKENDS = ("cpu_serial", "cpu_parallel")
LENGTHS = [4, 5, 7, 9, 17, 255, 256, 257, 1027]
CHANNELS = [1, 2, 3, 4, 5, 8, 12, 24, 33, 48, 63]


def _inputs(T, C, time_invariant, seed):
    g = torch.Generator().manual_seed(seed)
    # Forget gates near 1 (sigmoid(N(2, 1))), so each step's state carries far.
    decays = torch.sigmoid(torch.randn((1 if time_invariant else T, C), generator=g) + 2)
    if time_invariant:
        decays = decays[0]
    impulses = torch.randn((T, C), generator=g)
    h0 = torch.randn((C,), generator=g)
    return decays, impulses, h0


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("time_invariant", [False, True], ids=["per_step", "invariant"])
@pytest.mark.parametrize("C", CHANNELS, ids=lambda c: f"C={c}")
@pytest.mark.parametrize("T", LENGTHS, ids=lambda T: f"T={T}")
def test_forward_matches_reference(T, C, time_invariant, reverse):
    a, x, h0 = _inputs(T, C, time_invariant, seed_for("narrow", T, C, time_invariant, reverse))
    # reference.serial takes (T, C) decays; the backends get them as the user passed them.
    truth = reference.serial(a.double().expand(T, C), x.double(), h0.double(), reverse)
    ref_err = max_err(reference.serial(a.expand(T, C), x, h0, reverse), truth)
    failures = []
    for backend in CPU_BACKENDS:
        for dtype, allowed in (
            (torch.float64, F64_RTOL * max(1.0, scale_of(truth))),
            (torch.float32, 2 * ref_err + FLOOR_ULPS * torch.finfo(torch.float32).eps
             * scale_of(truth)),
        ):
            out = run(backend, a.to(dtype), x.to(dtype), h0.to(dtype), reverse)
            err = max_err(out, truth)
            if out.dtype != dtype or out.shape != x.shape or not err <= allowed:
                failures.append(f"{backend} {dtype}: max error {err:.3e} > {allowed:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("time_invariant", [False, True], ids=["per_step", "invariant"])
@pytest.mark.parametrize("C", [1, 4, 12, 63], ids=lambda c: f"C={c}")
@pytest.mark.parametrize("T", [5, 257, 1027], ids=lambda T: f"T={T}")
def test_gradients_match_reference(T, C, time_invariant, reverse):
    seed = seed_for("narrow-grad", T, C, time_invariant, reverse)
    inputs = tuple(t.double() for t in _inputs(T, C, time_invariant, seed))
    upstream = torch.randn((T, C), generator=torch.Generator().manual_seed(seed + 1),
                           dtype=torch.float64)
    _, want = grads_of(
        lambda a, x, h0: reference.serial(a.expand(T, C), x, h0, reverse), inputs, upstream
    )
    assert [w.shape for w in want] == [t.shape for t in inputs]
    failures = []
    for backend in CPU_BACKENDS:
        _, got = grads_of(lambda a, x, h0: run(backend, a, x, h0, reverse), inputs, upstream)
        for name, g, w in zip(("decays", "impulses", "initial_state"), got, want):
            tol = F64_RTOL * max(1.0, w.abs().max().item())
            err = (g - w).abs().max().item()
            if g.shape != w.shape or not err <= tol:
                failures.append(f"{backend} d{name}: {tuple(g.shape)}, max error {err:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("site", ["decays", "impulses"])
@pytest.mark.parametrize("C", [1, 2], ids=lambda c: f"C={c}")
def test_nan_in_the_first_vectors_spreads_as_in_the_loop(C, site, dtype, reverse):
    """A NaN at any row of the first vectors makes exactly the steps NaN that the loop makes NaN,
    from that step on in scan order; the steps before it keep their values. One float32 a row
    is the packed path (eight rows a vector); two channels and float64 fold four rows at a time."""
    T = 40
    failures = []
    for step in range(17):  # every row of the first two vectors of 8 rows, and one more
        a, x, h0 = _inputs(T, C, False, seed_for("narrow-nan", C, site, step, reverse))
        row = T - 1 - step if reverse else step
        (a if site == "decays" else x)[row, C - 1] = float("nan")
        truth = reference.serial(a.double(), x.double(), h0.double(), reverse)
        finite = ~torch.isnan(truth)
        scale = max(1.0, scale_of(truth[finite]))
        if dtype == torch.float64:
            tol = F64_RTOL * scale
        else:  # as test_forward_matches_reference: twice the float32 loop's own error, or a floor
            ref_err = max_err(reference.serial(a, x, h0, reverse)[finite], truth[finite])
            tol = 2 * ref_err + FLOOR_ULPS * torch.finfo(dtype).eps * scale
        for backend in CPU_BACKENDS:
            out = run(backend, a.to(dtype), x.to(dtype), h0.to(dtype), reverse)
            if not torch.equal(torch.isnan(out), ~finite):
                failures.append(f"{backend} NaN at step {step}: NaN where the loop has a number "
                                "or the other way round")
            elif not max_err(out[finite], truth[finite]) <= tol:
                failures.append(f"{backend} NaN at step {step}: max error "
                                f"{max_err(out[finite], truth[finite]):.3e} > {tol:.3e}")
    assert not failures, "\n".join(failures)
