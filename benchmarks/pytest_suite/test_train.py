"""One optimiser step of the synthetic task for the GILR-LSTM and torch.nn.LSTM."""

from __future__ import annotations

import pytest
from benchmarks._support import GRID, train_case


@pytest.mark.parametrize(
    ("model", "seq_len", "batch"),
    [pytest.param(*case, id="-".join(map(str, case))) for case in GRID.train.cases()],
)
def test_train_step(measure, model, seq_len, batch):
    measure(train_case, model, seq_len, batch, group=f"train_step T={seq_len} B={batch}")
