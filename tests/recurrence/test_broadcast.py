"""Decays that broadcast to the impulses' shape (time-invariant, shared over the batch, a single
scalar): every backend against the float64 loop on the expanded decays, and the decays' gradient
reduced over the broadcast dimensions as torch reduces it."""

from __future__ import annotations

import math

import pytest
import torch

import plrnn
from plrnn.recurrence import reference

from .helpers import (
    ALL_BACKENDS,
    F64_RTOL,
    adjoint64,
    grads_of,
    seed_for,
    sysfs_cache_bytes,
)

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



# Shared decays take their gradient from one pass over h and dL/dx (cpu_decay_grad.cpp):
# time-invariant ones in blocks of rows fixed by the shape and tiles of at most 4096 channels
# (shapes that give one channel, many blocks with a shorter last one, several tiles with channel
# groups to fold, packed sequences, some empty, that cross block boundaries), decays shared over
# the batch a row at a time.
# (impulses' shape, decays' shape, sequence lengths or None, dtype)
DECAY_SUM_CASES = [
    ((70000, 1), (1,), None, torch.float64),
    ((1100, 1000), (1000,), None, torch.float64),
    ((40, 2, 4100), (4100,), None, torch.float64),
    ((35003, 3), (3,), [0, 5000, 1, 0, 30000, 2], torch.float64),
    ((3000, 2, 5), (5,), [1000, 0, 2000], torch.complex128),
    ((1100, 1000), (1000,), None, torch.float32),
    ((300, 5, 37), (300, 1, 37), None, torch.float64),
    ((2001, 3, 20), (2001, 1, 20), [700, 0, 1, 1300], torch.float64),
    ((500, 2, 24), (500, 1, 24), None, torch.complex128),
]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("backend", ["cpu_serial", "cpu_parallel"])
@pytest.mark.parametrize("case", DECAY_SUM_CASES,
                         ids=lambda c: f"x={'x'.join(map(str, c[0]))}-{str(c[3])[6:]}"
                         + ("-packed" if c[2] else ""))
def test_shared_decay_gradient_sums_every_step(case, backend, reverse, num_threads):
    """Against the same recurrence on the decays expanded to every step (whose kernels write one
    gradient term per step and channel, summed here in float64), within a few ulps of the terms'
    magnitude, with h0, and against the float64 terms (decay_terms64); the same bits from one
    call to the next and, for cpu_serial within one core's cache, on one thread or two."""
    shape, a_shape, lengths, dtype = case
    g = torch.Generator().manual_seed(seed_for("decay-sum", shape, lengths, reverse))
    real = torch.float64 if dtype == torch.complex128 else dtype

    def draw(*size, scale=1.0):
        v = scale * torch.randn(*size, generator=g, dtype=torch.float64)
        if dtype.is_complex:
            v = torch.complex(v, scale * torch.randn(*size, generator=g, dtype=torch.float64))
        return v.to(dtype)

    a = (0.9 + 0.1 * torch.rand(a_shape, generator=g, dtype=torch.float64)).to(real)
    if dtype.is_complex:
        a = torch.polar(a, torch.rand(a_shape, generator=g, dtype=torch.float64) * 6.0)
    x, up = draw(*shape), draw(*shape)
    n_states = len(lengths) if lengths else None
    h0 = draw(*(([n_states] if lengths else []) + list(shape[1:])))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()]) if lengths else None

    def decay_grad(decays, threads):
        num_threads(threads)
        leaf = decays.detach().clone().requires_grad_()
        h = plrnn.linear_recurrence(leaf, x, h0, cu_seqlens=cu, reverse=reverse, backend=backend)
        (grad,) = torch.autograd.grad((h * up).real.sum(), leaf)
        return grad

    got = decay_grad(a, 2)
    assert torch.equal(got, decay_grad(a, 2))
    # Within one core's cache cpu_serial's threads split the channels, one thread's arithmetic;
    # beyond it they may split time, which differs by rounding (checked against `want` below).
    if backend == "cpu_serial" and 3 * x.numel() * x.element_size() <= (sysfs_cache_bytes(2) or 0):
        assert torch.equal(got, decay_grad(a, 1))
    terms = decay_grad(a.expand(shape), 2).to(torch.complex128 if dtype.is_complex else
                                               torch.float64)
    padded = (1,) * (len(shape) - len(a_shape)) + a_shape
    groups = tuple(d for d, (n, m) in enumerate(zip(padded, shape)) if n == 1 < m)
    want = terms.sum(groups, keepdim=True).reshape(a_shape)
    magnitude = terms.abs().sum(groups, keepdim=True).reshape(a_shape)
    ulps = 16 * torch.finfo(real).eps  # the terms' own rounding and float32's sum of them
    assert got.shape == a.shape and got.dtype == dtype
    assert ((got.to(want.dtype) - want).abs() <= ulps * magnitude + 1e-300).all()
    # The expanded decays' terms are this backend's too, so also against a float64 truth. Its
    # terms carry the recurrence's own rounding, up to 110 float64 ulps of their magnitude here
    # and 10 float32 ones; a dropped carry or a missed step errs by the terms themselves.
    truth = decay_terms64(a.expand(shape), x, h0, up, cu, reverse)
    rtol = F64_RTOL if real == torch.float64 else 1e-4
    assert ((got.to(want.dtype) - truth.sum(groups, keepdim=True).reshape(a_shape)).abs()
            <= rtol * magnitude + 1e-300).all()


def decay_terms64(a, x, h0, up, cu, reverse):
    """dL/da for L = Re(sum(h * up)) in float64 (complex128), per step and channel, each packed
    sequence on its own: adjoint64 for real inputs, autograd through the reference loop for
    complex ones (dL/da = conj(h_prev) dL/dx, which adjoint64 does not write)."""
    bounds = [0, x.shape[0]] if cu is None else cu.tolist()
    terms = []
    for n, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        start = h0 if cu is None else h0[n]
        if hi == lo:
            continue
        if not a.is_complex():
            terms.append(adjoint64(a[lo:hi], x[lo:hi], start, up[lo:hi], reverse)[0])
            continue
        a_, x_, h0_, up_ = (t.to(torch.complex128) for t in (a[lo:hi], x[lo:hi], start, up[lo:hi]))
        # grad_outputs v stands for L = Re(sum(conj(v) * h)), so v = conj(up).
        _, (da,) = grads_of(lambda d: reference.serial(d, x_, h0_, reverse), [a_], up_.conj())
        terms.append(da)
    return torch.cat(terms)


def test_out_with_broadcast_decays():
    a = torch.rand(C, dtype=torch.float64)
    x = torch.randn(12, C, dtype=torch.float64)
    want = reference.serial(a.expand(12, C), x)
    for backend in ALL_BACKENDS:
        out = torch.empty_like(x)
        assert plrnn.linear_recurrence(a, x, backend=backend, out=out) is out
        assert _close(out, want), backend


# Decays shared over a batch of wide enough rows reach the C++ kernels as (T, P), read at channel
# c % P, and time-invariant ones as one (1, C) row. P = 20 (a 16-wide tile and a 4-wide one per
# period) and 70 (wider than a register tile) with B = 3; 2 threads take cpu_parallel through
# time chunks and cpu_serial through its channel split, or with PLRNN_STREAM_BYTES=0 (as for data
# larger than the last-level cache) through its pipelined schedule (rows of 3 * 70 * 8 bytes).
KERNEL_CASES = [
    (("T", 1, 20), (3, 20), (20,)),  # (decay shape, impulses' trailing shape, what the kernel reads)
    (("T", 1, 70), (3, 70), (70,)),
    (("T", 1, 2, 20), (3, 2, 20), (40,)),
    (("T", 1, 1, 20), (3, 2, 20), (20,)),
    ((20,), (3, 20), (60,)),
    ((1, 2, 20), (3, 2, 20), (120,)),
]


def _broadcast_case(spec, trailing, T, seed):
    """Decays of shape `spec` near 1 and (T, *trailing) impulses, an initial state and an upstream
    gradient, drawn from `seed`; returns grads(fn) -> (h, (dL/da, dL/dx, dL/dh0)) for
    fn(a, x, h0) run on fresh leaves."""
    g = torch.Generator().manual_seed(seed)
    a = 0.9 + 0.1 * torch.rand(_shape(spec, T), generator=g, dtype=torch.float64)
    x = torch.randn(T, *trailing, generator=g, dtype=torch.float64)
    h0 = torch.randn(trailing, generator=g, dtype=torch.float64)
    up = torch.randn(T, *trailing, generator=g, dtype=torch.float64)

    def grads(fn):
        leaves = [t.detach().clone().requires_grad_() for t in (a, x, h0)]
        h = fn(*leaves)
        return h.detach(), torch.autograd.grad((h * up).sum(), leaves)

    return grads


def _kernel_decay_shapes(fn):
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            # the kernels' ops; not the settings ops (cpu_ilp_channels, cpu_wide_rows,
            # cpu_streaming_schedule) that first calls make to apply the calibration
            if func.namespace == "plrnn" and isinstance(args[0], torch.Tensor):
                seen.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    with Record():
        result = fn()
    return result, seen


@pytest.mark.parametrize("threads", [1, 2, "2-pipelined", "2-time-split"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("T", [1, 33, 700])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: "a=" + "x".join(map(str, c[0])))
def test_cpu_kernels_read_broadcast_decays_unexpanded(case, T, reverse, threads, num_threads,
                                                      monkeypatch, wide_rows, streaming_schedule):
    spec, trailing, period = case
    if threads in ("2-pipelined", "2-time-split"):
        monkeypatch.setenv("PLRNN_STREAM_BYTES", "0")
        streaming_schedule("time_split" if threads == "2-time-split" else "pipelined")
        threads = 2
    num_threads(threads)
    grads = _broadcast_case(spec, trailing, T, seed_for("bcast-kernel", spec, T, reverse))
    want_h, want = grads(lambda a_, x_, h0_: reference.serial(a_.expand(x_.shape), x_, h0_,
                                                              reverse))
    for backend in ("cpu_serial", "cpu_parallel"):
        (h, got), seen = _kernel_decay_shapes(lambda: grads(
            lambda a_, x_, h0_: plrnn.linear_recurrence(a_, x_, h0_, reverse=reverse,
                                                        backend=backend)))
        read = (T, *period) if spec[0] == "T" and T > 1 else (1, math.prod(trailing))
        assert seen and all(s == read for s in seen), (backend, seen)
        assert _close(h, want_h), backend
        for name, gv, wv in zip(("decays", "impulses", "initial_state"), got, want):
            assert gv.shape == wv.shape and _close(gv, wv), (backend, name)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_batch_shared_decays_in_a_packed_batch_and_out(reverse, num_threads):
    num_threads(2)
    g = torch.Generator().manual_seed(seed_for("bcast-packed", reverse))
    lengths = [300, 1, 0, 45, 2]
    T = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    a = 0.9 + 0.1 * torch.rand(T, 1, 24, generator=g, dtype=torch.float64)
    x = torch.randn(T, 5, 24, generator=g, dtype=torch.float64)
    h0 = torch.randn(len(lengths), 5, 24, generator=g, dtype=torch.float64)
    bounds = cu.tolist()

    def packed_reference(a_):
        return torch.cat([reference.serial(a_[lo:hi].expand(hi - lo, 5, 24), x[lo:hi], h0[n],
                                           reverse)
                          for n, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])) if hi > lo])

    a_ref = a.clone().requires_grad_()
    want = packed_reference(a_ref)
    (want_grad,) = torch.autograd.grad(want.mul(x).sum(), a_ref)
    want = want.detach()
    for backend in ("cpu_serial", "cpu_parallel"):
        leaves = [t.clone().requires_grad_() for t in (a, x, h0)]
        h, seen = _kernel_decay_shapes(lambda: plrnn.linear_recurrence(
            *leaves, cu_seqlens=cu, reverse=reverse, backend=backend))
        assert seen == [(T, 24)] and _close(h.detach(), want), backend
        (h * x).sum().backward()
        assert _close(leaves[0].grad, want_grad), backend
        out = torch.empty_like(x)
        with torch.no_grad():
            plrnn.linear_recurrence(a, x, h0[0], reverse=reverse, backend=backend, out=out)
        assert _close(out, reference.serial(a.expand(T, 5, 24), x, h0[0], reverse)), backend


# Decays the C++ kernels cannot read in place (one per head of (T, B, H, P) impulses, as
# Mamba-2's; one per sequence and step) are materialized in the impulses' shape, from 1 MiB up in
# a buffer recycled from freed outputs (cpu.contiguous): a fresh one faults its pages in.
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("spec, trailing", [(("T", 1, 4, 1), (2, 4, 33)), (("T", 2, 1), (2, 300))],
                         ids=["per-head", "per-sequence"])
def test_materialized_decays_come_from_recycled_buffers(spec, trailing, reverse, num_threads):
    num_threads(2)
    T = 600  # 1.2 and 2.9 MB of float64 decays, expanded
    grads = _broadcast_case(spec, trailing, T, seed_for("bcast-recycled", spec, reverse))
    want_h, want = grads(lambda a_, x_, h0_: reference.serial(a_.expand(x_.shape), x_, h0_,
                                                              reverse))
    g = torch.Generator().manual_seed(seed_for("bcast-recycled-out", spec, reverse))
    a = 0.9 + 0.1 * torch.rand(_shape(spec, T), generator=g, dtype=torch.float64)
    x = torch.randn(T, *trailing, generator=g, dtype=torch.float64)
    for backend in ("cpu_serial", "cpu_parallel"):
        h, got = grads(lambda a_, x_, h0_: plrnn.linear_recurrence(a_, x_, h0_, reverse=reverse,
                                                                   backend=backend))
        assert _close(h, want_h), backend
        for name, gv, wv in zip(("decays", "impulses", "initial_state"), got, want):
            assert gv.shape == wv.shape and _close(gv, wv), (backend, name)
        # Into out=, without autograd, the materialized decays are the call's one buffer from
        # the cache, back in it once freed.
        out = torch.empty_like(x)
        plrnn.empty_cache()
        with torch.no_grad():
            plrnn.linear_recurrence(a, x, reverse=reverse, backend=backend, out=out)
        assert torch.ops.plrnn.cpu_output_cache_held() >= x.numel() * x.element_size(), backend
        assert _close(out, reference.serial(a.expand(x.shape), x, None, reverse)), backend


# The GPU kernels (cuda_parallel, triton) read per-step decays of any period in place, P = 1
# included, and time-invariant ones as one (1, C) row; per-batch scalars (T, B, 1) have no period
# and are expanded. Triton runs here under its interpreter.
GPU_KERNEL_CASES = [
    (("T", 1, 20), (3, 20), 20),
    (("T", 1, 2, 5), (3, 2, 5), 10),
    (("T", 1, 1, 3), (2, 2, 3), 3),
    (("T", 1, 1), (3, 1), 1),
    ((20,), (3, 20), None),
    ((1, 2, 5), (3, 2, 5), None),
    (("T", 2, 1), (2, 3), None),
]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("T", [1, 33])
@pytest.mark.parametrize("case", GPU_KERNEL_CASES, ids=lambda c: "a=" + "x".join(map(str, c[0])))
def test_triton_reads_broadcast_decays_unexpanded(case, T, reverse, monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    spec, trailing, period = case
    grads = _broadcast_case(spec, trailing, T, seed_for("bcast-triton", spec, T, reverse))
    want_h, want = grads(lambda a_, x_, h0_: reference.serial(a_.expand(x_.shape), x_, h0_,
                                                              reverse))
    (h, got), seen = _kernel_decay_shapes(lambda: grads(
        lambda a_, x_, h0_: plrnn.linear_recurrence(a_, x_, h0_, reverse=reverse,
                                                    backend="triton")))
    C = math.prod(trailing)
    if spec[0] != "T" or T == 1:
        read = (1, C)
    else:
        read = (T, C) if period is None else (T, period)
    assert seen and all(s == read for s in seen), seen
    assert _close(h, want_h)
    for name, gv, wv in zip(("decays", "impulses", "initial_state"), got, want):
        assert gv.shape == wv.shape and _close(gv, wv), name


def test_triton_batch_shared_decays_in_a_packed_batch(monkeypatch):
    """Per-step (T, P) decays reach the one launch of a packed batch unexpanded."""
    pytest.importorskip("triton", reason="triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    g = torch.Generator().manual_seed(seed_for("bcast-triton-packed"))
    lengths = [20, 1, 0, 13]
    T = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    a = 0.9 + 0.1 * torch.rand(T, 1, 4, generator=g, dtype=torch.float64)
    x = torch.randn(T, 3, 4, generator=g, dtype=torch.float64)
    h0 = torch.randn(len(lengths), 3, 4, generator=g, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (a, x, h0)]
    want_leaves = [t.clone().requires_grad_() for t in (a, x, h0)]
    h, seen = _kernel_decay_shapes(lambda: plrnn.linear_recurrence(
        *leaves, cu_seqlens=cu, backend="triton"))
    assert seen == [(T, 4)]
    want = plrnn.linear_recurrence(want_leaves[0].expand(T, 3, 4), *want_leaves[1:],
                                   cu_seqlens=cu, backend="reference")
    assert _close(h.detach(), want.detach())
    for got_leaf, want_leaf in zip(leaves, want_leaves):
        (gv,) = torch.autograd.grad(h.mul(x).sum(), got_leaf, retain_graph=True)
        (wv,) = torch.autograd.grad(want.mul(x).sum(), want_leaf, retain_graph=True)
        assert gv.shape == wv.shape and _close(gv, wv)


# float16 time-invariant decays over (T, 2, 16) impulses with an upstream gradient of +-1000 whose
# sign flips along a dimension the decays are shared over (b: the batch, c: the channels): their
# gradient's per-(b, c) sums overflow float16 and cancel in the decays' own shape.
# (decay shape, what the kernels read of them, the dimension the sign flips along.)
HALF_SHARED_CASES = [
    ((16,), (1, 16), "b"),  # a period of 16: read in place, summed in one wide pass
    ((), (64, 2, 16), "b"),  # a scalar: no period, so expanded (not one (1, 32) row)
    ((2, 1), (64, 2, 16), "c"),  # one decay per sequence: no period either
]


def check_half_shared_decays(backend, spec, flip, device="cpu"):
    """float16 decays of shape `spec` over (64, 2, 16) impulses, the upstream gradient's sign
    flipping along `flip`: the decays' gradient from `backend` is finite and within a few ulps of
    the float64 terms' sum; returns the decay shapes the kernels' ops were given (forward and
    backward)."""
    T, B, C = 64, 2, 16
    a = torch.full(spec, 0.5, dtype=torch.float16)
    x = torch.ones(T, B, C, dtype=torch.float16)
    up = torch.full((T, B, C), 1000.0, dtype=torch.float16)
    if flip == "b":
        up[:, 1::2] = -1000.0
    else:
        up[..., 1::2] = -1000.0
    leaf, x_dev, up_dev = a.to(device).requires_grad_(), x.to(device), up.to(device)
    (got,), seen = _kernel_decay_shapes(lambda: torch.autograd.grad(
        (plrnn.linear_recurrence(leaf, x_dev, backend=backend) * up_dev).sum(), leaf))
    full = a.double().expand(T, B, C).clone().requires_grad_()
    (terms,) = torch.autograd.grad((reference.serial(full, x.double()) * up.double()).sum(),
                                   full)
    assert terms[:, 0].sum(0).abs().min() > 65504  # the per-(b, c) sums overflow float16
    reduced = [d for d in range(3) if d < 3 - a.dim() or a.shape[d - (3 - a.dim())] == 1]
    want = terms.sum(reduced, keepdim=True).reshape(a.shape)
    magnitude = terms.abs().sum(reduced, keepdim=True).reshape(a.shape)
    allowed = 4 * torch.finfo(torch.float16).eps * magnitude  # a few ulps of the terms' sum
    got = got.cpu()
    assert got.dtype == torch.float16 and got.shape == a.shape and torch.isfinite(got).all()
    assert ((got.double() - want).abs() <= allowed).all()
    return seen


@pytest.mark.parametrize("backend", ["cpu_serial", "cpu_parallel"])
@pytest.mark.parametrize("case", HALF_SHARED_CASES, ids=lambda c: "a=" + "x".join(map(str, c[0])))
def test_float16_gradient_of_time_invariant_decays_sums_in_one_pass(backend, case):
    """float16 time-invariant decays that need a gradient never reach the kernels as the (1, C)
    row other dtypes take, from which autograd would sum the rest of the broadcast in float16:
    per-(b, c) sums beyond float16's 65504 that cancel in the decays' own shape give the float64
    answer, not inf - inf = nan."""
    spec, read, flip = case
    assert check_half_shared_decays(backend, spec, flip) == [read, read]  # forward, backward
    x = torch.ones(64, 2, 16, dtype=torch.float16)
    with torch.no_grad():  # without a gradient to take, the faster (1, C) row
        _, seen = _kernel_decay_shapes(lambda: plrnn.linear_recurrence(
            torch.full(spec, 0.5, dtype=torch.float16, requires_grad=True), x, backend=backend))
    assert seen == [(1, 32)]
