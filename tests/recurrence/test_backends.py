"""The backend registry, backends(), auto's choice, and the C++ ops used directly."""

from __future__ import annotations

import pytest
import torch

import plrnn
from plrnn.recurrence import REGISTRY, cpu, reference
from plrnn.recurrence.registry import (
    PARALLEL_CHANNELS,
    PARALLEL_MIN_STEPS,
    choose_auto,
)

from .helpers import F64_RTOL, make_inputs, max_err, ref64, scale_of, seed_for, sysfs_cache_bytes


def test_registry_names():
    assert list(REGISTRY) == ["reference", "torch", "cpu_serial", "cpu_parallel", "cuda_serial",
                              "cuda_paper", "cuda_parallel", "triton"]
    for name, backend in REGISTRY.items():
        assert backend.name == name and backend.description and callable(backend.run)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=["str", "device"])
def test_backends_on_cpu(device, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    statuses = plrnn.backends(device)
    assert [s.name for s in statuses] == list(REGISTRY)
    for s in statuses:
        assert isinstance(s, plrnn.BackendStatus)
        if s.name in ("reference", "torch", "cpu_serial", "cpu_parallel"):
            assert s.available is True
            assert s.reason == REGISTRY[s.name].description  # available: the reason describes it
        else:
            assert s.available is False
            assert s.reason and s.reason != REGISTRY[s.name].description  # says why not
    by_name = {s.name: s for s in statuses}
    assert "TRITON_INTERPRET=1" in by_name["triton"].reason or "not installed" in \
        by_name["triton"].reason
    assert "cpu" in by_name["cuda_parallel"].reason
    assert plrnn.backends() == statuses  # the default device is the CPU


def test_backends_on_meta():
    statuses = {s.name: s for s in plrnn.backends("meta")}
    assert statuses["reference"].available and statuses["torch"].available
    for name in ("cpu_serial", "cpu_parallel"):
        assert statuses[name] == plrnn.BackendStatus(
            name, False, "C++ CPU kernel; inputs are on meta", origin="", complex=True
        )


def test_auto_choice_rules(num_threads):
    cpu_dev = torch.device("cpu")
    lo, hi = min(PARALLEL_CHANNELS), max(PARALLEL_CHANNELS)
    for threads in (2, 4):
        num_threads(threads)
        assert choose_auto(cpu_dev, PARALLEL_MIN_STEPS, lo) == "cpu_parallel"
        assert choose_auto(cpu_dev, PARALLEL_MIN_STEPS, hi) == "cpu_parallel"
        assert choose_auto(cpu_dev, PARALLEL_MIN_STEPS, lo - 1) == "cpu_serial"
        assert choose_auto(cpu_dev, PARALLEL_MIN_STEPS, hi + 1) == "cpu_serial"
        assert choose_auto(cpu_dev, PARALLEL_MIN_STEPS - 1, lo) == "cpu_serial"
        assert choose_auto(cpu_dev, 1, 1) == "cpu_serial"
    num_threads(1)  # one thread cannot split time
    assert choose_auto(cpu_dev, PARALLEL_MIN_STEPS, lo) == "cpu_serial"
    assert choose_auto(torch.device("meta"), 10**6, 1) == "torch"


def test_auto_takes_the_in_cache_measurement_for_long_wide_rows_that_fit(num_threads,
                                                                         monkeypatch):
    """From T = 16384 on, rows wider than the long regime measures take the short regime's
    (in-cache) answer while inputs and output fit in the C++ kernels' cache threshold, counted
    in the inputs' own bytes; streamed ones keep cpu_serial (with its own schedules)."""
    from plrnn.recurrence import calibration, registry

    num_threads(2)
    short = tuple(range(5, 257))
    monkeypatch.setattr(calibration, "parallel_channels", lambda threads, steps: (
        tuple(range(1, 33)) if steps >= calibration.MIN_STEPS else short))
    monkeypatch.setattr(registry, "_stream_bytes", lambda: 3 * 16384 * 128 * 4)
    cpu_dev, T = torch.device("cpu"), PARALLEL_MIN_STEPS
    assert T == 16384
    assert choose_auto(cpu_dev, T, 16) == "cpu_parallel"  # the long regime's own list
    assert choose_auto(cpu_dev, T, 64) == "cpu_parallel"
    assert choose_auto(cpu_dev, T, 128) == "cpu_parallel"  # exactly at the threshold
    assert choose_auto(cpu_dev, T, 128, itemsize=8) == "cpu_serial"  # twice the bytes: streamed
    assert choose_auto(cpu_dev, T, 256, itemsize=2) == "cpu_parallel"
    assert choose_auto(cpu_dev, 2 * T, 128) == "cpu_serial"
    monkeypatch.setattr(registry, "_stream_bytes", lambda: 1 << 40)
    assert choose_auto(cpu_dev, T, 300) == "cpu_serial"  # beyond what the short regime chose
    assert torch.ops.plrnn.cpu_stream_bytes() > 0


def test_last_level_cache_size_is_read_from_sysfs(monkeypatch):
    # The kernels read sysfs with C stdio (an iostream read crashed on the GPU machine, whose
    # compiler links the extension with a libstdc++ of its own): same number as sysfs says.
    want = sysfs_cache_bytes()
    if want is None:
        pytest.skip("no cache sizes in /sys/devices/system/cpu/cpu0/cache")
    monkeypatch.delenv("PLRNN_STREAM_BYTES", raising=False)
    before = torch.ops.plrnn.cpu_streamed_beyond(0)
    try:
        assert torch.ops.plrnn.cpu_stream_bytes() == want
        # Where the calibration measured that scans beyond one core's own cache stream better:
        # the L2's size (the last level's where the L2 is the last level; sysfs may list no L2).
        assert torch.ops.plrnn.cpu_streamed_beyond(1) == 0
        private = sysfs_cache_bytes(2)
        if private is not None:
            assert torch.ops.plrnn.cpu_stream_bytes() == private <= want
        monkeypatch.setenv("PLRNN_STREAM_BYTES", "12345")  # still wins
        assert torch.ops.plrnn.cpu_stream_bytes() == 12345
    finally:
        torch.ops.plrnn.cpu_streamed_beyond(before)


# ------------------------------------------------------------------------- torch.ops.plrnn.*


@pytest.mark.parametrize(
    "dtype",
    [torch.float64, torch.float32, torch.float16, torch.bfloat16],
    ids=lambda d: str(d).removeprefix("torch."),
)
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_cpu_scan_ops_direct(parallel, dtype):
    assert cpu.load() is None
    a, x, h0 = make_inputs(700, (24,), "uniform", True, seed_for("ops", parallel), dtype=dtype)
    for reverse in (False, True):
        for init in (None, h0):
            truth = ref64(a, x, init, reverse)
            got = torch.ops.plrnn.cpu_scan(a, x, init, reverse, parallel)
            assert got.dtype == dtype and got.shape == x.shape
            buf = torch.full_like(x, float("nan"))
            assert torch.ops.plrnn.cpu_scan_out(a, x, init, reverse, parallel, out=buf) is None
            assert torch.equal(buf, got)
            if dtype == torch.float64:
                allowed = F64_RTOL * scale_of(truth)
            else:
                baseline = reference.serial(a, x, init, reverse)
                floor = 4 * torch.finfo(dtype).eps * scale_of(truth)
                allowed = 2 * max_err(baseline, truth) + floor
            assert max_err(got, truth) <= allowed


def test_cpu_scan_op_rejects_bad_buffers():
    assert cpu.load() is None
    a, x = torch.rand(8, 4), torch.randn(8, 4)
    with pytest.raises(RuntimeError, match="need contiguous inputs"):
        torch.ops.plrnn.cpu_scan(a.t().contiguous().t(), x, None, False, False)
    with pytest.raises(RuntimeError, match=r"decays must have the impulses' \(T, \*\) shape, or"):
        torch.ops.plrnn.cpu_scan(a.reshape(8, 2, 2), x, None, False, False)
    with pytest.raises(RuntimeError, match=r"P dividing the impulses' channels; got decays \[1, 3\]"):
        torch.ops.plrnn.cpu_scan(a[:1, :3].contiguous(), x, None, False, False)
    with pytest.raises(RuntimeError, match=r"be 2-D \(1 or T, P\)"):
        torch.ops.plrnn.cpu_scan(a[:3, :2].contiguous(), x, None, False, False)
    # No channels: nothing to scan, and gradients of the decays' own (empty) shape.
    empty = torch.empty(8, 0)
    gx, ga, _ = torch.ops.plrnn.cpu_scan_backward(torch.empty(1, 0), empty, empty, None, False,
                                                  False)
    assert gx.shape == (8, 0) and ga.shape == (1, 0)
    # One row of decays is time-invariant, (T, P) decays repeat every P channels: the same as
    # those decays expanded.
    for decays in (a[:1], a[:, :2].contiguous(), a[:1, :1].contiguous()):
        expanded = decays.repeat(8 // decays.shape[0], 4 // decays.shape[1]).contiguous()
        for parallel in (False, True):
            got = torch.ops.plrnn.cpu_scan(decays, x, None, False, parallel)
            assert torch.equal(got, torch.ops.plrnn.cpu_scan(expanded, x, None, False, parallel))
    with pytest.raises(RuntimeError, match=r"initial_state must have shape impulses.shape\[1:\]"):
        torch.ops.plrnn.cpu_scan(a, x, torch.zeros(5), False, True)
    with pytest.raises(RuntimeError, match=r"initial_state must have shape impulses.shape\[1:\]"):
        torch.ops.plrnn.cpu_scan(a.reshape(8, 2, 2), x.reshape(8, 2, 2), torch.zeros(4), False, True)
    # Any trailing shape is one (T, C) buffer: the same numbers as the flat call, in its shape.
    h = torch.ops.plrnn.cpu_scan(a.reshape(8, 2, 2), x.reshape(8, 2, 2), torch.ones(2, 2), False, False)
    flat = torch.ops.plrnn.cpu_scan(a, x, torch.ones(4), False, False)
    assert h.shape == (8, 2, 2) and torch.equal(h.reshape(8, 4), flat)
    with pytest.raises(RuntimeError, match="out must be a contiguous CPU tensor"):
        torch.ops.plrnn.cpu_scan_out(a, x, None, False, True, out=torch.empty(8, 5))
