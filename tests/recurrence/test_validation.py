"""Every argument error, with its message, raised before any kernel runs."""

from __future__ import annotations

import re

import pytest
import torch

import plrnn
from plrnn.recurrence import cpu
from plrnn.recurrence.registry import choose_auto

A = torch.rand(6, 3)
X = torch.randn(6, 3)


def call(decays=A, impulses=X, initial_state=None, **kwargs):
    return plrnn.linear_recurrence(decays, impulses, initial_state, **kwargs)


def test_decays_not_a_tensor():
    with pytest.raises(
        TypeError, match=r"^decays must be a torch\.Tensor of shape \(T, \*\), got list$"
    ):
        call(decays=A.tolist())


def test_impulses_not_a_tensor():
    with pytest.raises(
        TypeError, match=r"^impulses must be a torch\.Tensor of shape \(T, \*\), got float$"
    ):
        call(impulses=1.0)


def test_zero_dim_impulses_with_zero_dim_decays():
    with pytest.raises(
        ValueError,
        match=r"^impulses must have a leading time axis, shape \(T, \*\); got a 0-d tensor$",
    ):
        call(decays=torch.tensor(0.5), impulses=torch.tensor(1.0))


def test_impulses_zero_dim():
    with pytest.raises(
        ValueError,
        match=r"^impulses must have a leading time axis, shape \(T, \*\); got a 0-d tensor$",
    ):
        call(impulses=torch.tensor(1.0))


def test_integer_decays():
    with pytest.raises(
        TypeError,
        match=r"^decays must be float16, bfloat16, float32, float64, complex64 or complex128; "
        r"got torch\.int64$",
    ):
        call(
            decays=torch.ones(6, 3, dtype=torch.int64), impulses=torch.ones(6, 3, dtype=torch.int64)
        )


def test_integer_impulses():
    with pytest.raises(
        TypeError,
        match=r"^impulses must be float16, bfloat16, float32, float64, complex64 or complex128; "
        r"got torch\.int32$",
    ):
        call(impulses=torch.ones(6, 3, dtype=torch.int32))


def test_complex_impulses_with_real_decays_rejected():
    with pytest.raises(TypeError, match=r"^decays and impulses must be both real or both complex"):
        call(impulses=torch.ones(6, 3, dtype=torch.complex64))


def test_mismatched_shapes():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "decays must have the impulses' shape (T, *) or broadcast to it (time-invariant "
            "(*) or (1, *), shared over a dimension with size 1 there); got decays (6, 3) and "
            "impulses (6, 4)"
        ),
    ):
        call(impulses=torch.randn(6, 4))


@pytest.mark.parametrize("shape", [(2, 6, 3), (6, 2), (7, 3), (3, 1)])
def test_decays_that_do_not_broadcast_to_the_impulses(shape):
    with pytest.raises(ValueError, match=r"or broadcast to it.*got decays"):
        call(decays=torch.rand(shape))


def test_mismatched_dtypes():
    with pytest.raises(
        TypeError,
        match=r"^decays and impulses must have the same dtype; got decays torch\.float64 and impulses torch\.float32$",
    ):
        call(decays=A.double())


def test_tensors_on_different_devices():
    with pytest.raises(
        ValueError,
        match=r"^decays and impulses must be on the same device; got decays on meta and impulses on cpu$",
    ):
        call(decays=torch.empty(6, 3, device="meta"))


def test_initial_state_not_a_tensor():
    with pytest.raises(
        TypeError, match=r"^initial_state must be a torch\.Tensor or None, got list$"
    ):
        call(initial_state=[0.0, 0.0, 0.0])


def test_initial_state_wrong_shape():
    with pytest.raises(
        ValueError,
        match=re.escape("initial_state must have shape (3,) (impulses.shape[1:]); got (1, 3)"),
    ):
        call(initial_state=torch.zeros(1, 3))


def test_initial_state_wrong_dtype():
    with pytest.raises(
        TypeError,
        match=r"^initial_state must have the impulses' dtype torch\.float32; got torch\.float64$",
    ):
        call(initial_state=torch.zeros(3, dtype=torch.float64))


def test_initial_state_wrong_device():
    with pytest.raises(
        ValueError, match=r"^initial_state must be on the impulses' device cpu; got meta$"
    ):
        call(initial_state=torch.empty(3, device="meta"))


@pytest.mark.parametrize("reverse", [1, 0, None, "yes"], ids=["int1", "int0", "None", "str"])
def test_reverse_not_a_bool(reverse):
    with pytest.raises(TypeError, match=rf"^reverse must be a bool, got {type(reverse).__name__}$"):
        call(reverse=reverse)


def test_a_numpy_bool_is_named_with_its_module():
    numpy = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match=r"^reverse must be a bool, got numpy\.bool_?$"):
        call(reverse=numpy.bool_(True))
    with pytest.raises(TypeError, match=r"^return_final_state must be a bool, got numpy\.bool_?$"):
        plrnn.linear_recurrence(torch.rand(4, 3), torch.rand(4, 3),
                                return_final_state=numpy.bool_(False))


def test_backend_not_a_string():
    with pytest.raises(TypeError, match=r"^backend must be a string, got NoneType$"):
        call(backend=None)


def test_unknown_backend_lists_valid_names():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "unknown backend 'cuda'; choose one of 'auto', 'reference', 'torch', "
            "'cpu_serial', 'cpu_parallel'"
        ),
    ):
        call(backend="cuda")


@pytest.mark.parametrize("name", ["cpu_serial", "cpu_parallel"])
def test_cpu_kernel_unavailable_on_meta(name):
    meta = torch.empty(6, 3, device="meta")
    with pytest.raises(
        RuntimeError,
        match=re.escape(
            f"backend {name!r} is not available for inputs on meta: "
            "C++ CPU kernel; inputs are on meta"
        ),
    ):
        plrnn.linear_recurrence(meta, meta, backend=name)


def test_unavailable_kernel_names_its_reason(monkeypatch):
    monkeypatch.setattr(cpu, "load", lambda: "pretend the build failed")
    monkeypatch.setattr(cpu, "_shortcuts", {})  # calls of other tests, made while it loaded
    with pytest.raises(
        RuntimeError,
        match=re.escape(
            "backend 'cpu_parallel' is not available for inputs on cpu: pretend the build failed"
        ),
    ):
        call(backend="cpu_parallel")
    statuses = {s.name: s for s in plrnn.backends("cpu")}
    assert statuses["cpu_serial"] == plrnn.BackendStatus(
        "cpu_serial", False, "pretend the build failed", origin="", complex=True
    )


def test_validation_runs_before_backend_resolution():
    # an integer dtype with an unknown backend: the argument error wins
    with pytest.raises(TypeError, match=r"^impulses must be float16"):
        call(impulses=torch.ones(6, 3, dtype=torch.int64), backend="no_such_backend")
    # a shape error with an unavailable backend: the argument error wins
    meta = torch.empty(6, 3, device="meta")
    with pytest.raises(ValueError, match="or broadcast to it"):
        plrnn.linear_recurrence(meta, torch.empty(6, 4, device="meta"), backend="cpu_serial")


def test_validation_runs_before_the_empty_shortcut():
    with pytest.raises(ValueError, match=r"initial_state must have shape \(3,\)"):
        call(decays=torch.rand(0, 3), impulses=torch.rand(0, 3), initial_state=torch.zeros(4))
    with pytest.raises(ValueError, match="unknown backend"):
        call(decays=torch.rand(0, 3), impulses=torch.rand(0, 3), backend="nope")


def test_meta_tensors_run_through_torch_backend():
    """The pure-torch backends run on any device, including shape-only 'meta' tensors."""
    meta = torch.empty(6, 2, 3, device="meta")
    for backend in ("torch", "auto"):
        h = plrnn.linear_recurrence(meta, meta, torch.empty(2, 3, device="meta"), backend=backend)
        assert h.device.type == "meta" and h.shape == (6, 2, 3)
    assert choose_auto(torch.device("meta"), 6, 6) == "torch"


@pytest.mark.parametrize(
    "name, sparse",
    [("decays", torch.Tensor.to_sparse), ("impulses", torch.Tensor.to_sparse_csr),
     ("initial_state", torch.Tensor.to_sparse)],
    ids=["decays-coo", "impulses-csr", "initial_state-coo"],
)
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_inputs_are_refused_by_name(name, sparse):
    args = {"decays": A, "impulses": X, "initial_state": torch.zeros(3)}
    call(**args)  # dense, as a shortcut for the next call's shape and dtype would remember
    args[name] = sparse(args[name])
    with pytest.raises(TypeError, match=rf"^{name} must be a dense \(strided\) tensor"):
        call(**args)


@pytest.mark.parametrize("name", ["decays", "impulses", "initial_state", "out"])
def test_mkldnn_tensors_are_refused_by_name(name):
    args = {"decays": A, "impulses": X, "initial_state": torch.zeros(3)}
    with torch.no_grad():
        call(**args, out=torch.empty(6, 3))  # dense calls, which a shortcut would remember
        call(**args)
        if name == "out":
            args["out"] = torch.empty(6, 3).to_mkldnn()
        else:
            args[name] = args[name].to_mkldnn()
        with pytest.raises(TypeError, match=rf"^{name} must be a dense \(strided\) tensor"):
            call(**args)
