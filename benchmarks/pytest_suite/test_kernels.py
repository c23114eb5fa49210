"""linear_recurrence per backend and baseline, and the copy_ probe, on the grid's sizes."""

from __future__ import annotations

import pytest
from benchmarks._support import GRID, copy_case, kernel_case


def _id(seq_len, batch, hidden, backend, pass_):
    return f"T{seq_len}-B{batch}-H{hidden}-{backend}-{pass_}"


@pytest.mark.parametrize(
    ("seq_len", "batch", "hidden", "backend", "pass_"),
    [pytest.param(*case, id=_id(*case)) for case in GRID.kernels.cases()],
)
def test_linear_recurrence(measure, seq_len, batch, hidden, backend, pass_):
    measure(kernel_case, seq_len, batch, hidden, backend, pass_,
            group=f"linear_recurrence {pass_} T={seq_len} B={batch} H={hidden}")


def test_copy(measure):
    measure(copy_case, GRID.copy_numel, group=f"copy_ numel={GRID.copy_numel}")
