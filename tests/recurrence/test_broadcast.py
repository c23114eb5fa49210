"""Decays that broadcast to the impulses' shape (time-invariant, shared over the batch, a single
scalar): every backend against the float64 loop on the expanded decays, and the decays' gradient
reduced over the broadcast dimensions as torch reduces it."""

from __future__ import annotations

import pytest
import torch

import plrnn
from plrnn.recurrence import reference

from .helpers import ALL_BACKENDS, F64_RTOL, seed_for

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

B, C = 2, 3
# Decay shapes for (T, B, C) impulses; "T" stands for the length.
SHAPES = [(B, C), (1, B, C), ("T", 1, C), ("T", B, 1), (1, 1, C), (C,), (), ("T", 1, 1)]


def _shape(spec, T):
    return tuple(T if d == "T" else d for d in spec)


def _close(got, want):
    return (got - want).abs().max().item() <= F64_RTOL * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("T", [1, 17, 300])
@pytest.mark.parametrize("spec", SHAPES, ids=lambda s: "a=" + "x".join(map(str, s)))
def test_forward_and_every_gradient(spec, T, with_h0, reverse):
    g = torch.Generator().manual_seed(seed_for("bcast", spec, T, with_h0, reverse))
    # Near 1, where a time-invariant decay matters most (long memory).
    a = 0.9 + 0.1 * torch.rand(_shape(spec, T), generator=g, dtype=torch.float64)
    x = torch.randn(T, B, C, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, C, generator=g, dtype=torch.float64) if with_h0 else None
    up = torch.randn(T, B, C, generator=g, dtype=torch.float64)

    def run(fn):
        leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (a, x, h0)]
        h = fn(*leaves)
        grads = torch.autograd.grad((h * up).sum(), [t for t in leaves if t is not None])
        return h.detach(), grads

    want_h, want = run(lambda a_, x_, h0_: reference.serial(a_.expand(x_.shape), x_, h0_,
                                                            reverse))
    for backend in ALL_BACKENDS:
        h, got = run(lambda a_, x_, h0_: plrnn.linear_recurrence(
            a_, x_, h0_, reverse=reverse, backend=backend))
        assert _close(h, want_h), backend
        for name, gv, wv in zip(("decays", "impulses", "initial_state"), got, want):
            assert gv.shape == wv.shape and _close(gv, wv), (backend, name)
        assert got[0].shape == a.shape  # reduced to the decays' own shape


def test_time_invariant_decays_in_a_packed_batch():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, C, generator=g, dtype=torch.float64)
    x = torch.randn(9, C, generator=g, dtype=torch.float64)
    cu = torch.tensor([0, 4, 4, 9])
    want = torch.cat([reference.serial(a.expand(4, C), x[:4]),
                      reference.serial(a.expand(5, C), x[4:])])
    for backend in ALL_BACKENDS:
        assert _close(plrnn.linear_recurrence(a, x, cu_seqlens=cu, backend=backend), want)


def test_out_with_broadcast_decays():
    a = torch.rand(C, dtype=torch.float64)
    x = torch.randn(12, C, dtype=torch.float64)
    want = reference.serial(a.expand(12, C), x)
    for backend in ALL_BACKENDS:
        out = torch.empty_like(x)
        assert plrnn.linear_recurrence(a, x, backend=backend, out=out) is out
        assert _close(out, want), backend
