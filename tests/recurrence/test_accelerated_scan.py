"""Our op beside accelerated-scan, the GPU benchmark's baseline (plrnn.bench.gpu).

Its Triton kernel, accelerated_scan.scalar ((B, C, T) layout, h[-1] = 0), runs on the CPU under
Triton's interpreter. It and our cpu_serial must both meet the float64 reference, forward and
both gradients, by the suite's low-precision rule: then the two compute the same recurrence with
the same gradient convention, and the benchmark compares like with like. The benchmark's own
path through the package (import, layout, validation) is run on it too.

The kernel calls Triton library functions (tl.sum), which the interpreter can run only if
triton.language was first imported with TRITON_INTERPRET=1; this test process imported it
before, so the checks run in one fresh interpreter process.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plrnn
from plrnn.recurrence import reference

from .helpers import FLOOR_ULPS, cast, grads_of, make_inputs, max_err, scale_of, seed_for

ROOT = Path(__file__).resolve().parents[2]
# T across accelerated_scan.scalar's 2048-step block: one step, a partial block, just past one
# block and just past two.
SHAPES = [(1, 1, 1), (2, 3, 5), (1, 3, 2049), (2, 1, 4099)]
DECAY_KINDS = ["uniform", "near_one", "near_zero"]


def _serial(a, x):
    return reference.serial(a, x, None, False)


def failures_against_reference(scan, shape, decay_kind) -> list[str]:
    """Both scans (theirs through its (B, C, T) layout, cpu_serial) against the float64 truth."""
    B, C, T = shape

    def theirs(a, x):
        return scan(*(t.permute(1, 2, 0).contiguous() for t in (a, x))).permute(2, 0, 1)

    def ours(a, x):
        return plrnn.linear_recurrence(a, x, backend="cpu_serial")

    seed = seed_for("accelerated_scan", shape, decay_kind)
    a, x, _ = make_inputs(T, (B, C), decay_kind, seed=seed, dtype=torch.float32)
    upstream = torch.randn(T, B, C, generator=torch.Generator().manual_seed(seed))
    truth = grads_of(_serial, cast((a, x), torch.float64), upstream.double())
    baseline = grads_of(_serial, (a, x), upstream)  # the same math in float32
    eps = torch.finfo(torch.float32).eps
    failures = []
    for name, fn in (("accelerated_scan.scalar", theirs), ("cpu_serial", ours)):
        got = grads_of(fn, (a, x), upstream)
        for what, out, want, base in zip(
            ("h", "d decays", "d impulses"),
            (got[0], *got[1]),
            (truth[0], *truth[1]),
            (baseline[0], *baseline[1]),
        ):
            allowed = 2 * max_err(base, want) + FLOOR_ULPS * eps * scale_of(want)
            err = max_err(out, want)
            if not err <= allowed:
                failures.append(f"{name} {what}: max error {err:.3e} > allowed {allowed:.3e}")
    return failures


def through_the_benchmark() -> dict:
    """One forward+backward case of plrnn.bench.gpu on the real package, on the CPU, untimed."""
    from plrnn.bench import gpu

    gpu.DEVICE = "cpu"
    gpu.time_calls = lambda call: [1e-3] * 3  # the interpreter's speed means nothing
    case = gpu.Case("accelerated_scan", "accelerated_scan.scalar", "fp32", gpu.FWD_BWD, 300, 2, 3)
    return gpu.run_case(case, copy_bps=1e9, seed=0)


IN_THE_INTERPRETER = """
import os
os.environ["TRITON_INTERPRET"] = "1"
import triton.language  # first, so that Triton's library is wrapped for the interpreter
import json
from accelerated_scan.scalar import scan
from tests.recurrence import test_accelerated_scan as t

result = {
    "cases": {f"{s}-{k}": t.failures_against_reference(scan, s, k)
              for s in t.SHAPES for k in t.DECAY_KINDS},
    "benchmark": t.through_the_benchmark(),
}
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def interpreted():
    for name in ("triton", "accelerated_scan"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    proc = subprocess.run(
        [sys.executable, "-c", IN_THE_INTERPRETER],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.parametrize("decay_kind", DECAY_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "BxCxT=" + "x".join(map(str, s)))
def test_accelerated_scan_and_ours_meet_the_reference(interpreted, shape, decay_kind):
    failures = interpreted["cases"][f"{shape}-{decay_kind}"]
    assert failures == [], "\n".join(failures)


def test_the_gpu_benchmark_reads_the_package_in_its_layout(interpreted):
    row = interpreted["benchmark"]
    assert row["status"] == "ok", row["status"]
    assert row["layout"] == "(B, C, T)" and row["rel_err"] < 1e-5


def test_the_check_catches_a_scan_that_is_one_step_late():
    def late(a, x):  # (B, C, T): h[t-1] where h[t] is due
        h = plrnn.linear_recurrence(a.permute(2, 0, 1), x.permute(2, 0, 1), backend="torch")
        return torch.cat([torch.zeros_like(h[:1]), h[:-1]]).permute(1, 2, 0)

    failures = failures_against_reference(late, (2, 3, 5), "uniform")
    assert [f.split(":")[0] for f in failures] == [
        "accelerated_scan.scalar h",
        "accelerated_scan.scalar d decays",
        "accelerated_scan.scalar d impulses",
    ]
