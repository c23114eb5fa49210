"""`auto`'s per-CPU calibration (calibration.py): the choice from measured ratios, the on-disk
cache, and that auto follows it. No assertion here depends on which kernel is faster."""

from __future__ import annotations

import itertools
import json
import math
import os
import time

import pytest
import torch

from plrnn.recurrence import calibration, calibration_store, registry


def fake_times(ratios, plain_over_chunked=0.8):
    """measure()'s result where cpu_serial / the faster cpu_parallel = ratios[c], and the plain
    loop takes plain_over_chunked of the in-thread chunks' time."""
    return {c: {"serial": r * min(1.0, plain_over_chunked), "ilp": 1.0, "plain": plain_over_chunked}
            for c, r in ratios.items()}


@pytest.fixture
def calibrating(monkeypatch, tmp_path):
    monkeypatch.setenv("PLRNN_AUTO_CALIBRATION", "1")
    monkeypatch.setenv("PLRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(calibration, "_cache", {})
    # Known, so that no test measures the layout of wide rows by accident; those that test it
    # reset it to None.
    monkeypatch.setattr(calibration, "_layout", "sequential")
    monkeypatch.setattr(calibration, "measure_streaming", fake_streaming(1.0))
    monkeypatch.setattr(calibration, "measure_streamed_beyond", fake_beyond(1.0))
    monkeypatch.setattr(calibration, "measure_longest",
                        fake_short({c: 1.0 for c in calibration.MEASURED_CHANNELS}))
    # Nothing else runs, whatever the machine running the tests does meanwhile.
    monkeypatch.setattr(calibration, "Others", lambda: FakeOthers(0.0))
    monkeypatch.setattr(calibration, "others_now", lambda: 0.0)
    # The probe of where the host put the threads (test_threads.py tests it) gives up after a
    # second when the machine is busy.
    from plrnn.recurrence import cpu

    monkeypatch.setattr(cpu, "thread_round_trip_ns", lambda: 100.0)
    # Each test's folder warns afresh.
    monkeypatch.setattr(calibration, "_said_uncached", False)
    monkeypatch.setattr(calibration_store, "_said_unwritable", set())
    return tmp_path


class FakeOthers:
    """contention.Others that reads `cores`."""

    def __init__(self, cores: float):
        self.cores = cores

    def __enter__(self) -> FakeOthers:
        return self

    def __exit__(self, *exc) -> None:
        pass


@pytest.fixture
def fresh_parallel_tuning(monkeypatch):
    """cpu_parallel's settings applied anew at the next call, and its in-thread chunk limit (a
    process-wide kernel setting) restored afterwards."""
    from plrnn.recurrence import cpu

    monkeypatch.setattr(cpu, "_tuned_threads", 0)
    before = torch.ops.plrnn.cpu_ilp_channels(-1)
    yield
    torch.ops.plrnn.cpu_ilp_channels(before)


def fake_streaming(pipelined_over_time_split):
    """measure_streaming()'s result where the pipelined schedule takes this much the time split's
    time."""
    return lambda: {shape: {"pipelined": pipelined_over_time_split, "time_split": 1.0}
                    for shape in calibration.STREAM_SHAPES}


def fake_beyond(last_level_over_private, shapes=((16384, 128),)):
    """measure_streamed_beyond()'s result where streaming beyond the last-level cache only takes
    this much the time of streaming beyond one core's own cache."""
    return lambda schedule: {shape: {"last_level": last_level_over_private, "private": 1.0}
                             for shape in shapes}


def test_channels_from_ratios():
    ratios = {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0, 16: 1.2, 32: 0.9}
    assert calibration.channels_from(ratios) == set(range(9, 17))
    assert calibration.channels_from({1: 1.06, 2: 1.06, 32: 1.5}) == {1, 2, *range(17, 33)}
    assert calibration.channels_from({1: 0.9, 2: 1.06}) == {2}  # one channel decides alone
    assert calibration.channels_from({c: 1.04 for c in calibration.MEASURED_CHANNELS}) == set()


def fake_short(ratios):
    """measure_short()'s result where cpu_serial / cpu_parallel = ratios[c]."""
    return lambda ilp: {c: {"serial": r, "parallel": 1.0} for c, r in ratios.items()}


def test_measured_once_then_read_from_disk(calibrating, monkeypatch, caplog):
    from plrnn.recurrence import cpu

    calls = []
    long, short = calibration.MIN_STEPS, calibration.SHORT_MIN_STEPS
    # The probe (faked: on a busy machine it gives up after a second and says nan)
    probes = itertools.cycle([70.4, math.nan, 81.6])
    monkeypatch.setattr(cpu, "thread_round_trip_ns", lambda: next(probes))

    def fake_measure():
        calls.append(1)
        return fake_times({1: 0.9, 2: 0.9, 4: 0.9, 8: 1.1, 16: 1.2, 32: 0.8})

    monkeypatch.setattr(calibration, "measure", fake_measure)
    monkeypatch.setattr(calibration, "measure_short",
                        fake_short({4: 0.9, 16: 0.9, 32: 1.2, 64: 1.3, 128: 0.9, 256: 0.8}))
    monkeypatch.setattr(calibration, "measure_longest",
                        fake_short({1: 1.1, 2: 1.1, 4: 1.5, 8: 1.0, 16: 1.3, 32: 0.9}))
    longest = calibration.LONGEST_MIN_STEPS
    assert calibration.parallel_channels(2, long) == set(range(5, 17))
    assert calibration.parallel_channels(2, longest - 1) == set(range(5, 17))
    assert calibration.parallel_channels(2, longest) == {1, 2, 3, 4, *range(9, 17)}
    assert calibration.parallel_channels(2, short) == set(range(17, 65))
    path = calibration.cache_file(2)
    record = json.loads(path.read_text())
    assert record["parallel_channels"] == list(range(5, 17)) and record["threads"] == 2
    assert record["longest_parallel_channels"] == [1, 2, 3, 4, *range(9, 17)]
    assert record["longest_serial_over_parallel"]["4"] == 1.5
    assert record["short_parallel_channels"] == list(range(17, 65))
    assert record["serial_over_parallel"]["16"] == 1.2
    assert record["short_serial_over_parallel"]["64"] == 1.3
    assert record["ilp_channels"] == 0 and record["plain_over_chunked"]["2"] == 0.8
    # where the host had the threads: before the measurements, after the three regimes' and
    # after the streaming schedules' (None: not measured)
    assert record["thread_round_trip_ns"] == [70, None, 82]
    assert calibration.ilp_channels(2) == 0
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "with 2 thread(s) on this CPU, once" in said[0]
    assert str(calibrating) in said[0] and "PLRNN_AUTO_CALIBRATION=0" in said[0]

    # Another process (an empty in-memory cache) reads the file and measures nothing.
    caplog.clear()
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(calibration, "measure", lambda: pytest.fail("measured again"))
    assert calibration.parallel_channels(2, long) == set(range(5, 17))
    assert calibration.parallel_channels(2, longest) == {1, 2, 3, 4, *range(9, 17)}
    assert calibration.parallel_channels(2, short) == set(range(17, 65))
    assert len(calls) == 2 and not caplog.records  # two measurements that agree
    # auto asks `channels in` these on every call: a set answers without scanning them.
    assert isinstance(calibration.parallel_channels(2, short), frozenset)

    # A damaged file, or one from before the short or the longest regime was measured or from
    # before the streaming schedules or the kernels were timed as now, is measured anew.
    assert record["streaming_measurements"] == calibration.STREAM_TRIES  # fake_streaming(1.0)
    assert record["streaming_measured_by"] == calibration.STREAM_MEASURE
    assert record["channels_measured_by"] == calibration.CHANNELS_MEASURE
    for text in ("{not json",
                 json.dumps({k: v for k, v in record.items() if not k.startswith("short")}),
                 json.dumps({k: v for k, v in record.items() if not k.startswith("longest")}),
                 json.dumps({k: v for k, v in record.items() if k != "streaming_measured_by"}),
                 json.dumps({k: v for k, v in record.items() if k != "channels_measured_by"})):
        path.write_text(text)
        monkeypatch.setattr(calibration, "_cache", {})
        monkeypatch.setattr(calibration, "measure", fake_measure)
        assert calibration.parallel_channels(2, long) == set(range(5, 17))
    assert len(calls) == 12


def test_a_disturbed_measurement_is_used_then_measured_again_once_the_cpus_are_quiet(
        calibrating, monkeypatch, caplog):
    calls = []

    def measure_giving(ratios):
        def fake_measure():
            calls.append(1)
            return fake_times(ratios)
        return fake_measure

    long = calibration.MIN_STEPS
    busy = float(os.cpu_count())  # more than any measurement on 2 threads leaves free
    monkeypatch.setattr(calibration, "measure_short", fake_short({4: 0.9}))
    monkeypatch.setattr(calibration, "measure", measure_giving({c: 0.9 for c in (1, 2, 4, 8, 16)}
                                                               | {32: 1.2}))
    monkeypatch.setattr(calibration, "Others", lambda: FakeOthers(busy))
    assert calibration.parallel_channels(2, long) == set(range(17, 33))  # used
    record = json.loads(calibration.cache_file(2).read_text())
    assert record["others_cores"] == busy
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 2 and f"kept {busy:.2f} CPUs busy" in said[1]

    # Read by a process that finds the CPUs still busy: kept.
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(calibration, "others_now", lambda: busy)
    monkeypatch.setattr(calibration, "measure", lambda: pytest.fail("measured again"))
    assert calibration.parallel_channels(2, long) == set(range(17, 33))

    # Read by a process that finds them quiet: measured again, and that record is kept.
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(calibration, "others_now", lambda: 0.0)
    monkeypatch.setattr(calibration, "Others", lambda: FakeOthers(0.0))
    monkeypatch.setattr(calibration, "measure", measure_giving({c: 1.2 for c in (1, 2, 4, 8, 16)}
                                                               | {32: 0.9}))
    assert calibration.parallel_channels(2, long) == set(range(1, 17))
    assert json.loads(calibration.cache_file(2).read_text())["others_cores"] == 0.0
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(calibration, "others_now", lambda: busy)
    monkeypatch.setattr(calibration, "measure", lambda: pytest.fail("measured again"))
    assert calibration.parallel_channels(2, long) == set(range(1, 17))
    assert len(calls) == 4  # two measurements that agree, twice


def test_one_thread_short_sequences_and_disabled_measure_nothing(monkeypatch, calibrating):
    monkeypatch.setattr(calibration, "measure", lambda: pytest.fail("measured"))
    assert calibration.parallel_channels(1, calibration.MIN_STEPS) == set()
    assert calibration.parallel_channels(2, calibration.SHORT_MIN_STEPS - 1) == set()
    monkeypatch.setenv("PLRNN_AUTO_CALIBRATION", "0")
    assert calibration.parallel_channels(2, calibration.MIN_STEPS) == calibration.FIXED_RULE
    assert calibration.parallel_channels(2, calibration.SHORT_MIN_STEPS) == set()
    assert not list(calibrating.iterdir())


def test_auto_follows_the_calibration(calibrating, monkeypatch, num_threads):
    monkeypatch.setattr(calibration, "measure",
                        lambda: fake_times({1: 1.3, 2: 1.3, 4: 0.9, 8: 0.9, 16: 0.9, 32: 0.9}))
    monkeypatch.setattr(calibration, "measure_short",
                        fake_short({4: 0.9, 16: 0.9, 32: 0.9, 64: 1.2, 128: 0.9, 256: 0.9}))
    monkeypatch.setattr(calibration, "measure_longest",
                        fake_short({1: 0.9, 2: 0.9, 4: 1.5, 8: 0.9, 16: 0.9, 32: 0.9}))
    num_threads(2)
    cpu = torch.device("cpu")
    long, short = calibration.MIN_STEPS, calibration.SHORT_MIN_STEPS
    longest = calibration.LONGEST_MIN_STEPS
    assert registry.choose_auto(cpu, long, 2) == "cpu_parallel"
    assert registry.choose_auto(cpu, long, 3) == "cpu_serial"
    assert registry.choose_auto(cpu, longest - 1, 4) == "cpu_serial"
    assert registry.choose_auto(cpu, longest, 4) == "cpu_parallel"
    assert registry.choose_auto(cpu, longest, 2) == "cpu_serial"
    assert registry.choose_auto(cpu, long, 24) == "cpu_serial"  # the fixed rule would say parallel
    # wider rows than the long regime measures: the short (in-cache) answer while they fit
    assert registry.choose_auto(cpu, long, 64) == "cpu_parallel"
    assert registry.choose_auto(cpu, long, 128) == "cpu_serial"
    assert registry.choose_auto(cpu, 1 << 22, 64) == "cpu_serial"  # 3 GB: streamed
    assert registry.choose_auto(cpu, long - 1, 2) == "cpu_serial"
    assert registry.choose_auto(cpu, long - 1, 64) == "cpu_parallel"
    assert registry.choose_auto(cpu, short, 64) == "cpu_parallel"
    assert registry.choose_auto(cpu, short, 65) == "cpu_serial"
    assert registry.choose_auto(cpu, short - 1, 64) == "cpu_serial"
    # cpu_parallel runs on one thread below T * channels = MIN_WORK
    assert short * 33 < calibration.MIN_WORK <= 2 * short * 33
    assert registry.choose_auto(cpu, short, 33) == "cpu_serial"
    assert registry.choose_auto(cpu, 2 * short, 33) == "cpu_parallel"
    num_threads(1)
    assert registry.choose_auto(cpu, long, 2) == "cpu_serial"
    assert registry.choose_auto(cpu, short, 64) == "cpu_serial"


def test_the_real_measurement_runs(num_threads):
    num_threads(2)
    before = torch.ops.plrnn.cpu_ilp_channels(-1)
    times = calibration.measure()
    assert sorted(times) == list(calibration.MEASURED_CHANNELS)
    assert all(sorted(t) == ["ilp", "plain", "serial"] for t in times.values())
    short = calibration.measure_short(0)
    assert sorted(short) == list(calibration.SHORT_MEASURED_CHANNELS)
    longest = calibration.measure_longest(0)
    assert sorted(longest) == list(calibration.MEASURED_CHANNELS)
    assert all(sorted(t) == ["parallel", "serial"] for ts in (short, longest) for t in ts.values())
    assert all(math.isfinite(s) and s > 0
               for ts in (times, short, longest) for t in ts.values() for s in t.values())
    num_threads(1)
    chunks = calibration.measure_in_thread_chunks()
    assert sorted(chunks) == list(calibration.MEASURED_CHANNELS)
    assert all(sorted(t) == ["ilp", "plain"] and all(math.isfinite(s) and s > 0 for s in t.values())
               for t in chunks.values())
    assert torch.ops.plrnn.cpu_ilp_channels(-1) == before  # measuring leaves the setting alone


def test_in_thread_chunks_kept_up_to_the_widest_width_where_they_paid():
    def times(plain_over_chunked):
        return {c: {"serial": 1.0, "ilp": 1.0, "plain": q}
                for c, q in zip(calibration.MEASURED_CHANNELS, plain_over_chunked)}

    assert calibration.ilp_from(times([1.3, 1.3, 1.2, 1.1, 1.06, 1.05])) == 32
    # 8 lost: wider ones too
    assert calibration.ilp_from(times([1.3, 1.3, 1.2, 1.0, 1.3, 1.3])) == 4
    # ties at the narrowest widths (one float a row runs the same loop both ways) say nothing
    assert calibration.ilp_from(times([1.04, 1.3, 1.3, 1.3, 1.3, 1.3])) == 32
    assert calibration.ilp_from(times([1.0, 1.0, 1.2, 1.0, 1.3, 1.3])) == 4
    # a loss at any width before they paid, or ties everywhere: never
    assert calibration.ilp_from(times([0.9, 1.3, 1.3, 1.3, 1.3, 1.3])) == 0
    assert calibration.ilp_from(times([1.0, 0.9, 1.3, 1.3, 1.3, 1.3])) == 0
    assert calibration.ilp_from(times([1.0] * 6)) == 0


@pytest.mark.parametrize("measured_ilp", [0, 8])
def test_the_first_parallel_call_applies_the_calibration(calibrating, monkeypatch, num_threads,
                                                         fresh_parallel_tuning, measured_ilp):
    from plrnn.recurrence import cpu

    faster = {c: 1.2 if c <= measured_ilp else 0.8 for c in calibration.MEASURED_CHANNELS}
    monkeypatch.setattr(calibration, "measure", lambda: {
        c: {"serial": 1.0, "ilp": 1.0, "plain": q} for c, q in faster.items()})
    monkeypatch.setattr(calibration, "measure_short", fake_short({4: 1.0}))
    num_threads(2)
    torch.ops.plrnn.cpu_ilp_channels(32)
    a, x = torch.rand(40, 3), torch.randn(40, 3)
    cpu.serial(a, x, None, False)
    assert torch.ops.plrnn.cpu_ilp_channels(-1) == 32  # cpu_serial applies nothing
    cpu.parallel(a, x, None, False)
    assert torch.ops.plrnn.cpu_ilp_channels(-1) == measured_ilp


def test_one_thread_measures_only_the_in_thread_chunks_once(calibrating, monkeypatch,
                                                             num_threads, fresh_parallel_tuning,
                                                             caplog):
    from plrnn.recurrence import cpu

    calls = []

    def fake_chunks():
        calls.append(1)
        return {c: {"ilp": 1.0, "plain": 1.2 if c <= 4 else 0.7}
                for c in calibration.MEASURED_CHANNELS}

    for other in ("measure", "measure_short", "measure_longest", "measure_streaming",
                  "measure_streamed_beyond"):
        monkeypatch.setattr(calibration, other, lambda *_: pytest.fail("measured more"))
    monkeypatch.setattr(calibration, "measure_in_thread_chunks", fake_chunks)
    num_threads(1)
    torch.ops.plrnn.cpu_ilp_channels(32)
    a, x = torch.rand(40, 3), torch.randn(40, 3)
    cpu.serial(a, x, None, False)
    assert not calls  # only cpu_parallel asks
    torch.testing.assert_close(cpu.parallel(a, x, None, False), cpu.serial(a, x, None, False))
    assert torch.ops.plrnn.cpu_ilp_channels(-1) == 4
    assert len(calls) == 2  # two measurements that agree
    record = json.loads(calibration.cache_file(1).read_text())
    assert record["threads"] == 1 and record["ilp_channels"] == 4
    assert record["plain_over_chunked"] == {"1": 1.2, "2": 1.2, "4": 1.2, "8": 0.7, "16": 0.7,
                                            "32": 0.7}
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and "in-thread chunks on one thread" in said[0]
    # nothing else about one thread is measured: auto still takes cpu_serial there
    assert calibration.parallel_channels(1, calibration.LONGEST_MIN_STEPS) == set()

    # another process reads the record
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(cpu, "_tuned_threads", 0)
    monkeypatch.setattr(calibration, "measure_in_thread_chunks",
                        lambda: pytest.fail("measured again"))
    torch.ops.plrnn.cpu_ilp_channels(32)
    cpu.parallel(a, x, None, False)
    assert torch.ops.plrnn.cpu_ilp_channels(-1) == 4
    # a record timed another way is measured anew
    calibration.cache_file(1).write_text(json.dumps({**record, "channels_measured_by": "?"}))
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(calibration, "measure_in_thread_chunks", fake_chunks)
    assert calibration.ilp_channels(1) == 4 and len(calls) == 4


def test_one_thread_without_calibration_keeps_the_fixed_chunks(monkeypatch):
    monkeypatch.setenv("PLRNN_AUTO_CALIBRATION", "0")
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(calibration, "measure_in_thread_chunks", lambda: pytest.fail("measured"))
    assert calibration.ilp_channels(1) == calibration.FIXED_ILP


def test_layout_from_ratios():
    assert calibration.layout_from({(65536, 128): 1.2, (8192, 1024): 1.0}) == "strips"
    assert calibration.layout_from({(65536, 128): 1.04, (8192, 1024): 1.04}) == "sequential"
    assert calibration.layout_from({(65536, 128): 0.6, (8192, 1024): 1.3}) == "sequential"


@pytest.mark.parametrize("faster", ["sequential", "strips"])
def test_the_first_call_of_any_cpu_kernel_applies_the_measured_layout(calibrating, monkeypatch,
                                                                      num_threads, faster):
    from plrnn.recurrence import cpu

    num_threads(1)  # the rest of the calibration is for 2+ threads

    calls = []

    def fake_measure_layout():
        calls.append(1)
        slow = {"sequential": 1.0, "strips": 1.0, faster: 0.5}
        return {shape: dict(slow) for shape in calibration.LAYOUT_SHAPES}

    monkeypatch.setattr(calibration, "_layout", None)
    monkeypatch.setattr(calibration, "measure_layout", fake_measure_layout)
    monkeypatch.setattr(cpu, "_serial_tuned", 0)
    before = torch.ops.plrnn.cpu_wide_rows(-1)
    try:
        cpu.serial(torch.rand(40, 3), torch.randn(40, 3), None, False)
        assert torch.ops.plrnn.cpu_wide_rows(-1) == calibration.WIDE_ROWS[faster]
        record = json.loads(calibration.layout_cache_file().read_text())
        assert record["wide_rows"] == faster and record["sequential_over_strips"]["65536x128"] > 0

        # Another process reads the record; a damaged one is measured anew.
        monkeypatch.setattr(calibration, "_layout", None)
        assert calibration.wide_rows() == calibration.WIDE_ROWS[faster] and len(calls) == 1
        calibration.layout_cache_file().write_text('{"wide_rows": "diagonal"}')
        monkeypatch.setattr(calibration, "_layout", None)
        assert calibration.wide_rows() == calibration.WIDE_ROWS[faster] and len(calls) == 2
    finally:
        torch.ops.plrnn.cpu_wide_rows(before)


def test_layout_without_calibration_is_sequential(monkeypatch):
    monkeypatch.setenv("PLRNN_AUTO_CALIBRATION", "0")
    monkeypatch.setattr(calibration, "_layout", None)
    monkeypatch.setattr(calibration, "measure_layout", lambda: pytest.fail("measured"))
    assert calibration.wide_rows() == calibration.WIDE_ROWS["sequential"]


@pytest.mark.parametrize(("pipelined_over_time_split", "want"), [
    (0.8, "pipelined"),
    (1.0, "time_split"),  # a tie: the time split, which the backward (not timed) favoured
    (1.3, "time_split"),
])
def test_the_first_serial_call_at_each_thread_count_applies_the_streaming_schedule(
        calibrating, monkeypatch, num_threads, pipelined_over_time_split, want):
    from plrnn.recurrence import cpu

    monkeypatch.setattr(calibration, "measure", lambda: fake_times({c: 0.9 for c in (1, 2, 4)}))
    monkeypatch.setattr(calibration, "measure_short", fake_short({4: 1.0}))
    monkeypatch.setattr(calibration, "measure_streaming", fake_streaming(pipelined_over_time_split))
    monkeypatch.setattr(cpu, "_serial_tuned", 0)
    before = torch.ops.plrnn.cpu_streaming_schedule(-1)
    try:
        num_threads(2)
        cpu.serial(torch.rand(40, 3), torch.randn(40, 3), None, False)
        assert torch.ops.plrnn.cpu_streaming_schedule(-1) == calibration.STREAMING[want]
        record = json.loads(calibration.cache_file(2).read_text())
        assert record["streaming_schedule"] == want
        assert record["pipelined_over_time_split"]["32768x256"] == pipelined_over_time_split
        num_threads(1)  # one thread has nothing to split
        cpu.serial(torch.rand(40, 3), torch.randn(40, 3), None, False)
        assert torch.ops.plrnn.cpu_streaming_schedule(-1) == calibration.STREAMING["pipelined"]
    finally:
        torch.ops.plrnn.cpu_streaming_schedule(before)


@pytest.mark.parametrize(("last_level_over_private", "shapes", "want"), [
    (1.3, ((16384, 128),), "private"),
    (1.0, ((16384, 128),), "last_level"),  # a tie keeps outputs cached for their reader
    (0.7, ((16384, 128),), "last_level"),
    (1.3, (), "last_level"),  # nothing to measure: a small last-level cache
])
def test_the_first_serial_call_at_each_thread_count_applies_where_scans_stream(
        calibrating, monkeypatch, num_threads, last_level_over_private, shapes, want):
    from plrnn.recurrence import cpu, registry

    monkeypatch.setattr(calibration, "measure", lambda: fake_times({c: 0.9 for c in (1, 2, 4)}))
    monkeypatch.setattr(calibration, "measure_short", fake_short({4: 1.0}))
    monkeypatch.setattr(calibration, "measure_streaming", fake_streaming(1.3))
    schedules = []
    fake = fake_beyond(last_level_over_private, shapes)
    monkeypatch.setattr(calibration, "measure_streamed_beyond",
                        lambda schedule: schedules.append(schedule) or fake(schedule))
    monkeypatch.setattr(cpu, "_serial_tuned", 0)
    monkeypatch.delenv("PLRNN_STREAM_BYTES", raising=False)
    before = torch.ops.plrnn.cpu_streamed_beyond(-1)
    try:
        num_threads(2)
        x = torch.randn(40, 3)
        torch.testing.assert_close(cpu.serial(torch.rand(40, 3), x, None, False)[0], x[0])
        assert torch.ops.plrnn.cpu_streamed_beyond(-1) == calibration.STREAMED_BEYOND[want]
        assert schedules == [calibration.STREAMING["time_split"]]  # measured under the schedule
        record = json.loads(calibration.cache_file(2).read_text())
        assert record["streamed_beyond"] == want
        assert record["last_level_over_private"] == {
            f"{T}x{C}": last_level_over_private for T, C in shapes}
        # auto's in-cache rule counts with the kernels' threshold
        assert registry._stream_bytes() == torch.ops.plrnn.cpu_stream_bytes()
        # a record without the answer is measured anew
        calibration.cache_file(2).write_text(json.dumps(
            {k: v for k, v in record.items() if k != "streamed_beyond"}))
        monkeypatch.setattr(calibration, "_cache", {})
        assert calibration.streamed_beyond(2) == calibration.STREAMED_BEYOND[want]
        assert len(schedules) == 2
        num_threads(1)  # one thread has nothing to split
        cpu.serial(torch.rand(40, 3), torch.randn(40, 3), None, False)
        assert torch.ops.plrnn.cpu_streamed_beyond(-1) == calibration.STREAMED_BEYOND["last_level"]
    finally:
        torch.ops.plrnn.cpu_streamed_beyond(before)


def test_where_scans_stream_is_compared_inside_the_last_level_cache(monkeypatch):
    """The shape lies between BEYOND_MIN_PRIVATE times one core's cache and half the last-level
    cache, in rows of BEYOND_CHANNELS fp32 channels; with no room between them nothing is."""
    from plrnn.recurrence import cpu

    cpu.load()
    monkeypatch.delenv("PLRNN_STREAM_BYTES", raising=False)
    ops = torch.ops.plrnn
    before = ops.cpu_streamed_beyond(0)
    last_level = ops.cpu_stream_bytes()
    ops.cpu_streamed_beyond(1)
    private = ops.cpu_stream_bytes()
    ops.cpu_streamed_beyond(before)
    shapes = calibration.beyond_shapes()
    assert ops.cpu_streamed_beyond(-1) == before
    if not shapes:
        assert 2 * calibration.BEYOND_MAX_STEPS * 3 * 128 * 4 > last_level or (
            last_level <= 2 * calibration.BEYOND_MIN_PRIVATE * private)
        return
    ((T, C),) = shapes
    assert C == calibration.BEYOND_CHANNELS and T <= calibration.BEYOND_MAX_STEPS
    assert calibration.BEYOND_MIN_PRIVATE * private < 3 * T * C * 4 <= last_level // 2
    monkeypatch.setenv("PLRNN_STREAM_BYTES", "0")  # both settings alike: nothing to compare
    assert calibration.beyond_shapes() == ()


@pytest.mark.parametrize(("answers", "tries", "want"), [
    ((1.3,), 1, 1.3),  # clear at once
    ((0.9,), 1, 0.9),
    ((1.0, 1.04, 1.3), 3, 1.04),  # within MARGIN: measured again, the median kept
    ((1.02, 1.5), 2, 1.26),  # the median of two is their mean, clear of MARGIN
    ((1.0, 1.01, 0.99), 3, 1.0),  # still a tie after STREAM_TRIES: stop there
])
def test_streaming_is_measured_again_while_the_schedules_tie(answers, tries, want):
    calls = iter(answers)
    ratios, taken = calibration.stream_from(lambda: fake_streaming(next(calls))())
    assert taken == tries
    assert ratios == {shape: pytest.approx(want) for shape in calibration.STREAM_SHAPES}


# Each measured kernel setting: (its op, its measurement, its values, what an unknown value says,
# where it is measured).
SETTINGS = {
    "wide_rows": ("cpu_wide_rows", "measure_layout", calibration.WIDE_ROWS, "layout must be 0",
                  calibration.LAYOUT_SHAPES),
    "streaming": ("cpu_streaming_schedule", "measure_streaming", calibration.STREAMING,
                  "schedule must be 0", calibration.STREAM_SHAPES),
    "beyond": ("cpu_streamed_beyond", "measure_streamed_beyond", calibration.STREAMED_BEYOND,
               "where must be 0", None),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_the_real_setting_measurement_runs(num_threads, setting):
    op_name, measure, values, _, shapes = SETTINGS[setting]
    op = getattr(torch.ops.plrnn, op_name)
    num_threads(2)
    before = op(-1)
    if shapes is None:  # where scans stream: under a schedule, where the caches leave room
        schedule = torch.ops.plrnn.cpu_streaming_schedule(-1)
        shapes = calibration.beyond_shapes()
        if not shapes:
            pytest.skip("this CPU's last-level cache leaves nothing to compare")
        times = getattr(calibration, measure)(1 - schedule)
        assert torch.ops.plrnn.cpu_streaming_schedule(-1) == schedule
    else:
        times = getattr(calibration, measure)()
    assert sorted(times) == sorted(shapes)
    assert all(sorted(t) == sorted(values) for t in times.values())
    assert all(math.isfinite(s) and s > 0 for t in times.values() for s in t.values())
    assert op(-1) == before and torch.get_num_threads() == 2


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_an_unknown_setting_is_refused(setting):
    from plrnn.recurrence import cpu

    op_name, _, _, message, _ = SETTINGS[setting]
    cpu.load()
    with pytest.raises(RuntimeError, match=message):
        getattr(torch.ops.plrnn, op_name)(2)


def test_records_unread_for_a_month_are_pruned_when_one_is_written(calibrating, monkeypatch):
    """Each kernel build and CPU gets its own record; old ones must not pile up forever, while
    one that a process still reads (another installation sharing the folder) stays."""
    month = calibration_store.STALE_DAYS * 86400
    stale = calibrating / "auto-cpu-0000000000-00000000aa-t2.json"
    stale_rows = calibrating / "rows-cpu-0000000000-00000000aa.json"
    recent = calibrating / "auto-cpu-0000000000-00000000bb-t2.json"
    unrelated = calibrating / "notes.json"
    for path in (stale, stale_rows, recent, unrelated):
        path.write_text("{}")
    for path in (stale, stale_rows, unrelated):
        os.utime(path, (time.time() - month - 60,) * 2)
    os.utime(recent, (time.time() - month + 3600,) * 2)

    monkeypatch.setattr(calibration, "measure",
                        lambda: fake_times({1: 0.9, 2: 0.9, 4: 0.9, 8: 0.9, 16: 0.9, 32: 0.9}))
    monkeypatch.setattr(calibration, "measure_short",
                        fake_short({c: 0.9 for c in calibration.SHORT_MEASURED_CHANNELS}))
    calibration.parallel_channels(2, calibration.MIN_STEPS)  # measures and writes a record
    assert calibration.cache_file(2).exists()
    assert not stale.exists() and not stale_rows.exists()
    assert recent.exists() and unrelated.exists()

    # Reading a record marks it as used.
    current = calibration.cache_file(2)
    os.utime(current, (time.time() - month - 60,) * 2)
    monkeypatch.setattr(calibration, "_cache", {})
    monkeypatch.setattr(calibration, "measure", lambda: pytest.fail("measured again"))
    calibration.parallel_channels(2, calibration.MIN_STEPS)
    assert current.stat().st_mtime > time.time() - 60


def test_rounds_interleave_every_way_each_round_starting_one_later(monkeypatch):
    monkeypatch.setattr(calibration, "_ROUND_S", 0.0)  # one call per way and round
    order = []
    ways = {k: (lambda k=k: order.append(k), lambda: None) for k in ("a", "b", "c")}
    times = calibration._rounds(ways)
    assert set(times) == {"a", "b", "c"} and all(t >= 0 for t in times.values())
    assert len(order) == 3 * (1 + calibration._ROUNDS)
    assert order[:9] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_regimes_are_measured_in_turns_and_again_where_the_chunks_changed():
    order = []

    def long_once(ilp_wide):
        def once():
            order.append("long")
            return {c: {"serial": 1.2, "ilp": 1.0 if c <= ilp_wide else 2.0, "plain": 1.1}
                    for c in calibration.MEASURED_CHANNELS}
        return once

    def other(name, ratio):
        def once(ilp):
            order.append((name, ilp))
            return {4: {"serial": ratio, "parallel": 1.0}}
        return once, lambda t: calibration.channels_from(calibration._parallel_ratios(t), (4,))

    regimes = {"longest": other("longest", 1.3), "short": other("short", 0.9)}
    times, got, taken = calibration.settled_in_turns(long_once(32), regimes)
    assert order == ["long", ("longest", 32), ("short", 32)] * 2
    assert taken == {"long": 2, "longest": 2, "short": 2} and got["short"][4]["serial"] == 0.9
    assert calibration.ilp_from(times) == 32
    # The in-thread chunks paid in the first long measurement and not in the second: the median
    # says they do not, and the other regimes' first measurements (taken with them) are redone.
    answers = iter([long_once(32), long_once(0), long_once(0)])
    order.clear()
    _, got, taken = calibration.settled_in_turns(lambda: next(answers)(), regimes)
    assert order == ["long", ("longest", 32), ("short", 32), "long", ("longest", 0), ("short", 0),
                     "long", ("longest", 0), ("short", 0)]
    assert taken == {"long": 3, "longest": 2, "short": 2}


def test_a_third_measurement_settles_two_that_disagree():
    def times(parallel):
        return {4: {"serial": 1.0, "parallel": parallel}, 16: {"serial": 1.0, "parallel": 0.5}}

    def decide(t):
        return calibration.channels_from(calibration._parallel_ratios(t))

    agreeing = iter([times(0.8), times(0.7)])
    got, taken = calibration.settled(lambda: next(agreeing), decide)
    assert taken == 2 and got[4]["parallel"] == pytest.approx(0.75) and got[16]["parallel"] == 0.5
    # The second was taken in a slow spell (cpu_parallel slower at 4 channels): a third decides.
    spell = iter([times(0.8), times(1.3), times(0.7)])
    got, taken = calibration.settled(lambda: next(spell), decide)
    assert taken == calibration.CHANNEL_TRIES == 3 and got[4]["parallel"] == 0.8
    assert decide(got) == {3, 4, *range(9, 17)}


# --- The cache as a user meets it: folders that take no record, damaged records, processes and
# threads calibrating together, the switch's spellings.

def quick_measurements(monkeypatch, calls=None):
    """Every measurement faked; calls (a list) gets one entry per long-regime measurement.
    Returns what parallel_channels(2, MIN_STEPS) then answers."""
    def fake_measure():
        if calls is not None:
            calls.append(1)
        return fake_times({1: 0.9, 2: 0.9, 4: 0.9, 8: 1.1, 16: 1.2, 32: 0.8})

    monkeypatch.setattr(calibration, "measure", fake_measure)
    monkeypatch.setattr(calibration, "measure_short", fake_short({4: 1.0}))
    monkeypatch.setattr(calibration, "measure_in_thread_chunks", lambda: (
        calls is not None and calls.append(1),
        {c: {"ilp": 1.0, "plain": 1.2 if c <= 4 else 0.7} for c in calibration.MEASURED_CHANNELS}
    )[1])
    return set(range(5, 17))


def warnings_said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("failure", ["folder_is_a_file", "read_only", "disk_full"])
def test_a_folder_that_takes_no_record_measures_and_says_so(calibrating, monkeypatch, caplog,
                                                            failure):
    """The answer is used all the same; a warning says it was not cached (each process will
    measure again) and how to avoid that, and no half-written file is left behind."""
    import errno

    want = quick_measurements(monkeypatch)
    left = []
    if failure == "folder_is_a_file":
        (calibrating / "file").write_text("")
        monkeypatch.setenv("PLRNN_CACHE_DIR", str(calibrating / "file"))
        left = ["file"]
    elif failure == "read_only":  # (the tests may run as root, whom permissions do not stop)
        real_open = os.open

        def refuse(path, flags, *args, **kwargs):
            if str(path).startswith(str(calibrating)) and flags & os.O_CREAT:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    else:
        def dump(obj, f, **kwargs):
            f.write('{"threads": ')
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(json, "dump", dump)
    assert calibration.parallel_channels(2, calibration.MIN_STEPS) == want
    said = [m for m in warnings_said(caplog) if "could not cache" in m]
    assert len(said) == 1 and "PLRNN_CACHE_DIR" in said[0], warnings_said(caplog)
    # (a lock file may stay: calibration_store.exclusive)
    assert sorted(p.name for p in calibrating.iterdir() if p.suffix != ".lock") == left


def test_without_a_home_folder_it_measures_and_says_it_cannot_cache(calibrating, monkeypatch,
                                                                    caplog):
    """No PLRNN_CACHE_DIR, no HOME and no passwd entry for the user (a container run under an
    arbitrary uid): Path.home() raises RuntimeError; the op must still run."""
    import pwd

    def no_entry(uid):
        raise KeyError(uid)

    want = quick_measurements(monkeypatch)
    monkeypatch.delenv("PLRNN_CACHE_DIR")
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(calibration, "_layout", None)
    monkeypatch.setattr(calibration, "measure_layout", lambda: {
        shape: {"sequential": 1.0, "strips": 0.5} for shape in calibration.LAYOUT_SHAPES})
    assert calibration.parallel_channels(2, calibration.MIN_STEPS) == want
    assert calibration.wide_rows() == calibration.WIDE_ROWS["strips"]
    assert calibration.ilp_channels(1) == 4
    said = warnings_said(caplog)
    assert any("PLRNN_CACHE_DIR" in m for m in said), said
    with pytest.raises(OSError, match="PLRNN_CACHE_DIR"):
        calibration.cache_file(2)


# (threads, what the record holds instead): not a JSON object, or values no measurement writes.
DAMAGED = [
    *((threads, text) for threads in (1, 2) for text in ("[]", "[1, 2]", "null", '"text"', "3")),
    *((threads, {"ilp_channels": value}) for threads in (1, 2)
      for value in (math.inf, -math.inf, math.nan, 10**30, -5, 7, "8", True, None, [4])),
    *((2, {key: value})
      for key in ("parallel_channels", "longest_parallel_channels", "short_parallel_channels")
      for value in ("abc", [1, "a"], [1.5, 2], [0, 4], [-3], [100000], {"1": 2}, None, [True])),
]


@pytest.mark.parametrize(("threads", "damage"), DAMAGED)
def test_a_record_of_the_wrong_shape_is_measured_again(calibrating, monkeypatch, threads, damage):
    calls = []
    want = quick_measurements(monkeypatch, calls)

    def answer():
        if threads == 1:
            return calibration.ilp_channels(1)
        return (calibration.parallel_channels(2, calibration.MIN_STEPS),
                calibration.parallel_channels(2, calibration.SHORT_MIN_STEPS),
                calibration.parallel_channels(2, calibration.LONGEST_MIN_STEPS),
                calibration.ilp_channels(2))

    good = answer()
    assert good == 4 if threads == 1 else good[0] == want
    path = calibration.cache_file(threads)
    record = json.loads(path.read_text())
    path.write_text(damage if isinstance(damage, str) else json.dumps({**record, **damage}))
    monkeypatch.setattr(calibration, "_cache", {})
    measured = len(calls)
    assert answer() == good
    assert len(calls) > measured  # measured again, not read
    if threads == 2:
        for T, C in ((calibration.MIN_STEPS, 8), (calibration.SHORT_MIN_STEPS, 64),
                     (calibration.LONGEST_MIN_STEPS, 4)):
            assert registry.choose_auto(torch.device("cpu"), T, C) in ("cpu_serial",
                                                                       "cpu_parallel")


@pytest.mark.parametrize(("value", "on"), [
    ("0", False), ("false", False), ("False", False), ("no", False), ("off", False),
    (" 0 ", False), ("1", True), ("true", True), ("yes", True), ("on", True), ("", True),
])
def test_the_switch_reads_as_its_spellings_say(monkeypatch, value, on):
    """PLRNN_AUTO_CALIBRATION=false (or no, off) turns the measurement off as 0 does."""
    monkeypatch.setenv("PLRNN_AUTO_CALIBRATION", value)
    assert calibration.enabled() is on


def test_threads_calibrating_together_measure_once(calibrating, monkeypatch):
    """Two threads of a process at their first call: one measures, the other waits for its
    answer (measuring together, each would time the other's kernels as its own)."""
    import threading

    who = []
    want = quick_measurements(monkeypatch)
    fake = calibration.measure

    def slow_measure():
        who.append(threading.get_ident())
        time.sleep(0.2)
        return fake()

    monkeypatch.setattr(calibration, "measure", slow_measure)
    monkeypatch.setattr(calibration, "_layout", None)
    layouts = []

    def slow_layout():
        layouts.append(threading.get_ident())
        time.sleep(0.2)
        return {shape: {"sequential": 1.0, "strips": 0.5} for shape in calibration.LAYOUT_SHAPES}

    monkeypatch.setattr(calibration, "measure_layout", slow_layout)
    start = threading.Barrier(2)
    got = []

    def first_call():
        start.wait()
        got.append((calibration.parallel_channels(2, calibration.MIN_STEPS),
                    calibration.wide_rows()))

    threads = [threading.Thread(target=first_call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got == [(want, calibration.WIDE_ROWS["strips"])] * 2
    assert len(who) == 2 and len(set(who)) == 1  # one calibration: its two measurements
    assert len(layouts) == 1


PROCESS_CALIBRATING = r"""
import json, os, sys, time
import torch
from plrnn.recurrence import calibration

log, barrier, me = sys.argv[1:4]

def note(what):
    with open(log, "a") as f:
        f.write(f"{me} {what} {time.time()}\n")

def measure():
    note("start")
    time.sleep(0.5)
    note("end")
    return {c: {"serial": 1.2 if c in (4, 16) else 0.9, "ilp": 1.0, "plain": 1.0}
            for c in calibration.MEASURED_CHANNELS}

class Quiet:
    cores = 0.0
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        pass

calibration.measure = measure
calibration.measure_short = lambda ilp: {
    c: {"serial": 1.0, "parallel": 1.0} for c in calibration.SHORT_MEASURED_CHANNELS}
calibration.measure_longest = lambda ilp: {
    c: {"serial": 1.0, "parallel": 1.0} for c in calibration.MEASURED_CHANNELS}
calibration.measure_streaming = lambda: {
    s: {"pipelined": 1.0, "time_split": 1.0} for s in calibration.STREAM_SHAPES}
calibration.measure_streamed_beyond = lambda schedule: {}
calibration.measure_layout = lambda: {
    s: {"sequential": 1.0, "strips": 1.0} for s in calibration.LAYOUT_SHAPES}
calibration.Others = Quiet
calibration.others_now = lambda: 0.0
import plrnn

torch.set_num_threads(2)
a, x = torch.rand(20000, 8), torch.randn(20000, 8)
open(os.path.join(barrier, me), "w").close()
deadline = time.time() + 60  # the other process may have failed to start
while len(os.listdir(barrier)) < 2 and time.time() < deadline:
    time.sleep(0.005)
h = plrnn.linear_recurrence(a, x, backend="auto")
assert torch.isfinite(h).all()
print(json.dumps(sorted(calibration.parallel_channels(2, calibration.MIN_STEPS))))
"""


def test_processes_calibrating_together_measure_one_at_a_time(tmp_path):
    """Two processes at their first call together (two ranks, two workers): one measures, the
    other waits for its record and reads it. Measuring at once, each timed the other's kernels
    and its record said so, and the next processes, finding the CPUs quiet, measured again, all
    at once again."""
    import subprocess
    import sys

    (tmp_path / "barrier").mkdir()
    env = {**os.environ, "PLRNN_AUTO_CALIBRATION": "1", "PLRNN_CACHE_DIR": str(tmp_path / "c")}
    procs = [subprocess.Popen([sys.executable, "-c", PROCESS_CALIBRATING, str(tmp_path / "log"),
                               str(tmp_path / "barrier"), name],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("p", "q")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert [json.loads(out) for out, _ in outs] == [[3, 4, 9, 10, 11, 12, 13, 14, 15, 16]] * 2
    notes = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert len({who for who, _, _ in notes}) == 1 and len(notes) == 4, notes
    assert [p.name for p in (tmp_path / "c").glob("*.tmp")] == []


def test_an_interrupted_calibration_is_applied_by_the_next_call(calibrating, monkeypatch,
                                                               num_threads,
                                                               fresh_parallel_tuning):
    """Ctrl-C during the measurement that a kernel's first call at a thread count starts: the
    next call measures again and applies the answer (it was taken as applied, and the kernels
    kept their defaults at that thread count for the rest of the process)."""
    from plrnn.recurrence import cpu

    quick_measurements(monkeypatch)
    interrupts = {"ilp_channels": 1, "streaming_schedule": 1}
    for name in interrupts:
        real = getattr(calibration, name)

        def once(*args, name=name, real=real):
            if interrupts[name]:
                interrupts[name] -= 1
                raise KeyboardInterrupt
            return real(*args)

        monkeypatch.setattr(calibration, name, once)
    monkeypatch.setattr(calibration, "measure_streaming", fake_streaming(0.8))  # pipelined
    monkeypatch.setattr(cpu, "_serial_tuned", 0)
    num_threads(2)
    before = torch.ops.plrnn.cpu_streaming_schedule(STREAMING_TIME_SPLIT)
    try:
        a, x = torch.rand(40, 3), torch.randn(40, 3)
        with pytest.raises(KeyboardInterrupt):
            cpu.serial(a, x, None, False)
        cpu.serial(a, x, None, False)
        assert torch.ops.plrnn.cpu_streaming_schedule(-1) == calibration.STREAMING["pipelined"]
        torch.ops.plrnn.cpu_ilp_channels(32)
        with pytest.raises(KeyboardInterrupt):
            cpu.parallel(a, x, None, False)
        cpu.parallel(a, x, None, False)
        assert torch.ops.plrnn.cpu_ilp_channels(-1) == 0  # fake_times: the chunks never paid
    finally:
        torch.ops.plrnn.cpu_streaming_schedule(before)


STREAMING_TIME_SPLIT = calibration.STREAMING["time_split"]


def test_pruning_touches_only_its_own_stale_records_and_unfinished_writes(calibrating,
                                                                         monkeypatch):
    """Only files named as it names records (and their temporary files) are pruned: a file of
    the user's that merely starts alike stays, and so does a write in progress."""
    month = calibration_store.STALE_DAYS * 86400
    digest = "0123456789"
    old = time.time() - month - 60
    mine = {
        f"auto-cpu-{digest}-abcdef0123-t2.json": True,
        f"rows-cpu-{digest}-abcdef0123.json": True,
        f"auto-cpu-{digest}-abcdef0123-t2.json.4242-0badcafe.tmp": True,  # a killed write
    }
    foreign = ["auto-cpu-notes.json", "rows-cpu-backup.json", "auto-cpu-x-y-t2.json.tmp",
               f"auto-cpu-{digest}-abcdef0123-t2.json.bak", "notes.json"]
    for name in [*mine, *foreign]:
        (calibrating / name).write_text("{}")
        os.utime(calibrating / name, (old, old))
    (calibrating / f"auto-cpu-{digest}-fedcba9876-t4.json").mkdir()  # not a file
    os.utime(calibrating / f"auto-cpu-{digest}-fedcba9876-t4.json", (old, old))
    writing = calibrating / f"auto-cpu-{digest}-abcdef0123-t8.json.4243-0badcafe.tmp"
    writing.write_text('{"threads"')  # just begun

    quick_measurements(monkeypatch)
    calibration.parallel_channels(2, calibration.MIN_STEPS)  # writes a record, and prunes
    left = {p.name for p in calibrating.iterdir()}
    assert not left & set(mine)
    assert set(foreign) | {writing.name, f"auto-cpu-{digest}-fedcba9876-t4.json"} <= left


def test_records_are_readable_as_the_umask_allows(calibrating, monkeypatch):
    """As any file the user writes (a folder shared by a group), not only by their owner."""
    quick_measurements(monkeypatch)
    umask = os.umask(0o022)
    try:
        calibration.parallel_channels(2, calibration.MIN_STEPS)
    finally:
        os.umask(umask)
    assert calibration.cache_file(2).stat().st_mode & 0o777 == 0o644


def test_a_child_forked_while_a_thread_measures_calibrates_after_it(calibrating, monkeypatch):
    """fork (multiprocessing's default on Linux) while another thread holds the calibration
    lock: that thread does not exist in the child, whose copy of the lock must not stay taken;
    the child waits for the parent's measurement (the flock), then measures its own."""
    import multiprocessing
    import sys
    import threading

    want = quick_measurements(monkeypatch)
    inside, leave = threading.Event(), threading.Event()

    def hold():
        with calibration_store.exclusive(calibration.cache_file(2)):
            inside.set()
            leave.wait(30)

    def child():  # no kernel runs here: OpenMP's pool does not survive a fork
        sys.exit(0 if calibration.parallel_channels(3, calibration.MIN_STEPS) == want else 1)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(10)
        proc = multiprocessing.get_context("fork").Process(target=child)
        proc.start()
        time.sleep(0.3)
    finally:
        leave.set()
        holder.join()
    proc.join(30)
    if proc.exitcode is None:
        proc.kill()
    assert proc.exitcode == 0


def test_a_measurement_held_up_elsewhere_is_waited_for_a_while_then_taken(calibrating,
                                                                          monkeypatch, caplog):
    """A process holding the lock without finishing (stopped, say) delays the others'
    first call by calibration_store.LOCK_WAIT_S at most, with a word on what they wait for."""
    import fcntl

    want = quick_measurements(monkeypatch)
    monkeypatch.setattr(calibration_store, "LOCK_WAIT_S", 0.3)
    lock = calibrating / f"calibrating-{calibration_store._cpu_key()}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: as another process's
        assert calibration.parallel_channels(2, calibration.MIN_STEPS) == want
    finally:
        os.close(fd)
    said = warnings_said(caplog)
    assert any("waiting for another process" in m and str(lock) in m for m in said), said
    assert any("measuring here too" in m for m in said), said
    assert calibration.cache_file(2).exists()


def test_ctrl_c_while_waiting_for_another_measurement_leaves_no_descriptor_open(calibrating,
                                                                                monkeypatch):
    import fcntl

    lock = calibrating / "calibrating-x.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: as another process's

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(calibration_store.time, "sleep", interrupted)
    try:
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(KeyboardInterrupt):
            calibration_store._flock(lock)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(fd)


def test_records_are_kept_apart_by_the_kernels_they_measured(monkeypatch):
    """Another ISA level's build, another torch, or PLRNN_STREAM_BYTES set while measuring: a
    record of its own, never one measured under other conditions."""
    from plrnn.recurrence import cpu

    monkeypatch.delenv("PLRNN_STREAM_BYTES", raising=False)
    monkeypatch.setattr(cpu, "origin", lambda: "prebuilt (avx2)")
    key = calibration_store.kernels_key()
    monkeypatch.setattr(cpu, "origin", lambda: "prebuilt (default)")
    assert calibration_store.kernels_key() != key
    monkeypatch.setattr(cpu, "origin", lambda: "built at first use (/a)")
    first_use = calibration_store.kernels_key()
    monkeypatch.setattr(cpu, "origin", lambda: "built at first use (/b)")
    assert calibration_store.kernels_key() == first_use  # the folder is not the build
    monkeypatch.setenv("PLRNN_STREAM_BYTES", "1000000")
    assert calibration_store.kernels_key() != first_use
    monkeypatch.delenv("PLRNN_STREAM_BYTES")
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert calibration_store.kernels_key() != first_use
    assert calibration.cache_file(2).name.split("-")[3] == calibration_store.kernels_key()


def test_complex_inputs_measure_nothing(calibrating, monkeypatch, fresh_parallel_tuning):
    """The complex kernels read none of the measured settings: `auto` and both kernels by name
    run them at the first call of a thread count without timing anything."""
    import plrnn
    from plrnn.recurrence import cpu

    def no_measurement(*args, **kwargs):
        raise AssertionError("a complex call measured")

    for name in ("_measure", "_measure_one_thread", "_measure_layout"):
        monkeypatch.setattr(calibration, name, no_measurement)
    monkeypatch.setattr(calibration, "_layout", None)
    monkeypatch.setattr(cpu, "_serial_tuned", 0)
    a = torch.polar(torch.rand(70000, 4, dtype=torch.float64) * 0.5 + 0.5,
                    torch.rand(70000, 4, dtype=torch.float64))
    x = torch.randn(70000, 4, dtype=torch.complex128)
    want = plrnn.linear_recurrence(a, x, backend="torch")
    for backend in ("auto", "cpu_serial", "cpu_parallel"):
        h = plrnn.linear_recurrence(a, x, backend=backend)
        torch.testing.assert_close(h, want)
    assert list(calibrating.iterdir()) == []  # nothing measured, nothing recorded
