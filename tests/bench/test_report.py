"""plrnn.bench.report: numbers derived from raw times (GB/s, fraction of copy, speedups),
machine naming, both input formats, atomic writes and the command line."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from plrnn.bench import report, report_sources

MACHINE = "cpu-test-box-4c"


def bench(suite, median, **extra):
    return {"name": f"test_{suite}", "group": suite, "stats": {"median": median},
            "extra_info": {"suite": suite, "device": "cpu", **extra}}


def pytest_json(path: Path, benchmarks, machine_info=None, commit="abc123") -> Path:
    info = {"plrnn_machine_name": MACHINE, "plrnn_device": "cpu"} if machine_info is None \
        else machine_info
    path.write_text(json.dumps({"machine_info": info, "commit_info": {"id": commit},
                                "benchmarks": benchmarks, "datetime": "2026-01-01T00:00:00",
                                "version": "5.2.3"}))
    return path


def kernel(backend, pass_, median, T=1000, B=2, H=5):
    return bench("kernels", median, op="linear_recurrence", backend=backend, seq_len=T,
                 batch=B, hidden=H, **{"pass": pass_})


SAMPLE = [
    bench("copy", 1e-3, op="copy_", numel=1_000_000),          # 8e6 B / 1e-3 s = 8 GB/s
    kernel("cpu_serial", "forward", 1e-4),                     # 12e4 B / 1e-4 s = 1.2 GB/s
    kernel("cpu_parallel", "forward", 5e-5),                   # 2.4 GB/s, 2x serial
    kernel("cpu_serial", "forward+backward", 4e-4),            # 32e4 B / 4e-4 s = 0.8 GB/s
    kernel("torch", "forward+backward", 1.6e-3),               # 0.2 GB/s, 0.25x serial
    bench("layers", 2e-3, layer="GILR", recurrence="serial", seq_len=64, batch=4,
          hidden=256, **{"pass": "forward"}),
    bench("layers", 1e-3, layer="GILR", recurrence="parallel", seq_len=64, batch=4,
          hidden=256, **{"pass": "forward"}),
    bench("layers", 4e-3, layer="LSTM", recurrence="torch", seq_len=64, batch=4, hidden=256,
          **{"pass": "forward"}),
    bench("train", 0.1, model="GILR-LSTM", seq_len=64, batch=4),
    bench("train", 0.5, model="LSTM", seq_len=64, batch=4),
]


@pytest.fixture
def sample(tmp_path):
    return pytest_json(tmp_path / "run.json", SAMPLE)


def row(table, **where):
    sel = table
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (where, sel)
    return sel.iloc[0]


def test_kernels_table_bandwidth_fraction_and_speedup(sample):
    df = report_sources.load_pytest_json(sample)
    t = report.kernels_table(df)
    s = row(t, backend="cpu_serial", **{"pass": "forward"})
    assert s["gb_per_s"] == pytest.approx(1.2)
    assert s["fraction_of_copy"] == pytest.approx(1.2 / 8)
    assert s["speedup_over_serial"] == pytest.approx(1.0)
    p = row(t, backend="cpu_parallel", **{"pass": "forward"})
    assert p["gb_per_s"] == pytest.approx(2.4)
    assert p["speedup_over_serial"] == pytest.approx(2.0)
    fb = row(t, backend="cpu_serial", **{"pass": "forward+backward"})
    assert fb["gb_per_s"] == pytest.approx(0.8)
    tb = row(t, backend="torch", **{"pass": "forward+backward"})
    assert tb["speedup_over_serial"] == pytest.approx(0.25)
    assert tb["fraction_of_copy"] == pytest.approx(0.2 / 8)


def test_no_copy_probe_means_no_fraction(tmp_path):
    df = report_sources.load_pytest_json(pytest_json(tmp_path / "r.json", SAMPLE[1:3]))
    t = report.kernels_table(df)
    assert t["fraction_of_copy"].isna().all() and t["gb_per_s"].notna().all()


def test_layers_and_train_speedups(sample):
    df = report_sources.load_pytest_json(sample)
    lay = report.layers_table(df)
    g = row(lay, layer="GILR")
    assert g["parallel_speedup"] == pytest.approx(2.0)
    assert g["parallel_over_lstm"] == pytest.approx(4.0)
    assert g["serial_over_lstm"] == pytest.approx(2.0)
    assert row(lay, layer="LSTM")["lstm_time"] == pytest.approx(4e-3)
    tr = report.train_table(df)
    assert row(tr, model="GILR-LSTM")["speedup_over_lstm"] == pytest.approx(5.0)
    assert row(tr, model="GILR-LSTM")["steps_per_s"] == pytest.approx(10.0)


def test_machine_names_from_pytest_machine_info():
    named = {"plrnn_machine_name": "cuda-nvidia-h200"}
    assert report_sources.pytest_machine(named, "cuda") == "cuda-nvidia-h200"
    gpu = {"gpu": {"name": "NVIDIA H200"}, "cpu": {"brand_raw": "AMD EPYC", "count": 16}}
    assert report_sources.pytest_machine(gpu, "cuda") == "cuda-nvidia-h200"
    assert report_sources.pytest_machine(gpu, "cpu") == "cpu-amd-epyc-16c"
    intel = {"cpu": {"brand_raw": "Intel(R) Xeon(R) CPU @ 2.20GHz", "count": 8}}
    assert report_sources.pytest_machine(intel, "cpu") == "cpu-intel-xeon-8c"


def test_disabled_runs_and_foreign_benchmarks_are_ignored(tmp_path):
    rows = [{"name": "x", "stats": {"median": 1.0}, "extra_info": {}},
            {"name": "y", "stats": None, "extra_info": {"suite": "kernels"}}]
    assert report_sources.load_pytest_json(pytest_json(tmp_path / "d.json", rows)).empty


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(report_sources.ReportInputError, match="bad.json"):
        report_sources.load_pytest_json(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"results": {}}))
    with pytest.raises(report_sources.ReportInputError, match="not a pytest-benchmark"):
        report_sources.load_pytest_json(other)
    with pytest.raises(report_sources.ReportInputError, match="benchmarks.json"):
        report_sources.load_asv_results(tmp_path)


# ------------------------------------------------------------------------------------- asv
COLUMNS = ["result", "params", "version", "started_at", "duration"]


def asv_dir(root: Path, files: dict[str, dict], machine_json=None) -> Path:
    """An asv results tree in asv's on-disk format (version 2), as `asv run` writes it."""
    benchmarks = {
        "kernels.LinearRecurrence.time_linear_recurrence": {
            "param_names": ["seq_len", "batch", "hidden", "backend", "pass"], "unit": "seconds"},
        "kernels.LinearRecurrenceCUDA.track_cuda_peak_memory": {
            "param_names": ["seq_len", "batch", "hidden", "backend", "pass"], "unit": "bytes"},
        "kernels.Copy.time_copy": {"param_names": ["numel"], "unit": "seconds"},
        "layers.LSTM.time_lstm": {"param_names": ["seq_len", "batch", "pass"],
                                  "unit": "seconds"},
        "version": 2,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "benchmarks.json").write_text(json.dumps(benchmarks))
    machine = root / "box"
    machine.mkdir()
    mj = machine_json or {"arch": "x86_64", "cpu": "Test Box", "machine": "box", "num_cpu": "4",
                          "os": "Linux", "ram": "1", "version": 1}
    (machine / "machine.json").write_text(json.dumps(mj))
    for name, results in files.items():
        (machine / name).write_text(json.dumps(results))
    return root


def asv_result(commit: str, date: int, serial: float, cuda_bytes=None) -> dict:
    kp = [["1000"], ["2"], ["5"], ["'cpu_serial'", "'cpu_parallel'"],
          ["'forward'"]]
    return {
        "commit_hash": commit, "env_name": "virtualenv-py3.11-torch", "date": date,
        "params": {"machine": "box", "python": "3.11"}, "python": "3.11",
        "requirements": {"torch": ""}, "env_vars": {}, "result_columns": COLUMNS,
        "results": {
            "kernels.LinearRecurrence.time_linear_recurrence":
                [[serial, None], kp, "v", date, 1.0],
            "kernels.LinearRecurrenceCUDA.track_cuda_peak_memory":
                [[cuda_bytes if cuda_bytes is not None else float("nan"), float("nan")], kp,
                 "v", date, 1.0],
            "kernels.Copy.time_copy": [[1e-3], [["1000000"]], "v", date, 1.0],
            "layers.LSTM.time_lstm": [[4e-3], [["64"], ["4"], ["'forward'"]], "v", date, 1.0],
        },
        "durations": {}, "version": 2,
    }


def test_asv_results_newest_commit_and_skips(tmp_path):
    root = asv_dir(tmp_path / "asv", {
        "aaaa1111-env.json": asv_result("aaaa1111" + "0" * 32, 1_000, 2e-4),
        "bbbb2222-env.json": asv_result("bbbb2222" + "0" * 32, 2_000, 1e-4),
    })
    df = report_sources.load_asv_results(root)
    assert set(df["commit"]) == {"bbbb2222" + "0" * 32}
    assert set(df["machine"]) == {"cpu-test-box-4c"} and set(df["device"]) == {"cpu"}
    k = df[df["suite"] == "kernels"]
    assert list(k["backend"]) == ["cpu_serial"]  # None (skipped) and NaN rows dropped
    assert k["value"].iloc[0] == pytest.approx(1e-4) and k["seq_len"].iloc[0] == 1000
    assert row(df, suite="layers")["layer"] == "LSTM"
    assert row(df, suite="copy")["numel"] == 1_000_000
    older = report_sources.load_asv_results(root, commit="aaaa")
    assert row(older, suite="kernels")["value"] == pytest.approx(2e-4)
    with pytest.raises(report_sources.ReportInputError, match="cccc"):
        report_sources.load_asv_results(root, commit="cccc")


def test_asv_machines_named_by_plrnn_stay_apart(tmp_path):
    """asv machine.json files written by `asv machine --machine <name>` hold only the name: two
    such machines are two reports, not one machine built from missing CPU fields."""
    root = asv_dir(tmp_path / "asv", {
        "aaaa1111-env.json": asv_result("aaaa1111" + "0" * 32, 1_000, 2e-4)},
        machine_json={"machine": "cpu-first-2c", "version": 1})
    other = root / "other"
    shutil.copytree(root / "box", other)
    (other / "machine.json").write_text(json.dumps({"machine": "cpu-second-2c", "version": 1}))
    df = report_sources.load_asv_results(root)
    assert set(df["machine"]) == {"cpu-first-2c", "cpu-second-2c"}
    assert len(df[df["machine"] == "cpu-first-2c"]) == len(df) // 2


def test_an_unknown_asv_machine_is_named(tmp_path):
    root = asv_dir(tmp_path / "asv", {
        "aaaa1111-env.json": asv_result("aaaa1111" + "0" * 32, 1_000, 2e-4)})
    with pytest.raises(report_sources.ReportInputError, match="no asv machine nosuch .* box"):
        report_sources.load_asv_results(root, machines=["nosuch"])


def test_asv_cuda_results_are_named_apart_from_cpu(tmp_path):
    root = asv_dir(tmp_path / "asv", {
        "cccc-env.json": asv_result("cccc" + "0" * 36, 1_000, 1e-4, cuda_bytes=1e6)})
    df = report_sources.load_asv_results(root)
    assert set(df["device"]) == {"cuda"}
    assert set(df["machine"]) == {"cuda-on-box"}
    assert row(df, metric="cuda_peak_memory")["value"] == pytest.approx(1e6)


# ------------------------------------------------------------------------------ writing, CLI
def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "sub" / "f.md"
    report.atomic_write(target, "one")
    report.atomic_write(target, b"two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.md"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.md"
    target.write_text("old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        report.atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.md"]


def test_command_writes_the_report_and_regenerates_it_from_the_copy(tmp_path, sample):
    results = tmp_path / "results"
    assert report.main(["--pytest", str(sample), "--results", str(results)]) == 0
    out = results / MACHINE
    names = {p.name for p in out.iterdir()}
    assert {"bench_report.md", "bench_report.json", "bench_kernels.csv", "bench_kernels.png",
            "bench_layers.csv", "bench_layers.png", "bench_train.csv", "bench_copy.csv",
            report.PYTEST_COPY_NAME} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    md = (out / "bench_report.md").read_text()
    assert "| 1000 | 2   | 5   | forward          | cpu_parallel | 0.05" in md
    assert "8.00 GB/s" in md and "abc123" in md
    assert (out / "bench_kernels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = pd.read_csv(out / "bench_kernels.csv")
    # No inputs named: the committed copy under results/<machine>/ is read again.
    assert report.main(["--results", str(results), "--no-asv"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "bench_kernels.csv"), first)
    meta = json.loads((out / "bench_report.json").read_text())
    assert meta["machine"] == MACHINE and meta["commits"] == ["abc123"]


def test_command_without_inputs_or_with_bad_ones(tmp_path, capsys):
    assert report.main(["--results", str(tmp_path), "--no-asv"]) == 1
    assert "nothing to report" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert report.main(["--pytest", str(bad), "--results", str(tmp_path)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_report_states_the_machine_load(tmp_path):
    info = {"plrnn_machine_name": MACHINE, "plrnn_device": "cpu",
            "load_average": {"start": [0.5, 1.0, 1.5], "end": [3.25, 2.0, 1.0]}}
    path = pytest_json(tmp_path / "run.json", SAMPLE, machine_info=info)
    assert report.main(["--pytest", str(path), "--results", str(tmp_path / "r"), "--no-asv"]) == 0
    md = (tmp_path / "r" / MACHINE / "bench_report.md").read_text()
    assert "0.50, 1.00, 1.50 at the start, 3.25, 2.00, 1.00 at the end" in md


def test_written_files_are_readable_by_others_and_the_copy_is_compact(tmp_path, sample):
    data = json.loads(sample.read_text())
    data["benchmarks"][1]["stats"]["data"] = [1e-4] * 1000
    sample.write_text(json.dumps(data))
    results = tmp_path / "results"
    assert report.main(["--pytest", str(sample), "--results", str(results), "--no-asv"]) == 0
    mask = os.umask(0)
    os.umask(mask)
    for path in (results / MACHINE).iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path
    copy = json.loads((results / MACHINE / report.PYTEST_COPY_NAME).read_text())
    assert "data" not in copy["benchmarks"][1]["stats"]
    assert copy["benchmarks"][1]["stats"]["median"] == pytest.approx(1e-4)


def test_asv_op_inputs_are_reported(tmp_path):
    """benchmarks/op_inputs.py's cases: their own parameters as the case, pass_ as pass."""
    result = asv_result("cccc3333" + "0" * 32, 3_000, 1e-4)
    result["results"]["op_inputs.PackedBatch.time_packed_batch"] = [
        [1e-3, 2e-3, 5e-3, None],
        [["'packed'", "'padded'"], ["'cpu_serial'"], ["'forward'", "'forward_backward'"]],
        "v", 3_000, 1.0]
    result["results"]["op_inputs.ComplexRecurrence.time_complex_recurrence"] = [
        [3e-3], [["'plrnn'"], ["'forward'"]], "v", 3_000, 1.0]
    root = asv_dir(tmp_path / "asv", {"cccc3333-env.json": result})
    names = json.loads((root / "benchmarks.json").read_text())
    names["op_inputs.PackedBatch.time_packed_batch"] = {
        "param_names": ["layout", "backend", "pass_"], "unit": "seconds"}
    names["op_inputs.ComplexRecurrence.time_complex_recurrence"] = {
        "param_names": ["method", "pass_"], "unit": "seconds"}
    (root / "benchmarks.json").write_text(json.dumps(names))
    df = report_sources.load_asv_results(root)
    table = report.op_inputs_table(df)
    got = {(r.case, r.backend, r["pass"]): r.time for _, r in table.iterrows()}
    assert got == {
        ("PackedBatch: layout=packed", "cpu_serial", "forward"): pytest.approx(1e-3),
        ("PackedBatch: layout=packed", "cpu_serial", "forward+backward"): pytest.approx(2e-3),
        ("PackedBatch: layout=padded", "cpu_serial", "forward"): pytest.approx(5e-3),
        ("ComplexRecurrence: method=plrnn", "-", "forward"): pytest.approx(3e-3),
    }
    built = report.build_report(df, "cpu-test-box-4c", [str(root)])
    assert re.search(r"PackedBatch: layout=padded *\| cpu_serial *\| forward *\| 5 ",
                     built.markdown)
    assert set(built.csv) >= {"bench_kernels", "bench_op_inputs"}


def test_pytest_op_inputs_are_reported_as_asv_names_them(tmp_path):
    # The pytest suite records its asv twin's columns (benchmarks/pytest_suite/test_op_inputs.py);
    # without a case every op_inputs row had fallen out of the table.
    columns = report_sources.op_inputs_columns(
        "DecayDistribution", {"decays": "U[0.9,1)", "shape": "262144x4",
                              "backend": "cpu_parallel", "pass_": "forward"})
    info = {"op": "decay_distribution", "decays": "U[0.9,1)", "seq_len": 262144, "channels": 4,
            "pass": "forward_backward"}  # as the case's info names it; the columns win
    stored = bench("op_inputs", 2e-3, **{**info, **columns})
    df = report_sources.load_pytest_json(pytest_json(tmp_path / "run.json", [stored]))
    table = report.op_inputs_table(df)
    assert [(r.case, r.backend, r["pass"]) for _, r in table.iterrows()] == [
        ("DecayDistribution: decays=U[0.9,1), shape=262144x4", "cpu_parallel", "forward")]


def test_op_inputs_rows_without_a_pass_are_kept(tmp_path):
    stored = bench("op_inputs", 2e-3, case="Other: x=1", backend="cpu_serial")
    df = report_sources.load_pytest_json(pytest_json(tmp_path / "run.json", [stored]))
    assert report.op_inputs_table(df)["pass"].tolist() == ["-"]


def test_packed_batch_through_associative_scan_is_labelled_so(tmp_path):
    # The padded_associative_scan layout runs torch's associative_scan; asv's grid gives it the
    # backend parameter cpu_serial, which the table had shown as its backend.
    assert report_sources.op_inputs_columns(
        "PackedBatch", {"layout": "padded_associative_scan", "backend": "cpu_serial",
                        "pass_": "forward"}) == {
        "case": "PackedBatch: layout=padded_associative_scan", "pass": "forward",
        "backend": "associative_scan"}
    result = asv_result("cccc3333" + "0" * 32, 3_000, 1e-4)
    result["results"]["op_inputs.PackedBatch.time_packed_batch"] = [
        [1e-3, None, 4e-3, None],
        [["'padded'", "'padded_associative_scan'"], ["'cpu_serial'", "'cpu_parallel'"],
         ["'forward'"]], "v", 3_000, 1.0]
    root = asv_dir(tmp_path / "asv", {"cccc3333-env.json": result})
    names = json.loads((root / "benchmarks.json").read_text())
    names["op_inputs.PackedBatch.time_packed_batch"] = {
        "param_names": ["layout", "backend", "pass_"], "unit": "seconds"}
    (root / "benchmarks.json").write_text(json.dumps(names))
    markdown = report.build_report(report_sources.load_asv_results(root), "cpu-test-box-4c",
                                   [str(root)]).markdown
    assert re.search(r"PackedBatch: layout=padded_associative_scan *\| associative_scan *\|",
                     markdown)
    assert re.search(r"PackedBatch: layout=padded *\| cpu_serial *\|", markdown)
    assert "padded_associative_scan | cpu_serial" not in markdown


def test_each_asv_benchmark_comes_from_the_newest_commit_that_ran_it(tmp_path):
    # The newest run measured op_inputs alone (`asv run --bench op_inputs`): the kernels, copy
    # and LSTM tables come from the run before it, and each table says which commit it shows.
    older, newer = "aaaa1111" + "0" * 32, "bbbb2222" + "0" * 32
    full = asv_result(older, 1_000, 2e-4)
    only_ops = asv_result(newer, 2_000, 1e-4)
    only_ops["results"] = {"op_inputs.ComplexRecurrence.time_complex_recurrence": [
        [3e-3], [["'plrnn'"], ["'forward'"]], "allocator=default code=0123", 2_000, 1.0]}
    root = asv_dir(tmp_path / "asv", {"aaaa1111-env.json": full, "bbbb2222-env.json": only_ops})
    names = json.loads((root / "benchmarks.json").read_text())
    names["op_inputs.ComplexRecurrence.time_complex_recurrence"] = {
        "param_names": ["method", "pass_"], "unit": "seconds"}
    (root / "benchmarks.json").write_text(json.dumps(names))
    df = report_sources.load_asv_results(root)
    commits = df.groupby("suite")["commit"].agg(set).to_dict()
    assert commits == {"kernels": {older}, "copy": {older}, "layers": {older},
                       "op_inputs": {newer}}
    assert row(df, suite="op_inputs")["allocator"] == "default"
    assert df[df["commit"] == older]["allocator"].isna().all()  # its version predates it
    markdown = report.build_report(df, "cpu-test-box-4c", [str(root)]).markdown
    measured = {section.split("\n")[0]: re.search(r"Measured: [^\n]+", section).group()
                for section in markdown.split("### ")[1:]}
    assert measured["linear_recurrence (CPU, fp32)"] == \
        "Measured: asv at aaaa11110000 (allocator not recorded)."
    assert measured["The op's newer inputs, each beside what a user would otherwise run"] == \
        "Measured: asv at bbbb22220000 (allocator `default`)."
    assert report.layers_table(df)["lstm_time"].notna().all()
    # A benchmark the newest run has, but only skipped, comes from the run that measured it.
    skipped = asv_result(newer, 2_000, 1e-4)
    skipped["results"]["kernels.LinearRecurrence.time_linear_recurrence"][0] = [None, None]
    root = asv_dir(tmp_path / "asv2", {"aaaa1111-env.json": full, "bbbb2222-env.json": skipped})
    df = report_sources.load_asv_results(root)
    assert set(df[df["suite"] == "kernels"]["commit"]) == {older}
    assert set(df[df["suite"] == "copy"]["commit"]) == {newer}
    # The kernels' times from one commit beside their memory peaks from another: a row each,
    # and the table says which row is whose.
    mixed = df[~((df["suite"] == "kernels") & (df["metric"] == "peakmem"))]
    peaks = df[(df["suite"] == "kernels") & (df["metric"] == "time")].assign(
        metric="peakmem", value=1 << 20, commit=newer)
    table = report.kernels_markdown(report.kernels_table(pd.concat([mixed, peaks])), "cpu")
    header, _, *lines = table.splitlines()
    assert header.split("|")[1].strip() == "commit"
    assert {line.split("|")[1].strip() for line in lines} == {"aaaa111", "bbbb222"}
    single = report.kernels_markdown(report.kernels_table(mixed), "cpu")
    assert "commit" not in single.splitlines()[0]


def test_pytest_rows_keep_the_allocator(tmp_path):
    stored = [{**b, "extra_info": {**b["extra_info"], "allocator": "steady"}} for b in SAMPLE]
    df = report_sources.load_pytest_json(pytest_json(tmp_path / "run.json", stored))
    assert set(df["allocator"]) == {"steady"}
    markdown = report.build_report(df, MACHINE, ["run.json"]).markdown
    assert "Measured: pytest-benchmark at abc123 (allocator `steady`)." in markdown


def test_no_asv_reports_only_the_pytest_machine(tmp_path, sample):
    # The documented command for a new pytest-benchmark run: without --no-asv it also rewrote
    # every asv machine's report from results/asv.
    results = tmp_path / "results"
    asv_dir(results / "asv", {"aaaa1111-env.json": asv_result("aaaa1111" + "0" * 32, 1_000,
                                                                2e-4)},
            machine_json={"machine": "cpu-asv-box-2c", "version": 1})
    assert report.main(["--pytest", str(sample), "--results", str(results), "--no-asv"]) == 0
    assert sorted(p.name for p in results.iterdir()) == ["asv", MACHINE]
    assert report.main(["--pytest", str(sample), "--results", str(results)]) == 0
    assert sorted(p.name for p in results.iterdir()) == ["asv", "cpu-asv-box-2c", MACHINE]
