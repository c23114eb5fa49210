"""Batch-first impulses: the (T, B, *) view x.transpose(0, 1) of a (B, T, *) tensor runs on the C++
CPU kernels as one packed batch of its B sequences, read and written where they lie. Every
decay layout and gradient against the float64 loop on contiguous copies; h keeps the impulses'
layout, and the kernel reads the caller's buffer itself."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import plrnn
from plrnn import recurrence
from plrnn.recurrence import reference

from .helpers import F64_RTOL, seed_for

CPU_KERNELS = ("cpu_serial", "cpu_parallel")
# (B, T, *rest) of the impulses in memory.
SHAPES = [(3, 17, 5), (2, 300, 3, 7), (5, 2, 1), (4, 600, 64)]  # the last: 1.2 MB, recycled copies
# Decays for the (T, B, *rest) view: "bf" the impulses' layout, "tm" the same shape time-major,
# else a shape with "T", "B" and "C..." (the trailing dims) standing for sizes.
DECAYS = ["bf", "tm", ("C",), (1, 1, "C"), ("T", 1, "C"), ("T", "B", 1), (1, "B", "C"), ()]


def _decays(spec, T, B, rest, g):
    def draw(shape):
        return 0.9 + 0.1 * torch.rand(shape, generator=g, dtype=torch.float64)

    if spec == "bf":
        return draw((B, T, *rest)).transpose(0, 1)
    if spec == "tm":
        return draw((T, B, *rest))
    shape = []
    for d in spec:
        shape += list(rest) if d == "C" else [{"T": T, "B": B}.get(d, d)]
    if spec and spec[-1] == 1:  # one decay for all the trailing dims
        shape += [1] * (len(rest) - 1)
    return draw(tuple(shape))


def _close(got, want):
    return (got - want).abs().max().item() <= F64_RTOL * max(1.0, want.abs().max().item())


@pytest.fixture(autouse=True)
def every_size(monkeypatch):
    """Small batch-first inputs take the packed path too (by default they are copied)."""
    monkeypatch.setattr(recurrence, "_BATCH_FIRST_BYTES", 0)


class _Calls(TorchDispatchMode):
    """The plrnn ops called, with their tensor arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "plrnn":
            self.calls.append((func.__name__.split(".")[0], args))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("spec", DECAYS, ids=lambda s: s if isinstance(s, str) else
                         "a=" + "x".join(map(str, s)))
@pytest.mark.parametrize("memory", SHAPES, ids=lambda s: "x=" + "x".join(map(str, s)))
def test_forward_and_every_gradient(memory, spec, with_h0, reverse, num_threads):
    num_threads(2)
    B, T, *rest = memory
    g = torch.Generator().manual_seed(seed_for("batch-first", memory, spec, with_h0, reverse))
    xb = torch.randn(memory, generator=g, dtype=torch.float64)
    a = _decays(spec, T, B, rest, g)
    h0 = torch.randn(B, *rest, generator=g, dtype=torch.float64) if with_h0 else None
    up = torch.randn(T, B, *rest, generator=g, dtype=torch.float64)

    def run(fn, x):
        leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (a, x, h0)]
        h = fn(*leaves)
        grads = torch.autograd.grad((h * up).sum(), [t for t in leaves if t is not None])
        return h.detach(), grads

    x = xb.transpose(0, 1)
    want_h, want = run(lambda a_, x_, h0_: reference.serial(a_.expand(x_.shape), x_, h0_,
                                                            reverse), x.contiguous())
    for backend in CPU_KERNELS:
        with _Calls() as seen:
            h, got = run(lambda a_, x_, h0_: plrnn.linear_recurrence(
                a_, x_, h0_, reverse=reverse, backend=backend), x)
        assert _close(h, want_h), backend
        assert h.transpose(0, 1).is_contiguous(), backend  # the impulses' layout
        for name, gv, wv in zip(("decays", "impulses", "initial_state"), got, want):
            assert gv.shape == wv.shape and _close(gv, wv), (backend, name)
        assert got[0].shape == a.shape
        # One packed call of the B sequences, on a view of the (fresh) leaf's own buffer.
        scans = [args for name, args in seen.calls if name == "cpu_scan_varlen"]
        assert len(scans) == 1 and scans[0][1].shape == (B * T, *rest), backend
        assert scans[0][4].tolist() == list(range(0, B * T + 1, T))


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_the_kernel_reads_and_writes_the_callers_buffers(backend):
    B, T, C = 3, 50, 8
    g = torch.Generator().manual_seed(seed_for("batch-first-in-place", backend))
    ab = torch.rand(B, T, C, generator=g, dtype=torch.float64)
    xb = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    with _Calls() as seen:
        h = plrnn.linear_recurrence(ab.transpose(0, 1), xb.transpose(0, 1), backend=backend)
    ((_, args),) = [c for c in seen.calls if c[0] == "cpu_scan_varlen"]
    assert args[0].data_ptr() == ab.data_ptr() and args[1].data_ptr() == xb.data_ptr()
    want = torch.stack([reference.serial(ab[b], xb[b]) for b in range(B)], dim=1)
    assert _close(h, want)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_final_state_and_out(reverse):
    B, T, C = 4, 33, 6
    g = torch.Generator().manual_seed(seed_for("batch-first-out", reverse))
    a = torch.rand(B, T, C, generator=g, dtype=torch.float64).transpose(0, 1)
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64).transpose(0, 1)
    h0 = torch.randn(B, C, generator=g, dtype=torch.float64)
    want = reference.serial(a.contiguous(), x.contiguous(), h0, reverse)
    for backend in CPU_KERNELS:
        h, final = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=backend,
                                           return_final_state=True)
        assert _close(h, want) and _close(final, want[0] if reverse else want[-1])
        assert final.shape == (B, C) and final.untyped_storage().data_ptr() != \
            h.untyped_storage().data_ptr()
        for out in (torch.empty(T, B, C, dtype=torch.float64),
                    torch.empty(B, T, C, dtype=torch.float64).transpose(0, 1)):
            assert plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=backend,
                                           out=out) is out
            assert _close(out, want), backend


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_h_is_a_tensor_of_its_own_as_any_op_returns(backend):
    """Not an autograd view of the packed output: in-place ops after no_grad and detach_() take
    it, and an in-place change before backward is refused as for any saved output."""
    B, T, C = 4, 600, 64  # 1.2 MB: the recycled buffers
    g = torch.Generator().manual_seed(seed_for("batch-first-own", backend))
    a = torch.rand(B, T, C, generator=g, dtype=torch.float64).transpose(0, 1)
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64).transpose(0, 1)
    with torch.no_grad():
        h = plrnn.linear_recurrence(a, x, backend=backend)
    assert not h._is_view() and h.transpose(0, 1).is_contiguous()
    scale = torch.full((C,), 2.0, dtype=torch.float64, requires_grad=True)
    h.mul_(scale)
    want = reference.serial(a.contiguous(), x.contiguous())
    assert _close(h.detach(), 2 * want)
    leaf = x.detach().clone().requires_grad_()
    h = plrnn.linear_recurrence(a, leaf, backend=backend)
    h.detach_()
    assert not h.requires_grad and _close(h, want)
    h = plrnn.linear_recurrence(a, leaf, backend=backend)
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.sum().backward()


def test_small_inputs_are_copied_to_time_major(monkeypatch):
    monkeypatch.setattr(recurrence, "_BATCH_FIRST_BYTES", 1 << 20)
    g = torch.Generator().manual_seed(seed_for("batch-first-small"))
    for B, T, C, packed in ((4, 16, 8, False), (4, 600, 64, True)):  # 4 KiB; 1.2 MB
        a = torch.rand(B, T, C, generator=g, dtype=torch.float64).transpose(0, 1)
        x = torch.randn(B, T, C, generator=g, dtype=torch.float64).transpose(0, 1)
        with _Calls() as seen:
            h = plrnn.linear_recurrence(a, x, backend="cpu_serial")
        ops = {name for name, _ in seen.calls}
        assert ("cpu_scan_varlen" in ops) == packed and ("cpu_scan" in ops) != packed, ops
        assert _close(h, reference.serial(a.contiguous(), x.contiguous()))
