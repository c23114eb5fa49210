"""The op's newer inputs (benchmarks/_op_inputs.py) beside the alternatives, as in op_inputs.py,
each recorded with the report's columns of its asv twin (class and parameter names)."""

from __future__ import annotations

import itertools

import pytest
from benchmarks import op_inputs as asv
from benchmarks._op_inputs import (
    COMPLEX_METHODS,
    DECAY_LAYOUTS,
    DISTRIBUTION_SHAPES,
    HEAD_LAYOUTS,
    PACKED_LAYOUTS,
    PASSES,
    SEQUENCE_LAYOUTS,
    SHARED_LAYOUTS,
    STORAGE_DTYPES,
    STORAGE_METHODS,
    batch_first_case,
    batch_shared_case,
    broadcast_case,
    complex_case,
    decay_distribution_case,
    decays,
    head_shared_case,
    packed_case,
    storage_case,
)

from plrnn.bench.report_sources import op_inputs_columns

BACKENDS = ("cpu_serial", "cpu_parallel")


def _as(asv_class, *values) -> dict:
    return op_inputs_columns(asv_class.__name__, dict(zip(asv_class.param_names, values)))


@pytest.mark.parametrize(("layout", "backend", "pass_"), [
    c for c in itertools.product(PACKED_LAYOUTS, BACKENDS, PASSES)
    if c[0] != "padded_associative_scan" or c[1] == BACKENDS[0]])
def test_packed_batch(measure, layout, backend, pass_):
    measure(packed_case, layout, backend, pass_, group=f"packed batch {pass_}",
            columns=_as(asv.PackedBatch, layout, backend, pass_))


@pytest.mark.parametrize(("decays", "backend", "pass_"),
                         list(itertools.product(DECAY_LAYOUTS, BACKENDS, PASSES)))
def test_time_invariant_decays(measure, decays, backend, pass_):
    measure(broadcast_case, decays, backend, pass_, group=f"time-invariant decays {pass_}",
            columns=_as(asv.TimeInvariantDecays, decays, backend, pass_))


@pytest.mark.parametrize(("decays", "backend", "pass_"),
                         list(itertools.product(SHARED_LAYOUTS, BACKENDS, PASSES)))
def test_batch_shared_decays(measure, decays, backend, pass_):
    measure(batch_shared_case, decays, backend, pass_, group=f"batch-shared decays {pass_}",
            columns=_as(asv.BatchSharedDecays, decays, backend, pass_))


@pytest.mark.parametrize(("decays", "backend", "pass_"),
                         list(itertools.product(HEAD_LAYOUTS, BACKENDS, PASSES)))
def test_head_shared_decays(measure, decays, backend, pass_):
    measure(head_shared_case, decays, backend, pass_, group=f"head-shared decays {pass_}",
            columns=_as(asv.HeadSharedDecays, decays, backend, pass_))


@pytest.mark.parametrize(("layout", "backend", "pass_"),
                         list(itertools.product(SEQUENCE_LAYOUTS, BACKENDS, PASSES)))
def test_batch_first_sequences(measure, layout, backend, pass_):
    measure(batch_first_case, layout, backend, pass_, group=f"batch-first sequences {pass_}",
            columns=_as(asv.BatchFirstSequences, layout, backend, pass_))


@pytest.mark.parametrize(("method", "pass_"), list(itertools.product(COMPLEX_METHODS, PASSES)))
def test_complex_recurrence(measure, method, pass_):
    measure(complex_case, method, pass_, group=f"complex recurrence {pass_}",
            columns=_as(asv.ComplexRecurrence, method, pass_))


@pytest.mark.parametrize(("dtype", "method", "pass_"),
                         list(itertools.product(STORAGE_DTYPES, STORAGE_METHODS, PASSES)))
def test_storage_dtype(measure, dtype, method, pass_):
    measure(storage_case, dtype, method, pass_, group=f"{dtype} storage {pass_}",
            columns=_as(asv.StorageDtype, dtype, method, pass_))


@pytest.mark.parametrize(("distribution", "shape", "backend"),
                         list(itertools.product(decays.DISTRIBUTIONS, DISTRIBUTION_SHAPES, BACKENDS)))
def test_decay_distribution(measure, distribution, shape, backend):
    measure(decay_distribution_case, distribution, shape, backend, "forward",
            group=f"decay distributions {shape}",
            columns=_as(asv.DecayDistribution, distribution, shape, backend, "forward"))
