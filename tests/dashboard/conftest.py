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
    [["m", "T", "ours speedup", "paper speedup", "ours/paper"],
     ["4", "16", "0.52", "0.06", "8.67"],
     ["4", "65536", "1.10", "38.9", "0.03"]],
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
    return json.dumps({
        "machine_name": "x",
        "machine": {"cpu": "Fake EPYC 7000", "logical_cores": 2, "usable_cores": 2,
                    "torch_version": "2.13.0+cpu", "python_version": "3.11.7",
                    "platform": "Linux-x86_64", "git_commit": commit, "git_dirty": False,
                    "gpu": gpu},
        "config": {"device": device, "dtype": "float32", "grid_T": [16, 65536]},
        "goals": {"ratio": 1.25},
    })


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
    gpu_meta = machine_json(gpu={"name": "NVIDIA H100", "count": 1, "driver": "550.1",
                                 "cuda_runtime": "12.4"}, device="cuda", commit="fedcba9876543210")
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
