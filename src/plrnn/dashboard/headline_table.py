"""The headline table's HTML: one row per paper artifact, the paper's number, then one column per
machine with its best number, each linked to that machine's section of the artifact.

The paper's numbers are GPU numbers; most of ours so far are CPU numbers. Every machine column is
labelled with its kind, the paper's column says GPU, and a cell whose metadata names a different
device than its folder shows no number at all: a CPU number must never read as a GPU one.
"""

from __future__ import annotations

from pathlib import Path

from . import headline, metadata
from .discover import Machine
from .htmlkit import Page, badge, esc


def _link(anchor: str | None, inner: str) -> str:
    return f'<a href="#{esc(anchor)}">{inner}</a>' if anchor else inner


def _number_html(value: headline.Headline, anchor: str | None) -> str:
    if isinstance(value, headline.Number):
        # The space keeps "41.8× m=32, T=65536" apart in copied text; CSS puts it on its own line.
        where = f' <span class="where">{esc(value.where)}</span>' if value.where else ""
        return f"{_link(anchor, f'<strong>{esc(value.text)}</strong>')}{where}"
    return f'<span class="missing">{_link(anchor, esc(value.reason))}</span>'


def _our_cell(page: Page, spec: headline.Spec, machine: Machine) -> str:
    art = next((a for a in machine.artifacts if a.name == spec.name), None)
    attrs = f'data-machine="{esc(machine.name)}" data-kind="{esc(machine.kind)}"'
    if art is None:
        return f'<td {attrs} data-state="not-run"><span class="missing">not run</span></td>'
    anchor = page.artifact_ids.get((machine.name, art.name))
    data = None
    if art.metadata is not None:
        try:
            data = metadata.load(art.metadata)
        except metadata.MetadataError:
            data = None  # the machine's section already says why
    stated = metadata.stated_device(data) if data is not None else None
    if stated is not None and machine.kind != "unknown" and stated != machine.kind:
        # The section carries the warning; the headline shows no number rather than one under
        # the wrong label.
        return (
            f'<td {attrs} data-state="device-unclear"><span class="missing">'
            f"{_link(anchor, 'device unclear: see its section')}</span></td>"
        )
    try:
        value = headline.our_headline(spec, art, data)
    except headline.SourceError as exc:
        # Said in the cell, not as a page warning: the files are whole, they just predate the
        # summary the headline reads (the section still shows everything they hold).
        value = headline.Missing(f"no headline number: {exc}")
    state = "number" if isinstance(value, headline.Number) else "missing"
    return f'<td {attrs} data-state="{state}">{_number_html(value, anchor)}</td>'


def render_headline_table(
    page: Page, machines: list[Machine], paper_dir: Path, paper_anchor: str | None
) -> str:
    ran = {a.name for m in machines for a in m.artifacts}
    specs = [s for s in headline.SPECS if not s.optional or s.name in ran]
    head = [
        '<th scope="col">artifact</th>',
        '<th scope="col">what is compared</th>',
        f'<th scope="col" data-source="paper">paper {badge("gpu", "GPU")} '
        '<span class="where">authors\' ~2017 GPU</span></th>',
    ]
    head += [
        f'<th scope="col" data-machine="{esc(m.name)}" data-kind="{esc(m.kind)}">'
        f'ours {badge(m.kind, m.kind_label)} <span class="where">{esc(m.name)}</span></th>'
        for m in machines
    ]
    rows = []
    for spec in specs:
        # The artifact's first section on the page; the paper's numbers where no machine ran it.
        first = next(
            (
                page.artifact_ids[(m.name, spec.name)]
                for m in machines
                if (m.name, spec.name) in page.artifact_ids
            ),
            paper_anchor,
        )
        paper = headline.paper_headline(spec, paper_dir)
        cells = [
            f'<th scope="row">{_link(first, esc(spec.label))}</th>',
            f"<td>{esc(spec.compared)}</td>",
            # Only a number links to the paper's section: a reason why there is none would
            # point at a table that does not hold it.
            f'<td data-source="paper" data-kind="gpu">'
            f"{_number_html(paper, paper_anchor if isinstance(paper, headline.Number) else None)}"
            "</td>",
        ]
        cells += [_our_cell(page, spec, m) for m in machines]
        rows.append(f'<tr data-artifact="{esc(spec.name)}">{"".join(cells)}</tr>')
    return (
        '<div class="table-wrap"><table class="headline">'
        f"<thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div>"
    )
