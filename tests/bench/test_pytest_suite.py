"""benchmarks/pytest_suite as its docs run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from plrnn.bench import grid

from .support import ROOT


def test_benchmark_json_into_a_folder_that_does_not_exist_yet(tmp_path):
    # The documented `--benchmark-json=.benchmarks/plrnn.json` on a fresh clone, where
    # .benchmarks/ (git-ignored) is not there: one tiny copy probe, its JSON must be written.
    out = tmp_path / "not-yet" / "plrnn.json"
    env = {**os.environ, grid.ENV_VAR: "tiny"}
    env.pop("PLRNN_BENCH_ALLOCATOR", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/pytest_suite/test_kernels.py::test_copy",
         "-q", "-p", "no:cacheprovider", f"--benchmark-json={out}",
         "--benchmark-min-rounds=1", "--benchmark-max-time=0", "--benchmark-warmup=off"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert [b["extra_info"]["suite"] for b in saved["benchmarks"]] == ["copy"]
    # What users pay by default: glibc malloc untouched, and the result says so.
    assert saved["benchmarks"][0]["extra_info"]["allocator"] == "default"
    assert saved["machine_info"]["plrnn_grid"] == "tiny"
