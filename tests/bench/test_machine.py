"""Machine names: a CPU's results and asv history are kept per microarchitecture, because cloud
VMs report the same model name ('Intel Xeon Processor', 'AMD EPYC') across generations."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from plrnn.bench import machine

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "ident, uarch",
    [
        (("GenuineIntel", 6, 85, 4), "skylake-sp"),
        (("GenuineIntel", 6, 85, 7), "cascadelake"),
        (("GenuineIntel", 6, 143, 8), "sapphirerapids"),
        (("AuthenticAMD", 23, 49, 0), "zen2"),
        (("AuthenticAMD", 25, 1, 1), "zen3"),
        (("AuthenticAMD", 25, 17, 1), "zen4"),
        (("GenuineIntel", 6, 250, 0), "f6m250"),
        (("AuthenticAMD", 30, 1, 0), "f30m1"),
        (None, None),
    ],
)
def test_microarchitecture_from_cpuid(monkeypatch, ident, uarch):
    monkeypatch.setattr(machine, "_cpuid", lambda: ident)
    monkeypatch.setattr(machine, "_cpu_flags", lambda: {"fpu", "avx2", "avx512f"})
    assert machine.microarchitecture() == uarch


@pytest.mark.parametrize(
    "flags, uarch",
    [
        ({"avx512f", "amx_tile", "amx_bf16"}, "sapphirerapids"),
        ({"avx512f", "amx_tile", "amx_fp16"}, "graniterapids"),
        ({"avx512f"}, "f6m167"),
    ],
)
def test_a_masked_intel_model_is_told_by_its_instructions(monkeypatch, flags, uarch):
    # A KVM guest on Sapphire Rapids was seen reporting model 167 (Rocket Lake, no AMX).
    monkeypatch.setattr(machine, "_cpuid", lambda: ("GenuineIntel", 6, 167, 8))
    monkeypatch.setattr(machine, "_cpu_flags", lambda: flags)
    assert machine.microarchitecture() == uarch


def test_machine_name_tells_generations_apart(monkeypatch):
    monkeypatch.setattr(machine, "cpu_model", lambda: "Intel(R) Xeon(R) Processor @ 2.00GHz")
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(machine, "_cpu_flags", lambda: set())
    names = set()
    for model in (85, 143):
        monkeypatch.setattr(machine, "_cpuid", lambda m=model: ("GenuineIntel", 6, m, 4))
        names.add(machine.machine_name("cpu"))
    assert names == {"cpu-intel-xeon-skylake-sp-2c", "cpu-intel-xeon-sapphirerapids-2c"}
    monkeypatch.setattr(machine, "_cpuid", lambda: None)
    assert machine.machine_name("cpu") == "cpu-intel-xeon-2c"


def test_this_machine_has_a_name():
    name = machine.machine_name("cpu")
    assert name.startswith("cpu-") and name.endswith("c") and " " not in name


def test_dirty_means_a_change_anywhere_in_the_checkout_but_results(monkeypatch, tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    package = tmp_path / "src" / "plrnn" / "bench"
    package.mkdir(parents=True)
    for path in (package / "machine.py", tmp_path / "reproductions.py",
                 tmp_path / "results" / "table.md"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("0\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    monkeypatch.setattr(machine, "_REPO_DIR", package)
    assert machine.git_commit()["dirty"] is False
    (tmp_path / "results" / "table.md").write_text("1\n")  # outputs do not count
    assert machine.git_commit()["dirty"] is False
    (tmp_path / "reproductions.py").write_text("1\n")  # code outside the package does
    assert machine.git_commit()["dirty"] is True


def test_a_commit_named_in_the_environment_wins(monkeypatch):
    monkeypatch.setenv("PLRNN_GIT_COMMIT", "0123abc")
    assert machine.git_commit() == {"commit": "0123abc", "dirty": None}
    monkeypatch.setenv("PLRNN_GIT_COMMIT", "")
    assert machine.git_commit()["commit"] != ""


def test_steal_seconds_reads_the_steal_column(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  740397 0 71180 931873 955 0 169 4805 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert machine.steal_seconds(str(stat)) == pytest.approx(4805 / os.sysconf("SC_CLK_TCK"))
    stat.write_text("cpu  1 2 3\n")
    assert math.isnan(machine.steal_seconds(str(stat)))
    assert math.isnan(machine.steal_seconds(str(tmp_path / "missing")))



def test_asv_learns_the_whole_machine_not_its_name_alone(tmp_path):
    """asv 0.6's `asv machine --yes` records the name alone; --register-asv gives it the rest."""
    env = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "plrnn.bench.machine", "--register-asv"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    name = done.stdout.strip().splitlines()[-1]
    assert name == machine.machine_name()
    described = json.loads((tmp_path / ".asv-machine.json").read_text())[name]
    assert described["cpu"] and described["arch"] == platform.machine()
    assert int(described["num_cpu"]) == os.cpu_count() and int(described["ram"]) > 2**28
    assert described["os"].startswith(platform.system())
