"""The paper's layers with serial and parallel recurrence, and torch.nn.LSTM, on the grid."""

from __future__ import annotations

import pytest
from benchmarks._support import GRID, layer_case, lstm_case


def _group(pass_, seq_len, batch):
    return f"layers {pass_} T={seq_len} B={batch}"


@pytest.mark.parametrize(
    ("layer", "recurrence", "seq_len", "batch", "pass_"),
    [pytest.param(*case, id="-".join(map(str, case))) for case in GRID.layers.cases()],
)
def test_layer(measure, layer, recurrence, seq_len, batch, pass_):
    measure(layer_case, layer, recurrence, seq_len, batch, pass_,
            group=_group(pass_, seq_len, batch))


@pytest.mark.parametrize(
    ("seq_len", "batch", "pass_"),
    [pytest.param(*case, id="-".join(map(str, case))) for case in GRID.layers.lstm_cases()],
)
def test_lstm(measure, seq_len, batch, pass_):
    measure(lstm_case, seq_len, batch, pass_, group=_group(pass_, seq_len, batch))
