"""Find what a results tree holds: results/<machine>/<name>.{md,csv,png,json,...}.

Only the layout is read here (names, suffixes, the machine's kind); parsing happens when rendering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The paper's artifacts first, in the paper's order, then the kernel benchmarks; anything else
# follows alphabetically, so a new script's output shows up without touching this list.
KNOWN_ORDER = (
    "README",  # a machine's own notes, which may correct what follows
    "table1",
    "table2",
    "table3",
    "table3_sweep",
    "figure2",
    "figure1",
    "throughput_heatmap",
    "context_parallel",
    "recurrence_bench",
    "auto_sweep",
    "bench_report",
)

TITLES = {
    "table1": "Table 1: kernel speedup, parallel over serial",
    "table2": "Table 2: LS-RNN training speedup",
    "table3": "Table 3: synthetic task, GILR-LSTM vs LSTM",
    "table3_sweep": "Table 3, tuning sweep: the same budget for both models",
    "figure2": "Figure 2: learning curves on the synthetic task",
    "figure1": "Figure 1: the synthetic task and the two-layer GILR-LSTM",
    "throughput_heatmap": "Poster heatmap: GILR-LSTM throughput",
    "context_parallel": "Context-parallel run (beyond the paper)",
    "recurrence_bench": "linear_recurrence benchmark",
    "auto_sweep": 'backend="auto" sweep',
    "bench_report": "benchmark report",
}

# Preferred first: when one artifact has both a PNG and an SVG, the page shows the PNG and links
# the other.
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".webp")

# Folders under results/ that are not machines.
NOT_MACHINES = frozenset({"asv"})

KINDS = {
    "cpu": "CPU",
    "gpu": "GPU (CUDA)",
    "unknown": "device not stated",
}


def kind_of(name: str) -> str:
    """'cpu', 'gpu' or 'unknown' from a machine name as plrnn.bench.machine_name() writes it (the
    results/ folders and asv's machine names follow the same rule)."""
    if name.startswith("cpu-") or name == "cpu":
        return "cpu"
    if name.startswith("cuda-") or name == "cuda":
        return "gpu"
    return "unknown"


@dataclass
class Artifact:
    name: str
    markdown: Path | None = None
    csv: Path | None = None
    metadata: Path | None = None
    image: Path | None = None
    others: list[Path] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)


@dataclass
class Machine:
    name: str
    path: Path
    artifacts: list[Artifact]

    @property
    def kind(self) -> str:
        """'cpu', 'gpu' or 'unknown', from the folder name that plrnn.bench.machine_name() gave."""
        return kind_of(self.name)

    @property
    def kind_label(self) -> str:
        return KINDS[self.kind]


def _order_key(name: str) -> tuple[int, str]:
    try:
        return (KNOWN_ORDER.index(name), "")
    except ValueError:
        return (len(KNOWN_ORDER), name)


def find_artifacts(machine_dir: Path) -> list[Artifact]:
    by_name: dict[str, Artifact] = {}
    files = sorted(p for p in machine_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    for path in files:
        art = by_name.setdefault(path.stem, Artifact(path.stem))
        suffix = path.suffix.lower()
        if suffix == ".md" and art.markdown is None:
            art.markdown = path
        elif suffix == ".csv" and art.csv is None:
            art.csv = path
        elif suffix == ".json" and art.metadata is None:
            art.metadata = path
        elif suffix in IMAGE_SUFFIXES:
            if art.image is None or (
                IMAGE_SUFFIXES.index(suffix) < IMAGE_SUFFIXES.index(art.image.suffix.lower())
            ):
                if art.image is not None:
                    art.others.append(art.image)
                art.image = path
            else:
                art.others.append(path)
        else:
            art.others.append(path)
    for art in by_name.values():
        art.others.sort()
    return sorted(by_name.values(), key=lambda a: _order_key(a.name))


def find_machines(results_dir: Path) -> list[Machine]:
    """Every results/<machine>/ folder holding at least one file: CPU machines first, then GPUs,
    then folders whose name states neither; alphabetical within each group."""
    machines = []
    for path in sorted(results_dir.iterdir()):
        if not path.is_dir() or path.name in NOT_MACHINES or path.name[0] in "._":
            continue
        artifacts = find_artifacts(path)
        if artifacts:
            machines.append(Machine(path.name, path, artifacts))
    rank = {"cpu": 0, "gpu": 1, "unknown": 2}
    return sorted(machines, key=lambda m: (rank[m.kind], m.name))
