"""Nonsensical numbers in a script's config: one error naming the key, before anything is measured.

Each case runs the script's own `run`, so the error has to come before any timing, training or
launch: the results folder stays empty and each case takes well under a second.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from plrnn.repro.config import require

from .helpers import REPRO, compose_config, load_script

SMOKE = ["scale=smoke", "device=cpu", "progress=false"]

# (script, overrides, what the message must say)
CASES = [
    ("table1", ["scale.seq_lens=[-16]"], "scale.seq_lens must be a non-empty list, each item a "
                                         r"positive integer; got \[-16\]"),
    ("table1", ["scale.seq_lens=[0]"], r"scale.seq_lens .* got \[0\]"),
    ("table1", ["scale.rounds=0"], "scale.rounds must be a positive integer; got 0"),
    ("table1", ["scale.features=[0]"], "scale.features"),
    ("table1", ["scale.features=[]"], r"scale.features .* got \[\]"),
    ("table1", ["scale.batch=0"], "scale.batch must be a positive integer"),
    ("table1", ["scale.min_run_time=0"], "scale.min_run_time must be a positive number; got 0.0"),
    ("table1", ["device.threads=0"], "device.threads must be a positive integer"),
    ("table2", ["scale.seq_lens=[-4]"], r"scale.seq_lens .* got \[-4\]"),
    ("table2", ["scale.seq_lens=[128]"], r"scale.steps must be at least .* scale.seq_lens=\[128\]"),
    # Only the shortest length was checked: T = 128 was dropped from the tables without a word.
    ("table2", ["scale.seq_lens=[4,128]"], r"the longest of scale.seq_lens, .*\[4, 128\]"),
    ("table2", ["variant.passes=[trian]"], "variant.passes .* one of 'train', 'forward'"),
    ("table2", ["scale.architectures=['QRNN(x)']"], r"unknown architecture 'QRNN\(x\)'"),
    ("table2", ["scale.architectures=['SRU','QRNN(0)']"], "window must be >= 1, got 0"),
    ("table2", ["scale.architectures=[]"], "scale.architectures must name at least one"),
    ("throughput_heatmap", ["scale.seq_lens=[-4]"], r"scale.seq_lens .* got \[-4\]"),
    ("throughput_heatmap", ["step=trian"],
     "step must be one of 'forward', 'train'; got 'trian'"),
    ("throughput_heatmap", ["scale.max_steps=1"], "scale.max_steps must be at least"),
    ("context_parallel", ["ranks=[0]"], r"ranks must be .* positive integer; got \[0\]"),
    ("context_parallel", ["scale.op_lengths=[-5]", "ranks=[1]"], "scale.op_lengths"),
    ("context_parallel", ["scale.model_T=-1"], "scale.model_T must be an integer >= 0"),
    ("context_parallel", ["scale.op_lengths=[1]", "ranks=[2]"],
     "must be at least the number of ranks, 2"),
    ("table3", ["scale.n_jobs=0"], "scale.n_jobs must be a positive integer; got 0"),
    ("table3", ["scale.sweep.lr=[-0.001]"], r"scale.sweep.lr .* positive number; got \[-0.001\]"),
    ("table3", ["scale.compare.seeds=0"], "scale.compare.seeds"),
    ("table3", ["scale.lstm.clip=0"], "scale.lstm.clip"),
    ("table3", ["scale.models=[gru]"], "scale.models .* one of 'gilr_lstm', 'lstm'"),
    ("table3", ["scale.figure2_scale=huge"], "scale.figure2_scale must be one of .*'smoke'"),
    # Refused before training, not when Figure 2 is drawn at the end.
    ("table3", ["scale.figure2_scale=paper"], r"scale.figure2_scale=paper smooths with \[.*\]: "
                                               "one window, or one per compared length"),
    ("figure1", ["scale.seq_len=1"], "scale.seq_len must be an integer >= 2; got 1"),
    ("figure1", ["scale.hidden=0"], "scale.hidden"),
    ("figure2", ["scale.grid_points=1"], "scale.grid_points must be an integer >= 2"),
    ("figure2", ["scale.smoothing=[0]"], "scale.smoothing"),
    # Backends, choices and lengths that used to fail inside torch, a layer or every job
    # (KeyError, RuntimeError, a traceback per training run, a failed torchrun launch).
    ("table2", ["recurrence.serial=bogus"],
     "recurrence.serial must be one of 'auto', .*'cpu_serial'.*; got 'bogus'"),
    ("table2", ["recurrence.parallel=cuda_parallel"],
     "recurrence.parallel=cuda_parallel does not run on cpu"),
    ("table2", ["variant.qrnn_taps=bogus"], "variant.qrnn_taps must be one of 'full', 'authors'"),
    ("throughput_heatmap", ["backend=bogus"], "backend must be one of 'auto', .*; got 'bogus'"),
    ("throughput_heatmap", ["backend=cuda_serial"], "backend=cuda_serial does not run on cpu"),
    ("table3", ["backend=bogus"], "backend must be one of 'auto', .*; got 'bogus'"),
    ("table3", ["dtype=float99"], "dtype must be one of 'float32', 'float64', 'bfloat16'"),
    ("table3", ["scale.paper_settings=true"], r"scale.compare.seq_lens must be among the paper's"),
    ("context_parallel", ["backend=bogus", "ranks=[1]"], "backend must be one of 'auto'"),
    ("context_parallel", ["launcher=bogus", "ranks=[1]"],
     "launcher must be one of 'torchrun', 'env'; got 'bogus'"),
    ("figure1", ["scale.surrogate=bogus"], "scale.surrogate must be one of 'previous_step'"),
    ("figure1", ["scale.paper_settings=true"], r"scale.seq_len must be one of the paper's lengths"),
]


@pytest.mark.parametrize(("script", "overrides", "message"), CASES,
                         ids=lambda v: ",".join(v) if isinstance(v, list) else None)
def test_bad_value_is_refused_before_measuring(script, overrides, message, tmp_path):
    cfg = compose_config(script, [*SMOKE, f"results_dir={tmp_path}", *overrides])
    with pytest.raises(ValueError, match=message):
        load_script(script).run(cfg)
    assert not any(tmp_path.iterdir())  # nothing measured, nothing written


@pytest.mark.parametrize("overrides", [["ranks=[0]"], ["launcher=env", "scale.op_lengths=[-5]"]],
                         ids=lambda v: ",".join(v))
def test_context_parallel_command_names_the_key(overrides, tmp_path):
    """As run from the shell: before any torchrun launch (ranks=[0] used to launch
    `--nproc-per-node=0`), and in a rank of a job launched elsewhere (launcher=env)."""
    cmd = [sys.executable, str(REPRO / "context_parallel.py"), *SMOKE, *overrides,
           f"results_dir={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    key = overrides[-1].split("=")[0]
    assert f"{key} must be a non-empty list, each item a positive integer" in done.stderr
    assert "torch.distributed.run" not in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()


def test_require_lets_through_good_values_and_unset_optional_keys():
    cfg = OmegaConf.create({"a": 1, "b": [2, 3], "c": 0.5, "d": None, "e": 0, "f": "x"})
    require(cfg, "a", "b", "c", "d")
    require(cfg, "e", minimum=0)
    require(cfg, "f", choices=("x", "y"))


def test_require_names_a_key_the_script_misspelt():
    with pytest.raises(KeyError, match="scale.rouns"):
        require(OmegaConf.create({"scale": {"rounds": 1}}), "scale.rouns")


def test_require_refuses_nan():
    with pytest.raises(ValueError, match="c must be a positive number; got nan"):
        require(OmegaConf.create({"c": float("nan")}), "c")
