"""Suite-wide fixtures.

The C++ kernels come from the install (setup.py), or are built at first use where the install did
not build them (about a minute, then cached in TORCH_EXTENSIONS_DIR); loading them once up front
keeps that cost out of any single test and makes a broken build fail loudly instead of surfacing
as hundreds of confusing failures.

Thread counts: the large correctness grids run with torch's intra-op pool pinned to one thread
(`single_thread`). On a small, shared machine every OpenMP region of the pure-torch backend (a
few dozen per call) otherwise waits on a descheduled worker, which made the grid ~100x slower
without testing anything more. The C++ kernels' multi-threaded schedules are instead tested
explicitly at 1-4 threads (test_threads.py) and at the default count (test_long.py).
"""

from __future__ import annotations

import os

import pytest
import torch

# backend="auto" on CPU follows the fixed rule, not this machine's calibration, so that which
# kernel a test exercises does not depend on the machine (tests/recurrence/test_calibration.py
# tests the calibration itself). Subprocesses inherit it.
os.environ.setdefault("PLRNN_AUTO_CALIBRATION", "0")


@pytest.fixture(scope="session", autouse=True)
def cpu_kernels_built():
    from plrnn.recurrence import cpu

    reason = cpu.load()
    assert reason is None, f"the C++ CPU kernels did not build: {reason}"


@pytest.fixture
def num_threads():
    """set_threads(n) for one test; the previous count is restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture(params=["sequential", "strips"])
def wide_rows(request, monkeypatch):
    """Runs the test under each layout of wide rows in the CPU kernels (calibration.WIDE_ROWS:
    which one runs is measured per CPU, so both must be right), whatever thread counts it sets."""
    from plrnn.recurrence import calibration

    before = _kernel_setting(monkeypatch, "wide_rows", "cpu_wide_rows", calibration.WIDE_ROWS,
                             request.param)
    yield request.param
    torch.ops.plrnn.cpu_wide_rows(before)


@pytest.fixture
def streaming_schedule(monkeypatch):
    """set(name): cpu_serial's schedule for scans streamed from memory on several threads
    (calibration.STREAMING) for the rest of the test, whatever thread counts it sets."""
    from plrnn.recurrence import calibration

    befores = []
    yield lambda name: befores.append(_kernel_setting(
        monkeypatch, "streaming_schedule", "cpu_streaming_schedule", calibration.STREAMING, name))
    if befores:
        torch.ops.plrnn.cpu_streaming_schedule(befores[0])


def _kernel_setting(monkeypatch, what, op_name, table, name):
    """Sets one of the C++ kernels' process-wide settings to table[name], and makes
    calibration.<what> answer the same, so that the first call at a new thread count
    (cpu._tune_serial) keeps it (monkeypatch undoes that); returns the setting before."""
    from plrnn.recurrence import calibration, cpu

    cpu.load()
    value = table[name]
    monkeypatch.setattr(calibration, what, lambda *threads: value)
    monkeypatch.setattr(cpu, "_serial_tuned", 0)
    return getattr(torch.ops.plrnn, op_name)(value)


@pytest.fixture
def single_thread(num_threads):
    num_threads(1)
