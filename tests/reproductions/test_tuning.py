"""plrnn.repro.tuning: the rule that picks each model's setting from a sweep."""

from __future__ import annotations

import pandas as pd

from plrnn.repro.tuning import choose, sweep_table


def _run(model, lr, converged, wall, late=1.0, hidden=64, fb=5.0, seed=0):
    return {"model": model, "hidden": hidden, "lr": lr, "forget_bias": fb, "seed": seed,
            "converged": converged, "wall_time_s": wall, "iterations": int(wall * 10),
            "late_accuracy": late, "stop_reason": "converged" if converged else "max_wall_time"}


def _kept(rows):
    return choose(pd.DataFrame(rows)).set_index("model")


def test_more_converged_runs_beat_a_faster_single_one():
    kept = _kept([_run("A", 1e-3, True, 50, seed=0), _run("A", 1e-3, False, 240, 0.7, seed=1),
                  _run("A", 3e-4, True, 90, seed=0), _run("A", 3e-4, True, 110, seed=1)])
    assert kept.loc["A", "lr"] == 3e-4 and kept.loc["A", "converged runs"] == 2


def test_among_converged_the_faster_median_wins():
    kept = _kept([_run("A", 1e-3, True, 80), _run("A", 3e-3, True, 40),
                  _run("A", 3e-4, False, 240, 0.9)])
    assert kept.loc["A", "lr"] == 3e-3


def test_with_nothing_converged_the_best_late_accuracy_wins():
    kept = _kept([_run("B", 1e-3, False, 240, 0.55), _run("B", 3e-3, False, 240, 0.81),
                  _run("B", 3e-4, False, 240, 0.62)])
    assert kept.loc["B", "lr"] == 3e-3 and kept.loc["B", "converged runs"] == 0


def test_a_tie_goes_to_the_smaller_lr_then_width():
    kept = _kept([_run("C", 1e-3, False, 240, 0.5, hidden=128),
                  _run("C", 1e-3, False, 240, 0.5, hidden=64),
                  _run("C", 3e-3, False, 240, 0.5, hidden=64)])
    assert (kept.loc["C", "lr"], kept.loc["C", "hidden"]) == (1e-3, 64)


def test_each_model_is_chosen_on_its_own_runs():
    kept = _kept([_run("A", 1e-3, True, 30), _run("B", 3e-3, False, 240, 0.6),
                  _run("B", 1e-3, False, 240, 0.5)])
    assert kept.loc["A", "lr"] == 1e-3 and kept.loc["B", "lr"] == 3e-3


def test_the_table_shows_every_configuration_and_marks_the_kept_one():
    rows = [_run("A", lr, lr == 1e-3, 30, fb=fb) for lr in (3e-4, 1e-3) for fb in (1.0, 5.0)]
    table = sweep_table(pd.DataFrame(rows))
    assert list(table.columns) == ["model", "hidden", "forget bias", "lr 0.0003", "lr 0.001"]
    assert len(table) == 2
    cells = table[["lr 0.0003", "lr 0.001"]].to_numpy().ravel().tolist()
    assert sum("**kept**" in c for c in cells) == 1
    assert sum(c.startswith("1/1 in 30 s") for c in cells) == 2
