"""Jagged nested tensors (torch.nested, layout=torch.jagged) as the op's inputs: each sequence of
the batch against the float64 loop (reference.serial, called directly) run on it alone, forward
and every gradient, and the errors for what the op does not take."""

from __future__ import annotations

import warnings

import pytest
import torch

import plrnn
from plrnn.recurrence import reference

BACKENDS = [b.name for b in plrnn.backends("cpu") if b.available]
LENGTHS = [5, 0, 1, 8, 3]  # an empty sequence and a single step among them
C = 3


def _nested(pieces, requires_grad=False, layout=torch.jagged):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nested calls itself a prototype
        return torch.nested.nested_tensor(pieces, layout=layout, requires_grad=requires_grad)


def _pieces(gen, lengths=LENGTHS, decays=False, low=0.0):
    draw = (lambda n: low + (1 - low) * torch.rand(n, C, generator=gen, dtype=torch.float64)) \
        if decays else (lambda n: torch.randn(n, C, generator=gen, dtype=torch.float64))
    return [draw(n) for n in lengths]


def _oracle(a_pieces, x_pieces, h0, reverse):
    """Each sequence alone through reference.serial, with its own initial state."""
    return [reference.serial(a, x, None if h0 is None else h0[n], reverse=reverse)
            for n, (a, x) in enumerate(zip(a_pieces, x_pieces))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("low", [0.0, 0.999])
def test_jagged_decays_forward_and_every_gradient(backend, reverse, with_state, low):
    gen = torch.Generator().manual_seed(11)
    a_p, x_p = _pieces(gen, decays=True, low=low), _pieces(gen)
    a, x = _nested(a_p, requires_grad=True), _nested(x_p, requires_grad=True)
    h0 = torch.randn(len(LENGTHS), C, generator=gen, dtype=torch.float64, requires_grad=True) \
        if with_state else None
    h, final = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=backend,
                                       return_final_state=True)
    assert h.layout is torch.jagged and h.shape == x.shape  # the impulses' ragged size
    g = [torch.randn(n, C, generator=gen, dtype=torch.float64) for n in LENGTHS]
    g_final = torch.randn(len(LENGTHS), C, generator=gen, dtype=torch.float64)
    got_grads = torch.autograd.grad(
        (h.values() * torch.cat(g)).sum() + (final * g_final).sum(),
        [t for t in (a, x, h0) if t is not None])

    leaves = [[p.clone().requires_grad_() for p in ps] for ps in (a_p, x_p)]
    state = None if h0 is None else h0.detach().clone().requires_grad_()
    want = _oracle(*leaves, state, reverse)
    want_final = torch.stack([
        (w[0] if reverse else w[-1]) if n else (state[i] if state is not None else torch.zeros(C))
        for i, (w, n) in enumerate(zip(want, LENGTHS))])
    for got, ref in zip(h.unbind(), want):
        torch.testing.assert_close(got, ref.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, want_final.detach(), rtol=1e-10, atol=1e-10)
    want_grads = torch.autograd.grad(
        sum((w * gi).sum() for w, gi in zip(want, g)) + (want_final * g_final).sum(),
        [*leaves[0], *leaves[1], *([state] if state is not None else [])], allow_unused=True)
    n = len(LENGTHS)
    for got, ref in zip(got_grads[0].unbind(), want_grads[:n]):
        torch.testing.assert_close(got, torch.zeros_like(got) if ref is None else ref)
    for got, ref in zip(got_grads[1].unbind(), want_grads[n:2 * n]):
        torch.testing.assert_close(got, torch.zeros_like(got) if ref is None else ref)
    if with_state:
        torch.testing.assert_close(got_grads[2], want_grads[2 * n])


@pytest.mark.parametrize("shape", [(C,), (1, C)])
def test_time_invariant_dense_decays(shape):
    gen = torch.Generator().manual_seed(5)
    x_p = _pieces(gen)
    d = torch.rand(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    x = _nested(x_p)
    h = plrnn.linear_recurrence(d, x, backend="cpu_serial")
    leaf = d.detach().clone().requires_grad_()
    want = _oracle([leaf.expand(n, C) for n in LENGTHS], x_p, None, False)
    for got, ref in zip(h.unbind(), want):
        torch.testing.assert_close(got, ref.detach())
    g = torch.randn(h.values().shape, generator=gen, dtype=torch.float64)
    (got,) = torch.autograd.grad((h.values() * g).sum(), d)
    (ref,) = torch.autograd.grad(sum((w * gi).sum() for w, gi in
                                     zip(want, g.split(LENGTHS))), leaf)
    torch.testing.assert_close(got, ref)


def test_float32_and_odd_layouts():
    # float32 values; a transposed jagged tensor (ragged in time, values not contiguous).
    gen = torch.Generator().manual_seed(2)
    comps = [torch.randn(C, n, generator=gen) for n in (4, 9, 1)]
    decays = [torch.rand(C, n, generator=gen) for n in (4, 9, 1)]
    x = _nested(comps).transpose(1, 2)
    a = _nested(decays).transpose(1, 2)
    assert not x.values().is_contiguous()
    h = plrnn.linear_recurrence(a, x)
    for got, ai, xi in zip(h.unbind(), decays, comps):
        want = reference.serial(ai.T.double(), xi.T.double())
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)


def test_output_adds_to_the_impulses():
    x = _nested(_pieces(torch.Generator().manual_seed(0)))
    h = plrnn.linear_recurrence(torch.full((C,), 0.5, dtype=torch.float64), x)
    assert (h + x).shape == x.shape  # a sum only works on one ragged size


def test_refusals():
    gen = torch.Generator().manual_seed(1)
    x = _nested(_pieces(gen))
    a = _nested(_pieces(gen, decays=True))
    other = _nested(_pieces(gen, lengths=[5, 0, 1, 8, 4], decays=True))
    with pytest.raises(ValueError, match="same sequence lengths"):
        plrnn.linear_recurrence(other, x)
    with pytest.raises(TypeError, match="impulses must be a jagged nested tensor too"):
        plrnn.linear_recurrence(a, torch.randn(17, C, dtype=torch.float64))
    with pytest.raises(TypeError, match="impulses must be a jagged nested tensor too, .* list"):
        plrnn.linear_recurrence(a, [1.0])
    with pytest.raises(ValueError, match="must be time-invariant"):
        plrnn.linear_recurrence(torch.rand(17, C, dtype=torch.float64), x)
    with pytest.raises(ValueError, match="cu_seqlens must be None"):
        plrnn.linear_recurrence(a, x, cu_seqlens=torch.tensor([0, 17]))
    with pytest.raises(ValueError, match="out= takes dense tensors"):
        plrnn.linear_recurrence(a, x, out=torch.empty(17, C, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"with a packed batch \(cu_seqlens or jagged inputs\), initial_state must have shape"):
        plrnn.linear_recurrence(a, x, torch.zeros(C, dtype=torch.float64))
    with pytest.raises(TypeError, match="same dtype"):
        plrnn.linear_recurrence(a, _nested([p.float() for p in _pieces(gen)]))
    ragged_last = _nested([torch.randn(C, n, dtype=torch.float64) for n in LENGTHS])
    with pytest.raises(ValueError, match="ragged in dimension 1"):
        plrnn.linear_recurrence(ragged_last, ragged_last)
    holes = torch.nested.narrow(torch.randn(3, 6, C), 1, torch.tensor([0, 1, 2]),
                                torch.tensor([3, 2, 4]), layout=torch.jagged)
    with pytest.raises(ValueError, match="with holes"):
        plrnn.linear_recurrence(holes, holes)
    strided = _nested([torch.rand(4, C), torch.rand(2, C)], layout=torch.strided)
    with pytest.raises(TypeError, match="layout torch.strided are not supported"):
        plrnn.linear_recurrence(strided, strided)
    with pytest.raises(TypeError, match="layout torch.strided are not supported"):
        plrnn.linear_recurrence(torch.rand(C), strided)
    with pytest.raises(TypeError, match="got a nested tensor of layout torch.strided"):
        plrnn.linear_recurrence(strided, x)
    with pytest.raises(TypeError, match="got layout torch.sparse_coo"):
        plrnn.linear_recurrence(torch.rand(C, dtype=torch.float64).to_sparse(), x)


def test_strided_nested_refused_after_a_shortcut_hit(monkeypatch):
    # The shortcut reads shapes before any check; a strided nested tensor has none.
    a, x = torch.rand(4, C), torch.randn(4, C)
    plrnn.linear_recurrence(a, x)
    plrnn.linear_recurrence(a, x)
    strided = _nested([torch.rand(4, C), torch.rand(2, C)], layout=torch.strided)
    with pytest.raises(TypeError, match="layout torch.strided are not supported"):
        plrnn.linear_recurrence(strided, strided)


def test_under_torch_compile():
    gen = torch.Generator().manual_seed(4)
    a, x = _nested(_pieces(gen, decays=True)), _nested(_pieces(gen))
    compiled = torch.compile(lambda a, x: plrnn.linear_recurrence(a, x) * 2)
    got = compiled(a, x)
    torch.testing.assert_close(got.values(), 2 * plrnn.linear_recurrence(a, x).values())


def test_refused_under_torch_func_transforms():
    # torch.func wraps a jagged tensor in one that reports layout torch.strided and shape
    # (B, j, *): it used to run as a dense (T=B) recurrence, or fail deep in torch.
    gen = torch.Generator().manual_seed(6)
    a, x = _nested(_pieces(gen, decays=True)), _nested(_pieces(gen))
    offsets = x.offsets()

    def both_inside(va, vx):
        return plrnn.linear_recurrence(torch.nested.nested_tensor_from_jagged(va, offsets),
                                       torch.nested.nested_tensor_from_jagged(vx, offsets)
                                       ).values().sum()

    def decays_inside(va):
        return plrnn.linear_recurrence(torch.nested.nested_tensor_from_jagged(va, offsets),
                                       x).values().sum()

    def dense_decays(d):
        return plrnn.linear_recurrence(d, x).values().sum()

    for call in (lambda: torch.func.grad(both_inside)(a.values(), x.values()),
                 lambda: torch.func.grad(decays_inside)(a.values()),
                 lambda: torch.func.grad(dense_decays)(torch.rand(C, dtype=torch.float64))):
        with pytest.raises(RuntimeError, match="jagged nested tensors cannot be used under "
                                               "torch.func"):
            call()


def test_meta_offsets_and_devices_refused_with_a_message():
    gen = torch.Generator().manual_seed(7)
    a, x = _nested(_pieces(gen, decays=True)), _nested(_pieces(gen))
    with pytest.raises(ValueError, match="offsets on the meta device"):
        plrnn.linear_recurrence(a.to("meta"), x.to("meta"))
    with pytest.raises(ValueError, match="same device; got decays on meta"):
        plrnn.linear_recurrence(a.to("meta"), x)


@pytest.mark.parametrize("offsets", [[2, 5, 10], [0, 3, 8]], ids=["late-start", "early-end"])
def test_offsets_that_leave_rows_out_are_refused_in_their_own_terms(offsets):
    """Offsets not from 0 to the values' length (nested_tensor_from_jagged by hand): a message
    about the jagged tensor, not about a cu_seqlens the caller never passed."""
    gen = torch.Generator().manual_seed(11)
    x = torch.nested.nested_tensor_from_jagged(torch.randn(10, 4, generator=gen),
                                               torch.tensor(offsets))
    with pytest.raises(ValueError, match="offsets do not run from 0 to its values' 10 rows"):
        plrnn.linear_recurrence(torch.rand(4, generator=gen), x)


def test_complex_inputs_run_without_gradients_and_say_what_to_do_with_them():
    g = torch.Generator().manual_seed(7)
    parts = [torch.randn(3, 4, dtype=torch.complex128, generator=g),
             torch.randn(5, 4, dtype=torch.complex128, generator=g)]
    a = torch.polar(torch.rand(4, dtype=torch.float64, generator=g),
                    torch.rand(4, dtype=torch.float64, generator=g))
    x = _nested(parts)
    h = plrnn.linear_recurrence(a, x)
    for got, part in zip(h.unbind(), parts):
        torch.testing.assert_close(got, reference.serial(a.expand_as(part), part))
    for needs_grad in ("decays", "impulses", "initial_state"):
        inputs = {"decays": a.clone(), "impulses": x.clone(),
                  "initial_state": torch.zeros(2, 4, dtype=torch.complex128)}
        inputs[needs_grad].requires_grad_()
        with pytest.raises(TypeError, match=r"no autograd for complex jagged .*x\.offsets\(\)"):
            plrnn.linear_recurrence(inputs["decays"], inputs["impulses"], inputs["initial_state"])
