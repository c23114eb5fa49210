"""Packed variable-length batches (cu_seqlens): every backend against a float64 loop that restarts
at each sequence start, forward, final states and every gradient; and the argument checks."""

from __future__ import annotations

import itertools

import pytest
import torch

import plrnn

from .helpers import (
    ALL_BACKENDS,
    F64_RTOL,
    check_requires_grad,
    make_inputs,
    second_derivatives,
    seed_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

# Sequence lengths per case: single steps, empty sequences anywhere, one long sequence, and
# boundaries that fall inside the parallel kernels' chunks and on their edges (chunks of 2^k
# rows; 4096 + 1 puts one boundary right after a power of two).
LENGTHS = [
    [1],
    [7],
    [1, 1, 1],
    [0, 3, 0, 0, 5, 0],
    [5, 0],
    [2, 1, 3, 1, 2],
    [1000, 1, 2047, 1049],
    [4096, 1, 4095],
    [1] * 33,
]


def oracle(a, x, h0, lengths, reverse):
    """h and the final states, one step at a time, restarting at every sequence's first step."""
    h, finals, t = [None] * x.shape[0], [], 0
    for n, length in enumerate(lengths):
        state = torch.zeros_like(x[0]) if h0 is None else h0[n]
        steps = range(t, t + length)
        for s in reversed(steps) if reverse else steps:
            state = a[s] * state + x[s]
            h[s] = state
        finals.append(state)
        t += length
    empty = x.new_empty((0, *x.shape[1:]))
    return (torch.stack(h) if h else empty), torch.stack(finals)


def _case(lengths, shape, with_h0, decay_kind, seed):
    T = sum(lengths)
    a, x, _ = make_inputs(T, shape, decay_kind, False, seed)
    g = torch.Generator().manual_seed(seed + 7)
    h0 = torch.randn((len(lengths), *shape), generator=g, dtype=torch.float64) if with_h0 else None
    cu = torch.tensor([0, *itertools.accumulate(lengths)])
    return a, x, h0, cu


def _close(got, want):
    return (got - want).abs().max().item() <= F64_RTOL * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("decay_kind", ["uniform", "near_one", "near_zero"])
@pytest.mark.parametrize("lengths", LENGTHS, ids=lambda v: "L=" + "-".join(map(str, v[:6])))
def test_forward_and_final_states(lengths, decay_kind, with_h0, reverse):
    a, x, h0, cu = _case(lengths, (3,), with_h0, decay_kind, seed_for(lengths, decay_kind))
    want_h, want_final = oracle(a, x, h0, lengths, reverse)
    for backend in ALL_BACKENDS:
        h, final = plrnn.linear_recurrence(a, x, h0, cu_seqlens=cu, reverse=reverse,
                                           backend=backend, return_final_state=True)
        assert h.shape == x.shape and final.shape == (len(lengths), 3), backend
        assert _close(h, want_h), backend
        assert _close(final, want_final), backend


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [[1], [0, 3, 0, 5], [2, 1, 3, 1, 2], [300, 1, 211, 0]],
                         ids=lambda v: "L=" + "-".join(map(str, v)))
@pytest.mark.parametrize("shape", [(1,), (2, 5)], ids=lambda s: "x".join(map(str, s)))
def test_every_gradient(lengths, shape, reverse):
    seed = seed_for("grad", lengths, shape, reverse)
    a, x, h0, cu = _case(lengths, shape, True, "uniform", seed)
    g = torch.Generator().manual_seed(seed + 1)
    up_h = torch.randn(x.shape, generator=g, dtype=torch.float64)
    up_final = torch.randn(h0.shape, generator=g, dtype=torch.float64)

    def grads(fn):
        leaves = [t.detach().clone().requires_grad_(True) for t in (a, x, h0)]
        h, final = fn(*leaves)
        loss = (h * up_h).sum() + (final * up_final).sum()
        return torch.autograd.grad(loss, leaves)

    want = grads(lambda a_, x_, h0_: oracle(a_, x_, h0_, lengths, reverse))
    for backend in ALL_BACKENDS:
        got = grads(lambda a_, x_, h0_: plrnn.linear_recurrence(
            a_, x_, h0_, cu_seqlens=cu, reverse=reverse, backend=backend,
            return_final_state=True))
        for name, gv, wv in zip(("decays", "impulses", "initial_state"), got, want):
            assert gv.shape == wv.shape and _close(gv, wv), (backend, name)


@pytest.mark.parametrize("grad_mode", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("which", ["decays", "impulses", "initial_state", "none"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_output_requires_grad_exactly_when_an_input_does(backend, which, grad_mode):
    lengths = [3, 0, 4]
    a, x, h0, cu = _case(lengths, (2,), True, "uniform", seed_for("requires_grad", which))
    check_requires_grad(
        lambda **k: plrnn.linear_recurrence(**k, cu_seqlens=cu, backend=backend),
        lambda decays, impulses, initial_state:
            oracle(decays, impulses, initial_state, lengths, False)[0],
        {"decays": a, "impulses": x, "initial_state": h0}, which, grad_mode)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_double_backward_is_correct_or_refused(backend):
    """As for one sequence (test_gradients.py): second derivatives through a packed batch are the
    loop's, or refused; never torch's silent zeros for an op without a rule."""
    lengths = [2, 0, 4]
    a, x, _, cu = _case(lengths, (2,), False, "uniform", seed_for("double_backward", lengths))
    got, want = second_derivatives(
        lambda a_, x_: plrnn.linear_recurrence(a_, x_, cu_seqlens=cu, backend=backend),
        lambda a_, x_: oracle(a_, x_, None, lengths, False)[0], a, x)
    if got is not None:
        assert _close(got, want), backend


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_one_sequence_is_the_unpacked_call(backend):
    a, x, h0 = make_inputs(37, (4,), "uniform", True, seed=3)
    h = plrnn.linear_recurrence(a, x, h0[None], cu_seqlens=torch.tensor([0, 37]), backend=backend)
    assert torch.equal(h, plrnn.linear_recurrence(a, x, h0, backend=backend))


def test_float32_and_int32_offsets():
    lengths = [5, 0, 9, 1]
    a, x, h0, cu = _case(lengths, (6,), True, "near_one", 11)
    want, _ = oracle(a, x, h0, lengths, False)
    for backend in ALL_BACKENDS:
        h = plrnn.linear_recurrence(a.float(), x.float(), h0.float(),
                                    cu_seqlens=cu.to(torch.int32), backend=backend)
        assert (h.double() - want).abs().max().item() < 1e-5, backend


def test_out_receives_the_packed_result():
    lengths = [3, 0, 4]
    a, x, h0, cu = _case(lengths, (2,), True, "uniform", 5)
    out = torch.empty_like(x)
    for backend in ALL_BACKENDS:
        got = plrnn.linear_recurrence(a, x, h0, cu_seqlens=cu, backend=backend, out=out)
        assert got is out and _close(out, oracle(a, x, h0, lengths, False)[0]), backend


def test_all_sequences_empty():
    a, x = torch.rand(0, 3), torch.randn(0, 3)
    h0 = torch.randn(2, 3)
    h, final = plrnn.linear_recurrence(a, x, h0, cu_seqlens=torch.tensor([0, 0, 0]),
                                       return_final_state=True)
    assert h.shape == (0, 3) and torch.equal(final, h0)
    assert final.data_ptr() != h0.data_ptr()  # a copy: writing to it leaves h0 alone


@pytest.mark.parametrize(("cu", "error", "message"), [
    ([0, 3, 2, 6], ValueError, "non-decreasing; cu_seqlens\\[2\\] = 2 < cu_seqlens\\[1\\] = 3"),
    ([1, 3, 6], ValueError, "start at 0 and end at T = impulses.shape\\[0\\] = 6"),
    ([0, 3, 7], ValueError, "end at T"),
    ([0, 3], ValueError, "end at T"),
    ([0], ValueError, "N\\+1 >= 2 offsets"),
    ([[0, 6]], ValueError, "1-D"),
])
def test_bad_offsets_are_named(cu, error, message):
    a, x = torch.rand(6, 2), torch.randn(6, 2)
    with pytest.raises(error, match=message):
        plrnn.linear_recurrence(a, x, cu_seqlens=torch.tensor(cu))


def test_offsets_must_be_integer_tensors():
    a, x = torch.rand(6, 2), torch.randn(6, 2)
    with pytest.raises(TypeError, match="int32 or int64"):
        plrnn.linear_recurrence(a, x, cu_seqlens=torch.tensor([0.0, 6.0]))
    with pytest.raises(TypeError, match="1-D int32 or int64 tensor"):
        plrnn.linear_recurrence(a, x, cu_seqlens=[0, 6])


def test_offsets_on_meta_are_refused_by_name():
    a, x = torch.rand(6, 2), torch.randn(6, 2)
    with pytest.raises(ValueError, match="^cu_seqlens must hold its offsets .* got a meta tensor$"):
        plrnn.linear_recurrence(a, x, cu_seqlens=torch.tensor([0, 6], device="meta"))


def test_initial_state_needs_one_row_per_sequence():
    a, x = torch.rand(6, 2), torch.randn(6, 2)
    with pytest.raises(ValueError, match=r"\(N, \*impulses.shape\[1:\]\) = \(2, 2\)"):
        plrnn.linear_recurrence(a, x, torch.zeros(2), cu_seqlens=torch.tensor([0, 2, 6]))


def test_per_sequence_passes_one_row_of_decays_whole():
    """Backends whose kernels take time-invariant decays as one row (cuda_parallel, triton) run a
    packed batch of long sequences once per sequence: every sequence gets the whole row, and its
    own rows of the rest."""
    from plrnn.recurrence import reference
    from plrnn.recurrence.varlen import per_sequence

    g = torch.Generator().manual_seed(seed_for("per_sequence_row"))
    row = torch.rand(3, generator=g, dtype=torch.float64)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    h0 = torch.randn(3, 3, generator=g, dtype=torch.float64)
    bounds = [0, 2, 2, 7]
    seen = []

    def compute(a, x_, h0_, reverse):
        seen.append(tuple(a.shape))
        return reference.serial(a.expand_as(x_), x_, h0_, reverse)

    got = per_sequence(compute, row, x, h0, bounds, False)
    assert seen == [(3,), (3,)]
    want = plrnn.linear_recurrence(row, x, h0, cu_seqlens=torch.tensor(bounds),
                                   backend="reference")
    torch.testing.assert_close(got, want, rtol=F64_RTOL, atol=F64_RTOL)


# Triton runs a packed batch in one launch, a program per channel block and sequence (under its
# interpreter here: small totals, 16-step tiles, so boundaries fall inside tiles and on their
# edges).
TRITON_LENGTHS = [[1], [1, 1, 1], [0, 3, 0, 0, 5, 0], [16, 16, 1], [2, 1, 19, 1, 2], [1] * 9]


@pytest.fixture
def triton_interpreter(monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _triton_launches(fn):
    from torch.utils._python_dispatch import TorchDispatchMode

    names = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "plrnn":
                names.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    with Record():
        result = fn()
    return result, names


@pytest.mark.usefixtures("triton_interpreter")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("lengths", TRITON_LENGTHS, ids=lambda v: "L=" + "-".join(map(str, v)))
def test_triton_one_launch_forward_final_states_and_gradients(lengths, with_h0, reverse):
    seed = seed_for("triton-packed", lengths, with_h0, reverse)
    a, x, h0, cu = _case(lengths, (2, 5), with_h0, "near_one", seed)
    g = torch.Generator().manual_seed(seed + 1)
    up_h = torch.randn(x.shape, generator=g, dtype=torch.float64)
    up_final = torch.randn((len(lengths), 2, 5), generator=g, dtype=torch.float64)

    def run(fn):
        leaves = [t.detach().clone().requires_grad_(True) for t in (a, x, h0) if t is not None]
        h, final = fn(*leaves, *([None] if h0 is None else []))
        loss = (h * up_h).sum() + (final * up_final).sum()
        return h.detach(), final.detach(), torch.autograd.grad(loss, leaves)

    want_h, want_final, want = run(lambda a_, x_, h0_: oracle(a_, x_, h0_, lengths, reverse))
    (got_h, got_final, got), names = _triton_launches(lambda: run(
        lambda a_, x_, h0_: plrnn.linear_recurrence(
            a_, x_, h0_, cu_seqlens=cu, reverse=reverse, backend="triton",
            return_final_state=True)))
    assert names.count("triton_scan_packed") == 1 and "triton_scan" not in names, names
    assert _close(got_h, want_h) and _close(got_final, want_final)
    for name, gv, wv in zip(("decays", "impulses", "initial_state"), got, want):
        assert gv.shape == wv.shape and _close(gv, wv), name


@pytest.mark.usefixtures("triton_interpreter")
def test_triton_one_launch_keeps_a_nan_in_its_sequence():
    """No state crosses a boundary, not even 0 * NaN: a NaN in one sequence leaves the others
    exact, forward and backward."""
    lengths = [5, 20, 3]
    a, x, h0, cu = _case(lengths, (3,), True, "uniform", seed_for("triton-packed-nan"))
    x[2, 1] = float("nan")
    for reverse in (False, True):
        want, _ = oracle(a, x, h0, lengths, reverse)
        leaves = [t.clone().requires_grad_(True) for t in (a, x, h0)]
        h = plrnn.linear_recurrence(*leaves, cu_seqlens=cu, reverse=reverse, backend="triton")
        assert torch.equal(h.isnan(), want.isnan())
        assert _close(h[5:].detach(), want[5:])
        h[5:].sum().backward()
        assert not leaves[0].grad[5:].isnan().any() and not leaves[2].grad[1:].isnan().any()


def test_triton_runs_long_sequences_one_call_each(monkeypatch):
    """The rule: one launch while even the longest sequence would run as one time chunk; past
    that, each sequence gets Algorithm 1's chunks to itself."""
    from plrnn.recurrence import triton as triton_backend

    pytest.importorskip("triton", reason="triton is not installed")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(triton_backend, "_multiprocessors", lambda index: 132)
    gpu = torch.device("cuda", 0)
    assert triton_backend.one_launch_for([0, 0, 0], 8, gpu)
    assert triton_backend.one_launch_for([0, 100, 300, 1000], 8, gpu)
    assert not triton_backend.one_launch_for([0, 100, 300, 100_000], 8, gpu)
    assert triton_backend.one_launch_for([0, 100_000], 132 * 4 * 32, gpu)  # channels fill the GPU


def test_cuda_parallel_runs_many_short_sequences_in_one_launch():
    """The rule (a first guess, see cuda.py): one launch while the longest sequence's serial
    walk costs less than the launches it saves; one sequence is the unpacked call."""
    from plrnn.recurrence import cuda

    assert not cuda.one_launch_for([0, 10])
    assert cuda.one_launch_for([0, 10, 20])
    assert cuda.one_launch_for([0, *range(100, 100 * 101, 100)])
    assert not cuda.one_launch_for([0, 100_000, 100_001])
