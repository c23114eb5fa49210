"""The paper's headline number per artifact, from reproductions/paper/*.csv: the published
numbers the reproduction scripts compare against. They were measured on the authors' ~2017 GPU."""

from __future__ import annotations

from pathlib import Path

from .headline_values import Headline, Missing, Number, SourceError, best, csv_rows, finite, times

# The heatmap's model; the cuDNN LSTM rows beside it are not its cells.
HEATMAP_MODEL = "GILR-LSTM"


def _published_rows(paper_dir: Path, name: str) -> list[dict[str, str]]:
    path = paper_dir / f"{name}.csv"
    if not path.is_file():
        raise SourceError(f"no published numbers ({path.name} is not in {paper_dir.name}/)")
    return csv_rows(path)


def _published_best(paper_dir: Path, name: str, column: str, where, unit: str, **match) -> Number:
    """The largest value of `column` among the rows of reproductions/paper/<name>.csv that match,
    shown as printed there (0.06 stays 0.06)."""
    rows = [
        r for r in _published_rows(paper_dir, name) if all(r.get(k) == v for k, v in match.items())
    ]
    value, row = best([(finite(r.get(column)), r) for r in rows], f"{name}.csv has no {column}")
    return Number(f"{row[column].strip()}{unit}", where(row), value)


def table1(paper_dir: Path) -> Headline:
    return _published_best(
        paper_dir, "table1", "speedup", lambda r: f"m={r['features']}, T={r['seq_len']}", "×"
    )


def table2(paper_dir: Path) -> Headline:
    return _published_best(
        paper_dir,
        "table2",
        "speedup",
        lambda r: f"{r['architecture']}, T={r['seq_len']}, b={r['batch']}",
        "×",
    )


def table3(paper_dir: Path) -> Headline:
    """LSTM hours / GILR-LSTM hours per length, as the script's own "paper" column computes."""
    by_length: dict[str, dict[str, float | None]] = {}
    for r in _published_rows(paper_dir, "table3"):
        model = "gilr" if "GILR" in (r.get("model") or "") else "lstm"
        by_length.setdefault(r.get("seq_len") or "?", {})[model] = finite(r.get("wall_hours_mean"))
    candidates = []
    for T, walls in by_length.items():
        gilr, lstm = walls.get("gilr"), walls.get("lstm")
        # A length where the LSTM never converged has no ratio to publish.
        candidates.append((lstm / gilr if gilr and lstm is not None else None, T))
    value, T = best(candidates, "table3.csv has no length where both models converged")
    return Number(times(value), f"T={T}", value)


def figure2(paper_dir: Path) -> Headline:
    return Missing("curves only: the paper publishes no numbers for Figure 2")


def throughput_heatmap(paper_dir: Path) -> Headline:
    return _published_best(
        paper_dir,
        "throughput_heatmap",
        "kilo_steps_per_s",
        lambda r: f"T={r['seq_len']}, b={r['batch']}",
        "k steps/s",
        model=HEATMAP_MODEL,
    )


def context_parallel(paper_dir: Path) -> Headline:
    return Missing("not in the paper")
