"""Imports the benchmark package (benchmarks/ at the repository root, not installed)."""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def benchmarks_module(name: str):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"benchmarks.{name}")


def swap_op(monkeypatch, wrong):
    """plrnn.linear_recurrence replaced by wrong(h, a, x) of its own result, for the cases to
    refuse."""
    import plrnn

    real = plrnn.linear_recurrence

    @functools.wraps(real)  # the cases read its signature for the features it has
    def op(a, x, **kwargs):
        return wrong(real(a, x, **kwargs), a, x)

    monkeypatch.setattr(plrnn, "linear_recurrence", op)


def off_in_the_last_channel(h, a, x):
    # The last channel of the flattened row: the last sequence's, the last head's, the share of
    # the last thread; a check of the first channels alone passed it.
    h = h.clone(memory_format=torch.contiguous_format)
    h.reshape(h.shape[0], -1)[:, -1] += 1.0
    return h


def off_in_the_last_channels_gradient(h, a, x):
    last = torch.zeros_like(x).reshape(x.shape[0], -1)
    last[:, -1] = 0.5
    return h + (x - x.detach()) * last.reshape(x.shape)
