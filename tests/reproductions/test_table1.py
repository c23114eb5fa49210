"""reproductions/table1.py: every config composes, and the smoke scale runs end to end."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from .helpers import REPRO, compose_config, load_script

SMOKE = ["scale=smoke", "device=cpu", "progress=false"]


def test_default_is_the_papers_whole_grid():
    cfg = compose_config("table1")
    paper = pd.read_csv(REPRO / "paper" / "table1.csv")
    assert sorted(cfg.scale.features) == sorted(paper["features"].unique())
    assert sorted(cfg.scale.seq_lens) == sorted(paper["seq_len"].unique())


def test_schema_rejects_a_wrong_type():
    with pytest.raises(Exception, match="rounds"):
        compose_config("table1", ["scale.rounds=many"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error(tmp_path):
    cfg = compose_config("table1", [*SMOKE, "device=cuda", f"results_dir={tmp_path}"])
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        load_script("table1").run(cfg)


def test_smoke_run_writes_every_file(tmp_path):
    cfg = compose_config("table1", [*SMOKE, f"results_dir={tmp_path}"])
    md = load_script("table1").run(cfg)
    out = md.parent
    assert sorted(p.name for p in out.iterdir()) == [
        "table1.csv", "table1.json", "table1.md", "table1.png"]

    raw = pd.read_csv(out / "table1.csv")
    assert {"features", "seq_len", "batch", "method", "protocol", "round", "seconds",
            "status"} <= set(raw.columns)
    ok = raw[raw["status"].str.startswith("ok")]
    assert set(ok["method"]) == {"cpu_serial", "cpu_parallel", "torch", "auto"}
    assert set(zip(ok["features"], ok["seq_len"])) == {(4, 16), (4, 256)}
    assert (ok["seconds"] > 0).all()

    text = md.read_text()
    assert "paper speedup" in text and "cpu_parallel / paper" in text
    assert "(CPU results)" in text and "torch 2." in text and "commit:" in text
    # The paper's published speedups appear beside ours: 0.06 at m = 4, T = 16 (its Table 1).
    after = text.splitlines()[text.splitlines().index("## Kernel speedup beside the paper's"):]
    lines = list(itertools.takewhile(lambda line: line.startswith("|"),
                                     itertools.dropwhile(lambda s: not s.startswith("|"), after)))
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    paper = {(r[header.index("m")], r[header.index("T")]): r[header.index("paper speedup")]
             for r in rows if len(r) == len(header)}
    assert paper[("4", "16")] == "0.06" and paper[("4", "256")] == "0.22", paper

    meta = json.loads((out / "table1.json").read_text())
    assert meta["config"]["scale"]["features"] == [4]
    assert meta["machine"]["torch_version"] == torch.__version__
    assert (out / "table1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_joblib_sweep_writes_one_result_per_job(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    cmd = [sys.executable, str(REPRO / "table1.py"), "-m", "hydra/launcher=joblib",
           "hydra.launcher.n_jobs=2", *SMOKE, "scale.seq_lens=[16]", f"results_dir={tmp_path}",
           "seed=0,1", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    machine_dirs = [p for p in tmp_path.iterdir() if p.name != "multirun"]
    assert len(machine_dirs) == 1
    written = sorted(p.name for p in machine_dirs[0].glob("*.csv"))
    assert len(written) == 2, written
    assert written[0].endswith(",seed=0.csv") and written[1].endswith(",seed=1.csv")
    assert "results_dir" not in written[0] and "progress" not in written[0]


def test_interleaved_rounds_start_one_method_later(monkeypatch):
    from plrnn.repro import measure

    seen = []
    monkeypatch.setattr(measure, "median_time", lambda fn, *a, **kw: seen.append(fn()) or 1.0)
    times = measure.interleaved({k: (lambda k=k: k) for k in "abc"}, rounds=4, min_run_time=0.0,
                                between_rounds=lambda: seen.append("|"))
    assert times == {k: [1.0] * 4 for k in "abc"}  # calls too long for blocks: one median each
    # the first three: block estimates; between_rounds before each round and after the last
    assert "".join(seen) == "abc" + "|abc" "|bca" "|cab" "|abc|"


def test_each_cell_says_where_the_threads_were(monkeypatch):
    table1 = load_script("table1")
    trips = iter([60.0, 300.0, 62.0, 61.0])
    monkeypatch.setattr(table1, "thread_round_trip_ns", lambda: next(trips))
    monkeypatch.setattr(table1, "interleaved", lambda fns, rounds, between_rounds, **kw: (
        [between_rounds() for _ in range(rounds + 1)], {n: [1.0] * rounds for n in fns})[1])
    cfg = compose_config("table1", ["scale.rounds=3", "seed=0"])
    plan = table1.PLANS["cpu"]
    available = {n: (True, "") for n in plan["methods"]}
    rows = table1.measure_cell(plan, available, 16, 4, cfg, torch.device("cpu"))
    # each round: the slower of the trips before and after it
    assert [r["round_trip_ns"] for r in rows if r["method"] == "cpu_serial"] == [300, 300, 62]
    summary = table1.summarize(pd.DataFrame(rows), plan)
    assert summary.loc[0, "round trip ns"] == "62-300"
    assert table1._spread([60.0, 66.0]) == "60" and table1._spread([]) == ""


def test_interleaved_short_calls_take_turns_in_blocks(monkeypatch):
    from plrnn.bench import timing
    from plrnn.bench.timing import calls_per_block
    from plrnn.repro import measure

    blocks = []
    per_call = {"a": 1e-6, "b": 2e-6, "slow": 1.0}
    monkeypatch.setattr(measure, "median_time", lambda fn, *a, **kw: per_call[fn()])

    def fake_block(fn, number):
        blocks.append((fn(), number))
        return 0.01 / 2 / number  # two blocks fill min_run_time = 0.01

    monkeypatch.setattr(timing, "block_time", fake_block)
    times = measure.interleaved({k: (lambda k=k: k) for k in per_call}, rounds=2,
                                min_run_time=0.01)
    a, b = calls_per_block(1e-6), calls_per_block(2e-6)
    assert a == 2 * b and calls_per_block(1.0) is None
    # Round 0 starts with a, round 1 with b; the slow method takes one median per round instead.
    assert blocks == [("a", a), ("b", b), ("a", a), ("b", b),
                      ("b", b), ("a", a), ("b", b), ("a", a)]
    assert times["a"] == [pytest.approx(0.005 / a)] * 2 and times["slow"] == [1.0, 1.0]
