"""ConvergenceMonitor on synthetic accuracy streams, against hand-worked cases and a brute-force
oracle that re-reads the whole history at every check."""

from __future__ import annotations

import random

import pytest

from plrnn.tasks import ConvergenceMonitor


def first_convergence(stream, window, every, threshold=1.0):
    """Step at which `window` consecutive checks (steps every, 2*every, ...) reach threshold."""
    checks = [(step, acc) for step, acc in stream if step % every == 0]
    for i in range(window - 1, len(checks)):
        run = checks[i - window + 1 : i + 1]
        spaced = all(b[0] - a[0] == every for a, b in zip(run, run[1:]))
        if spaced and all(acc >= threshold for _, acc in run):
            return checks[i][0]
    return None


def feed(monitor, stream):
    for step, acc in stream:
        if monitor.update(step, acc):
            return step
    return None


def test_window_completes_exactly_at_the_last_perfect_check():
    m = ConvergenceMonitor(window=3)
    assert [m.update(s, 1.0) for s in (1, 2, 3)] == [False, False, True]
    assert m.converged_at == 3 and m.converged


def test_one_short_of_the_window_is_not_converged():
    m = ConvergenceMonitor(window=5)
    assert feed(m, [(s, 1.0) for s in range(1, 5)]) is None
    assert m.streak == 4 and not m.converged


def test_a_miss_resets_the_streak():
    m = ConvergenceMonitor(window=3)
    stream = list(enumerate([1, 1, 0.875, 1, 1, 0.5, 1, 1, 1], start=1))
    assert feed(m, stream) == 9


def test_almost_perfect_is_a_miss():
    m = ConvergenceMonitor(window=2)
    assert feed(m, [(1, 1.0), (2, 0.9999999), (3, 1.0)]) is None
    assert m.streak == 1


def test_only_every_kth_step_is_a_check():
    m = ConvergenceMonitor(window=3, check_every=10)
    # Perfect only on multiples of 10, misses in between: the misses are not checks.
    stream = [(s, 1.0 if s % 10 == 0 else 0.0) for s in range(1, 100)]
    assert feed(m, stream) == 30
    assert not ConvergenceMonitor(3, 10).is_check(15) and ConvergenceMonitor(3, 10).is_check(20)


def test_a_miss_on_a_check_step_resets_with_spacing():
    m = ConvergenceMonitor(window=3, check_every=10)
    stream = [(s, 0.5 if s == 20 else 1.0) for s in range(1, 100)]
    assert feed(m, stream) == 50  # checks 30, 40, 50


def test_a_gap_between_checks_restarts_the_streak():
    m = ConvergenceMonitor(window=3, check_every=10)
    assert feed(m, [(10, 1.0), (20, 1.0), (40, 1.0), (50, 1.0)]) is None
    assert m.streak == 2
    assert m.update(60, 1.0)


def test_convergence_is_final():
    m = ConvergenceMonitor(window=1)
    assert m.update(1, 1.0)
    assert m.update(2, 0.0) and m.converged_at == 1


def test_steps_must_increase():
    m = ConvergenceMonitor(window=3)
    m.update(5, 1.0)
    with pytest.raises(ValueError, match="step"):
        m.update(5, 1.0)


def test_reset_forgets_everything():
    m = ConvergenceMonitor(window=1)
    m.update(1, 1.0)
    m.reset()
    assert not m.converged and m.streak == 0 and m.last_check is None


@pytest.mark.parametrize(("window", "every"), [(1, 1), (5, 1), (3, 10), (20, 10), (4, 3)])
def test_agrees_with_the_brute_force_oracle(window, every):
    rng = random.Random(window * 100 + every)
    for trial in range(200):
        p = rng.choice([0.5, 0.8, 0.95])
        stream = [(s, 1.0 if rng.random() < p else rng.choice([0.0, 0.5, 0.875]))
                  for s in range(1, 400)]
        if trial % 4 == 0:  # occasionally drop steps, as a caller that skips checks would
            stream = [(s, a) for s, a in stream if rng.random() > 0.05]
        assert feed(ConvergenceMonitor(window, every), stream) == first_convergence(
            stream, window, every
        ), (trial, p)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"window": 0}, "window"), ({"window": 2.0}, "window"), ({"check_every": 0}, "check_every"),
     ({"threshold": 0.0}, "threshold"), ({"threshold": 1.5}, "threshold")],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ConvergenceMonitor(**{"window": 5, **kwargs})
