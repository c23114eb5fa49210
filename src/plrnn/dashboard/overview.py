"""The top of the page: the headline table (every paper artifact, the paper's number beside each
machine's best) and, under it, the asv history of the headline kernels per machine."""

from __future__ import annotations

from pathlib import Path

from .discover import Machine
from .headline_table import render_headline_table
from .history_charts import render_asv_history
from .htmlkit import Page


def render_overview(
    page: Page,
    machines: list[Machine],
    *,
    paper_dir: Path,
    paper_anchor: str | None,
    asv_results: Path,
    chart_prefix: str,
) -> str:
    anchor = page.anchor("headline")
    history_anchor = page.anchor("asv-history")
    page.toc.append(
        f'<li><a href="#{anchor}">Headline: the paper vs ours</a><ul>'
        f'<li><a href="#{history_anchor}">kernel speed across commits</a></li>'
        "</ul></li>"
    )
    table = render_headline_table(page, machines, paper_dir, paper_anchor)
    charts = render_asv_history(page, machines, asv_results, chart_prefix)
    return "\n".join(
        [
            f'<section id="{anchor}" class="headline">',
            "<h2>Headline: every paper artifact, the paper's number beside ours</h2>",
            "<p class=\"note\">The paper's numbers were measured on the authors' ~2017 GPU. Each of "
            "our columns is one machine and says whether it is a CPU or a GPU: a CPU number is a "
            "different fact, not an attempt at the paper's GPU number. Ours is the best over the grid "
            "that machine ran, with the cell it came from; the paper's is its best published cell. "
            "Each number links to its section below.</p>",
            table,
            f'<h3 id="{history_anchor}">Kernel speed across commits (asv)</h3>',
            '<p class="note">The serial and parallel linear-recurrence kernels at the largest size '
            "each machine's asv runs measured, per commit. Lower is faster.</p>",
            charts,
            "</section>",
        ]
    )
