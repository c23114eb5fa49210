"""linear_recurrence(..., out=): the same values as the plain call, written into the given tensor,
and every misuse of `out` refused with an error that names it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import plrnn

from .helpers import ALL_BACKENDS, F64_RTOL, make_inputs, max_err, ref64, scale_of, seed_for

CPU_KERNELS = ("cpu_serial", "cpu_parallel")
# (T, trailing shape): T = 1, odd channel counts, and a (T, B, D) input.
CASES = [(1, (1,)), (1, (5,)), (2, (3,)), (33, (7,)), (100, (33,)), (17, (2, 3, 5))]

backend_param = pytest.mark.parametrize("backend", ALL_BACKENDS)
reverse_param = pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
h0_param = pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
dtype_param = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])


def case_id(case) -> str:
    T, shape = case
    return f"T={T}-shape=" + "x".join(map(str, shape))


def inputs(T, shape, with_h0, dtype, *tag):
    return make_inputs(T, shape, "uniform", with_h0, seed_for("out", T, shape, *tag), dtype)


def garbage_like(x: torch.Tensor) -> torch.Tensor:
    """An out whose old contents must not leak into the result."""
    return torch.full_like(x, float("nan"))


def call_into(out, a, x, h0, reverse, backend):
    ptr = out.data_ptr()
    result = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=backend, out=out)
    assert result is out
    assert out.data_ptr() == ptr
    return result


@dtype_param
@reverse_param
@h0_param
@pytest.mark.parametrize("case", CASES, ids=case_id)
@backend_param
def test_matches_the_plain_call(backend, case, with_h0, reverse, dtype):
    T, shape = case
    a, x, h0 = inputs(T, shape, with_h0, dtype, reverse)
    expected = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=backend)

    out = call_into(garbage_like(x), a, x, h0, reverse, backend)
    assert torch.equal(out, expected), f"max diff {max_err(out, expected):.3e}"
    if dtype == torch.float64:
        truth = ref64(a, x, h0, reverse)
        assert max_err(out, truth) <= F64_RTOL * max(1.0, scale_of(truth))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@backend_param
def test_half_precision_matches_the_plain_call(backend, dtype):
    a, x, h0 = inputs(33, (2, 5), True, dtype, str(dtype))
    expected = plrnn.linear_recurrence(a, x, h0, backend=backend)
    assert torch.equal(call_into(garbage_like(x), a, x, h0, False, backend), expected)


def transposed_out(x: torch.Tensor) -> torch.Tensor:
    """A non-contiguous tensor of x's shape: the time axis is not the outermost in memory."""
    buffer = torch.full((*x.shape[1:], x.shape[0]), float("nan"), dtype=x.dtype)
    return buffer.movedim(-1, 0)


@reverse_param
@pytest.mark.parametrize("shape", [(7,), (2, 3, 5)], ids=["2d", "3d"])
@backend_param
def test_non_contiguous_out(backend, shape, reverse):
    a, x, h0 = inputs(19, shape, True, torch.float64, "strided", reverse)
    out = transposed_out(x)
    assert not out.is_contiguous()
    expected = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=backend)

    call_into(out, a, x, h0, reverse, backend)
    assert torch.equal(out, expected)
    assert torch.equal(out.movedim(0, -1).contiguous(), expected.movedim(0, -1))


@pytest.mark.parametrize("backend", CPU_KERNELS)
def test_kernel_writes_into_a_slice_of_a_shared_buffer(backend):
    # out and impulses are disjoint halves of one storage: allowed, and only out's half changes.
    a, x, h0 = inputs(40, (2, 9), True, torch.float32, "slice")
    buffer = torch.empty((2, *x.shape), dtype=x.dtype)
    buffer[0] = x
    buffer[1] = float("nan")
    expected = plrnn.linear_recurrence(a, x, h0, backend=backend)

    call_into(buffer[1], a, buffer[0], h0, False, backend)
    assert torch.equal(buffer[1], expected)
    assert torch.equal(buffer[0], x)


@backend_param
def test_version_counter_is_bumped(backend):
    # Writing into out must invalidate a graph that saved out's old values.
    a, x, _ = inputs(8, (3,), False, torch.float32, "version")
    out = torch.zeros_like(x)
    weight = torch.ones(3, requires_grad=True)
    saved = (out * weight).sum()  # saves out for weight's gradient
    version = out._version

    plrnn.linear_recurrence(a, x, backend=backend, out=out)
    assert out._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.backward()


@backend_param
@pytest.mark.parametrize("shape", [(0, 3), (4, 0), (0, 2, 0)], ids=["T=0", "C=0", "both"])
def test_empty_returns_out_unchanged(backend, shape):
    a, x = torch.rand(shape), torch.randn(shape)
    out = torch.empty(shape)
    assert plrnn.linear_recurrence(a, x, backend=backend, out=out) is out
    assert out.shape == shape


@backend_param
@pytest.mark.parametrize("grad_of", ["decays", "impulses", "initial_state", "out"])
def test_no_grad_accepts_inputs_that_require_grad(backend, grad_of):
    a, x, h0 = inputs(12, (5,), True, torch.float64, "no_grad")
    expected = plrnn.linear_recurrence(a, x, h0, backend=backend)
    args = {"decays": a, "impulses": x, "initial_state": h0, "out": garbage_like(x)}
    args[grad_of] = args[grad_of].clone().requires_grad_(True)

    with torch.no_grad():
        result = plrnn.linear_recurrence(**args, backend=backend)
    assert result is args["out"]
    assert torch.equal(result, expected)


# -- misuse ---------------------------------------------------------------------------------------

A = torch.rand(6, 3)
X = torch.randn(6, 3)
H0 = torch.randn(3)


def call(out, decays=A, impulses=X, initial_state=None):
    return plrnn.linear_recurrence(decays, impulses, initial_state, out=out)


def test_out_not_a_tensor():
    with pytest.raises(TypeError, match=r"^out must be a torch\.Tensor or None, got list$"):
        call(X.tolist())


def test_out_wrong_dtype():
    with pytest.raises(
        TypeError,
        match=r"^out must have h's dtype torch\.float32 \(the impulses', or under autocast the "
              r"widest of the inputs'\); got torch\.float64$",
    ):
        call(torch.empty(6, 3, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(6,), (6, 4), (5, 3), (6, 3, 1)], ids=str)
def test_out_wrong_shape(shape):
    got = re.escape(str(tuple(shape)))
    with pytest.raises(
        ValueError, match=rf"^out must have the impulses' shape \(6, 3\); got {got}$"
    ):
        call(torch.empty(shape))


def test_out_wrong_device():
    with pytest.raises(ValueError, match=r"^out must be on the impulses' device cpu; got meta$"):
        call(torch.empty(6, 3, device="meta"))


@pytest.mark.parametrize("name", ["decays", "impulses"])
def test_out_is_an_input(name):
    a, x = A.clone(), X.clone()
    before = a.clone(), x.clone()
    with pytest.raises(ValueError, match=rf"^out must not share memory with {name}; "):
        call({"decays": a, "impulses": x}[name], decays=a, impulses=x)
    assert torch.equal(a, before[0]) and torch.equal(x, before[1])  # refused before writing


def test_out_partly_overlaps_impulses():
    buffer = torch.randn(7, 3)
    with pytest.raises(ValueError, match=r"^out must not share memory with impulses; "):
        call(buffer[1:], impulses=buffer[:-1])


def test_out_overlaps_initial_state():
    buffer = torch.randn(6, 3)
    with pytest.raises(ValueError, match=r"^out must not share memory with initial_state; "):
        call(buffer, initial_state=buffer[2])


def test_out_and_an_input_over_one_buffer_through_two_storages():
    # Two tensors made from one numpy array have separate storages: caught by address, not by
    # storage identity.
    buffer = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"^out must not share memory with impulses; "):
        call(torch.from_numpy(buffer), impulses=torch.from_numpy(buffer))


def test_out_beside_an_input_in_one_buffer_is_allowed():
    buffer = torch.randn(12, 3)
    x, out = buffer[:6], buffer[6:]
    got = call(out, impulses=x)
    assert got is out
    torch.testing.assert_close(out, plrnn.linear_recurrence(A, x, backend="reference"))


@pytest.mark.parametrize("name", ["decays", "impulses", "initial_state"])
def test_the_op_refuses_out_over_an_input(name):
    # plrnn::cpu_scan_out checks by itself: linear_recurrence's shortcut leaves it to the op.
    buffer = torch.randn(7, 3)
    args = {"decays": A.clone(), "impulses": X.clone(), "initial_state": H0.clone()}
    args[name] = buffer[1] if name == "initial_state" else buffer[:6]
    before = {k: v.clone() for k, v in args.items()}
    with pytest.raises(ValueError, match=rf"^out must not share memory with {name}; "):
        torch.ops.plrnn.cpu_scan_out(args["decays"], args["impulses"], args["initial_state"],
                                     False, False, out=buffer[1:])
    assert all(torch.equal(args[k], v) for k, v in before.items())  # refused before writing


def test_the_op_writes_beside_an_input_in_one_buffer():
    buffer = torch.randn(12, 3)
    x, out = buffer[:6], buffer[6:]
    torch.ops.plrnn.cpu_scan_out(A, x, H0, False, False, out=out)
    torch.testing.assert_close(out, plrnn.linear_recurrence(A, x, H0, backend="reference"))


def test_out_overlaps_itself():
    with pytest.raises(ValueError, match=r"^out must not have elements that share memory"):
        call(torch.empty(1, 3).expand(6, 3))


@pytest.mark.parametrize("grad_of", ["decays", "impulses", "initial_state", "out"])
def test_out_refuses_autograd(grad_of):
    args = {"decays": A, "impulses": X, "initial_state": H0, "out": torch.empty(6, 3)}
    args[grad_of] = args[grad_of].clone().requires_grad_(True)
    with pytest.raises(
        RuntimeError,
        match=r"out= does not support automatic differentiation, but one of the arguments "
        r"requires grad",
    ):
        call(**args)


def _conj_view():
    return torch.zeros(6, 3, dtype=torch.complex64).conj()


def _neg_view():
    return torch._neg_view(torch.zeros(6, 3))


@backend_param
@pytest.mark.parametrize("view", [_conj_view, _neg_view], ids=["conj", "neg"])
def test_out_refuses_a_lazy_view(backend, view):
    """A conj/neg view looks contiguous but reads its memory conjugated or negated, and the C++
    op cannot write through one (torch's fallback aborted the process). Refused also after a
    plain call has primed the shortcut for these arguments."""
    out = view()
    a = torch.rand(6, 3, dtype=out.dtype) * 0.5
    x = torch.randn(6, 3, dtype=out.dtype)
    with torch.no_grad():
        for _ in range(2):
            plrnn.linear_recurrence(a, x, backend=backend, out=torch.empty_like(x))
            with pytest.raises(ValueError, match=r"^out must not be a conjugate or negated view"):
                plrnn.linear_recurrence(a, x, backend=backend, out=out)


@backend_param
def test_an_inference_tensor_is_written_only_in_inference_mode(backend):
    with torch.inference_mode():
        out = torch.zeros(6, 3)
    with torch.no_grad():
        for _ in range(2):  # the second call would take the shortcut
            plrnn.linear_recurrence(A, X, backend=backend, out=torch.empty(6, 3))
            with pytest.raises(RuntimeError, match=r"inference tensor"):
                plrnn.linear_recurrence(A, X, backend=backend, out=out)
    with torch.inference_mode():
        assert plrnn.linear_recurrence(A, X, backend=backend, out=out) is out
    torch.testing.assert_close(out, ref64(A, X).float(), rtol=1e-5, atol=1e-5)


def test_out_must_be_dense():
    with pytest.raises(TypeError, match=r"^out must be a dense \(strided\) tensor"):
        call(torch.zeros(6, 3).to_sparse())
