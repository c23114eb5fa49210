"""The op under torch.autocast: mixed real float dtypes run in the widest of them, as autocast's
"promote" ops (addcmul, cat) do; outside autocast they stay refused."""

from __future__ import annotations

import pytest
import torch

import plrnn

from .helpers import BACKENDS, make_inputs, seed_for

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

BF16, F32 = torch.bfloat16, torch.float32


@pytest.mark.parametrize("dtypes", [(F32, BF16, None), (BF16, F32, BF16), (BF16, BF16, F32),
                                    (torch.float16, BF16, torch.float64)],
                         ids=["a32-x16", "x32", "h0_32", "three"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_dtypes_run_in_the_widest(backend, dtypes):
    a, x, h0 = make_inputs(40, (3,), "near_one", True, seed_for("autocast", backend))
    inputs = [t.to(d).requires_grad_() for t, d in zip((a, x, h0), dtypes) if d is not None]
    if dtypes[2] is None:
        inputs.append(None)
    wide = torch.promote_types(torch.promote_types(dtypes[0], dtypes[1]), dtypes[2] or dtypes[0])
    with torch.autocast("cpu", dtype=BF16):
        h = plrnn.linear_recurrence(*inputs, backend=backend)
    assert h.dtype == wide
    want = plrnn.linear_recurrence(*(None if t is None else t.detach().to(wide) for t in inputs),
                                   backend=backend)
    assert torch.equal(h.detach(), want)
    h.sum().backward()
    wide_leaves = [None if t is None else t.detach().to(wide).requires_grad_() for t in inputs]
    plrnn.linear_recurrence(*wide_leaves, backend=backend).sum().backward()
    for t, w in zip(inputs, wide_leaves, strict=True):
        if t is not None:
            assert t.grad is not None and t.grad.dtype == t.dtype
            assert torch.equal(t.grad, w.grad.to(t.dtype))  # autocast casts the wide gradient


def test_one_dtype_is_left_alone_and_mixing_outside_autocast_is_refused():
    a, x, _ = make_inputs(9, (2,), "uniform", False, seed_for("autocast alone"), BF16)
    with torch.autocast("cpu", dtype=BF16):
        assert plrnn.linear_recurrence(a, x).dtype == BF16
        with pytest.raises(TypeError, match="both real or both complex"):
            plrnn.linear_recurrence(a.to(torch.complex64), x)
    with pytest.raises(TypeError, match="must have the same dtype"):
        plrnn.linear_recurrence(a.float(), x)
    with torch.autocast("cpu", dtype=BF16), pytest.raises(TypeError, match="same dtype"):
        plrnn.linear_recurrence(a.float(), x, [0.0, 0.0])  # a bad state: an error, no crash
    with pytest.raises(TypeError, match="initial_state must have the impulses' dtype"):
        plrnn.linear_recurrence(a, x, torch.zeros(2))


def test_mixed_dtypes_compile_without_a_graph_break():
    """An autocast Linear's bfloat16 impulses beside a float32 decay parameter, the case above,
    inside torch.compile(fullgraph=True): traced, not refused, with eager's result."""
    a, x, h0 = make_inputs(40, (3,), "near_one", True, seed_for("autocast compiled"))
    a, x, h0 = a.float().requires_grad_(), x.to(BF16).requires_grad_(), h0.to(BF16)

    def f(a, x, h0):
        with torch.autocast("cpu", dtype=BF16):
            return plrnn.linear_recurrence(a, x, h0)

    want = f(a, x, h0)
    got = torch.compile(f, fullgraph=True)(a, x, h0)
    assert got.dtype == F32 and torch.equal(got, want)
    got.sum().backward()
    assert a.grad.dtype == F32 and x.grad.dtype == BF16
