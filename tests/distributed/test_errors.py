"""Bad calls of plrnn.distributed.linear_recurrence raise on every rank, and leave no rank stuck."""

from __future__ import annotations

from . import error_workers
from .launch import run_ranks


def test_every_rank_refuses_a_bad_call(tmp_path):
    run_ranks(2, error_workers.every_rank_refuses, tmp_path=tmp_path)


def test_without_a_process_group():
    import pytest
    import torch

    import plrnn.distributed as pd

    a = torch.rand(3, 2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        pd.linear_recurrence(a, a)


def test_every_rank_refuses_a_bad_layer_call(tmp_path):
    run_ranks(2, error_workers.every_rank_refuses_a_bad_layer_call, tmp_path=tmp_path)


def test_a_transform_on_one_rank_is_refused_on_every_rank(tmp_path):
    run_ranks(2, error_workers.a_transform_on_one_rank_is_refused_on_every_rank,
              tmp_path=tmp_path)


def test_double_backward_is_refused(tmp_path):
    run_ranks(2, error_workers.double_backward_is_refused, tmp_path=tmp_path)
