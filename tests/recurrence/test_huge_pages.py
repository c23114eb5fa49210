"""The C++ kernels ask Linux for transparent huge pages on the 2 MiB-aligned interior of each large
fresh output (forward, both gradients, packed batches), so a user's loop pays one page fault per
2 MiB instead of one per 4 KiB; PLRNN_HUGE_PAGES=0 turns that off.

Each case runs in a fresh process: a 64 MiB output is above glibc's largest mmap threshold, so
there it is always a fresh mapping whose flags (VmFlags "hg" in /proc/self/smaps) say whether the
advice was given, whatever the test process allocated before.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(),
    reason="needs Linux with transparent huge pages",
)

CHILD = r"""
import json, sys, torch
import plrnn
from plrnn.recurrence import reference

HUGE = 2 << 20

def advised(t):
    address = (t.data_ptr() + HUGE - 1) & ~(HUGE - 1)  # the first huge page inside t
    assert address + HUGE <= t.data_ptr() + t.numel() * t.element_size()
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=1)[0]
            if not first.endswith(":"):
                low, high = (int(v, 16) for v in first.split("-"))
                inside = low <= address < high
            elif inside and first == "VmFlags:":
                return "hg" in line.split()[1:]
    raise AssertionError("no mapping holds the tensor")

torch.manual_seed(0)
T, C = 2048, 8192  # 64 MiB in fp32
a = torch.rand(T, C).requires_grad_()
x = torch.randn(T, C).requires_grad_()
flags, errors = {}, {}
for backend in ("cpu_serial", "cpu_parallel"):
    h = plrnn.linear_recurrence(a, x, backend=backend)
    ga, gx = torch.autograd.grad(h, (a, x), torch.ones_like(h))
    flags[backend] = [advised(h), advised(ga), advised(gx)]
    truth = reference.serial(a.detach().double(), x.detach().double())
    errors[backend] = ((h.detach().double() - truth).abs().max() / truth.abs().max()).item()
    del h, ga, gx
packed = plrnn.linear_recurrence(
    a.detach(), x.detach(), cu_seqlens=torch.tensor([0, 1000, T]), backend="cpu_serial"
)
flags["packed"] = [advised(packed)]
print(json.dumps({"flags": flags, "errors": errors}))
"""


def run_child(**env) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_large_fresh_outputs_are_advised_for_huge_pages_and_stay_exact():
    got = run_child(PLRNN_HUGE_PAGES="1")
    assert got["flags"] == {
        "cpu_serial": [True, True, True],
        "cpu_parallel": [True, True, True],
        "packed": [True],
    }
    assert max(got["errors"].values()) < 1e-5, got["errors"]


def test_huge_pages_can_be_turned_off():
    got = run_child(PLRNN_HUGE_PAGES="0")
    assert got["flags"] == {
        "cpu_serial": [False, False, False],
        "cpu_parallel": [False, False, False],
        "packed": [False],
    }
