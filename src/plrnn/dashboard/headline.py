"""The headline's rows: one per paper artifact, what it compares, and where the paper's number
and ours come from (paper_numbers.py, our_numbers.py). Nothing here or there holds a result: a
rerun changes the headline with no edit to the code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import our_numbers as ours
from . import paper_numbers as paper
from .discover import Artifact
from .headline_values import Headline, Missing, Number, SourceError

__all__ = [
    "SPECS",
    "Headline",
    "Missing",
    "Number",
    "SourceError",
    "Spec",
    "our_headline",
    "paper_headline",
]


@dataclass(frozen=True)
class Spec:
    name: str  # results/<machine>/<name>.* and reproductions/paper/<name>.csv
    label: str
    compared: str
    paper: Callable[[Path], Headline]  # reproductions/paper/ -> the published number
    ours: Callable[[Artifact, dict | None], Headline]  # (files, loaded <name>.json) -> ours
    # Rows shown only once some machine has run the artifact (a newer experiment).
    optional: bool = False


SPECS = (
    Spec(
        "table1",
        "Table 1",
        "kernel speedup, parallel over serial recurrence (batch 1); best cell",
        paper.table1,
        ours.table1,
    ),
    Spec(
        "table2",
        "Table 2",
        "training-step speedup of a 2-layer model, parallel over serial recurrence; best cell",
        paper.table2,
        ours.table2,
    ),
    Spec(
        "table3",
        "Table 3",
        "time to convergence on the synthetic task: LSTM wall time / "
        "GILR-LSTM wall time; best length",
        paper.table3,
        ours.table3,
    ),
    Spec(
        "figure2",
        "Figure 2",
        "learning curves on the synthetic task: accuracy at the end of "
        "the longest sequence's curves",
        paper.figure2,
        ours.figure2,
    ),
    Spec(
        "throughput_heatmap",
        "Throughput heatmap",
        "GILR-LSTM forward throughput (2 layers, 256 units), thousand steps/s; best cell",
        paper.throughput_heatmap,
        ours.throughput_heatmap,
    ),
    Spec(
        "context_parallel",
        "Context-parallel run",
        "one sequence split in time across processes: peak memory per rank over one process's "
        "(lower is better); best rank count",
        paper.context_parallel,
        ours.context_parallel,
        optional=True,
    ),
)


def paper_headline(spec: Spec, paper_dir: Path) -> Headline:
    try:
        return spec.paper(paper_dir)
    except (SourceError, KeyError, TypeError, ValueError) as exc:
        return Missing(str(exc))


def our_headline(spec: Spec, art: Artifact, data: dict | None) -> Headline:
    """Raises SourceError when the artifact's files lack what its headline needs."""
    try:
        return spec.ours(art, data)
    except SourceError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SourceError(f"{art.name}: {type(exc).__name__}: {exc}") from exc
