"""Complex decays and impulses (LRU-style diagonal recurrences, |a| < 1): every backend that lists
complex=True against a complex128 loop, gradients in torch's convention (gradcheck, and the
autograd of that loop), and the backends that take real inputs only saying so."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.autograd import gradcheck

import plrnn

from .helpers import F64_RTOL, seed_for

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

COMPLEX = tuple(s.name for s in plrnn.backends("cpu") if s.available and s.complex)

# |a| per case: anywhere in the unit disc, near the circle (long memory), near 0.
MODULI = {"disc": (0.0, 1.0), "near_one": (0.999, 1.0), "near_zero": (0.0, 1e-3)}


def make(T, shape, modulus="disc", with_h0=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = MODULI[modulus]
    r = lo + (hi - lo) * torch.rand((T, *shape), generator=g, dtype=torch.float64)
    theta = 2 * torch.pi * torch.rand((T, *shape), generator=g, dtype=torch.float64)
    a = torch.polar(r, theta)
    x = torch.randn((T, *shape), generator=g, dtype=torch.complex128)
    h0 = torch.randn(shape, generator=g, dtype=torch.complex128) if with_h0 else None
    return a, x, h0


def loop(a, x, h0, reverse=False):
    """The complex128 ground truth: one step at a time."""
    h = torch.zeros_like(x[0]) if h0 is None else h0
    out = [None] * x.shape[0]
    for t in reversed(range(x.shape[0])) if reverse else range(x.shape[0]):
        h = a[t] * h + x[t]
        out[t] = h
    return torch.stack(out)


def value_and_grads(fn, inputs, up):
    """fn(*inputs) and the gradients of the real loss Re sum(h * conj(up)) to every input."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    h = fn(*leaves)
    return (h, *torch.autograd.grad((h * up.conj()).sum().real, leaves))


def test_backends_say_which_take_complex_inputs():
    flags = {s.name: s.complex for s in plrnn.backends("cpu")}
    assert {name for name, takes in flags.items() if takes} == {
        "reference", "torch", "cpu_serial", "cpu_parallel", "cuda_parallel"}


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("modulus", list(MODULI))
@pytest.mark.parametrize(("T", "shape"), list(itertools.product([1, 2, 33, 1000], [(1,), (3, 5)])))
def test_forward_matches_the_loop(T, shape, modulus, with_h0, reverse):
    a, x, h0 = make(T, shape, modulus, with_h0, seed_for("cfwd", T, shape, modulus))
    want = loop(a, x, h0, reverse)
    for backend in COMPLEX:
        h = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=backend)
        assert h.dtype == torch.complex128
        err = (h - want).abs().max().item()
        assert err <= F64_RTOL * max(1.0, want.abs().max().item()), backend
        low = plrnn.linear_recurrence(a.to(torch.complex64), x.to(torch.complex64),
                                      None if h0 is None else h0.to(torch.complex64),
                                      reverse=reverse, backend=backend)
        assert low.dtype == torch.complex64
        assert (low.to(torch.complex128) - want).abs().max().item() <= 1e-4 * max(
            1.0, want.abs().max().item()), backend


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("backend", COMPLEX)
def test_gradcheck(backend, reverse):
    a, x, h0 = make(6, (3,), "disc", True, seed=1)
    inputs = tuple(t.requires_grad_() for t in (a, x, h0))
    assert gradcheck(lambda a_, x_, h0_: plrnn.linear_recurrence(
        a_, x_, h0_, reverse=reverse, backend=backend), inputs)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("modulus", ["disc", "near_one"])
def test_gradients_match_the_loops_autograd(modulus, reverse):
    a, x, h0 = make(777, (2, 3), modulus, True, seed_for("cgrad", modulus, reverse))
    up = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.complex128)

    def grads(fn):
        return value_and_grads(fn, (a, x, h0), up)[1:]

    want = grads(lambda a_, x_, h0_: loop(a_, x_, h0_, reverse))
    for backend in COMPLEX:
        got = grads(lambda a_, x_, h0_: plrnn.linear_recurrence(
            a_, x_, h0_, reverse=reverse, backend=backend))
        for name, g, w in zip(("decays", "impulses", "initial_state"), got, want):
            assert (g - w).abs().max().item() <= F64_RTOL * max(1.0, w.abs().max().item()), (
                backend, name)


def test_packed_complex_batch():
    a, x, _ = make(12, (2,), "disc", False, seed=3)
    h0 = torch.randn(3, 2, dtype=torch.complex128)
    cu = torch.tensor([0, 5, 5, 12])
    want = torch.cat([loop(a[:5], x[:5], h0[0]), loop(a[5:], x[5:], h0[2])])
    for backend in COMPLEX:
        h = plrnn.linear_recurrence(a, x, h0, cu_seqlens=cu, backend=backend)
        assert (h - want).abs().max().item() < 1e-12, backend


def test_auto_takes_a_complex_backend():
    a, x, h0 = make(50, (4,), "near_one", True, seed=4)
    assert (plrnn.linear_recurrence(a, x, h0) - loop(a, x, h0)).abs().max().item() < 1e-12


def test_a_real_only_backend_says_so(monkeypatch):
    from plrnn.recurrence import registry

    real_only = registry.Backend("real_only", "a backend without complex support",
                                 registry.REGISTRY["torch"].run, lambda device: None)
    monkeypatch.setitem(registry.REGISTRY, "real_only", real_only)
    a, x, _ = make(5, (2,), with_h0=False)
    with pytest.raises(TypeError, match="backend 'real_only' takes real inputs only.*'torch'"):
        plrnn.linear_recurrence(a, x, backend="real_only")


def test_complex_decays_with_real_impulses_are_refused():
    a, x, _ = make(5, (2,), with_h0=False)
    with pytest.raises(TypeError, match="both real or both complex"):
        plrnn.linear_recurrence(a, x.real.contiguous())
    with pytest.raises(TypeError, match="both real or both complex"):
        plrnn.linear_recurrence(a.abs(), x)


# The C++ kernels' paths for complex inputs: rows of up to 16 channels keep their states in
# vector registers (3, 5, 6 and 7 channels as two or more overlapping vectors), wider ones run
# the channel loop; cpu_parallel on 2 threads cuts time into one chunk
# more than threads (the first scanned while the others are reduced); cpu_serial takes that time
# split too for rows streamed from memory (PLRNN_STREAM_BYTES=0 sends these small inputs there).
# Lengths below and above the chunking's minimums (64 rows a chunk, 2^14 steps times channels),
# decays per step and time-invariant; every state and every gradient against the complex128 loop.
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("threads", ["1", "2", "2-time-split"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 33])
def test_kernel_paths_match_the_loop(channels, threads, reverse, num_threads, monkeypatch,
                                     streaming_schedule):
    if threads == "2-time-split":
        streaming_schedule("time_split")
        monkeypatch.setenv("PLRNN_STREAM_BYTES", "0")
    num_threads(int(threads[0]))
    lengths = [1, 4, 193, max(1001, 2**14 // channels + 67)]
    for T, invariant in itertools.product(lengths, [False, True]):
        a, x, h0 = make(T, (channels,), "near_one", True,
                        seed_for("cpaths", channels, T, invariant, reverse))
        if invariant:
            a = a[0].clone()
        up = torch.randn(x.shape, generator=torch.Generator().manual_seed(T), dtype=x.dtype)

        def grads(fn):
            return value_and_grads(fn, (a, x, h0), up)

        want = grads(lambda a_, x_, h0_: loop(a_.expand_as(x_), x_, h0_, reverse))
        for backend in ("cpu_serial", "cpu_parallel"):
            got = grads(lambda a_, x_, h0_: plrnn.linear_recurrence(
                a_, x_, h0_, reverse=reverse, backend=backend))
            for name, g, w in zip(("h", "decays", "impulses", "initial_state"), got, want):
                assert (g - w).abs().max().item() <= F64_RTOL * max(1.0, w.abs().max().item()), (
                    backend, T, invariant, name)
            low = plrnn.linear_recurrence(a.to(torch.complex64), x.to(torch.complex64),
                                          h0.to(torch.complex64), reverse=reverse,
                                          backend=backend)
            assert (low.to(torch.complex128) - want[0]).abs().max().item() <= 1e-4 * max(
                1.0, want[0].abs().max().item()), (backend, T, invariant)


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_decays_whose_period_wraps_inside_a_vector(parallel, reverse, num_threads):
    """The op itself takes (T, P) decays for any P dividing the channels (linear_recurrence
    expands periods under 16 before the CPU kernels see them); rows of a few channels then read
    their decays channel by channel where the period wraps inside one vector."""
    from plrnn.recurrence import cpu

    if cpu.load() is not None:
        pytest.skip("no C++ kernels here")
    num_threads(2)
    T, P, C = 3001, 2, 6  # T * C >= 2**14: cpu_parallel splits time
    a, _, _ = make(T, (P,), "near_one", False, seed=8)
    _, x, h0 = make(T, (C,), "near_one", True, seed=9)
    up = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    got = value_and_grads(lambda a_, x_, h0_: torch.ops.plrnn.cpu_scan(
        a_, x_, h0_, reverse, parallel), (a, x, h0), up)
    want = value_and_grads(lambda a_, x_, h0_: loop(a_.repeat(1, C // P), x_, h0_, reverse),
                           (a, x, h0), up)
    for name, g, w in zip(("h", "decays", "impulses", "initial_state"), got, want):
        assert g.shape == w.shape, name
        assert (g - w).abs().max().item() <= F64_RTOL * max(1.0, w.abs().max().item()), name


def test_auto_splits_time_for_complex_inputs_on_several_threads(num_threads):
    """The complex CPU kernels are arithmetic-bound: auto takes cpu_parallel for them at any
    shape (it runs one thread where the work is small), while real inputs keep their rule."""
    from plrnn.recurrence import registry

    num_threads(2)
    cpu = torch.device("cpu")
    for T, channels in [(16, 1), (4096, 8), (16384, 64), (65536, 256)]:
        assert registry.resolve("auto", cpu, T, channels, is_complex=True).name == "cpu_parallel"
    assert registry.resolve("auto", cpu, 65536, 1024).name == "cpu_serial"
