"""Property-based: random lengths, trailing shapes, decays in [0, 1] (exact 0s and 1s included),
impulse scales, initial states and directions; every backend matches the float64 reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plrnn.recurrence import reference

from .helpers import BACKENDS, F64_RTOL, check_float64, check_low_precision, grads_of, ref64, run

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

SETTINGS = dict(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@st.composite
def cases(draw, max_T=300):
    T = draw(st.integers(1, max_T))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    decay_style = draw(
        st.sampled_from(["uniform", "zeros_and_ones", "near_one", "near_zero", "constant"])
    )
    impulse_scale = draw(st.sampled_from([1.0, 1e-3, 1e3]))
    with_h0 = draw(st.booleans())
    reverse = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))

    g = torch.Generator().manual_seed(seed)
    full = (T, *shape)
    u = torch.rand(full, generator=g, dtype=torch.float64)
    if decay_style == "uniform":
        a = u
    elif decay_style == "zeros_and_ones":  # the closed interval's ends, mixed with interior
        a = torch.where(u < 0.3, 0.0, torch.where(u > 0.7, 1.0, u))
    elif decay_style == "near_one":
        a = 1 - 1e-3 * u
    elif decay_style == "near_zero":
        a = 1e-3 * u
    else:
        a = torch.full(full, draw(st.floats(0.0, 1.0)), dtype=torch.float64)
    x = impulse_scale * torch.randn(full, generator=g, dtype=torch.float64)
    h0 = torch.randn(shape, generator=g, dtype=torch.float64) if with_h0 else None
    # representable in float32, so one float64 truth also judges float32
    a, x, h0 = (None if t is None else t.float().double() for t in (a, x, h0))
    return a, x, h0, reverse


@settings(max_examples=60, **SETTINGS)
@given(cases())
def test_every_backend_matches_reference(case):
    a, x, h0, reverse = case
    truth = ref64(a, x, h0, reverse)
    failures = check_float64(a, x, h0, reverse, truth)
    f32 = [None if t is None else t.float() for t in (a, x, h0)]
    failures += check_low_precision(*f32, reverse, truth)
    assert not failures, "\n".join(failures)


@settings(max_examples=30, **SETTINGS)
@given(cases())
def test_every_backend_gradients_match_reference(case):
    a, x, h0, reverse = case
    upstream = torch.randn(
        x.shape, generator=torch.Generator().manual_seed(x.numel()), dtype=torch.float64
    )
    inputs = (a, x, h0)
    _, want = grads_of(lambda a, x, h0: reference.serial(a, x, h0, reverse), inputs, upstream)
    failures = []
    for backend in BACKENDS:
        _, got = grads_of(lambda a, x, h0: run(backend, a, x, h0, reverse), inputs, upstream)
        for i, (g, w) in enumerate(zip(got, want)):
            err = (g - w).abs().max().item()
            if not err <= F64_RTOL * max(1.0, w.abs().max().item()):
                failures.append(f"{backend} gradient {i}: max error {err:.3e}")
    assert not failures, "\n".join(failures)
