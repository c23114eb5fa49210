"""The asv history part of the headline: per machine, the chart of the headline kernels over
commits (a PNG beside the page) and its numbers, or a sentence saying why there is none."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from .asv_history import History, asv_machines, load_benchmarks, read_history
from .charts import history_png
from .discover import KINDS, Machine, kind_of
from .htmlkit import Page, badge, esc

KIND_RANK = {"cpu": 0, "gpu": 1, "unknown": 2}


def _chart_name(prefix: str, machine: str) -> str:
    return f"{prefix}-asv-{re.sub(r'[^A-Za-z0-9._-]+', '_', machine)}.png"


def _when(date_ms: int) -> str:
    if not date_ms:
        return "-"
    return datetime.fromtimestamp(date_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _history_numbers(history: History) -> str:
    """The chart's values as a table: readable without the image, and exact."""
    series = [(b, p) for p in history.passes for b in history.backends]
    scale, unit = (1e3, "ms") if history.unit == "seconds" else (1.0, history.unit)
    head = "".join(f"<th>{esc(b)} {esc(p)} ({esc(unit)})</th>" for b, p in series)
    single = history.single_call
    body = []
    for run in history.runs:
        cells = "".join(
            f"<td>{_cell(run.kernels.get(s), scale, (run.commit, s) in single)}</td>"
            for s in series
        )
        body.append(
            f"<tr><td><code>{esc(run.commit[:12])}</code></td>"
            f"<td>{esc(_when(run.date_ms))}</td>{cells}</tr>"
        )
    note = (
        '<p class="note">* one timed call (<code>asv run --quick</code>), not a median of '
        "several: as noisy as a single call is on a shared machine.</p>"
        if single else ""
    )
    return (
        f'<div class="table-wrap"><table class="asv-history"><thead><tr><th>commit</th>'
        f"<th>commit date (UTC)</th>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
        f"</table></div>{note}"
    )


def _cell(value: float | None, scale: float, single: bool) -> str:
    if value is None:
        return "-"
    return f"{value * scale:.4g}" + ("*" if single else "")


def render_asv_history(
    page: Page, machines: list[Machine], asv_results: Path, chart_prefix: str
) -> str:
    names = {m.name for m in machines} | set(asv_machines(asv_results))
    ordered = sorted(names, key=lambda n: (KIND_RANK[kind_of(n)], n))
    benchmarks = load_benchmarks(asv_results)
    out = []
    for name in ordered:
        kind = kind_of(name)
        label = KINDS[kind]
        anchor = page.anchor("asv-history", name)
        out.append(
            f'<div class="asv-chart" id="{esc(anchor)}" data-asv-machine="{esc(name)}" '
            f'data-kind="{esc(kind)}"><h4>{badge(kind, label)} {esc(name)}</h4>'
        )
        history = read_history(asv_results, name, benchmarks)
        if not isinstance(history, History):
            out.append(f'<p class="note no-history">{esc(history.reason)}.</p></div>')
            continue
        file_name = _chart_name(chart_prefix, name)
        page.files[file_name] = history_png(history, label)
        size = ", ".join(f"{k}={v}" for k, v in history.size.items())
        alt = (
            f"asv history on {label} machine {name}: {history.benchmark} at {size}, "
            f"{' and '.join(history.backends)}, over {len(history.runs)} commits"
        )
        out.append(
            f'<figure><img src="{page.url(page.page_dir / file_name)}" alt="{esc(alt)}" '
            f'loading="eager"><figcaption><code>{esc(history.benchmark)}</code> at '
            f"{esc(size)}: time per call of the serial and parallel kernels, one point per "
            f"commit asv measured on this {esc(label)} machine, oldest first.</figcaption>"
            "</figure>"
        )
        empty = [r.commit[:8] for r in history.runs if not r.kernels]
        if empty:
            out.append(
                f'<p class="note">No value at {len(empty)} commit(s), a gap in the lines: '
                f"{esc(', '.join(empty))} (the kernels were skipped or failed at this "
                "size).</p>"
            )
        if history.dropped:
            out.append(
                f'<p class="note">{history.dropped} run(s) of an older definition of this '
                "benchmark are left out, as asv's own graphs leave them out.</p>"
            )
        if history.absent:
            out.append(
                f'<p class="note">{history.absent} run(s) do not hold this benchmark (runs of '
                "other benchmarks only, <code>asv run --bench ...</code>, or unreadable files)."
                "</p>"
            )
        out.append(
            f"<details><summary>the numbers behind the chart</summary>"
            f"{_history_numbers(history)}</details></div>"
        )
    return "\n".join(out)
