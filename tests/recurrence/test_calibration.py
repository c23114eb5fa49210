"""`auto`'s per-CPU calibration (calibration.py): the choice from measured ratios, the on-disk
cache, and that auto follows it. No assertion here depends on which kernel is faster."""

from __future__ import annotations

import json
import math

import pytest
import torch

from plrnn.recurrence import calibration, registry


@pytest.fixture
def calibrating(monkeypatch, tmp_path):
    monkeypatch.setenv("PLRNN_AUTO_CALIBRATION", "1")
    monkeypatch.setenv("PLRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibration, "_cache", {})
    return tmp_path


def test_channels_from_ratios():
    assert calibration.channels_from({2: 1.0, 4: 1.0, 8: 1.0, 16: 1.2, 32: 0.9}) == tuple(range(9, 17))
    assert calibration.channels_from({2: 1.06, 32: 1.5}) == (1, 2, *range(17, 33))
    assert calibration.channels_from({c: 1.04 for c in calibration.MEASURED_CHANNELS}) == ()


def test_measured_once_then_read_from_disk(calibrating, monkeypatch):
    calls = []

    def fake_measure():
        calls.append(1)
        return {2: 0.9, 4: 0.9, 8: 1.1, 16: 1.2, 32: 0.8}

    monkeypatch.setattr(calibration, "measure", fake_measure)
    assert calibration.parallel_channels(2) == tuple(range(5, 17))
    path = calibration.cache_file(2)
    record = json.loads(path.read_text())
    assert record["parallel_channels"] == list(range(5, 17)) and record["threads"] == 2
    assert record["serial_over_parallel"]["16"] == 1.2

    # Another process (an empty in-memory cache) reads the file and measures nothing.
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(calibration, "measure", lambda: pytest.fail("measured again"))
    assert calibration.parallel_channels(2) == tuple(range(5, 17))
    assert len(calls) == 1

    # A damaged file is measured anew, not trusted.
    path.write_text("{not json")
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(calibration, "measure", fake_measure)
    assert calibration.parallel_channels(2) == tuple(range(5, 17)) and len(calls) == 2


def test_one_thread_and_disabled_measure_nothing(monkeypatch, calibrating):
    monkeypatch.setattr(calibration, "measure", lambda: pytest.fail("measured"))
    assert calibration.parallel_channels(1) == ()
    monkeypatch.setenv("PLRNN_AUTO_CALIBRATION", "0")
    assert calibration.parallel_channels(2) == calibration.FIXED_RULE
    assert not list(calibrating.iterdir())


def test_auto_follows_the_calibration(calibrating, monkeypatch, num_threads):
    monkeypatch.setattr(calibration, "measure", lambda: {2: 1.3, 4: 0.9, 8: 0.9, 16: 0.9, 32: 0.9})
    num_threads(2)
    cpu = torch.device("cpu")
    long = calibration.MIN_STEPS
    assert registry.choose_auto(cpu, long, 2) == "cpu_parallel"
    assert registry.choose_auto(cpu, long, 3) == "cpu_serial"
    assert registry.choose_auto(cpu, long, 24) == "cpu_serial"  # the fixed rule would say parallel
    assert registry.choose_auto(cpu, long - 1, 2) == "cpu_serial"
    num_threads(1)
    assert registry.choose_auto(cpu, long, 2) == "cpu_serial"


def test_the_real_measurement_runs(num_threads):
    num_threads(2)
    ratios = calibration.measure()
    assert sorted(ratios) == list(calibration.MEASURED_CHANNELS)
    assert all(math.isfinite(r) and r > 0 for r in ratios.values())
