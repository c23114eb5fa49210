"""benchmarks/_op_inputs.py: the cases of the op's newer inputs refuse to time a wrong result.
Each test swaps plrnn.linear_recurrence for one that is wrong in one way and expects the case
builder's check to fail; sizes are shrunk (the builders read the size dicts at call time)."""

from __future__ import annotations

import pytest

from .support import (
    benchmarks_module,
    off_in_the_last_channel,
    off_in_the_last_channels_gradient,
    swap_op,
)

O = benchmarks_module("_op_inputs")  # noqa: E741


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setitem(O.PACKED, "sequences", 6)
    monkeypatch.setitem(O.PACKED, "median_length", 20)
    monkeypatch.setitem(O.PACKED, "max_length", 60)
    monkeypatch.setitem(O.BROADCAST, "seq_len", 64)
    monkeypatch.setitem(O.HEADS, "seq_len", 64)
    monkeypatch.setitem(O.STORAGE, "seq_len", 256)
    monkeypatch.setitem(O.STORAGE, "channels", 32)
    monkeypatch.setitem(O.PACKED, "channels", 96)
    monkeypatch.setitem(O.DISTRIBUTION_SHAPES, "300x128", (300, 128))


def _off_past_the_first_sequence(h, a, x):
    if h.dim() < 3:
        return h
    h = h.clone()
    h[:, 1:] += 1.0
    return h


@pytest.mark.parametrize(("builder", "args"), [
    ("packed_case", ("padded", "cpu_serial", "forward")),
    ("broadcast_case", ("time_invariant", "cpu_serial", "forward")),
    ("broadcast_case", ("materialized", "cpu_parallel", "forward")),
    ("batch_shared_case", ("batch_shared", "cpu_serial", "forward")),
    ("head_shared_case", ("head_shared", "cpu_parallel", "forward")),
    ("head_shared_case", ("materialized", "cpu_serial", "forward")),
    ("batch_first_case", ("batch_first", "cpu_serial", "forward")),
    ("batch_first_case", ("time_major", "cpu_parallel", "forward")),
])
def test_batched_cases_check_every_sequence(small, monkeypatch, builder, args):
    getattr(O, builder)(*args)  # the real op passes
    swap_op(monkeypatch, _off_past_the_first_sequence)
    with pytest.raises(AssertionError, match="differs from the float64 loop"):
        getattr(O, builder)(*args)


@pytest.mark.parametrize("dtype", O.STORAGE_DTYPES)
def test_storage_case_refuses_outputs_ten_percent_off(small, monkeypatch, dtype):
    O.storage_case(dtype, "plrnn", "forward")
    swap_op(monkeypatch, lambda h, a, x: h * 1.1)
    with pytest.raises(AssertionError, match="differs from the float64 loop"):
        O.storage_case(dtype, "plrnn", "forward")


def _off_in_the_gradient_of(which):
    def wrong(h, a, x):
        t = a if which == "decays" else x
        # The forward is unchanged; the gradient of `t` is off by a tenth.
        return h + 0.1 * (t - t.detach()) if t.shape == h.shape else h + 0.1 * (t - t.detach()).sum()
    return wrong


@pytest.mark.parametrize("which", ["decays", "impulses"])
@pytest.mark.parametrize(("builder", "args"), [
    ("packed_case", ("packed", "cpu_serial")),
    ("packed_case", ("padded", "cpu_parallel")),
    ("broadcast_case", ("time_invariant", "cpu_serial")),
    ("batch_shared_case", ("batch_shared", "cpu_parallel")),
    ("head_shared_case", ("head_shared", "cpu_serial")),
    ("batch_first_case", ("batch_first", "cpu_parallel")),
    ("storage_case", ("bfloat16", "plrnn")),
])
def test_forward_backward_cases_refuse_a_wrong_gradient(small, monkeypatch, builder, args, which):
    getattr(O, builder)(*args, "forward_backward")  # the real op passes
    swap_op(monkeypatch, _off_in_the_gradient_of(which))
    getattr(O, builder)(*args, "forward")  # the forward alone still passes
    with pytest.raises(AssertionError, match=f"gradient of the {which} differs"):
        getattr(O, builder)(*args, "forward_backward")


def test_complex_case_refuses_a_wrong_gradient(small, monkeypatch):
    monkeypatch.setitem(O.COMPLEX, "seq_len", 64)
    O.complex_case("plrnn", "forward_backward")
    swap_op(monkeypatch, _off_in_the_gradient_of("decays"))
    with pytest.raises(AssertionError, match="gradient of the decays differs"):
        O.complex_case("plrnn", "forward_backward")


def _loop64(a, x, pieces):
    import torch

    out = []
    for lo, hi in pieces:
        h = torch.zeros_like(x[0])
        for t in range(lo, hi):
            h = a[t] * h + x[t]
            out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_gradient_oracle_is_autograd_of_a_plain_loop(dtype):
    # recurrence_grads64 judges every forward+backward case: it must equal torch autograd of a
    # step-by-step loop, with restarts (packed batches) and a decay broadcast over time.
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(3)
    kind = getattr(torch, dtype)
    pieces = [(0, 5), (5, 5), (5, 12), (12, 13)]
    a = torch.rand(3, generator=gen, dtype=torch.float64).to(kind).requires_grad_()
    if kind.is_complex:
        a = (a.detach() * torch.exp(1j * torch.arange(3.0, dtype=torch.float64))).requires_grad_()
    x = torch.randn(13, 3, generator=gen, dtype=kind).requires_grad_()
    g = torch.randn(13, 3, generator=gen, dtype=kind)
    want = torch.autograd.grad(_loop64(a.expand(13, 3), x, pieces), (a, x), g)
    da, dx = O.oracle.recurrence_grads64(a.detach().expand(13, 3).numpy(), x.detach().numpy(),
                                  g.numpy(), pieces)
    np.testing.assert_allclose(O._sum_to(da, (3,)), want[0].numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, want[1].numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("distribution", O.decays.DISTRIBUTIONS)
def test_decay_distribution_case_draws_its_distribution(monkeypatch, distribution):
    monkeypatch.setitem(O.DISTRIBUTION_SHAPES, "262144x4", (300, 4))
    case = O.decay_distribution_case(distribution, "262144x4", "cpu_parallel", "forward")
    a = case.inputs[0]
    assert a.shape == (300, 4) and float(a.min()) >= 0 and float(a.max()) < 1
    if distribution == "U[0.9,1)":
        assert float(a.min()) >= 0.9
    if distribution == "sigmoid(N(5,1))":
        assert float(a.mean()) > 0.95
    swap_op(monkeypatch, lambda h, a, x: h * 1.01)
    with pytest.raises(AssertionError, match="differs from the float64 loop"):
        O.decay_distribution_case(distribution, "262144x4", "cpu_parallel", "forward")


def test_decay_distribution_case_refuses_unknown_names():
    with pytest.raises(ValueError, match="distribution must be one of"):
        O.decay_distribution_case("N(0,1)", "262144x4", "cpu_serial", "forward")


@pytest.mark.parametrize(("builder", "args"), [
    ("packed_case", ("packed", "cpu_serial", "forward")),
    ("packed_case", ("padded", "cpu_parallel", "forward")),
    ("broadcast_case", ("time_invariant", "cpu_serial", "forward")),
    ("batch_shared_case", ("materialized", "cpu_parallel", "forward")),
    ("head_shared_case", ("head_shared", "cpu_serial", "forward")),
    ("batch_first_case", ("batch_first", "cpu_parallel", "forward")),
    ("storage_case", ("float32", "plrnn", "forward")),
    ("decay_distribution_case", ("U[0,1)", "300x128", "cpu_serial", "forward")),
])
def test_checks_refuse_a_result_wrong_only_in_the_last_channel(small, monkeypatch, builder, args):
    getattr(O, builder)(*args)  # the real op passes
    swap_op(monkeypatch, off_in_the_last_channel)
    with pytest.raises(AssertionError, match="differs from the float64"):
        getattr(O, builder)(*args)


@pytest.mark.parametrize(("builder", "args"), [
    ("head_shared_case", ("head_shared", "cpu_parallel", "forward_backward")),
    ("broadcast_case", ("time_invariant", "cpu_serial", "forward_backward")),
])
def test_checks_refuse_a_gradient_wrong_only_in_the_last_channel(small, monkeypatch, builder,
                                                                  args):
    getattr(O, builder)(*args)
    swap_op(monkeypatch, off_in_the_last_channels_gradient)
    with pytest.raises(AssertionError, match="gradient of the impulses differs"):
        getattr(O, builder)(*args)
