"""contention.py: what other work took of this process's CPUs while it timed something."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

from plrnn.recurrence import contention

STAT = """cpu  100 0 50 1000 0 0 0 0 0 0
cpu0 10 1 5 500 7 2 3 4 0 0
cpu1 20 0 10 500 9 0 0 6 0 0
intr 12345
"""


def test_busy_seconds_sums_the_busy_columns_of_this_process_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    tick = os.sysconf("SC_CLK_TCK")
    # user, nice, system, irq, softirq and steal; not idle or iowait
    assert contention.busy_seconds(str(stat), {0}) == pytest.approx(25 / tick)
    assert contention.busy_seconds(str(stat), {1}) == pytest.approx(36 / tick)
    assert contention.busy_seconds(str(stat), {0, 1}) == pytest.approx(61 / tick)
    assert math.isnan(contention.busy_seconds(str(tmp_path / "missing"), {0}))


@pytest.mark.skipif(math.isnan(contention.busy_seconds()), reason="no /proc/stat here")
def test_a_competing_process_is_seen_and_a_few_milliseconds_read_nothing():
    with contention.Others() as others:
        time.sleep(0.002)
    assert others.cores == 0.0  # under the counters' resolution
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        busy = contention.others_now(0.5)
    finally:
        spinner.kill()
        spinner.wait(timeout=10)
    assert busy >= 0.5
