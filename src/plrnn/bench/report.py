"""Benchmark report: asv results and pytest-benchmark JSON -> tables and plots per machine.

    python -m plrnn.bench.report                                   # everything committed
    python -m plrnn.bench.report --pytest .benchmarks/plrnn.json --no-asv  # a new pytest run
    python -m plrnn.bench.report --asv results/asv --asv-commit 1a2b3c4

Without inputs it reads results/asv (per asv machine and benchmark, the newest commit that has
it) and every results/*/pytest_benchmark.json; --pytest files replace the latter, but results/asv
is still read, and every asv machine's report rewritten, unless --no-asv says not to (--results
DIR writes under another root). A --pytest file is also copied to
results/<machine>/pytest_benchmark.json (without the per-round timings, every summary statistic
kept), so the report can be regenerated from what is committed.

Writes into results/<machine>/ (the machine from the JSON's machine info; for asv from
machine.json): bench_report.md (every table), bench_report.json (inputs, commits), and
bench_<suite>.csv beside bench_<suite>.png for kernels and layers (time per call against the
sequence length, log axes, one line per backend), bench_train.csv and bench_op_inputs.csv. Every
file is written to a temporary name in its directory first and then moved into place
(os.replace).

What the tables add to the raw times (asv and pytest-benchmark only record seconds and bytes):
- effective bandwidth: plrnn.bench.bandwidth.bytes_moved (fp32: 12 B/element forward, 32
  forward+backward) over the time per call, also for the baselines (same minimum traffic);
- fraction of copy bandwidth: over the copy_ probe measured in the same run (same source,
  machine and commit), 8 B/element;
- speedup over serial: the serial kernel's time (cpu_serial / cuda_serial) over each backend's;
  for layers, serial-recurrence time over parallel-recurrence time;
- speedup over cuDNN: torch.nn.LSTM's time (cuDNN on a GPU) over each layer's or model's.
CPU and GPU results never share a table: they land under different machine names.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .bandwidth import COPY_BYTES_PER_ELEMENT, bytes_moved
from .grid import CUDNN_BASELINE, PASSES, SERIAL_BASELINE
from .report_sources import ReportInputError, load_asv_results, load_pytest_json

PYTEST_COPY_NAME = "pytest_benchmark.json"
SOURCE_ORDER = ("pytest-benchmark", "asv")
MIB = 2**20


# ------------------------------------------------------------------------------------ writing
def atomic_write(path: Path, data: bytes | str) -> Path:
    """Writes `data` to `path` via a temporary file in the same directory and os.replace, so a
    reader never sees a half-written file and an interrupted run leaves the old one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make results private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def compact_pytest_json(raw: bytes) -> bytes:
    """A pytest-benchmark JSON without the per-round timings (stats.data), which make up almost
    all of its size; every summary statistic stays."""
    data = json.loads(raw)
    for bench in data.get("benchmarks", []):
        stats = bench.get("stats") or {}
        if "data" in stats:
            del stats["data"]
    data["plrnn_note"] = "per-round timings (stats.data) removed by python -m plrnn.bench.report"
    return (json.dumps(data, indent=1) + "\n").encode()


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buf.getvalue()


# ------------------------------------------------------------------------------------- tables
def _keyed(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # NaN keys would never match in merges and groupbys; an explicit marker does.
    out = df.copy()
    for k in keys:
        out[k] = out[k].astype(object).where(out[k].notna(), "-")
    return out


def copy_bandwidth(df: pd.DataFrame) -> pd.DataFrame:
    """Copy bandwidth (bytes/s) per (source, machine, device, commit): the largest probe's."""
    keys = ["source", "machine", "device", "commit"]
    copies = _keyed(df[(df["suite"] == "copy") & (df["metric"] == "time")], keys)
    if copies.empty:
        return pd.DataFrame(columns=[*keys, "numel", "copy_time_s", "copy_bytes_per_s"])
    copies = copies.sort_values("numel").groupby(keys, as_index=False).last()
    copies["copy_bytes_per_s"] = COPY_BYTES_PER_ELEMENT * copies["numel"].astype(float) \
        / copies["value"]
    return copies.rename(columns={"value": "copy_time_s"})[
        [*keys, "numel", "copy_time_s", "copy_bytes_per_s"]]


def kernels_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, machine, device, commit, size, pass, backend) with the time per call,
    effective bandwidth, fraction of copy bandwidth, speedup over the serial kernel, and the
    memory/device-time metrics where measured."""
    keys = ["source", "machine", "device", "commit", "seq_len", "batch", "hidden", "pass",
            "backend"]
    k = _keyed(df[df["suite"] == "kernels"], ["commit"])
    if k.empty:
        return pd.DataFrame()
    wide = k.pivot_table(index=keys, columns="metric", values="value", aggfunc="median")
    wide = wide.reset_index()
    wide.columns.name = None
    for metric in ("time", "peakmem", "cuda_event_time", "cuda_peak_memory"):
        if metric not in wide:
            wide[metric] = np.nan
    wide["channels"] = wide["batch"].astype(int) * wide["hidden"].astype(int)
    numel = wide["seq_len"].astype(float) * wide["channels"]
    moved = [bytes_moved(1, p) for p in wide["pass"]]
    wide["bytes_moved"] = numel * moved
    # The host-clock time, CUDA rows included (the suite synchronizes before reading the clock).
    wide["gb_per_s"] = wide["bytes_moved"] / wide["time"] / 1e9
    copies = copy_bandwidth(_keyed(df, ["commit"]))
    wide = wide.merge(copies[["source", "machine", "device", "commit", "copy_bytes_per_s"]],
                      on=["source", "machine", "device", "commit"], how="left")
    wide["fraction_of_copy"] = wide["gb_per_s"] * 1e9 / wide["copy_bytes_per_s"]
    serial = wide[wide["backend"] == wide["device"].map(SERIAL_BASELINE)]
    size = ["source", "machine", "device", "commit", "seq_len", "batch", "hidden", "pass"]
    serial = serial[[*size, "time"]].rename(columns={"time": "serial_time"})
    wide = wide.merge(serial, on=size, how="left")
    wide["speedup_over_serial"] = wide["serial_time"] / wide["time"]
    return wide.sort_values(size + ["backend"], kind="stable").reset_index(drop=True)


def layers_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, machine, device, commit, layer, T, B, pass): serial and parallel
    recurrence times, the parallel speedup, torch.nn.LSTM's time and the speedups over it."""
    lay = _keyed(df[(df["suite"] == "layers") & (df["metric"] == "time")],
                 ["commit", "recurrence"])
    if lay.empty:
        return pd.DataFrame()
    keys = ["source", "machine", "device", "commit", "seq_len", "batch", "pass"]
    lstm = lay[lay["layer"] == CUDNN_BASELINE][[*keys, "value"]].rename(
        columns={"value": "lstm_time"})
    rest = lay[lay["layer"] != CUDNN_BASELINE]
    wide = rest.pivot_table(index=[*keys, "layer"], columns="recurrence", values="value",
                            aggfunc="median").reset_index()
    wide.columns.name = None
    for col in ("serial", "parallel"):
        if col not in wide:
            wide[col] = np.nan
    wide = wide.rename(columns={"serial": "serial_time", "parallel": "parallel_time"})
    # The LSTM gets a row of its own too, so the table lists every measured model.
    lstm_rows = lstm.assign(layer=CUDNN_BASELINE, serial_time=np.nan, parallel_time=np.nan)
    wide = pd.concat([wide, lstm_rows.drop(columns="lstm_time")], ignore_index=True)
    wide = wide.merge(lstm, on=keys, how="left")
    wide["parallel_speedup"] = wide["serial_time"] / wide["parallel_time"]
    wide["parallel_over_lstm"] = wide["lstm_time"] / wide["parallel_time"]
    wide["serial_over_lstm"] = wide["lstm_time"] / wide["serial_time"]
    return wide.sort_values(keys + ["layer"], kind="stable").reset_index(drop=True)


def train_table(df: pd.DataFrame) -> pd.DataFrame:
    tr = _keyed(df[(df["suite"] == "train") & (df["metric"] == "time")], ["commit"])
    if tr.empty:
        return pd.DataFrame()
    keys = ["source", "machine", "device", "commit", "seq_len", "batch"]
    tr = tr[[*keys, "model", "value"]].rename(columns={"value": "step_time"})
    lstm = tr[tr["model"] == CUDNN_BASELINE][[*keys, "step_time"]].rename(
        columns={"step_time": "lstm_step_time"})
    tr = tr.merge(lstm, on=keys, how="left")
    tr["steps_per_s"] = 1.0 / tr["step_time"]
    tr["speedup_over_lstm"] = tr["lstm_step_time"] / tr["step_time"]
    return tr.sort_values(keys + ["model"], kind="stable").reset_index(drop=True)


def op_inputs_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, machine, device, commit, case, backend, pass) of the op's newer
    inputs (op_inputs: packed batches, broadcast decays, complex, 16-bit storage, decay
    distributions; from asv or the pytest suite): the time per call, each case beside what a
    user would otherwise run."""
    keys = ["source", "machine", "device", "commit", "case", "backend", "pass"]
    ops = _keyed(df[(df["suite"] == "op_inputs") & (df["metric"] == "time")], keys)
    if ops.empty:
        return pd.DataFrame()
    table = ops.groupby(keys, as_index=False)["value"].median()
    return table.rename(columns={"value": "time"}).sort_values(keys, kind="stable") \
        .reset_index(drop=True)


# ----------------------------------------------------------------------------------- markdown
def _ms(seconds) -> str:
    if seconds is None or not np.isfinite(seconds):
        return ""
    ms = seconds * 1e3
    return f"{ms:.4g}"


def _x(ratio, digits=2) -> str:
    return "" if ratio is None or not np.isfinite(ratio) else f"{ratio:.{digits}f}"


def _mib(nbytes) -> str:
    return "" if nbytes is None or not np.isfinite(nbytes) else f"{nbytes / MIB:.1f}"


def _md(table: pd.DataFrame, source: pd.DataFrame | None = None) -> str:
    """`table` in Markdown; where its rows (those of `source`) come from more than one commit
    (each benchmark's newest run: a metric not measured again keeps an older commit's row), a
    first column says which."""
    if source is not None and "commit" in source and source["commit"].nunique() > 1:
        table = table.copy()
        table.insert(0, "commit", source["commit"].astype(str).str[:7].to_numpy())
    return table.to_markdown(index=False, disable_numparse=True) if not table.empty else "(none)"


def kernels_markdown(t: pd.DataFrame, device: str) -> str:
    serial = SERIAL_BASELINE[device]
    rows = pd.DataFrame({
        "T": t["seq_len"].astype(str), "B": t["batch"].astype(str), "H": t["hidden"].astype(str),
        "pass": t["pass"], "backend": t["backend"], "time ms": t["time"].map(_ms),
        "GB/s": t["gb_per_s"].map(lambda v: _x(v, 2)),
        "of copy": t["fraction_of_copy"].map(_x),
        f"x {serial}": t["speedup_over_serial"].map(_x),
    })
    if t["cuda_event_time"].notna().any():
        rows["device ms"] = t["cuda_event_time"].map(_ms)
    if t["cuda_peak_memory"].notna().any():
        rows["GPU peak MiB"] = t["cuda_peak_memory"].map(_mib)
    if t["peakmem"].notna().any():
        rows["host peak MiB"] = t["peakmem"].map(_mib)
    return _md(rows, t)


def layers_markdown(t: pd.DataFrame) -> str:
    return _md(pd.DataFrame({
        "layer": t["layer"], "T": t["seq_len"].astype(str), "B": t["batch"].astype(str),
        "pass": t["pass"], "serial ms": t["serial_time"].map(_ms),
        "parallel ms": t["parallel_time"].map(_ms),
        "parallel speedup": t["parallel_speedup"].map(_x),
        "LSTM ms": t["lstm_time"].map(_ms),
        "x LSTM (parallel)": t["parallel_over_lstm"].map(_x),
        "x LSTM (serial)": t["serial_over_lstm"].map(_x),
    }), t)


def train_markdown(t: pd.DataFrame) -> str:
    return _md(pd.DataFrame({
        "model": t["model"], "T": t["seq_len"].astype(str), "B": t["batch"].astype(str),
        "step ms": t["step_time"].map(_ms), "steps/s": t["steps_per_s"].map(lambda v: _x(v, 1)),
        "x LSTM": t["speedup_over_lstm"].map(_x),
    }), t)


def op_inputs_markdown(t: pd.DataFrame) -> str:
    return _md(pd.DataFrame({"case": t["case"], "backend": t["backend"], "pass": t["pass"],
                             "time ms": t["time"].map(_ms)}), t)


# -------------------------------------------------------------------------------------- plots
def _relplot(data: pd.DataFrame, hue: str, style: str | None, row: str | None, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    g = sns.relplot(data=data, x="seq_len", y="time_ms", hue=hue, style=style, col="pass",
                    row=row, kind="line", markers=True, dashes=False, height=3.2, aspect=1.3,
                    facet_kws={"sharey": False}, col_order=[p for p in PASSES
                                                            if p in set(data["pass"])])
    g.set(xscale="log", yscale="log")
    g.set_axis_labels("sequence length T", "time per call (ms)")
    g.figure.suptitle(title, y=1.02)
    return g.figure


def kernels_figure(t: pd.DataFrame, title: str):
    data = t[t["time"].notna()].assign(
        time_ms=lambda d: d["time"] * 1e3,
        size=lambda d: d["batch"].astype(str) + " x " + d["hidden"].astype(str))
    data = data.rename(columns={"size": "batch x hidden"})
    return _relplot(data, "backend", "backend", "batch x hidden", title) if not data.empty \
        else None


def layers_figure(t: pd.DataFrame, title: str):
    long = t.melt(id_vars=["layer", "seq_len", "batch", "pass"],
                  value_vars=["serial_time", "parallel_time"], var_name="recurrence",
                  value_name="time")
    long = long[long["time"].notna() | (long["layer"] == CUDNN_BASELINE)]
    lstm = t[t["layer"] == CUDNN_BASELINE][["layer", "seq_len", "batch", "pass", "lstm_time"]]
    lstm = lstm.rename(columns={"lstm_time": "time"}).assign(recurrence="cudnn/torch")
    data = pd.concat([long[long["layer"] != CUDNN_BASELINE], lstm], ignore_index=True)
    data = data[data["time"].notna()].assign(
        time_ms=lambda d: d["time"] * 1e3,
        recurrence=lambda d: d["recurrence"].str.replace("_time", "", regex=False))
    return _relplot(data, "layer", "recurrence", "batch", title) if not data.empty else None


# ------------------------------------------------------------------------------------- report
@dataclass
class Report:
    machine: str
    device: str
    markdown: str
    csv: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def _commits(df: pd.DataFrame) -> str:
    parts = []
    for (source, commit), _ in df.groupby(["source", "commit"], dropna=False, sort=False):
        short = commit[:12] if isinstance(commit, str) and commit != "-" else "unknown"
        parts.append(f"{source} at {short}")
    return "; ".join(parts)


def _measured(df: pd.DataFrame, source: str, *suites: str) -> str:
    """Which runs a table of `suites` from `source` comes from: commit and allocator of each."""
    parts = []
    keyed = _keyed(df[(df["source"] == source) & df["suite"].isin(suites)],
                   ["commit", "allocator"])
    for (commit, allocator), _ in keyed.groupby(["commit", "allocator"], sort=False):
        short = commit[:12] if isinstance(commit, str) and commit != "-" else "unknown commit"
        how = f"allocator `{allocator}`" if allocator != "-" else "allocator not recorded"
        parts.append(f"{source} at {short} ({how})")
    return "Measured: " + "; ".join(parts) + "."


def build_report(df: pd.DataFrame, machine: str, inputs: list[str]) -> Report:
    """The report of one machine's rows."""
    df = df[df["machine"] == machine]
    device = "cuda" if (df["device"] == "cuda").any() else "cpu"
    kind = "GPU (CUDA)" if device == "cuda" else "CPU"
    lines = [
        f"# plrnn benchmark report: `{machine}`",
        "",
        f"- {kind} results of machine `{machine}`; CPU and GPU results are never mixed in one "
        "table (a GPU run has its own machine name).",
        f"- measured code: {_commits(_keyed(df, ['commit']))}",
        f"- inputs: {', '.join(f'`{p}`' for p in inputs)}",
        f"- written (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} by "
        "`python -m plrnn.bench.report`",
        "- time: median per call (pytest-benchmark: median of rounds; asv: median of samples, "
        "one sample with --quick). GB/s: bytes_moved (fp32: 12 B/element forward, 32 "
        "forward+backward) / time; of copy: over the copy_ probe of the same run (8 B/element). "
        "Speedups: baseline time / this time (> 1 is faster than the baseline).",
        "- allocator: `default` is glibc malloc as a user's process starts (large fresh outputs "
        "fault their pages in, as users pay); `steady` reuses freed pages "
        "(`PLRNN_BENCH_ALLOCATOR=steady`). Each table names the run it comes from.",
        "",
    ]
    for note in _load_notes(inputs):
        lines.insert(-1, note)
    report = Report(machine, device, "")
    sources = [s for s in SOURCE_ORDER if s in set(df["source"])]
    kern, lay, tr = kernels_table(df), layers_table(df), train_table(df)
    ops = op_inputs_table(df)
    copies = copy_bandwidth(_keyed(df, ["commit"]))
    for source in sources:
        lines += [f"## {source}", ""]
        if source == "asv":
            lines += ["- asv records no machine load: samples from a busy machine show as "
                      "outliers across commits; compare commits on the dashboard "
                      "(`asv publish && asv preview`)", ""]
        c = copies[copies["source"] == source]
        for _, r in c.iterrows():
            lines.append(f"- copy_ probe: {int(r['numel'])} fp32 elements in "
                         f"{_ms(r['copy_time_s'])} ms = {r['copy_bytes_per_s'] / 1e9:.2f} GB/s")
        if c.empty:
            lines.append("- no copy_ probe in this source: no fraction of copy bandwidth")
        lines.append("")
        k = kern[kern["source"] == source] if not kern.empty else kern
        if not k.empty:
            lines += [f"### linear_recurrence ({kind}, fp32)", "",
                      _measured(df, source, "kernels", "copy"), "", kernels_markdown(k, device),
                      ""]
        la = lay[lay["source"] == source] if not lay.empty else lay
        if not la.empty:
            r0 = df[(df["suite"] == "layers") & (df["source"] == source)]
            size = "; ".join(f"{col} {_first(r0, col)}" for col in ("num_layers", "hidden",
                                                                   "input_size")
                             if col in r0 and r0[col].notna().any())
            lines += ["### Layers (serial vs parallel recurrence; torch.nn.LSTM baseline)", "",
                      (size + "; " if size else "") + "forward runs without autograd, "
                      "forward+backward takes every parameter's gradient", "",
                      _measured(df, source, "layers"), "", layers_markdown(la), ""]
        t = tr[tr["source"] == source] if not tr.empty else tr
        if not t.empty:
            lines += ["### Synthetic-task train step (forward, backward, clip, Adam)", "",
                      _measured(df, source, "train"), "", train_markdown(t), ""]
        o = ops[ops["source"] == source] if not ops.empty else ops
        if not o.empty:
            lines += ["### The op's newer inputs, each beside what a user would otherwise run",
                      "", "Sizes and cases: `benchmarks/_op_inputs.py`.", "",
                      _measured(df, source, "op_inputs"), "", op_inputs_markdown(o), ""]
    report.markdown = "\n".join(lines)
    plot_source = sources[0] if sources else None
    if not kern.empty:
        report.csv["bench_kernels"] = kern
        fig = kernels_figure(kern[kern["source"] == plot_source],
                             f"linear_recurrence on {machine} ({plot_source})")
        if fig is not None:
            report.figures["bench_kernels"] = fig
    if not lay.empty:
        report.csv["bench_layers"] = lay
        fig = layers_figure(lay[lay["source"] == plot_source],
                            f"layers on {machine} ({plot_source})")
        if fig is not None:
            report.figures["bench_layers"] = fig
    if not tr.empty:
        report.csv["bench_train"] = tr
    if not ops.empty:
        report.csv["bench_op_inputs"] = ops
    if not copies.empty:
        report.csv["bench_copy"] = copies
    report.meta = {"machine": machine, "device": device, "inputs": inputs,
                   "sources": sources,
                   "commits": sorted({c for c in df["commit"].dropna().astype(str)}),
                   "plots_from": plot_source}
    return report


def _load_notes(inputs: list[str]) -> list[str]:
    """How busy the machine was during each pytest-benchmark run (its conftest records it)."""
    notes = []
    for path in inputs:
        try:
            load = json.loads(Path(path).read_text())["machine_info"]["load_average"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        start, end = load.get("start"), load.get("end")
        if start and end:
            notes.append(f"- load average (1, 5, 15 min) during `{path}`: "
                         f"{', '.join(f'{v:.2f}' for v in start)} at the start, "
                         f"{', '.join(f'{v:.2f}' for v in end)} at the end "
                         "(above the core count, other processes were competing for the cores)")
    return notes


def _first(df: pd.DataFrame, col: str):
    vals = df[col].dropna()
    return vals.iloc[0] if not vals.empty else "?"


def write_report(report: Report, out_root: Path) -> list[Path]:
    out = Path(out_root) / report.machine
    written = [atomic_write(out / "bench_report.md", report.markdown + "\n")]
    written.append(atomic_write(out / "bench_report.json",
                                json.dumps(report.meta, indent=2, default=str) + "\n"))
    for stem, table in report.csv.items():
        written.append(atomic_write(out / f"{stem}.csv", table.to_csv(index=False)))
    for stem, figure in report.figures.items():
        written.append(atomic_write(out / f"{stem}.png", _png(figure)))
    return written


# ---------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m plrnn.bench.report",
        description="Tables and plots per machine from asv results and pytest-benchmark JSON.")
    p.add_argument("--pytest", type=Path, nargs="*", default=None, metavar="JSON",
                   help="pytest --benchmark-json files (default: results/*/pytest_benchmark.json)")
    p.add_argument("--asv", type=Path, default=None, metavar="DIR",
                   help="asv results directory (default: results/asv when it exists)")
    p.add_argument("--no-asv", action="store_true",
                   help="do not read asv results (nor rewrite the asv machines' reports)")
    p.add_argument("--asv-commit", default=None, metavar="PREFIX",
                   help="report this asv commit instead of the newest one per asv machine and "
                        "benchmark")
    p.add_argument("--asv-machine", nargs="*", default=None, metavar="NAME",
                   help="only these asv machines (names under the asv results directory)")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="results root; reports go to <results>/<machine>/ (default: results)")
    return p.parse_args(argv)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    root = args.results
    frames, inputs = [], []
    pytest_files = args.pytest
    if pytest_files is None:
        pytest_files = sorted(root.glob(f"*/{PYTEST_COPY_NAME}"))
    try:
        copies: list[tuple[Path, str]] = []
        for path in pytest_files:
            df = load_pytest_json(path)
            if df.empty:
                print(f"plrnn report: {path} holds no timings (was it run with "
                      "--benchmark-disable?)", file=sys.stderr)
                continue
            frames.append(df)
            machines = sorted(set(df["machine"]))
            copies += [(path, machine) for machine in machines]
            # The report names the copy that is committed beside it.
            inputs.append(str(root / machines[0] / PYTEST_COPY_NAME) if len(machines) == 1
                          else str(path))
        asv_dir = args.asv if args.asv is not None else root / "asv"
        if not args.no_asv and (args.asv is not None or (asv_dir / "benchmarks.json").is_file()):
            df = load_asv_results(asv_dir, args.asv_commit, args.asv_machine)
            if not df.empty:
                frames.append(df)
                inputs.append(str(asv_dir))
    except ReportInputError as err:
        print(f"plrnn report: {err}", file=sys.stderr)
        return 2
    if not frames:
        print("plrnn report: nothing to report (give --pytest JSON files or --asv DIR)",
              file=sys.stderr)
        return 1
    df = pd.concat(frames, ignore_index=True)
    df = df[df["value"].notna() & np.isfinite(df["value"])]
    for path, machine in copies:
        target = root / machine / PYTEST_COPY_NAME
        if not _same_file(path, target):
            atomic_write(target, compact_pytest_json(Path(path).read_bytes()))
            print(f"plrnn report: copied {path} -> {target}")
    for machine in sorted(set(df["machine"])):
        rows = df[df["machine"] == machine]
        used = [p for p in inputs if _input_has_machine(p, machine, frames, inputs)]
        report = build_report(rows, machine, used)
        for path in write_report(report, root):
            print(f"plrnn report: wrote {path}")
    return 0


def _input_has_machine(path: str, machine: str, frames: list[pd.DataFrame],
                       inputs: list[str]) -> bool:
    frame = frames[inputs.index(path)]
    return bool((frame["machine"] == machine).any())


if __name__ == "__main__":
    sys.exit(main())
