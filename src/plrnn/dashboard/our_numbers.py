"""Our headline number per artifact on one machine, from results/<machine>/<artifact>.*: the
summary the script wrote into its JSON (the numbers its Markdown table shows) or, where it keeps
none, its CSV. "Best" is over the grid that machine ran, with the cell it came from beside it:
the paper's best cell (e.g. T = 65536) may not be in a small CPU grid, and a reader should see it.
"""

from __future__ import annotations

import statistics

from .discover import Artifact
from .headline_values import Headline, Number, SourceError, best, csv_rows, finite, sig, times
from .paper_numbers import HEATMAP_MODEL


def _summary(data: dict | None, key: str, name: str) -> list[dict]:
    if data is None:
        raise SourceError(f"{name}.json is missing or unreadable (the headline reads its {key!r} "
                          "list)")
    rows = data.get(key) if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SourceError(f"{name}.json has no {key!r} list")
    return rows


def table1(art: Artifact, data: dict | None) -> Headline:
    summary = _summary(data, "summary", art.name)
    plan = data.get("plan") if isinstance(data.get("plan"), dict) else {}
    # The script names the kernels it sets against the paper's (CPU: cpu_parallel; CUDA: the
    # paper's kernel and ours); torch's scan and `auto` are shown in the section, not here.
    methods = plan.get("headline") or sorted(
        {
            k.removeprefix("speedup ")
            for r in summary
            for k in r
            if k.startswith("speedup ") and "paper's way" not in k
        }
    )
    value, (method, row) = best(
        [(finite(r.get(f"speedup {m}")), (m, r)) for r in summary for m in methods],
        f"table1.json has no speedup for {', '.join(methods) or 'any method'}",
    )
    return Number(times(value), f"{method}, m={row.get('m')}, T={row.get('T')}", value)


def table2(art: Artifact, data: dict | None) -> Headline:
    summary = _summary(data, "summary", art.name)
    # The paper's Table 2 is the train step (forward + backward); the script also times the
    # forward pass alone, which is not what the paper's number measures.
    train = [r for r in summary if r.get("pass", "train") == "train"]
    value, row = best(
        [(finite(r.get("speedup")), r) for r in train], "table2.json has no train-step speedup"
    )
    return Number(
        times(value), f"{row.get('architecture')}, T={row.get('T')}, b={row.get('b')}", value
    )


def table3(art: Artifact, data: dict | None) -> Headline:
    rows = _summary(data, "speedups", art.name)
    # The ratio of medians where the table has it: of three runs, one slow run sets a mean.
    medians = any("ours, medians" in r for r in rows)
    key, bound_key = (("ours, medians", "medians: lower bound") if medians
                      else ("ours", "ours is a lower bound"))
    value, row = best(
        [(finite(r.get(key)), r) for r in rows],
        "table3.json has no length where the GILR-LSTM converged in every run",
    )
    notes = ["medians"] if medians else []
    if row.get(bound_key):
        # The LSTM hit its cap: its time, and so the speedup, is only known to be at least this.
        notes.append("the LSTM hit its time cap")
    where = "; ".join([f"T={row.get('T')}", ", ".join(notes)] if notes else [f"T={row.get('T')}"])
    return Number(f"≥ {times(value)}" if row.get(bound_key) else times(value), where, value)


def figure2(art: Artifact, data: dict | None) -> Headline:
    if art.csv is None:
        raise SourceError("figure2.csv is missing")
    rows = csv_rows(art.csv)
    lengths = [int(r["T"]) for r in rows if (r.get("T") or "").isdigit()]
    if not lengths:
        raise SourceError("figure2.csv has no curve")
    # The longest sequence is the hardest task, the one the figure is about.
    T = max(lengths)
    last: dict[str, tuple[float, float]] = {}
    for r in rows:
        t, acc = finite(r.get("wall_time_min")), finite(r.get("accuracy_mean"))
        if r.get("T") != str(T) or t is None or acc is None:
            continue
        if r["model"] not in last or t >= last[r["model"]][0]:
            last[r["model"]] = (t, acc)
    if not last:
        raise SourceError(f"figure2.csv has no accuracy at T={T}")
    models = sorted(last, key=lambda m: ("GILR" not in m, m))
    text = " vs ".join(f"{m} {last[m][1]:.2f}" for m in models)
    minutes = max(t for t, _ in last.values())
    return Number(text, f"mean accuracy at the end, T={T}, {minutes:.1f} min", last[models[0]][1])


def _kilo(value: float) -> str:
    return f"{sig(value)}k steps/s"


def throughput_heatmap(art: Artifact, data: dict | None) -> Headline:
    if art.csv is None:
        raise SourceError("throughput_heatmap.csv is missing")
    rounds: dict[tuple[str, str], list[float]] = {}
    for r in csv_rows(art.csv):
        value = finite(r.get("kilo_steps_per_s"))
        if r.get("model") == HEATMAP_MODEL and value is not None:
            rounds.setdefault((r.get("seq_len"), r.get("batch")), []).append(value)
    # The median over rounds per cell, as the script's own table does.
    value, where = best(
        [(statistics.median(v), f"T={T}, b={b}") for (T, b), v in rounds.items()],
        f"throughput_heatmap.csv has no {HEATMAP_MODEL} timing",
    )
    return Number(_kilo(value), where, value)


def _length(T: str) -> str:
    """2^20 for a power of two, as the script's own table writes it."""
    n = int(T) if T.isdigit() else 0
    return f"2^{n.bit_length() - 1}" if n > 1 and n & (n - 1) == 0 else T


def context_parallel(art: Artifact, data: dict | None) -> Headline:
    """Peak memory per rank against one process on the whole sequence (the script's "of 1
    rank's" column): the point of splitting a sequence that does not fit one device."""
    if art.csv is None:
        raise SourceError("context_parallel.csv is missing")
    peaks: dict[tuple[str, str, int], float] = {}
    for r in csv_rows(art.csv):
        peak, ranks = finite(r.get("peak_bytes")), finite(r.get("ranks"))
        if peak is None or ranks is None:
            continue
        # Per case, length and rank count, the largest over the ranks.
        key = (r.get("case") or "?", r.get("T") or "?", int(ranks))
        peaks[key] = max(peaks.get(key, 0.0), peak)
    candidates = []
    for (case, T, ranks), peak in peaks.items():
        one = peaks.get((case, T, 1))
        if ranks > 1 and one:
            # Negated: the lowest share of one process's memory is the best.
            candidates.append((-peak / one, f"{ranks} ranks, {case}, T={_length(T)}"))
    value, where = best(candidates, "context_parallel.csv has no 1-rank run to compare with")
    return Number(f"{times(-value)} of 1 process", f"peak memory per rank: {where}", -value)
