"""Forward correctness of every backend against the float64 reference (computed once per case)."""

from __future__ import annotations

import pytest
import torch

from .helpers import (
    DECAY_KINDS,
    check_float64,
    check_low_precision,
    make_inputs,
    ref64,
    seed_for,
    shape_id,
)

T_GRID = [1, 2, 3, 31, 32, 33, 1000, 4097]
# channel counts 1, 3, 33, 128 at ranks 1-3
SHAPES = [(1,), (3,), (33,), (128,), (3, 11), (2, 4, 16), (1, 1, 3)]

pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.py

reverse_param = pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
h0_param = pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])


@reverse_param
@h0_param
@pytest.mark.parametrize("decay_kind", list(DECAY_KINDS))
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("T", T_GRID, ids=lambda T: f"T={T}")
def test_matches_reference_float64_and_float32(T, shape, decay_kind, with_h0, reverse):
    seed = seed_for("forward", T, shape, decay_kind, with_h0, reverse)
    # Inputs representable in float32, so one float64 truth serves both precisions.
    a32, x32, h32 = make_inputs(T, shape, decay_kind, with_h0, seed, dtype=torch.float32)
    a64, x64, h64 = (None if t is None else t.double() for t in (a32, x32, h32))
    truth = ref64(a64, x64, h64, reverse)

    failures = check_float64(a64, x64, h64, reverse, truth)
    failures += check_low_precision(a32, x32, h32, reverse, truth)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@reverse_param
@h0_param
@pytest.mark.parametrize("decay_kind", ["uniform", "near_one"])
@pytest.mark.parametrize("shape", [(3,), (33,), (2, 4, 16)], ids=shape_id)
@pytest.mark.parametrize("T", [1, 33, 1000], ids=lambda T: f"T={T}")
def test_matches_reference_half_precision(T, shape, decay_kind, with_h0, reverse, dtype):
    seed = seed_for("half", T, shape, decay_kind, with_h0, reverse, str(dtype))
    a, x, h0 = make_inputs(T, shape, decay_kind, with_h0, seed, dtype=dtype)
    truth = ref64(a, x, h0, reverse)  # the same (rounded) inputs, upcast exactly

    failures = check_low_precision(a, x, h0, reverse, truth)
    assert not failures, "\n".join(failures)
