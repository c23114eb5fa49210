"""reproductions/context_parallel.py end to end, as its header command runs it: the driver
launches torchrun per rank count and writes the artifact from every rank's rows."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd

from .helpers import REPRO, load_script


def test_smoke_run_over_one_and_two_ranks(tmp_path):
    cmd = [sys.executable, str(REPRO / "context_parallel.py"), "scale=smoke", "ranks=[1,2]",
           "device=cpu", f"results_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    subprocess.run(cmd, check=True, timeout=300, cwd=tmp_path)  # a hung rank fails the test
    [out] = [p for p in tmp_path.iterdir() if p.name.startswith("cpu-")]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"context_parallel.{ext}" for ext in ("csv", "json", "md", "png"))
    raw = pd.read_csv(out / "context_parallel.csv")
    assert set(raw["ranks"]) == {1, 2}
    assert sorted(raw[raw.ranks == 2]["rank"].unique()) == [0, 1]
    op = raw[raw["case"] == "op"]
    assert (op[op.ranks == 1]["comm_bytes"] == 0).all()
    # Two ranks exchange 2 x channels float32 numbers each way per forward + backward.
    assert (op[op.ranks == 2]["comm_bytes"] == 2 * 2 * 3 * 4).all()
    assert (op["err_h"] < 1e-5).all() and (op["err_grad"] < 1e-5).all()
    model = raw[raw["case"] != "op"]
    assert model["err_grad"].dropna().lt(1e-4).all() and model["err_grad"].notna().any()
    text = (out / "context_parallel.md").read_text()
    assert "(CPU results)" in text and "context_parallel.py scale=smoke" in text


def test_launcher_env_runs_inside_a_job_someone_else_launched(tmp_path):
    """launcher=env under an outer torchrun (as under srun or Hydra's submitit launcher): rank 0
    gathers both ranks' rows and writes the artifact."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(REPRO / "context_parallel.py"), "launcher=env", "scale=smoke", "device=cpu",
           f"results_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    subprocess.run(cmd, check=True, timeout=300, cwd=tmp_path)
    [out] = [p for p in tmp_path.iterdir() if p.name.startswith("cpu-")]
    raw = pd.read_csv(out / "context_parallel.csv")
    assert set(raw["ranks"]) == {2} and sorted(raw["rank"].unique()) == [0, 1]


def test_a_process_started_alone_is_a_world_of_one(monkeypatch):
    script = load_script("context_parallel")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(var, "")  # so that teardown restores what rank_environment sets
        monkeypatch.delenv(var)
    script.rank_environment()
    assert os.environ["RANK"] == "0" and os.environ["WORLD_SIZE"] == "1"
