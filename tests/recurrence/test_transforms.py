"""linear_recurrence under torch.func transforms and forward-mode AD, every CPU backend against
the float64 reference loop called directly (`_oracle`: plain torch ops, which torch.func
differentiates and batches on its own). `backend="reference"` is no oracle here: under a
transform it runs through transforms._Scan, its rules included, like every backend."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functionalize, grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import plrnn
import plrnn.recurrence as recurrence
from plrnn.recurrence import cpu, reference, transforms

from .helpers import BACKENDS, complex_inputs, make_inputs, seed_for

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

SHAPES = [(1, (3,)), (7, (5,)), (33, (2, 3))]
TOL = dict(rtol=1e-9, atol=1e-11)


def _ids(case):
    T, shape = case
    return f"T={T}-C=" + "x".join(map(str, shape))


@pytest.fixture(params=["cold", "warm"])
def warmth(request, monkeypatch):
    """cold: the op's full path; warm: plain eager calls of the same shape came first, so the
    CPU shortcut has them and the transformed call meets it."""
    monkeypatch.setattr(cpu, "_shortcuts", {})
    return request.param


def _warm_up(warmth, backend, a, x, h0, reverse):
    if warmth == "warm":
        for _ in range(2):
            plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=backend)


def _oracle(a, x, h0=None, *, reverse=False, cu_seqlens=None, return_final_state=False):
    """The op's semantics from reference.serial, one call per sequence, in plain torch ops."""
    a = a.expand(x.shape)  # expand's backward sums the gradient of broadcast decays
    bounds = [0, x.shape[0]] if cu_seqlens is None else cu_seqlens.tolist()
    pieces, finals = [], []
    for n, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        start = h0 if cu_seqlens is None or h0 is None else h0[n]
        if hi > lo:
            pieces.append(reference.serial(a[lo:hi], x[lo:hi], start, reverse))
            finals.append(pieces[-1][0] if reverse else pieces[-1][-1])
        else:
            finals.append(torch.zeros_like(x[0]) if start is None else start.clone())
    h = torch.cat(pieces) if pieces else x + 0 * a
    if not return_final_state:
        return h
    return h, finals[0] if cu_seqlens is None else torch.stack(finals)


def _call(backend, *args, **kwargs):
    if backend == "reference":
        return _oracle(*args, **kwargs)
    return plrnn.linear_recurrence(*args, backend=backend, **kwargs)


def _op(backend, reverse=False):
    return lambda a, x, h0: _call(backend, a, x, h0, reverse=reverse)


def _loss(backend, reverse=False):
    # Squared, so the gradient depends on h and the Hessian is not zero.
    return lambda a, x, h0: (_op(backend, reverse)(a, x, h0) ** 2).sum()


@pytest.mark.parametrize("case", SHAPES, ids=_ids)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("decay_kind", ["uniform", "near_one", "near_zero"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_jacobians_and_jvp(backend, decay_kind, reverse, case, warmth):
    T, shape = case
    a, x, h0 = make_inputs(T, shape, decay_kind, True, seed_for(backend, decay_kind, T, shape))
    _warm_up(warmth, backend, a, x, h0, reverse)
    want = grad(_loss("reference", reverse), argnums=(0, 1, 2))(a, x, h0)
    got = grad(_loss(backend, reverse), argnums=(0, 1, 2))(a, x, h0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)
    for transform in (jacrev, jacfwd):
        want = transform(_op("reference", reverse), argnums=(0, 1, 2))(a, x, h0)
        got = transform(_op(backend, reverse), argnums=(0, 1, 2))(a, x, h0)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **TOL)
    tangents = make_inputs(T, shape, "uniform", True, seed_for("tangent", T))
    want = jvp(_op("reference", reverse), (a, x, h0), tangents)
    got = jvp(_op(backend, reverse), (a, x, h0), tangents)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_mode_ad(backend, warmth):
    """Dual tensors outside torch.func: the C++ op alone would drop their tangents silently."""
    a, x, h0 = make_inputs(9, (4,), "near_one", True, seed_for("dual", backend))
    da, dx, dh0 = make_inputs(9, (4,), "uniform", True, seed_for("dual-tangent"))
    _warm_up(warmth, backend, a, x, h0, False)
    want = jvp(_op("reference"), (a, x, h0), (da, dx, dh0))[1]
    with fwAD.dual_level():
        h = plrnn.linear_recurrence(fwAD.make_dual(a, da), fwAD.make_dual(x, dx),
                                    fwAD.make_dual(h0, dh0), backend=backend)
        tangent = fwAD.unpack_dual(h).tangent
    assert tangent is not None
    torch.testing.assert_close(tangent, want, **TOL)
    with fwAD.dual_level():  # a tangent on the decays alone
        h = plrnn.linear_recurrence(fwAD.make_dual(a, da), x, h0, backend=backend)
        tangent = fwAD.unpack_dual(h).tangent
    torch.testing.assert_close(tangent, jvp(lambda a: _op("reference")(a, x, h0), (a,), (da,))[1],
                               **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_order(backend):
    """Hessians: the backward runs the op itself, so it differentiates again under torch.func."""
    a, x, h0 = make_inputs(6, (3,), "uniform", True, seed_for("hessian", backend))
    for argnums in (0, 1, 2):
        want = hessian(_loss("reference"), argnums=argnums)(a, x, h0)
        got = hessian(_loss(backend), argnums=argnums)(a, x, h0)
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_vmap_every_batching(backend, reverse, warmth):
    """The batch at any dim of any argument, or absent from some, against a loop."""
    B, T, C = 3, 11, 5
    a, x, h0 = make_inputs(T, (B, C), "near_one", True, seed_for("vmap", backend))
    h0 = h0.T.contiguous()  # (C, B): the batch last
    _warm_up(warmth, backend, a[:, 0], x[:, 0], h0[:, 0], reverse)
    for in_dims in [(1, 1, 1), (None, 1, 1), (1, None, None), (1, 1, None)]:
        # The unbatched arguments are batch element 0 of their tensor.
        picked = [t.select(1, 0) if d is None else t for t, d in zip((a, x, h0), in_dims)]
        want = torch.stack([
            plrnn.linear_recurrence(
                *[p if d is None else t.select(d, b) for p, t, d in zip(picked, (a, x, h0),
                                                                          in_dims)],
                reverse=reverse, backend="reference")
            for b in range(B)])
        got = vmap(_op(backend, reverse), in_dims=in_dims)(
            *[p if d is None else t for p, t, d in zip(picked, (a, x, h0), in_dims)])
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_gradients(backend, warmth):
    """vmap(grad(...)), the per-sample gradient recipe, against one grad per sample."""
    B, T, C = 4, 13, 3
    a, x, h0 = make_inputs(T, (C,), "uniform", True, seed_for("per-sample", backend))
    xs = torch.randn(B, T, C, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _warm_up(warmth, backend, a, x, h0, False)
    got = vmap(grad(_loss(backend), argnums=(0, 2)), in_dims=(None, 0, None))(a, xs, h0)
    for b in range(B):
        want = grad(_loss("reference"), argnums=(0, 2))(a, xs[b], h0)
        for g, w in zip(got, want):
            torch.testing.assert_close(g[b], w, **TOL)


def test_vmap_runs_one_kernel_call(monkeypatch, warmth):
    """A batch of B scans is one call of the backend on (T, B, *), not B calls (torch's
    fallback for ops without a batching rule loops, with a warning)."""
    B, T, C = 5, 9, 4
    a, x, _ = make_inputs(T, (B, C), "uniform", False, seed_for("one call"))
    _warm_up(warmth, "cpu_serial", a[:, 0], x[:, 0], None, False)
    shapes = []
    if warmth == "warm":  # the shortcut calls the C++ op, once batched, then from its rule
        scan = cpu._scan
        monkeypatch.setattr(cpu, "_scan", lambda a, *rest: shapes.append(a.shape) or scan(a, *rest))
    else:
        compute = recurrence._compute
        monkeypatch.setattr(recurrence, "_compute",
                            lambda chosen, a, *rest: shapes.append(a.shape) or compute(chosen, a, *rest))
    h = vmap(_op("cpu_serial"), in_dims=(1, 1, None))(a, x, None)
    assert h.shape == (B, T, C)
    assert shapes[-1] == (T, B, C) and len(shapes) == (2 if warmth == "warm" else 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_broadcast_decays(backend):
    """Time-invariant and batch-shared decays: the gradient is summed over the broadcast."""
    T, B, C = 10, 3, 4
    g = torch.Generator().manual_seed(seed_for("broadcast", backend))
    x = torch.randn(T, B, C, dtype=torch.float64, generator=g)
    for shape in [(C,), (1, 1, C), (T, 1, C)]:
        a = torch.rand(shape, dtype=torch.float64, generator=g)
        want = grad(_loss("reference"), argnums=(0, 1))(a, x, None)
        got = grad(_loss(backend), argnums=(0, 1))(a, x, None)
        assert got[0].shape == a.shape
        for gg, w in zip(got, want):
            torch.testing.assert_close(gg, w, **TOL)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_complex_vjp(backend):
    """Complex decays (LRU-style): torch's conjugate convention, as autograd gives it."""
    a, x, h0 = complex_inputs(12, 5, seed_for("complex", backend), torch.complex128)
    cot = torch.randn(12, 5, dtype=torch.complex128, generator=torch.Generator().manual_seed(3))
    want = vjp(_op("reference"), a, x, h0)[1](cot)
    got = vjp(_op(backend), a, x, h0)[1](cot)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_batches_and_final_states(backend):
    """cu_seqlens (an empty sequence included) and return_final_state under grad and vmap."""
    lengths = [4, 0, 7, 1]
    T, C = sum(lengths), 3
    cu = torch.tensor([0, 4, 4, 11, 12])
    a, x, _ = make_inputs(T, (C,), "near_one", False, seed_for("packed", backend))
    h0 = torch.randn(len(lengths), C, dtype=torch.float64)

    def loss(backend):
        def f(a, x, h0):
            h, last = _call(backend, a, x, h0, cu_seqlens=cu, return_final_state=True)
            return (h ** 2).sum() + (last ** 3).sum()
        return f

    want = grad(loss("reference"), argnums=(0, 1, 2))(a, x, h0)
    got = grad(loss(backend), argnums=(0, 1, 2))(a, x, h0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)
    xs = torch.stack([x, 2 * x])
    got = vmap(loss(backend), in_dims=(None, 0, None))(a, xs, h0)
    want = torch.stack([loss("reference")(a, xs[b], h0) for b in range(2)])
    torch.testing.assert_close(got, want, **TOL)


def test_float32_gradients():
    """float32 kernels under grad, against the float64 reference within float32 rounding."""
    a, x, h0 = make_inputs(300, (6,), "near_one", True, seed_for("float32"))
    want = grad(_loss("reference"), argnums=(0, 1, 2))(a, x, h0)
    for backend in BACKENDS:
        got = grad(_loss(backend), argnums=(0, 1, 2))(*(t.float() for t in (a, x, h0)))
        for g, w in zip(got, want):
            assert g.dtype == torch.float32
            torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-4 * w.abs().max())


def test_out_is_refused_under_transforms(warmth):
    a, x, _ = make_inputs(8, (3,), "uniform", False, seed_for("out"))
    out = torch.empty_like(x)
    if warmth == "warm":
        for _ in range(2):
            plrnn.linear_recurrence(a, x, out=out)
    with torch.no_grad(), pytest.raises(RuntimeError, match="out="):
        vmap(lambda a, x, o: plrnn.linear_recurrence(a, x, out=o))(a[None], x[None], out[None])
    with pytest.raises(RuntimeError, match="out="):
        jvp(lambda x: plrnn.linear_recurrence(a, x, out=out), (x,), (x,))
    with pytest.raises(RuntimeError, match="out="):
        grad(lambda x: plrnn.linear_recurrence(a, x, out=out).sum())(x)


def test_outside_transforms_the_kernels_keep_their_own_backward(monkeypatch):
    """transforms._Scan runs only under a transform: a plain backward never meets it."""
    from plrnn.recurrence import transforms

    def refuse(*args):
        raise AssertionError("transforms._Scan ran outside a transform")

    monkeypatch.setattr(transforms._Scan, "apply", refuse)
    a, x, h0 = make_inputs(40, (3,), "uniform", True, seed_for("plain"))
    for t in (a, x, h0):
        t.requires_grad_(True)
    for backend in BACKENDS:
        plrnn.linear_recurrence(a, x, h0, backend=backend).sum().backward()


def test_the_oracle_is_plain_torch(monkeypatch):
    """The comparisons above mean something only if the oracle never meets transforms._Scan."""
    def refuse(*args):
        raise AssertionError("the oracle ran through transforms._Scan")

    monkeypatch.setattr(transforms._Scan, "apply", refuse)
    a, x, h0 = make_inputs(5, (2,), "uniform", True, seed_for("oracle"))
    cu = torch.tensor([0, 2, 2, 5])
    h0s = torch.stack([h0, h0, h0])
    grad(_loss("reference"), argnums=(0, 1, 2))(a, x, h0)
    jvp(_op("reference"), (a, x, h0), (x, a, h0))
    vmap(_op("reference"))(a[None], x[None], h0[None])
    grad(lambda a: _oracle(a, x, h0s, cu_seqlens=cu, return_final_state=True)[1].sum())(a[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_functionalize_runs_the_kernels(backend, warmth):
    """torch.func.functionalize alone needs no rule, and transforms._Scan cannot run under it
    ("NYI: Functionalize rule for custom_function_call"): the kernels run as they are."""
    a, x, h0 = make_inputs(7, (3,), "uniform", True, seed_for("functionalize", backend))
    _warm_up(warmth, backend, a, x, h0, False)
    for decays in (a, a[0]):  # broadcast decays miss the shortcut even when warm
        got = functionalize(_op(backend))(decays, x, h0)
        torch.testing.assert_close(got, _oracle(decays, x, h0), **TOL)


def test_transforms_inside_torch_compile():
    """Transforms inside a compiled function: grad met the C++ autograd rule (refused under
    functorch) and jvp came out with zero tangents while the op left transforms out when traced;
    now dynamo runs the op's autograd.Function eagerly (graph break), or raises under forward AD."""
    a, x, h0 = make_inputs(6, (3,), "uniform", True, seed_for("compile transforms"))
    torch._dynamo.reset()
    got = torch.compile(lambda *p: jvp(_op("cpu_serial"), p, (x, a, h0)), backend="aot_eager")(a, x, h0)
    torch.testing.assert_close(got, jvp(_op("reference"), (a, x, h0), (x, a, h0)), **TOL)
    got = torch.compile(grad(_loss("cpu_serial"), argnums=(0, 1, 2)), backend="aot_eager")(a, x, h0)
    torch.testing.assert_close(got, grad(_loss("reference"), argnums=(0, 1, 2))(a, x, h0), **TOL)


def test_batched_offsets_are_refused_in_their_own_terms():
    a, x = torch.rand(12, 3), torch.randn(12, 3)
    offsets = torch.tensor([[0, 4, 12], [0, 6, 12]])
    with pytest.raises(ValueError, match="cu_seqlens cannot be batched under torch.func.vmap"):
        vmap(lambda c: plrnn.linear_recurrence(a, x, cu_seqlens=c))(offsets)
    # Offsets shared by every call of the map are what a packed batch takes.
    got = vmap(lambda xs: plrnn.linear_recurrence(a, xs, cu_seqlens=offsets[0]))(x.expand(2, 12, 3))
    assert torch.equal(got[1], plrnn.linear_recurrence(a, x, cu_seqlens=offsets[0]))
