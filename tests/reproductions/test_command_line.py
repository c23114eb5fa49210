"""What the scripts show on the command line: a refused value as one line, no progress bar where
the output is not a terminal, and the jobs of a multirun kept apart."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from hydra.types import RunMode

from plrnn.repro import artifacts

from .helpers import REPRO, compose_config, load_script

SMOKE = ["scale=smoke", "device=cpu", "progress=false"]

# (script, overrides, the one line on stderr after "<script>.py: error: ")
ONE_LINE = [
    ("table1", ["scale.rounds=-1"], "scale.rounds must be a positive integer; got -1"),
    ("table2", ["recurrence.serial=bogus"], "recurrence.serial must be one of 'auto', "),
    ("table3", ["backend=bogus"], "backend must be one of 'auto', "),
    ("figure2", [], "no table3 logs in "),
]
if not torch.cuda.is_available():
    ONE_LINE.append(("figure1", ["device=cuda"], "device=cuda was requested but torch sees no"))


@pytest.mark.parametrize(("script", "overrides", "message"), ONE_LINE,
                         ids=lambda v: ",".join(v) if isinstance(v, list) else None)
def test_a_refused_value_is_one_line_on_stderr(script, overrides, message, tmp_path):
    cmd = [sys.executable, str(REPRO / f"{script}.py"), "scale=smoke", *overrides,
           "progress=false", f"results_dir={tmp_path / 'results'}",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}.py: error: {message}"), lines
    assert not (tmp_path / "results").exists()  # nothing launched, nothing written


def test_no_progress_bar_where_stderr_is_not_a_terminal(tmp_path, capsys):
    cfg = compose_config("table1", ["scale=smoke", "device=cpu", f"results_dir={tmp_path}"])
    assert cfg.progress  # the default: a bar on a terminal
    load_script("table1").run(cfg)
    assert "table1:" not in capsys.readouterr().err  # no bar redrawn into a log or a pipe


def test_the_bar_shows_on_a_terminal_unless_turned_off(monkeypatch):
    from plrnn.repro.config import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for enabled, shown in ((True, True), (False, False)):
        err = Terminal()
        monkeypatch.setattr(sys, "stderr", err)
        assert list(progress(range(3), SimpleNamespace(progress=enabled), desc="bar")) == [0, 1, 2]
        assert ("bar:" in err.getvalue()) is shown


@pytest.mark.parametrize("tag", ["", "v2"])
def test_each_job_of_a_table3_multirun_keeps_its_own_runs(tmp_path, monkeypatch, tag):
    """Two jobs of `table3.py -m ...` shared results/<machine>/table3_runs/: the second replaced
    the first's runs (and with the joblib launcher removed its staging folder mid-run). With a
    tag the job's overrides follow it, once, in Figure 2's files too."""
    job = SimpleNamespace(mode=RunMode.MULTIRUN, job=SimpleNamespace(override_dirname="seed=1"),
                          overrides=SimpleNamespace(task=["seed=1"]))
    monkeypatch.setattr(artifacts, "_hydra", lambda: job)
    cfg = compose_config("table3", [*SMOKE, f"results_dir={tmp_path}", "seed=1", f"tag={tag}",
                                    "scale.tune=false", "scale.models=[gilr_lstm]",
                                    "scale.compare.seeds=1"])
    md = load_script("table3").run(cfg)
    out = md.parent
    full = f"{tag}-seed=1"
    assert md.name == f"table3{full}.md"
    assert not (out / f"table3_runs{tag}").exists()
    runs = out / f"table3_runs{full}"
    assert [p.name for p in (runs / "compare").glob("*.json")] == [
        "gilr_lstm_T8_h64_lr0.001_fbNone_seed1.json"]
    assert json.loads((out / f"table3{full}.json").read_text())["runs"] == runs.name
    assert json.loads((out / f"figure2{full}.json").read_text())["logs"] == f"{runs.name}/compare"
    assert f"tag: {full}" in (runs / "config.yaml").read_text()  # stage=summary finds them again


def test_a_sweep_runs_its_other_jobs_past_a_refused_one(tmp_path):
    """In a multirun the refused job prints its line and fails as any failed job does: Hydra
    still runs the rest of the sweep and ends with a non-zero status."""
    cmd = [sys.executable, str(REPRO / "table1.py"), "-m", *SMOKE, "scale.seq_lens=[16]",
           "scale.rounds=-1,1", f"results_dir={tmp_path / 'results'}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "table1.py: error: scale.rounds must be a positive integer; got -1" in done.stderr
    written = [p.name for p in (tmp_path / "results").glob("*/*.csv")]
    assert len(written) == 1 and "scale.rounds=1" in written[0], written


def test_a_tag_or_a_thread_count_does_not_merge_the_jobs_of_a_sweep(tmp_path):
    """`-m tag=x ...` gave every job the file name table1x.csv, and device.threads was left out
    of the names (it changes every timing), so each job overwrote the one before."""
    cmd = [sys.executable, str(REPRO / "table1.py"), "-m", *SMOKE, "scale.seq_lens=[16]",
           "tag=x", "device.threads=1,2", f"results_dir={tmp_path / 'results'}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (tmp_path / "results").glob("*/*.csv"))
    assert len(written) == 2 and all(n.startswith("table1x-") for n in written), written
    assert "device.threads=1," in written[0] and "device.threads=2," in written[1], written


def test_stage_summary_of_a_table3_sweep_finds_its_runs(tmp_path):
    """`-m ... stage=summary` named the runs folder with stage=summary in it, so it found none."""
    common = [sys.executable, str(REPRO / "table3.py"), "-m", *SMOKE, "scale.tune=false",
              "scale.models=[gilr_lstm]", "scale.compare.seeds=1", "seed=3",
              f"results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    for stage in ("all", "summary"):
        done = subprocess.run([*common, f"stage={stage}"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    (out,) = (tmp_path / "results").iterdir()
    assert sorted(p.name for p in out.glob("table3*.md")) == [
        "table3-device=cpu,scale.compare.seeds=1,scale.models=_gilr_lstm_,scale.tune=False,"
        "scale=smoke,seed=3.md"]
