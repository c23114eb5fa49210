"""plrnn.bench.gpu, the benchmark a lent GPU machine runs (scripts/gpu_check.sh).

Device time is scarce, so the harness itself (inputs, layouts, validation, timing loop, the
CSV/Markdown/JSON it writes) is run here end to end on the CPU, with its DEVICE set to "cpu" and
fake accelerated-scan modules that stand in for the package's (B, C, T) API.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import types

import pytest
import torch

import plrnn
from plrnn.bench import gpu
from plrnn.bench.gpu import FWD, FWD_BWD, Case


def test_plan():
    cases = gpu.plan()
    assert [c.section for c in cases[:1]] == ["headline"]
    assert {c.section for c in cases} == {"headline", "accelerated_scan", "table1"}
    head = [c for c in cases if c.section == "headline"]
    assert {(c.T, c.batch, c.hidden) for c in head} == {(65536, 8, 1536)}
    assert {(c.dtype, c.pass_) for c in head} == {
        (d, p) for d in ("fp32", "bf16") for p in (FWD, FWD_BWD)
    }
    assert {c.backend for c in head if c.dtype == "fp32"} == set(gpu.PLRNN_BACKENDS)
    assert not any(c.backend in gpu.FP32_ONLY for c in cases if c.dtype != "fp32")
    table1 = {(c.hidden, c.T) for c in cases if c.section == "table1"}
    assert table1 == {(m, T) for m in (4, 32, 128) for T in (16, 256, 4096, 65536)}
    acc = [c for c in cases if c.section == "accelerated_scan"]
    assert not any(c.backend == "accelerated_scan.warp" and c.T > 65536 for c in acc)
    assert any(c.backend == "accelerated_scan.scalar" and c.T == 2**20 for c in acc)
    assert all(c.layout == "(B, C, T)" for c in acc if c.backend.startswith("accelerated"))
    # bytes per element: 3 (forward) or 8 (forward+backward) tensors at the storage size
    fp32_fwd = next(c for c in head if c.dtype == "fp32" and c.pass_ == FWD)
    bf16_fb = next(c for c in head if c.dtype == "bf16" and c.pass_ == FWD_BWD)
    assert fp32_fwd.bytes_moved() == 12 * 65536 * 8 * 1536
    assert bf16_fb.bytes_moved() == 16 * 65536 * 8 * 1536
    assert len(gpu.plan(quick=True)) < len(cases)


def test_dry_run_prints_the_plan():
    proc = subprocess.run(
        [sys.executable, "-m", "plrnn.bench.gpu", "--dry-run", "--sections", "table1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "plrnn.bench.gpu plan: 144 cases"
    assert len(lines) == 145 and all(line.split()[0] == "table1" for line in lines[1:])


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ("headlin", "--sections: unknown section headlin;"),
        ("table1,tabel1", "--sections: unknown section tabel1;"),
        (",", "--sections: none given;"),
    ],
)
def test_an_unknown_section_is_a_usage_error_naming_the_valid_ones(sections, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu.main(["--dry-run", "--sections", sections])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "subset of: headline, table1, accelerated_scan" in err


def test_sections_may_be_spaced_and_repeated(capsys):
    assert gpu.main(["--dry-run", "--sections", " table1 , table1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "plrnn.bench.gpu plan: 144 cases"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine-without-a-GPU path")
def test_without_a_gpu_it_says_so(capsys):
    assert gpu.main(["--out", "unused"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


# ------------------------------------------------------------------- the harness on the CPU


def _time_major_scan(gates, tokens):
    """accelerated_scan's contract: (B, C, T) in, (B, C, T) out, scanned along T."""
    h = plrnn.linear_recurrence(gates.permute(2, 0, 1), tokens.permute(2, 0, 1), backend="torch")
    return h.permute(1, 2, 0)


def _scan_along_channels(gates, tokens):
    """A plausible layout slip: the right shape, scanned along the wrong axis."""
    h = plrnn.linear_recurrence(gates.permute(1, 0, 2), tokens.permute(1, 0, 2), backend="torch")
    return h.permute(1, 0, 2)


def _broken_scan(gates, tokens):
    raise RuntimeError("kernel launch failed\nsecond line")


def _zero_gradient_scan(gates, tokens):
    """The right output, all-zero gradients (a backward that writes nothing)."""
    return _time_major_scan(gates.detach(), tokens.detach()) + 0 * (gates + tokens)


def _no_impulse_gradient_scan(gates, tokens):
    """The right output and dL/da, dL/dx zero."""
    return _time_major_scan(gates, tokens.detach()) + 0 * tokens


def _wrong_last_channel_scan(gates, tokens):
    """Right everywhere but in the last channel of the last batch entry (a tail block skipped)."""
    h = _time_major_scan(gates, tokens).clone()
    h[-1, -1] += 1.0
    return h


@pytest.fixture
def on_cpu(monkeypatch):
    """The harness on the CPU with accelerated_scan faked: .scalar right, .warp on the wrong axis."""
    monkeypatch.setattr(gpu, "DEVICE", "cpu")
    monkeypatch.setattr(gpu, "COPY_NUMEL", 2**16)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # triton: unavailable on CPU tensors
    package = types.ModuleType("accelerated_scan")
    modules = {
        "accelerated_scan": package,
        "accelerated_scan.scalar": types.SimpleNamespace(scan=_time_major_scan),
        "accelerated_scan.warp": types.SimpleNamespace(scan=_scan_along_channels),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return modules


CASES = [
    Case("headline", "torch", "fp32", FWD, 100, 2, 3),
    Case("headline", "torch", "bf16", FWD_BWD, 100, 2, 3),
    Case("headline", "cuda_parallel", "fp32", FWD, 100, 2, 3),
    Case("headline", "triton", "fp32", FWD_BWD, 100, 2, 3),
    Case("accelerated_scan", "accelerated_scan.scalar", "fp32", FWD_BWD, 64, 2, 3),
    Case("accelerated_scan", "accelerated_scan.warp", "fp32", FWD, 64, 2, 3),
    Case("accelerated_scan", "accelerated_scan.warp", "fp32", FWD, 100, 2, 3),
    Case("table1", "auto", "fp32", FWD_BWD, 17, 1, 4),
    Case("table1", "cpu_parallel", "fp32", FWD, 333, 1, 5),
]


def test_a_whole_run_writes_every_case_with_its_status(on_cpu, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu, "plan", lambda quick=False: list(CASES))
    assert gpu.main(["--out", str(tmp_path)]) == 0

    with (tmp_path / "gpu_bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["section"], r["backend"], r["T"]) for r in rows] == [
        (c.section, c.backend, str(c.T)) for c in CASES
    ]
    status = [r["status"] for r in rows]
    assert status[0] == status[1] == status[4] == status[7] == status[8] == "ok"
    assert status[2] == "skipped: cuda_parallel unavailable: CUDA kernel; inputs are on cpu"
    assert status[3].startswith("skipped: triton unavailable")
    assert status[5].startswith("wrong: relative error")  # scanned along the wrong axis
    assert status[6] == "skipped: accelerated_scan.warp takes T a power of two <= 65536"
    for row in rows:
        timed = row["status"] == "ok"
        assert bool(row["median_ms"]) == timed and bool(row["gb_per_s"]) == timed
        if timed:
            assert float(row["min_ms"]) <= float(row["median_ms"])
            assert float(row["frac_copy"]) > 0 and int(row["rounds"]) >= 3
            assert float(row["rel_err"]) <= gpu.VALIDATION_LIMIT[row["dtype"]]
    # fp32 through the torch backend matches the float64 loop to rounding
    assert float(rows[0]["rel_err"]) < 1e-5
    assert rows[4]["layout"] == "(B, C, T)" and rows[0]["layout"] == "(T, B, C)"

    md = (tmp_path / "gpu_bench.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("## ")] == [
        "## headline",
        "## accelerated_scan",
        "## table1",
    ]
    assert md.count("| accelerated_scan.warp |") == 2
    meta = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert meta["copy"]["numel"] == 2**16 and meta["copy"]["bytes_per_s"] > 0
    assert meta["config"]["sections"] == ["accelerated_scan", "headline", "table1"]
    assert "cases_not_run" not in meta["config"]
    out = capsys.readouterr().out
    assert out.count("] headline ") == 4 and "copy bandwidth:" in out


def test_a_spent_budget_stops_starting_cases_and_says_how_many_were_left(
    on_cpu, monkeypatch, tmp_path
):
    monkeypatch.setattr(gpu, "plan", lambda quick=False: list(CASES))
    assert gpu.main(["--out", str(tmp_path), "--budget-s", "0"]) == 0
    meta = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert meta["config"]["cases_not_run"] == len(CASES)
    assert not (tmp_path / "gpu_bench.csv").exists()
    assert (tmp_path / "gpu_bench.md").read_text().startswith("# GPU benchmark")


def test_a_killed_run_keeps_the_rows_it_finished(on_cpu, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu, "plan", lambda quick=False: list(CASES[:3]))
    real_run_case, calls = gpu.run_case, []

    def killed_at_the_third(case, copy_bps, seed):
        calls.append(case)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what the script's deadline sends
        return real_run_case(case, copy_bps, seed)

    monkeypatch.setattr(gpu, "run_case", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        gpu.main(["--out", str(tmp_path)])
    with (tmp_path / "gpu_bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["backend"] for r in rows] == ["torch", "torch"]
    assert json.loads((tmp_path / "gpu_bench.json").read_text())["copy"]["bytes_per_s"] > 0
    assert (tmp_path / "gpu_bench.md").read_text().count("| torch |") == 2


def test_a_sticky_cuda_error_ends_the_run_with_its_row_and_the_tables(
    on_cpu, monkeypatch, tmp_path
):
    """Once a kernel faults, every CUDA call fails, the cache release after the case too: that
    must neither lose the case's row nor the Markdown and JSON, and no case runs after it."""
    faulted = []

    def faulting_scan(gates, tokens):
        faulted.append(True)
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")

    def empty_cache():
        if faulted:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(
        sys.modules, "accelerated_scan.scalar", types.SimpleNamespace(scan=faulting_scan)
    )
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    monkeypatch.setattr(gpu, "plan", lambda quick=False: [CASES[0], CASES[4], CASES[1]])
    assert gpu.main(["--out", str(tmp_path)]) == 1

    with (tmp_path / "gpu_bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    sticky = (
        "error (sticky CUDA error: RuntimeError: CUDA error: an illegal memory access was "
        "encountered)"
    )
    assert [r["status"] for r in rows] == ["ok", sticky]
    assert rows[1]["median_ms"] == ""
    assert f"| {sticky} |" in (tmp_path / "gpu_bench.md").read_text()
    assert json.loads((tmp_path / "gpu_bench.json").read_text())["config"]["cases_not_run"] == 1


def test_a_failing_case_is_reported_and_the_run_goes_on(on_cpu, monkeypatch):
    monkeypatch.setitem(
        sys.modules, "accelerated_scan.scalar", types.SimpleNamespace(scan=_broken_scan)
    )
    case = Case("accelerated_scan", "accelerated_scan.scalar", "fp32", FWD, 64, 1, 4)
    row = gpu.run_case(case, copy_bps=1e9, seed=0)
    assert row["status"] == "error: RuntimeError: kernel launch failed"
    assert row["median_ms"] is None


def test_a_missing_package_is_a_skip(on_cpu, monkeypatch):
    monkeypatch.delitem(sys.modules, "accelerated_scan.scalar")
    monkeypatch.setitem(sys.modules, "accelerated_scan", None)  # import raises ImportError
    case = Case("accelerated_scan", "accelerated_scan.scalar", "fp32", FWD, 64, 1, 4)
    row = gpu.run_case(case, copy_bps=1e9, seed=0)
    assert row["status"].startswith("skipped: accelerated_scan.scalar unavailable: ")


@pytest.mark.parametrize("pass_", [FWD, FWD_BWD])
def test_validation_measures_the_error_of_what_was_computed(on_cpu, pass_):
    case = Case("headline", "torch", "fp32", pass_, 50, 2, 3)
    call, inputs, time_major = gpu.make_call(case, torch.Generator().manual_seed(0))
    errors = gpu.validate(call, inputs, time_major, case)
    assert list(errors) == (["h"] if pass_ == FWD else ["h", "dL/da", "dL/dx"])
    assert max(errors.values()) < 1e-5

    def off_by_one_step():
        got = call()
        h = got[0] if pass_ == FWD_BWD else got
        h = torch.cat([h[:1], h[:-1]])
        return (h, *got[1:]) if pass_ == FWD_BWD else h

    errors = gpu.validate(off_by_one_step, inputs, time_major, case)
    assert errors["h"] > 1e-3 and all(errors[g] < 1e-5 for g in errors if g != "h")


@pytest.mark.parametrize(
    ("scan", "wrong"),
    [(_zero_gradient_scan, "dL/da"), (_no_impulse_gradient_scan, "dL/dx")],
    ids=["zero_gradients", "no_impulse_gradient"],
)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_forward_backward_is_wrong_when_a_gradient_is(on_cpu, monkeypatch, scan, wrong, dtype):
    monkeypatch.setitem(sys.modules, "accelerated_scan.scalar", types.SimpleNamespace(scan=scan))
    case = Case("accelerated_scan", "accelerated_scan.scalar", dtype, FWD_BWD, 64, 2, 3)
    row = gpu.run_case(case, copy_bps=1e9, seed=0)
    assert row["status"].startswith("wrong: relative error ")
    assert row["status"].endswith(f" in {wrong}") and row["median_ms"] is None
    # the same case with its right gradients is timed
    monkeypatch.setitem(
        sys.modules, "accelerated_scan.scalar", types.SimpleNamespace(scan=_time_major_scan)
    )
    assert gpu.run_case(case, copy_bps=1e9, seed=0)["status"] == "ok"


def test_the_checked_channels_run_from_the_first_to_the_last():
    wide = gpu.checked_channels(12288).tolist()
    assert len(wide) == gpu.VALIDATION_CHANNELS and wide[0] == 0 and wide[-1] == 12287
    assert wide == sorted(set(wide))
    assert gpu.checked_channels(5).tolist() == [0, 1, 2, 3, 4]


def test_a_backend_wrong_only_in_its_last_channel_is_wrong(on_cpu, monkeypatch):
    monkeypatch.setitem(
        sys.modules,
        "accelerated_scan.scalar",
        types.SimpleNamespace(scan=_wrong_last_channel_scan),
    )
    case = Case("accelerated_scan", "accelerated_scan.scalar", "fp32", FWD, 64, 2, 100)
    assert case.channels > gpu.VALIDATION_CHANNELS  # the first 64 alone would pass it
    row = gpu.run_case(case, copy_bps=1e9, seed=0)
    assert row["status"].startswith("wrong: relative error ") and row["status"].endswith(" in h")


def test_time_calls_returns_per_call_seconds(on_cpu):
    calls = []
    times = gpu.time_calls(lambda: calls.append(1), round_ms=1.0, rounds=4, warmup=2)
    assert len(times) == 4 and all(0 < t < 0.01 for t in times)
    assert len(calls) > 2 + 1 + 4  # warm-up, the probe call, then rounds of repeated calls
