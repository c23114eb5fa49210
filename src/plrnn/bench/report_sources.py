"""Benchmark results as one table: pytest-benchmark JSON files and asv result directories.

Every row is one measured value:

    source    "pytest-benchmark" or "asv"
    machine   results/<machine>/ name (plrnn.bench.machine.machine_name style)
    device    "cpu" or "cuda"
    commit    git commit of the measured code (None if unknown)
    suite     "kernels", "copy", "layers", "train" or "op_inputs"
    case      op_inputs only: the asv benchmark and its own parameters, as "PackedBatch:
              layout=padded" (its backend and pass are in their columns; the pytest suite
              records the same columns, op_inputs_columns)
    metric    "time" (s/call), "peakmem" (bytes, host, whole process), "cuda_event_time"
              (s/call between CUDA events), "cuda_peak_memory" (bytes a call allocates on the GPU)
    value     the number, in seconds or bytes
    allocator "default" or "steady" ($PLRNN_BENCH_ALLOCATOR of the run; None where the run
              predates its recording)
    + the case's parameters: backend, pass, seq_len, batch, hidden, numel, layer, recurrence,
      model (absent ones are NaN/None)
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import platform
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch

from .machine import _slug, machine_name

PARAM_COLUMNS = ("backend", "pass", "seq_len", "batch", "hidden", "numel", "layer",
                 "recurrence", "model")
COLUMNS = ("source", "machine", "device", "commit", "date", "suite", "metric", "value", "case",
           "allocator", *PARAM_COLUMNS)
INT_COLUMNS = ("seq_len", "batch", "hidden", "numel")

# asv benchmark method -> metric (the method name after its class, without arguments)
_ASV_METRICS = {
    "time_linear_recurrence": "time",
    "peakmem_linear_recurrence": "peakmem",
    "time_copy": "time",
    "time_layer": "time",
    "time_lstm": "time",
    "time_train_step": "time",
    # benchmarks/op_inputs.py
    "time_packed_batch": "time",
    "time_time_invariant_decays": "time",
    "time_batch_shared_decays": "time",
    "time_head_shared_decays": "time",
    "time_batch_first_sequences": "time",
    "time_complex_recurrence": "time",
    "time_storage_dtype": "time",
    "time_decay_distribution": "time",
    "track_cuda_event_time": "cuda_event_time",
    "track_cuda_peak_memory": "cuda_peak_memory",
}
_ASV_SUITES = {"Copy": "copy"}  # class -> suite where it differs from the module name


class ReportInputError(ValueError):
    """An input file or directory that is not what the report reads."""


def _cpu_machine_name(cpu: str, cores) -> str:
    return f"cpu-{_slug(cpu or 'unknown')}-{cores}c"


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    for col in INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


# ---------------------------------------------------------------------------- pytest-benchmark
def pytest_machine(machine_info: dict, device: str) -> str:
    """The results/<machine> name of a pytest-benchmark JSON's machine_info."""
    name = machine_info.get("plrnn_machine_name")
    if name:
        return name
    gpu = machine_info.get("gpu") or {}
    if device == "cuda" and gpu.get("name"):
        return "cuda-" + _slug(gpu["name"])
    cpu = machine_info.get("cpu") or {}
    return _cpu_machine_name(cpu.get("brand_raw") or machine_info.get("processor") or "",
                             cpu.get("count", "?"))


def load_pytest_json(path: str | os.PathLike) -> pd.DataFrame:
    """Rows from one `pytest --benchmark-json` file of benchmarks/pytest_suite."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ReportInputError(f"cannot read pytest-benchmark JSON {path}: {err}") from None
    if not isinstance(data, dict) or "benchmarks" not in data or "machine_info" not in data:
        raise ReportInputError(f"{path} is not a pytest-benchmark JSON file "
                               "(no 'benchmarks' and 'machine_info')")
    info = data["machine_info"]
    commit = (data.get("commit_info") or {}).get("id") or (info.get("plrnn") or {}).get(
        "git_commit")
    rows = []
    for bench in data["benchmarks"]:
        extra = bench.get("extra_info") or {}
        stats = bench.get("stats") or {}
        if "suite" not in extra or stats.get("median") is None:
            continue  # not one of ours, or --benchmark-disable (nothing was timed)
        device = extra.get("device", info.get("plrnn_device", "cpu"))
        row = {"source": "pytest-benchmark", "machine": pytest_machine(info, device),
               "device": device, "commit": commit, "date": data.get("datetime"),
               "suite": extra["suite"], "metric": "time", "value": stats["median"]}
        row.update({k: extra.get(k) for k in (*PARAM_COLUMNS, "case", "allocator")})
        rows.append(row)
    return _frame(rows)


# ------------------------------------------------------------------------------------------ asv
def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def asv_machine(machine_json: dict, device: str) -> str:
    """The results/<machine> name of an asv machine.json: the asv machine's own name where
    plrnn.bench.machine gave it, else one made from its CPU and core count (asv records no GPU:
    a CUDA run is named after this host's GPU when the asv machine is named after this host,
    e.g. "<host>-gpu", else after the asv machine)."""
    if device == "cuda":
        host = platform.node()
        here = host and str(machine_json.get("machine", "")).startswith(host)
        if here and torch.cuda.is_available():
            return machine_name("cuda")
        return "cuda-on-" + _slug(str(machine_json.get("machine", "unknown")))
    name = str(machine_json.get("machine", ""))
    if name.startswith("cpu-"):  # named by plrnn.bench.machine, as every results/<machine> is
        return name
    return _cpu_machine_name(machine_json.get("cpu", ""), machine_json.get("num_cpu", "?"))


def _asv_allocator(version) -> str | None:
    """The allocator benchmarks/_support.py puts into a benchmark's version ("allocator=steady
    code=..."); None for versions from before it did."""
    m = re.search(r"\ballocator=(\w+)", str(version or ""))
    return m.group(1) if m else None


def _asv_rows(result, key: str, benchmarks: dict) -> Iterable[dict]:
    """The rows of benchmark `key` (module.Class.method) in one asv result: none where the
    report has no metric for it, or where every combination was skipped or failed."""
    module, _, rest = key.partition(".")
    cls, _, method = rest.rpartition(".")
    metric = _ASV_METRICS.get(method)
    if metric is None:
        return
    allocator = _asv_allocator(result.benchmark_version.get(key))
    params = result.get_result_params(key)
    values = result.get_result_value(key, params)
    names = (benchmarks.get(key) or {}).get("param_names") or []
    if not params:
        params, values = [[]], [values]
    if len(names) != len(params):
        raise ReportInputError(f"asv benchmark {key}: {len(params)} parameter lists but "
                               f"param_names {names} in benchmarks.json")
    for combo, value in zip(itertools.product(*params), values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue  # skipped (NotImplementedError in setup) or failed
        row = {"suite": _ASV_SUITES.get(cls, module), "metric": metric, "value": value,
               "allocator": allocator}
        named = {name: _literal(v) for name, v in zip(names, combo)}
        if module == "op_inputs":
            row.update(op_inputs_columns(cls, named))
        else:
            row.update(named)
        if method == "time_lstm":
            row["layer"] = "LSTM"
        yield row


def op_inputs_columns(cls: str, params: dict) -> dict:
    """An op_inputs benchmark's parameters (asv class name, {param_name: value}) in the report's
    columns: its pass (asv parameter `pass_`, "forward_backward") as the other suites name it,
    its backend, and the rest in `case`."""
    params = dict(params)
    pass_ = str(params.pop("pass_", "")).replace("forward_backward", "forward+backward")
    backend = params.pop("backend", None)
    if cls == "PackedBatch" and params.get("layout") == "padded_associative_scan":
        backend = "associative_scan"  # torch's scan runs there; asv's grid still names a backend
    own = ", ".join(f"{k}={v}" for k, v in params.items())
    return {"case": f"{cls}: {own}" if own else cls, "pass": pass_ or None, "backend": backend}


def _asv_device(rows: list[dict]) -> str:
    for row in rows:
        if row["metric"].startswith("cuda_") or str(row.get("backend", "")).startswith("cuda_"):
            return "cuda"
    return "cpu"


def load_asv_results(results_dir: str | os.PathLike, commit: str | None = None,
                     machines: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows from an asv results directory (results/asv): per asv machine and benchmark, the
    newest commit (by commit date) that has a value of it, so that a run of some benchmarks
    (`asv run --bench ...`) leaves the others at their own newest run; or the commit starting
    with `commit`. Each row names its commit."""
    try:
        from asv.results import Results
    except ImportError:
        raise ReportInputError("reading asv results needs asv (pip install asv)") from None
    root = Path(results_dir)
    bench_file = root / "benchmarks.json"
    if not bench_file.is_file():
        raise ReportInputError(f"{root} is not an asv results directory (no benchmarks.json)")
    benchmarks = json.loads(bench_file.read_text())
    wanted = set(machines) if machines else None
    present = {p.name for p in root.iterdir() if (p / "machine.json").is_file()}
    if wanted is not None and not wanted <= present:
        raise ReportInputError(
            f"no asv machine {', '.join(sorted(wanted - present))} in {root}; it has "
            f"{', '.join(sorted(present)) or 'none'}"
        )
    rows = []
    for name in sorted(present if wanted is None else wanted):
        machine_dir = root / name
        machine_json = json.loads((machine_dir / "machine.json").read_text())
        loaded = [Results.load(str(p)) for p in sorted(machine_dir.glob("*.json"))
                  if p.name != "machine.json"]
        if commit:
            loaded = [r for r in loaded if r.commit_hash.startswith(commit)]
        # (commit date, commit) -> benchmark -> rows, over every environment of the commit
        found: dict[tuple, dict[str, list[dict]]] = {}
        for result in loaded:
            date = pd.Timestamp(result.date, unit="ms").isoformat() if result.date else None
            for key in result.get_all_result_keys():
                for row in _asv_rows(result, key, benchmarks):
                    row.update(source="asv", commit=result.commit_hash, date=date)
                    found.setdefault((result.date or 0, result.commit_hash), {}) \
                        .setdefault(key, []).append(row)
        newest: dict[str, list[dict]] = {}
        for _, by_key in sorted(found.items(), key=lambda item: item[0], reverse=True):
            for key, key_rows in by_key.items():
                newest.setdefault(key, key_rows)
        machine_rows = [row for key_rows in newest.values() for row in key_rows]
        device = _asv_device(machine_rows)
        for row in machine_rows:
            row.update(machine=asv_machine(machine_json, device), device=device)
        rows += machine_rows
    if commit and not rows:
        raise ReportInputError(f"no asv results for a commit starting with {commit!r} in {root}")
    return _frame(rows)
