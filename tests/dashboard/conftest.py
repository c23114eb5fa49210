"""A fake repository with a results tree shaped like the real one (written by hand here, so the
tests know every table cell and file the page must show)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

CPU = "cpu-fake-epyc-2c"
GPU = "cuda-fake-h100"

TABLE1_MD = """\
# Table 1 reproduction

- machine: `cpu-fake-epyc-2c`
- torch 2.13.0+cpu, commit abcdef0123456789

## ours vs the paper

| m | T | ours speedup | paper speedup | ours/paper |
|--:|--:|-------------:|--------------:|-----------:|
| 4 | 16 | 0.52 | 0.06 | 8.67 |
| 4 | 65536 | 1.10 | 38.9 | 0.03 |

## second section

| note | value |
|:-----|------:|
| a <b>bold</b> & raw | 7 |

Raw numbers: [the CSV](table1.csv). Paper: [arXiv](https://arxiv.org/abs/1709.04057).

<script>document.title = "injected"</script>
"""

# The tables above, cell by cell, as a browser shows them.
TABLE1_TABLES = [
    [
        ["m", "T", "ours speedup", "paper speedup", "ours/paper"],
        ["4", "16", "0.52", "0.06", "8.67"],
        ["4", "65536", "1.10", "38.9", "0.03"],
    ],
    [["note", "value"], ["a <b>bold</b> & raw", "7"]],
]

BENCH_MD = """\
# bench

| method | ms |
|:--|--:|
| cpu_serial | 0.0386 |

Goal PASS: serial at copy bandwidth
Goal FAIL: parallel 2x faster
"""
BENCH_TABLES = [[["method", "ms"], ["cpu_serial", "0.0386"]]]

TABLE2_MD = """\
# Table 2 on a GPU

| arch | ours | paper |
|:--|--:|--:|
| SRU | 3.1 | 0.28 |
"""
TABLE2_TABLES = [[["arch", "ours", "paper"], ["SRU", "3.1", "0.28"]]]

PAPER_CSV = """\
# Published speedups, exactly as printed.
seq_len,features,batch,speedup
16,4,1,0.06
"""
PAPER_TABLES = [[["seq_len", "features", "batch", "speedup"], ["16", "4", "1", "0.06"]]]


def machine_json(*, gpu: dict | None, device: str, commit: str) -> str:
    return json.dumps(
        {
            "machine_name": "x",
            "machine": {
                "cpu": "Fake EPYC 7000",
                "logical_cores": 2,
                "usable_cores": 2,
                "torch_version": "2.13.0+cpu",
                "python_version": "3.11.7",
                "platform": "Linux-x86_64",
                "git_commit": commit,
                "git_dirty": False,
                "gpu": gpu,
            },
            "config": {"device": device, "dtype": "float32", "grid_T": [16, 65536]},
            "goals": {"ratio": 1.25},
        }
    )


def write_png(path: Path, color: str = "C0") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=40)
    ax.plot([0, 1, 2], [1, 3, 2], color=color)
    fig.savefig(path)
    plt.close(fig)


@dataclass
class FakeTree:
    root: Path
    results: Path
    cpu: Path
    gpu: Path

    @property
    def all_tables(self) -> list[list[list[str]]]:
        return TABLE1_TABLES + BENCH_TABLES + TABLE2_TABLES + PAPER_TABLES


@pytest.fixture(scope="session")
def png_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("png") / "fig.png"
    write_png(path)
    return path.read_bytes()


@pytest.fixture
def fake_tree(tmp_path, png_bytes) -> FakeTree:
    """results/ with a CPU and a GPU machine:

    cpu-fake-epyc-2c: table1 (md, csv, json, png), recurrence_bench (md, csv, json, no png),
      zz_custom (csv only), extra_figure (png only),
      "notes #2 (v%).txt" (other; its name needs URL quoting)
    cuda-fake-h100: table2 (md, csv, json, png)
    asv/: asv's results (not a machine: 2 runs on "fakebox"); reproductions/paper/table1.csv
    """
    root = tmp_path / "repo"
    results = root / "results"
    cpu, gpu = results / CPU, results / GPU
    for d in (cpu, gpu, results / "asv" / "fakebox", root / "reproductions" / "paper"):
        d.mkdir(parents=True)
    cpu_meta = machine_json(gpu=None, device="cpu", commit="abcdef0123456789")
    (cpu / "table1.md").write_text(TABLE1_MD)
    (cpu / "table1.csv").write_text("m,T,speedup\n4,16,0.52\n")
    (cpu / "table1.json").write_text(cpu_meta)
    (cpu / "table1.png").write_bytes(png_bytes)
    (cpu / "recurrence_bench.md").write_text(BENCH_MD)
    (cpu / "recurrence_bench.csv").write_text("method,ms\ncpu_serial,0.0386\n")
    (cpu / "recurrence_bench.json").write_text(cpu_meta)
    (cpu / "zz_custom.csv").write_text("a,b\n1,2\n")
    (cpu / "extra_figure.png").write_bytes(png_bytes)
    (cpu / "notes #2 (v%).txt").write_text("free text\n")
    gpu_meta = machine_json(
        gpu={"name": "NVIDIA H100", "count": 1, "driver": "550.1", "cuda_runtime": "12.4"},
        device="cuda",
        commit="fedcba9876543210",
    )
    (gpu / "table2.md").write_text(TABLE2_MD)
    (gpu / "table2.csv").write_text("arch,ours\nSRU,3.1\n")
    (gpu / "table2.json").write_text(gpu_meta)
    (gpu / "table2.png").write_bytes(png_bytes)
    (results / "asv" / "benchmarks.json").write_text("{}")
    (results / "asv" / "fakebox" / "machine.json").write_text("{}")
    (results / "asv" / "fakebox" / "abc123-virtualenv-py3.11.json").write_text("{}")
    (results / "asv" / "fakebox" / "def456-virtualenv-py3.11.json").write_text("{}")
    (root / "reproductions" / "paper" / "table1.csv").write_text(PAPER_CSV)
    return FakeTree(root, results, cpu, gpu)


# --- A results tree for the headline and the asv charts ------------------------------------------
#
# Small, hand-written files shaped like the reproduction scripts' output. Each artifact holds a
# decoy that a wrong rule would pick (a larger torch speedup in Table 1, a larger forward-pass
# speedup in Table 2, an outlier round in the heatmap, an LSTM faster than every GILR-LSTM cell),
# so the tests show the right number is chosen for the right reason.

XEON = "cpu-fake-xeon-2c"
NAN = float("nan")

PAPER_FILES = {
    "table1.csv": "seq_len,features,batch,speedup\n16,4,1,0.06\n65536,32,1,41.8\n65536,128,1,17.5\n",
    "table2.csv": "seq_len,batch,architecture,speedup\n16,4096,SRU,0.28\n65536,1,SRU,9.21\n"
    "65536,1,GILR-LSTM,1.41\n",
    "table3.csv": "seq_len,model,iterations_k_mean,iterations_k_std,wall_hours_mean,"
    "wall_hours_std,converged\n1024,CuDNN LSTM,1.0,0.4,0.28,0.08,true\n"
    "1024,GILR-LSTM,0.55,0.04,0.031,0.002,true\n8192,CuDNN LSTM,0.44,0.05,0.58,0.06,true\n"
    "8192,GILR-LSTM,0.56,0.16,0.10,0.03,true\n1048576,CuDNN LSTM,,,,,false\n"
    "1048576,GILR-LSTM,14,3,9.7,1.7,true\n",
    "throughput_heatmap.csv": "# Poster figure: thousand steps/s.\nmodel,seq_len,batch,kilo_steps_per_s\n"
    "CuDNN LSTM,,256,772\nGILR-LSTM,256,1,63.6\nGILR-LSTM,16384,8,527\n",
}


def _meta(device: str, **extra) -> dict:
    return {"name": "x", "device": device, "config": {"device": {"name": "auto"}}, **extra}


def _table1(device: str, rows: list[dict], headline: list[str]) -> dict:
    return _meta(device, plan={"headline": headline}, summary=rows)


CPU_TABLE1 = _table1(
    "cpu",
    [
        {"m": 4, "T": 16, "speedup cpu_parallel": 0.9, "speedup torch": 5.0, "speedup auto": 1.0},
        {"m": 32, "T": 65536, "speedup cpu_parallel": 1.25, "speedup torch": 0.05},
        {"m": 128, "T": 4096, "speedup cpu_parallel": NAN, "speedup torch": 0.04},
    ],
    ["cpu_parallel"],
)
XEON_TABLE1 = _table1(
    "cpu", [{"m": 32, "T": 16, "speedup cpu_parallel": 1.19, "speedup auto": 2.0}], ["cpu_parallel"]
)
GPU_TABLE1 = _table1(
    "cuda",
    [
        {
            "m": 32,
            "T": 65536,
            "speedup cuda_paper": 30.0,
            "speedup cuda_parallel": 12.0,
            "speedup auto": 99.0,
            "speedup cuda_paper (paper's way)": 50.0,
        },
        {"m": 4, "T": 16, "speedup cuda_paper": 0.2, "speedup cuda_parallel": 0.3},
    ],
    ["cuda_paper", "cuda_parallel"],
)
CPU_TABLE2 = _meta(
    "cpu",
    summary=[
        {"pass": "forward", "architecture": "SRU", "T": 16, "b": 1024, "speedup": 3.0},
        {"pass": "train", "architecture": "SRU", "T": 16, "b": 1024, "speedup": 0.95},
        {"pass": "train", "architecture": "GILR-LSTM", "T": 4096, "b": 4, "speedup": 1.07},
    ],
)
CPU_TABLE3 = _meta(
    "cpu",
    speedups=[
        {"T": 256, "ours": 52.46, "ours is a lower bound": True, "paper": NAN},
        {"T": 1024, "ours": 13.78, "ours is a lower bound": True, "paper": 9.03},
    ],
)
GPU_TABLE3 = _meta(
    "cuda", speedups=[{"T": 1024, "ours": 7.5, "ours is a lower bound": False, "paper": 9.03}]
)
# At T=1024 the LSTM's curve peaks above its final value: the headline reads the end.
FIGURE2_CSV = """\
T,model,wall_time_min,accuracy_mean,accuracy_sd,runs,smoothing
256,GILR-LSTM,0.0,0.5,0.0,3,5
256,GILR-LSTM,2.0,1.0,0.0,3,5
256,LSTM,2.0,0.7,0.0,3,5
1024,GILR-LSTM,0.0,0.5,0.0,3,5
1024,GILR-LSTM,10.0,0.94,0.0,3,5
1024,LSTM,0.0,0.5,0.0,3,5
1024,LSTM,5.0,0.61,0.0,3,5
1024,LSTM,10.0,0.52,0.0,3,5
"""
# Median over rounds: T=16384 b=1 -> 44 (its outlier round of 100 must not win).
HEATMAP_CSV = """\
model,seq_len,batch,round,seconds,kilo_steps_per_s
GILR-LSTM,16384,1,0,0.1,40.0
GILR-LSTM,16384,1,1,0.1,100.0
GILR-LSTM,16384,1,2,0.1,44.0
GILR-LSTM,256,4,0,0.1,42.0
GILR-LSTM,256,4,1,0.1,43.0
cuDNN LSTM,256,16,0,0.1,59.0
cuDNN LSTM,256,16,1,0.1,60.0
"""

ASV_PARAMS = [
    ["1024", "65536"],
    ["1"],
    ["4", "256"],
    ["'cpu_serial'", "'cpu_parallel'", "'torch'"],
    ["'forward'", "'forward+backward'"],
]
ASV_BENCHMARKS = {
    "kernels.LinearRecurrence.time_linear_recurrence": {
        "name": "kernels.LinearRecurrence.time_linear_recurrence",
        "param_names": ["seq_len", "batch", "hidden", "backend", "pass"],
        "params": ASV_PARAMS,
        "unit": "seconds",
        "type": "time",
        "version": "v2",
    },
    "version": 2,
}
# (file stem, commit date in ms, benchmark version, seconds of cpu_serial forward at the largest
# size). The file names sort differently from the dates: the chart must follow the dates.
ASV_RUNS = [
    ("aaaa1111", 3_000_000, "v2", 0.030),
    ("bbbb2222", 1_000_000, "v2", 0.050),
    ("cccc3333", 2_000_000, "v1", 0.999),  # an older benchmark definition: left out
]


def asv_values(serial_fwd: float) -> list[float]:
    """Values over the product of ASV_PARAMS: the serial/parallel kernels at every size, torch
    only at the small ones (as the real grid caps it)."""
    import itertools

    out = []
    for T, _b, H, backend, pass_ in itertools.product(*ASV_PARAMS):
        big = T == "65536" and H == "256"
        if backend == "'torch'":
            out.append(NAN if big else 0.001)
            continue
        value = serial_fwd if big else 0.0001
        value *= 0.5 if backend == "'cpu_parallel'" else 1.0
        value *= 2.0 if pass_ == "'forward+backward'" else 1.0
        out.append(value)
    return out


def asv_result(commit: str, date: int, version: str, serial_fwd: float) -> str:
    return json.dumps(
        {
            "commit_hash": commit + "f" * 32,
            "env_name": "virtualenv-py3.11",
            "date": date,
            "result_columns": ["result", "params", "version", "started_at", "duration"],
            "results": {
                "kernels.LinearRecurrence.time_linear_recurrence": [
                    asv_values(serial_fwd),
                    ASV_PARAMS,
                    version,
                    0,
                    1.0,
                ],
                "kernels.Copy.time_copy": [[0.01], [["16777216"]], "c", 0, 1.0],
            },
            "version": 2,
        }
    )


@dataclass
class HeadlineTree:
    root: Path
    results: Path
    paper: Path

    def machine(self, name: str) -> Path:
        return self.results / name


@pytest.fixture
def headline_tree(tmp_path) -> HeadlineTree:
    """Three machines: cpu-fake-epyc-2c ran every paper artifact and has asv history;
    cpu-fake-xeon-2c ran Table 1 only and has no asv folder; cuda-fake-h100 ran Tables 1 and 3
    and has an asv folder with no runs. No machine ran the context-parallel experiment."""
    root = tmp_path / "repo"
    results, paper = root / "results", root / "reproductions" / "paper"
    cpu, xeon, gpu = results / CPU, results / XEON, results / GPU
    asv = results / "asv"
    for d in (cpu, xeon, gpu, paper, asv / CPU, asv / GPU):
        d.mkdir(parents=True)
    for name, text in PAPER_FILES.items():
        (paper / name).write_text(text)
    files = {
        cpu: {
            "table1.json": CPU_TABLE1,
            "table2.json": CPU_TABLE2,
            "table3.json": CPU_TABLE3,
            "figure2.csv": FIGURE2_CSV,
            "throughput_heatmap.csv": HEATMAP_CSV,
        },
        xeon: {"table1.json": XEON_TABLE1},
        gpu: {"table1.json": GPU_TABLE1, "table3.json": GPU_TABLE3},
    }
    for folder, named in files.items():
        for name, content in named.items():
            text = content if isinstance(content, str) else json.dumps(content)
            (folder / name).write_text(text)
            (folder / f"{Path(name).stem}.md").write_text(f"# {Path(name).stem}\n\nsome notes\n")
    (asv / "benchmarks.json").write_text(json.dumps(ASV_BENCHMARKS))
    for machine in (CPU, GPU):
        (asv / machine / "machine.json").write_text(json.dumps({"machine": machine}))
    for commit, date, version, serial in ASV_RUNS:
        (asv / CPU / f"{commit}-virtualenv-py3.11.json").write_text(
            asv_result(commit, date, version, serial)
        )
    return HeadlineTree(root, results, paper)
