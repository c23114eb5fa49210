"""plrnn.distributed.linear_recurrence on 1-4 gloo ranks against one process on the whole
sequence, in float64: forward, every gradient, uneven and empty shards, reverse, initial and
final states, decays near 0 and 1."""

from __future__ import annotations

import pytest

from . import op_workers
from .launch import run_ranks


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_matches_one_process(world, tmp_path):
    run_ranks(world, op_workers.op_matches_one_process, tmp_path=tmp_path)


@pytest.mark.parametrize("world", [2, 3])
def test_communication_is_two_rows_each_way(world, tmp_path):
    run_ranks(world, op_workers.bytes_are_counted, tmp_path=tmp_path)


def test_restarting_the_state_fails_the_same_comparison(tmp_path):
    run_ranks(3, op_workers.restarting_state_fails, tmp_path=tmp_path)


def test_gradients_asked_by_some_ranks_and_retained_graphs(tmp_path):
    run_ranks(3, op_workers.gradients_asked_by_some_ranks, tmp_path=tmp_path)


@pytest.mark.parametrize("world", [2, 3])
def test_autocast_runs_mixed_dtypes_in_the_widest(world, tmp_path):
    run_ranks(world, op_workers.op_under_autocast, tmp_path=tmp_path)


def test_half_precision_accumulates_in_float32(tmp_path):
    run_ranks(3, op_workers.half_precision_accumulates_in_float32, tmp_path=tmp_path)


@pytest.mark.parametrize("world", [2, 3])
def test_one_dimensional_shards(world, tmp_path):
    run_ranks(world, op_workers.one_dimensional_shards, tmp_path=tmp_path)
