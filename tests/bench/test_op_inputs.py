"""benchmarks/_op_inputs.py: the cases of the op's newer inputs refuse to time a wrong result.
Each test swaps plrnn.linear_recurrence for one that is wrong in one way and expects the case
builder's check to fail; sizes are shrunk (the builders read the size dicts at call time)."""

from __future__ import annotations

import functools

import pytest

import plrnn

from .support import benchmarks_module

O = benchmarks_module("_op_inputs")  # noqa: E741


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setitem(O.PACKED, "sequences", 6)
    monkeypatch.setitem(O.PACKED, "median_length", 20)
    monkeypatch.setitem(O.PACKED, "max_length", 60)
    monkeypatch.setitem(O.BROADCAST, "seq_len", 64)
    monkeypatch.setitem(O.STORAGE, "seq_len", 256)
    monkeypatch.setitem(O.STORAGE, "channels", 32)


def _swap(monkeypatch, wrong):
    real = plrnn.linear_recurrence

    @functools.wraps(real)  # the cases read its signature for the features it has
    def op(a, x, **kwargs):
        return wrong(real(a, x, **kwargs), a, x)

    monkeypatch.setattr(plrnn, "linear_recurrence", op)


def _off_past_the_first_sequence(h, a, x):
    if h.dim() != 3:
        return h
    h = h.clone()
    h[:, 1:] += 1.0
    return h


@pytest.mark.parametrize(("builder", "args"), [
    ("packed_case", ("padded", "cpu_serial", "forward")),
    ("broadcast_case", ("time_invariant", "cpu_serial", "forward")),
    ("broadcast_case", ("materialized", "cpu_parallel", "forward")),
    ("batch_shared_case", ("batch_shared", "cpu_serial", "forward")),
])
def test_batched_cases_check_every_sequence(small, monkeypatch, builder, args):
    getattr(O, builder)(*args)  # the real op passes
    _swap(monkeypatch, _off_past_the_first_sequence)
    with pytest.raises(AssertionError, match="differs from the float64 loop"):
        getattr(O, builder)(*args)


@pytest.mark.parametrize("dtype", O.STORAGE_DTYPES)
def test_storage_case_refuses_outputs_ten_percent_off(small, monkeypatch, dtype):
    O.storage_case(dtype, "plrnn", "forward")
    _swap(monkeypatch, lambda h, a, x: h * 1.1)
    with pytest.raises(AssertionError, match="differs from the float64 loop"):
        O.storage_case(dtype, "plrnn", "forward")
