"""Sequence-parallel GILR, GILR-LSTM, QRNN and SRU on 2 and 3 gloo ranks against one process, in
float64: outputs, final states, input and initial-state gradients, and every parameter gradient
summed over ranks; shards of one step (QRNN(3) then needs its halo from two ranks back)."""

from __future__ import annotations

import pytest

from . import layer_workers
from .launch import run_ranks


@pytest.mark.parametrize(
    "lengths, with_state",
    [([4, 7], True), ([1, 4, 2], True), ([3, 1, 1], False)],
    ids=["2 ranks", "3 ranks, T_r=1", "3 ranks, no state"],
)
def test_layers_match_one_process(lengths, with_state, tmp_path):
    run_ranks(
        len(lengths), layer_workers.layers_match_one_process, lengths, with_state, tmp_path=tmp_path
    )


@pytest.mark.parametrize("world", [2, 3])
def test_window_gradient_asked_on_rank_0_alone(world, tmp_path):
    run_ranks(world, layer_workers.window_gradient_asked_on_rank_0_alone, tmp_path=tmp_path)


def test_copies_stay_sharded_and_pickles_load_unsharded(tmp_path):
    run_ranks(2, layer_workers.copies_stay_sharded_and_pickles_load_unsharded, tmp_path=tmp_path)


@pytest.mark.parametrize("lengths", [[4, 3], [2, 1, 3]], ids=["2 ranks", "3 ranks, T_r=1"])
def test_layers_under_autocast_with_carried_states(lengths, tmp_path):
    run_ranks(len(lengths), layer_workers.layers_under_autocast, lengths, tmp_path=tmp_path)


def test_compiled_sharded_model(tmp_path):
    run_ranks(2, layer_workers.compiled_sharded_model, tmp_path=tmp_path)


@pytest.mark.parametrize("world", [2, 3])
def test_sync_gradients_of_parameters_some_ranks_reach(world, tmp_path):
    run_ranks(world, layer_workers.gradients_reached_on_some_ranks_only, tmp_path=tmp_path)


def test_sync_gradients_sums_over_the_sharded_group(tmp_path):
    run_ranks(4, layer_workers.sync_over_the_sharded_group, tmp_path=tmp_path)
