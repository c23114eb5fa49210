"""Empty inputs, non-contiguous inputs, NaN propagation, backend='auto', and algebraic identities."""

from __future__ import annotations

import pytest
import torch

import plrnn
from plrnn.recurrence import reference
from plrnn.recurrence.registry import (
    PARALLEL_MIN_STEPS,
    choose_auto,
)

from .helpers import (
    ALL_BACKENDS,
    BACKENDS,
    F64_RTOL,
    autograd_fwd_bwd,
    check_zero_state_through_overflow,
    grads_of,
    make_inputs,
    ref64,
    run,
    seed_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

ALL_NAMES = ("auto", *ALL_BACKENDS)


def assert_close64(got, want, what=""):
    tol = F64_RTOL * max(1.0, want.abs().max().item() if want.numel() else 1.0)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    err = (got - want).abs().max().item() if got.numel() else 0.0
    assert err <= tol, f"{what}: max error {err:.3e} > {tol:.3e}"


# ---------------------------------------------------------------------------------------- empty


@pytest.mark.parametrize(
    "dtype",
    [torch.float64, torch.float32, torch.float16, torch.bfloat16],
    ids=lambda d: str(d).removeprefix("torch."),
)
@pytest.mark.parametrize("shape", [(0,), (0, 3), (0, 2, 5)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", ALL_NAMES)
def test_zero_steps_returns_empty_and_backpropagates(backend, shape, dtype):
    a = torch.rand(shape, dtype=dtype, requires_grad=True)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    h0 = torch.randn(shape[1:], dtype=dtype)
    for reverse in (False, True):
        for init in (None, h0):
            h = plrnn.linear_recurrence(a, x, init, reverse=reverse, backend=backend)
            assert h.shape == shape and h.dtype == dtype
            h.sum().backward()
            assert a.grad.shape == shape and x.grad.shape == shape


@pytest.mark.parametrize("backend", ALL_NAMES)
def test_zero_channels(backend):
    a = torch.rand(5, 0, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 0, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(0, 3, dtype=torch.float64)
    h = plrnn.linear_recurrence(a, x, h0, backend=backend)
    assert h.shape == (5, 0, 3)
    assert h.shape == reference.serial(a, x, h0).shape
    h.sum().backward()
    assert a.grad.shape == x.grad.shape == (5, 0, 3)


# ------------------------------------------------------------------------------- non-contiguous


def _strided_views(seed):
    """(name, decays, impulses, initial_state) where at least one input is a non-contiguous
    view; all of shape (T, *)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*s):
        return torch.rand(*s, generator=g, dtype=torch.float64)

    def randn(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    yield "transposed", rand(7, 40).t(), randn(7, 40).t(), None
    yield "time_strided", rand(80, 5)[::2], randn(80, 5)[::2], randn(10)[::2]
    yield "channel_strided", rand(40, 15)[:, ::3], randn(40, 15)[:, 1::3], None
    yield (
        "permuted_3d",
        rand(3, 4, 50).permute(2, 0, 1),
        randn(50, 4, 3).transpose(1, 2),
        randn(4, 3).t(),
    )
    yield "negative_offset", rand(41, 6)[1:, 2:5], randn(41, 6)[:-1, 1:4], randn(6)[3:]
    yield "broadcast_decays", rand(1, 9).expand(33, 9), randn(33, 9), randn(1).expand(9)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_contiguous_inputs_equal_contiguous_copies(backend, reverse):
    for name, a, x, h0 in _strided_views(seed_for("strided", backend, reverse)):
        assert not (a.is_contiguous() and x.is_contiguous()), name
        copies = [None if t is None else t.contiguous() for t in (a, x, h0)]
        views = [None if t is None else t.detach().requires_grad_(True) for t in (a, x, h0)]
        leaves = [None if t is None else t.detach().requires_grad_(True) for t in copies]

        h_view = run(backend, *views, reverse)
        h_copy = run(backend, *leaves, reverse)
        assert torch.equal(h_view, h_copy), name
        assert_close64(h_view, ref64(*copies, reverse), name)

        upstream = torch.randn_like(h_copy)
        got = torch.autograd.grad(h_view, [t for t in views if t is not None], upstream)
        want = torch.autograd.grad(h_copy, [t for t in leaves if t is not None], upstream)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)


# ---------------------------------------------------------------------------------------- NaN

T_NAN = {"short": (40, (3,)), "long": (4097, (33,))}

NAN_SITES = [
    "decays_first",
    "decays_middle",
    "decays_last",
    "impulses_first",
    "impulses_middle",
    "initial_state",
]


def _nan_params():
    for backend in BACKENDS:
        for site in NAN_SITES:
            for with_h0 in (False, True):
                if site == "initial_state" and not with_h0:
                    continue
                for reverse in (False, True):
                    ident = (
                        f"{backend}-{site}-{'h0' if with_h0 else 'no_h0'}-"
                        f"{'rev' if reverse else 'fwd'}"
                    )
                    yield pytest.param(backend, site, with_h0, reverse, id=ident)


@pytest.mark.parametrize("size", list(T_NAN))
@pytest.mark.parametrize("backend,site,with_h0,reverse", list(_nan_params()))
def test_nan_propagates_like_reference(backend, site, with_h0, reverse, size):
    T, shape = T_NAN[size]
    a, x, h0 = make_inputs(T, shape, "uniform", with_h0, seed_for("nan", T, site))
    # positions in scan order: "first" is the first step the recurrence takes
    first, last = (T - 1, 0) if reverse else (0, T - 1)
    where = {"first": first, "middle": T // 2, "last": last}
    if site == "initial_state":
        h0[1] = float("nan")
    else:
        target, when = site.split("_")
        (a if target == "decays" else x)[where[when], 1] = float("nan")

    want = ref64(a, x, h0, reverse)
    got = run(backend, a, x, h0, reverse)
    assert torch.isnan(want).any()
    assert torch.equal(torch.isnan(got), torch.isnan(want)), (
        f"{int(torch.isnan(got).sum())} NaNs, reference has {int(torch.isnan(want).sum())}"
    )
    finite = ~torch.isnan(want)
    assert_close64(got[finite], want[finite])


# (which input, at which step, takes which infinity)
INF_CASES = {
    # decays 0.01 after an infinite first impulse: the loop keeps +inf; a product of decays over
    # a chunk underflows to 0 and meets the carried inf as 0 * inf
    "impulse": ("impulses", 0, float("inf")),
    # a decay of -inf at step 3: the loop's state becomes -inf and stays there; a step's map
    # taken from a zero state meets it as (-inf) * 0
    "decay": ("decays", 3, float("-inf")),
}


@pytest.mark.parametrize("threads", (1, 2))
@pytest.mark.parametrize("case", list(INF_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_infinite_state_stays_non_finite(backend, case, threads, num_threads):
    """docs/op.md: where the loop reaches +-inf, backends that regroup steps may give NaN
    instead, never a number, from that step on; before it they agree with the loop."""
    num_threads(threads)
    T, C = 2048, 64
    a, x = torch.full((T, C), 0.01, dtype=torch.float64), torch.ones(T, C, dtype=torch.float64)
    target, step, value = INF_CASES[case]
    (x if target == "impulses" else a)[step] = value
    want = ref64(a, x, None, False)
    assert torch.isinf(want[step:]).all()
    got = run(backend, a, x, None, False)
    assert not torch.isfinite(got[step:]).any()
    assert_close64(got[:step], want[:step])


# 2 threads take cpu_parallel through time chunks (1 thread: in-thread chunks only) and
# cpu_serial through its channel split, or with PLRNN_STREAM_BYTES=0 (as for data larger than
# the last-level cache) through its schedules for rows streamed from memory.
OVERFLOW_SETTINGS = [1, 2, "2-pipelined", "2-time-split"]


@pytest.mark.parametrize("setting", OVERFLOW_SETTINGS)
@pytest.mark.parametrize("C", [4, 70])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128],
                         ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_zero_state_stays_exact_where_products_of_decays_overflow(
        backend, dtype, C, setting, num_threads, monkeypatch, streaming_schedule):
    if setting in ("2-pipelined", "2-time-split"):
        monkeypatch.setenv("PLRNN_STREAM_BYTES", "0")
        streaming_schedule(setting.removeprefix("2-").replace("-", "_"))
    num_threads(1 if setting == 1 else 2)
    scan = autograd_fwd_bwd(lambda a, x, reverse: run(backend, a, x, None, reverse))
    check_zero_state_through_overflow(scan, 4096, C, dtype, seed=seed_for("overflow", C))


# --------------------------------------------------------------------------------------- auto


AUTO_CASES = {
    "short": (5, (3,), "cpu_serial"),
    "long_narrow": (PARALLEL_MIN_STEPS, (2, 2), "cpu_serial"),
    "long_in_parallel_range": (PARALLEL_MIN_STEPS, (3, 7), "cpu_parallel"),
    "long_wide": (PARALLEL_MIN_STEPS, (3, 50), "cpu_serial"),
}


@pytest.mark.parametrize("case", list(AUTO_CASES))
def test_auto_matches_reference_and_its_choice(case, num_threads):
    T, shape, expected = AUTO_CASES[case]
    num_threads(2)
    a, x, h0 = make_inputs(T, shape, "uniform", True, seed_for("auto", T, shape))
    assert choose_auto(torch.device("cpu"), T, x[0].numel()) == expected
    for reverse in (False, True):
        h = plrnn.linear_recurrence(a, x, h0, reverse=reverse)  # backend="auto" is the default
        assert torch.equal(h, run(expected, a, x, h0, reverse))
        assert_close64(h, ref64(a, x, h0, reverse), f"auto -> {expected}")


# -------------------------------------------------------------------------- algebraic identities


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_scan_of_halves_equals_one_scan(backend):
    T, shape = 101, (2, 3)
    a, x, h0 = make_inputs(T, shape, "uniform", True, seed_for("halves"))
    for with_h0 in (False, True):
        init = h0 if with_h0 else None
        whole_fwd = run(backend, a, x, init, False)
        whole_rev = run(backend, a, x, init, True)
        for k in (1, 37, 100):
            first = run(backend, a[:k], x[:k], init, False)
            second = run(backend, a[k:], x[k:], first[-1], False)
            assert_close64(torch.cat([first, second]), whole_fwd, f"forward split at {k}")
            # reverse: the later half runs first and hands its state at step k down
            later = run(backend, a[k:], x[k:], init, True)
            earlier = run(backend, a[:k], x[:k], later[0], True)
            assert_close64(torch.cat([earlier, later]), whole_rev, f"reverse split at {k}")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_reverse_equals_flip_scan_flip(backend):
    for T, shape in [(1, (3,)), (64, (5,)), (1001, (2, 7))]:
        a, x, h0 = make_inputs(T, shape, "uniform", True, seed_for("flip", T))
        for init in (None, h0):
            got = run(backend, a, x, init, True)
            want = run(backend, a.flip(0), x.flip(0), init, False).flip(0)
            assert_close64(got, want, f"T={T}")
            assert_close64(got, ref64(a, x, init, True), f"T={T}")


@pytest.mark.parametrize("num_chunks", [1, 2, 3, 4, 7, 64, 500])
def test_algorithm1_equals_serial(num_chunks):
    for T, shape in [(1, (3,)), (5, (2,)), (16, (1,)), (100, (3, 4))]:
        a, x, h0 = make_inputs(T, shape, "uniform", True, seed_for("alg1", T, num_chunks))
        for init in (None, h0):
            got = reference.algorithm1(a, x, init, num_chunks=num_chunks)
            assert_close64(got, reference.serial(a, x, init), f"T={T}, {num_chunks} chunks")


# -------------------------------------------------------------------------------- miscellaneous


@pytest.mark.parametrize("backend", ALL_NAMES)
def test_inputs_are_not_modified(backend):
    a, x, h0 = make_inputs(300, (5,), "uniform", True, seed_for("pure"))
    before = [t.clone() for t in (a, x, h0)]
    leaves = [t.requires_grad_(True) for t in (a, x, h0)]
    for reverse in (False, True):
        h = plrnn.linear_recurrence(*leaves, reverse=reverse, backend=backend)
        h.backward(torch.ones_like(h))
    for t, b in zip(leaves, before):
        assert torch.equal(t.detach(), b)


@pytest.mark.parametrize("backend", ALL_NAMES)
def test_gradient_only_where_required(backend):
    a, x, h0 = make_inputs(50, (4,), "uniform", True, seed_for("partial"))
    for which in range(3):
        leaves = [t.clone().requires_grad_(i == which) for i, t in enumerate((a, x, h0))]
        h = plrnn.linear_recurrence(*leaves, backend=backend)
        assert h.requires_grad
        h.sum().backward()
        ref_leaves = [t.clone().requires_grad_(i == which) for i, t in enumerate((a, x, h0))]
        reference.serial(*ref_leaves).sum().backward()
        for i, (t, r) in enumerate(zip(leaves, ref_leaves)):
            if i == which:
                assert_close64(t.grad, r.grad, f"input {i}")
            else:
                assert t.grad is None


@pytest.mark.parametrize("backend", ALL_NAMES)
def test_no_grad_inputs_give_a_plain_tensor(backend):
    a, x, h0 = make_inputs(20, (3,), "uniform", True, seed_for("nograd"))
    h = plrnn.linear_recurrence(a, x, h0, backend=backend)
    assert not h.requires_grad
    assert_close64(h, ref64(a, x, h0))


@pytest.mark.parametrize("backend", ALL_NAMES)
def test_no_trailing_dims(backend):
    """(T,) inputs: one channel, and a 0-d initial_state."""
    a, x, h0 = make_inputs(50, (), "uniform", True, seed_for("rank0"))
    assert h0.dim() == 0
    for init in (None, h0):
        for reverse in (False, True):
            inputs = (a, x, init)
            upstream = torch.randn(50, dtype=torch.float64)
            _, want = grads_of(
                lambda a, x, h0: reference.serial(a, x, h0, reverse), inputs, upstream
            )
            h, got = grads_of(
                lambda a, x, h0: plrnn.linear_recurrence(
                    a, x, h0, reverse=reverse, backend=backend
                ),
                inputs,
                upstream,
            )
            assert_close64(h, ref64(a, x, init, reverse))
            for g, w in zip(got, want):
                assert_close64(g, w, "gradient")


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_place_change_of_the_output_is_detected(backend):
    """The kernels save h for their backward; changing it in place must not silently corrupt the
    gradients."""
    a = torch.rand(10, 3, requires_grad=True)
    x = torch.randn(10, 3, requires_grad=True)
    h = run(backend, a, x)
    h.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.sum().backward()


@pytest.mark.parametrize("backend", ALL_NAMES)
def test_under_inference_mode_and_no_grad(backend):
    a, x, h0 = make_inputs(40, (4,), "uniform", True, seed_for("inference"))
    want = ref64(a, x, h0)
    with torch.inference_mode():
        h = plrnn.linear_recurrence(a, x, h0, backend=backend)
    assert h.is_inference()
    assert_close64(h, want)
    with torch.no_grad():
        h = plrnn.linear_recurrence(a.requires_grad_(True), x, h0, backend=backend)
    assert not h.requires_grad
    assert_close64(h, want)


# -------------------------------------------------------------------------------- final state


@pytest.mark.parametrize("with_h0", [False, True], ids=["zeros", "h0"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("T", [0, 1, 6])
@pytest.mark.parametrize("backend", ALL_NAMES)
def test_final_state_is_its_own_tensor(backend, T, reverse, with_h0):
    """The last step's state (h0 or zeros when T = 0), in memory of its own: a view would keep
    all of h alive for a caller that keeps only the state, and writing to either would change
    the other. Gradients reach every input through it."""
    inputs = make_inputs(T, (2, 3), "uniform", with_h0, seed_for("final", backend, T))
    weights = torch.arange(1.0, 7.0, dtype=torch.float64).reshape(2, 3)

    def run_final(name):
        a, x, h0 = (None if t is None else t.clone().requires_grad_() for t in inputs)
        h, final = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=name,
                                           return_final_state=True)
        grads = []
        if final.requires_grad:
            grads = torch.autograd.grad((final * weights).sum(),
                                        [t for t in (a, x, h0) if t is not None],
                                        materialize_grads=True)  # T = 0: empty a and x
        return h, h0, final, grads

    h, h0, final, grads = run_final(backend)
    if T:
        want = h[0] if reverse else h[-1]
    else:
        want = h0 if with_h0 else torch.zeros(2, 3, dtype=torch.float64)
    assert_close64(final.detach(), want.detach(), "final state")
    storage = final.untyped_storage().data_ptr()
    assert storage != h.untyped_storage().data_ptr()
    assert h0 is None or storage != h0.untyped_storage().data_ptr()
    assert len(grads) == (0 if T == 0 and not with_h0 else 3 if with_h0 else 2)
    for got, w in zip(grads, run_final("reference")[3]):
        assert_close64(got, w, "gradient through the final state")
