"""The dashboard's HTML: one self-contained page, inline CSS, relative links only.

The small inline script records script errors and images that failed to load as attributes on
<html> (data-errors, data-images-broken); that makes both visible to a reader (a broken figure
says so) and to the headless-browser test, which reads the dumped DOM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import metadata
from .discover import Artifact, Machine
from .htmlkit import Page, badge, esc
from .markup import render_csv, render_markdown
from .overview import render_overview

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d8dce3; --bg-alt: #f5f6f8;
        --cpu: #1f6f43; --gpu: #7a3e9d; --unknown: #8a6d00; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       display: grid; grid-template-columns: 17rem minmax(0, 1fr); }
nav.toc { position: sticky; top: 0; height: 100vh; overflow-y: auto; padding: 1rem;
          border-right: 1px solid var(--line); background: var(--bg-alt); font-size: 14px; }
nav.toc ul { list-style: none; margin: 0; padding-left: 0.9rem; }
nav.toc > ul { padding-left: 0; }
nav.toc li { margin: 0.15rem 0; }
nav.toc a { color: inherit; text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
main { padding: 1rem 2rem 4rem; max-width: 80rem; }
h1 { margin-top: 0.3rem; }
h2 { border-bottom: 2px solid var(--line); padding-bottom: 0.2rem; margin-top: 2.5rem; }
h3 { margin-top: 2rem; }
section.machine > h2 { display: flex; gap: 0.6rem; align-items: center; }
article.artifact { border-left: 3px solid var(--line); padding-left: 1rem; margin: 1.5rem 0; }
.badge { display: inline-block; font-size: 0.75em; font-weight: 600; color: #fff;
         padding: 0.05rem 0.45rem; border-radius: 0.3rem; vertical-align: middle; }
.badge.cpu { background: var(--cpu); } .badge.gpu { background: var(--gpu); }
.badge.unknown { background: var(--unknown); }
.files, .note { color: var(--muted); font-size: 0.9em; }
.warning { background: #fff4d6; border: 1px solid #e6c65c; padding: 0.4rem 0.7rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 0.8rem;
           font-size: 0.9em; margin: 0.5rem 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
dl.facts.inline { display: flex; flex-wrap: wrap; gap: 0.1rem 0.35rem; }
dl.facts.inline dt::after { content: ":"; } dl.facts.inline dd { margin-right: 0.9rem; }
dl.meta { margin: 0.2rem 0 0.2rem 0.8rem; font-size: 0.85em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin-left: 1rem; }
details > summary { cursor: pointer; color: var(--muted); }
.table-wrap { overflow-x: auto; margin: 0.6rem 0; }
table { border-collapse: collapse; font-size: 0.85em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 0.2rem 0.5rem; }
thead th { background: var(--bg-alt); }
tbody tr:nth-child(even) { background: #fafbfc; }
caption { caption-side: bottom; text-align: left; color: var(--muted); padding-top: 0.3rem; }
code { font-size: 0.9em; overflow-wrap: anywhere; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.9em; }
figure.broken::after { content: "this image failed to load"; color: #b00020; display: block; }
table.headline td, table.headline th { vertical-align: top; }
table.headline tbody th { text-align: left; white-space: nowrap; }
table.headline .where { display: block; color: var(--muted); font-size: 0.85em; font-weight: 400; }
table.headline .missing { color: var(--muted); font-style: italic; }
.asv-chart { margin: 1rem 0 1.5rem; }
.asv-chart h4 { margin: 0.5rem 0; }
@media (max-width: 50rem) {
  body { display: block; }
  nav.toc { position: static; height: auto; border-right: 0; border-bottom: 1px solid var(--line); }
  main { padding: 1rem; }
}
"""

SCRIPT = """
(function () {
  var root = document.documentElement, errors = [];
  function record(message) {
    errors.push(String(message));
    root.setAttribute("data-errors", errors.join(" | "));
  }
  window.addEventListener("error", function (event) {
    if (event.target && event.target.tagName === "IMG") { return; }  /* counted on load */
    record(event.message || "error event");
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    record("unhandled rejection: " + event.reason);
  });
  window.addEventListener("load", function () {
    var broken = 0;
    for (var i = 0; i < document.images.length; i++) {
      var img = document.images[i], ok = img.complete && img.naturalWidth > 0;
      img.setAttribute("data-loaded", ok ? "yes" : "no");
      if (!ok) {
        broken += 1;
        if (img.parentNode.tagName === "FIGURE") { img.parentNode.classList.add("broken"); }
      }
    }
    root.setAttribute("data-images-broken", String(broken));
    root.setAttribute("data-ready", "yes");
  });
})();
"""


@dataclass
class Rendered:
    text: str
    warnings: list[str]
    files: dict[str, bytes]  # written beside the page: the asv charts


def _facts(facts: dict[str, str], *, inline: bool = False) -> str:
    if not facts:
        return ""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts.items())
    return f'<dl class="facts{" inline" if inline else ""}">{rows}</dl>'


FILE_ROLES = {
    "csv": "raw measurements (CSV)",
    "markdown": "table (Markdown)",
    "metadata": "metadata (JSON)",
    "image": "figure",
}


def _file_links(page: Page, art: Artifact) -> str:
    links = []
    for attr in ("csv", "markdown", "metadata", "image"):
        path = getattr(art, attr)
        if path is not None:
            links.append(
                f'<a href="{page.url(path)}">{esc(path.name)}</a> '
                f"<span>{esc(FILE_ROLES[attr])}</span>"
            )
    links += [f'<a href="{page.url(p)}">{esc(p.name)}</a>' for p in art.others]
    return '<p class="files">files: ' + " &middot; ".join(links) + "</p>"


def render_artifact(page: Page, machine: Machine, art: Artifact, data: dict | None) -> str:
    anchor = page.anchor(machine.name, art.name)
    page.artifact_ids[(machine.name, art.name)] = anchor
    page.toc.append(f'<li><a href="#{anchor}">{esc(art.title)}</a></li>')
    out = [
        f'<article class="artifact" id="{anchor}" data-artifact="{esc(art.name)}">',
        f"<h3>{esc(art.title)} {badge(machine.kind, machine.kind_label)}</h3>",
        _file_links(page, art),
    ]
    if data is not None:
        out.append(_facts(metadata.run_facts(data), inline=True))
        stated = metadata.stated_device(data)
        if stated is not None and machine.kind != "unknown" and stated != machine.kind:
            out.append(
                page.warn(
                    f"{machine.name}/{art.metadata.name} says device "
                    f"{metadata.stated_device_text(data)!r}, "
                    f"but the folder is labelled {machine.kind_label}: check where these numbers "
                    "came from."
                )
            )
    if art.image is not None:
        alt = f"{art.title}: figure from {machine.kind_label} machine {machine.name}"
        out.append(
            f'<figure><img src="{page.url(art.image)}" alt="{esc(alt)}" loading="eager">'
            f"<figcaption>{esc(art.image.name)} ({esc(machine.kind_label)}, "
            f"{esc(machine.name)})</figcaption></figure>"
        )
    if art.markdown is not None:
        try:
            text = art.markdown.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            out.append(page.warn(f"{machine.name}/{art.markdown.name} could not be read: {exc}"))
        else:
            body = render_markdown(
                text, heading_offset=3, source_dir=machine.path, page_dir=page.page_dir
            )
            out.append(f'<div class="markdown">{body}</div>')
    elif art.csv is not None:
        out.append(
            '<p class="note">No Markdown table for this artifact; the raw CSV is linked above.</p>'
        )
    if data is not None:
        out.append(
            f"<details><summary>all metadata ({esc(art.metadata.name)})</summary>"
            f"{metadata.definition_list(data)}</details>"
        )
    out.append("</article>")
    return "\n".join(out)


def render_machine(page: Page, machine: Machine) -> str:
    anchor = page.anchor("machine", machine.name)
    loaded: dict[str, dict | None] = {}
    warnings = []
    for art in machine.artifacts:
        loaded[art.name] = None
        if art.metadata is not None:
            try:
                loaded[art.name] = metadata.load(art.metadata)
            except metadata.MetadataError as exc:
                warnings.append(page.warn(f"{machine.name}/{exc}"))
    # Hardware facts from the first artifact that records them; they describe the machine, so
    # they are the same in every file of the folder.
    facts = next((f for d in loaded.values() if d and (f := metadata.machine_facts(d))), {})
    page.toc.append(
        f'<li><a href="#{anchor}">{badge(machine.kind, machine.kind_label)} '
        f"{esc(machine.name)}</a><ul>"
    )
    body = [render_artifact(page, machine, art, loaded[art.name]) for art in machine.artifacts]
    page.toc.append("</ul></li>")
    return "\n".join(
        [
            f'<section class="machine" id="{anchor}" data-machine="{esc(machine.name)}" '
            f'data-kind="{esc(machine.kind)}">',
            f"<h2>{badge(machine.kind, machine.kind_label)} {esc(machine.name)}</h2>",
            f'<p class="note">Every number in this section was measured on this '
            f"{esc(machine.kind_label)} machine; compare across machines only with the hardware in "
            f'mind. All of its files, logs and run records included: <a href="'
            f'{page.url(machine.path)}/">{esc(machine.name)}/</a>.</p>',
            _facts(facts),
            *warnings,
            *body,
            "</section>",
        ]
    )


def render_asv(page: Page, asv_results: Path, asv_html: Path) -> str:
    anchor = page.anchor("asv")
    page.toc.append(f'<li><a href="#{anchor}">asv: kernel speed across commits</a></li>')
    out = [f'<section id="{anchor}" class="asv">', "<h2>asv: kernel speed across commits</h2>"]
    index = asv_html / "index.html"
    if index.is_file():
        out.append(
            f'<p><a href="{page.url(index)}">Open the asv dashboard</a> '
            f"({esc(asv_html.name)}/index.html, built by <code>asv publish</code>).</p>"
        )
    else:
        out.append(
            f"<p>The asv dashboard is not built here (no {esc(asv_html.name)}/index.html). "
            "From the repository root run <code>asv publish</code>, then rebuild this page "
            "with <code>python -m plrnn.dashboard</code>; or browse it with "
            "<code>asv preview</code>.</p>"
        )
    if asv_results.is_dir():
        # asv's layout: <results>/<machine>/machine.json beside one <commit>-<env>.json per run.
        machines = sorted(p.parent.name for p in asv_results.glob("*/machine.json"))
        runs = sum(1 for p in asv_results.glob("*/*.json") if p.name != "machine.json")
        out.append(
            f'<p class="note">asv results in <a href="{page.url(asv_results)}/">'
            f"{esc(asv_results.name)}/</a>: {runs} run{'' if runs == 1 else 's'} on "
            f"{len(machines)} machine{'' if len(machines) == 1 else 's'}"
            f"{' (' + ', '.join(map(esc, machines)) + ')' if machines else ''}.</p>"
        )
    out.append("</section>")
    return "\n".join(out)


def render_paper(page: Page, paper_dir: Path) -> tuple[str, str | None]:
    """The section of published numbers and its anchor (None: no paper CSVs, no section)."""
    csvs = sorted(paper_dir.glob("*.csv")) if paper_dir.is_dir() else []
    if not csvs:
        return "", None
    anchor = page.anchor("paper")
    page.toc.append(f'<li><a href="#{anchor}">published numbers (paper)</a></li>')
    out = [
        f'<section id="{anchor}" class="paper">',
        "<h2>Published numbers (the paper)</h2>",
        '<p class="note">As printed in Martin &amp; Cundy (ICLR 2018), on the authors\' ~2017 '
        "GPU. The tables above already show them beside ours.</p>",
    ]
    for path in csvs:
        out.append(
            f'<details><summary>{esc(path.stem)} (<a href="{page.url(path)}">'
            f"{esc(path.name)}</a>)</summary>{render_csv(path)}</details>"
        )
    out.append("</section>")
    return "\n".join(out), anchor


def render_page(
    *,
    page_dir: Path,
    results_dir: Path,
    machines: list[Machine],
    asv_results: Path,
    asv_html: Path,
    paper_dir: Path,
    chart_prefix: str = "index",
) -> Rendered:
    """The whole page, the warnings raised while rendering it, and the chart files (named
    <chart_prefix>-asv-<machine>.png) that go beside it."""
    page = Page(page_dir)
    if machines:
        sections = [render_machine(page, m) for m in machines]
    else:
        sections = [
            f'<p class="warning">No results yet: {esc(results_dir.name)}/ holds no '
            "machine folders (results/&lt;machine&gt;/&lt;name&gt;.csv ...).</p>"
        ]
    sections.append(render_asv(page, asv_results, asv_html))
    paper_html, paper_anchor = render_paper(page, paper_dir)
    sections.append(paper_html)
    # The headline comes first on the page but is rendered last: it links to the sections
    # above, whose anchors exist only once they are rendered. Its sidebar entries move first too.
    toc_before = len(page.toc)
    overview = render_overview(
        page,
        machines,
        paper_dir=paper_dir,
        paper_anchor=paper_anchor,
        asv_results=asv_results,
        chart_prefix=chart_prefix,
    )
    page.toc[:] = page.toc[toc_before:] + page.toc[:toc_before]
    sections.insert(0, overview)
    kinds = sorted({m.kind_label for m in machines})
    summary = f"{len(machines)} machine folder{'s' if len(machines) != 1 else ''}" + (
        f" ({', '.join(kinds)})" if kinds else ""
    )
    doc = f"""<!DOCTYPE html>
<html lang="en" data-errors="" data-ready="no">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>plrnn results</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
<script>{SCRIPT}</script>
</head>
<body>
<nav class="toc" aria-label="contents">
<strong>plrnn results</strong>
<ul>
{chr(10).join(page.toc)}
</ul>
</nav>
<main>
<header>
<h1>plrnn results</h1>
<p>Reproductions of Martin &amp; Cundy, <em>Parallelizing Linear Recurrent Neural Nets Over
Sequence Length</em> (ICLR 2018), and the kernel benchmarks: {esc(summary)}. The headline sets
each machine's best number beside the paper's, one labelled column per machine; below it each
machine has its own section, and CPU and GPU numbers are never put in one of its tables. Built from
<a href="{page.url(results_dir)}/">{esc(results_dir.name)}/</a> by
<code>python -m plrnn.dashboard</code> (in a checkout: open it as a file, or serve the
repository root with <code>python -m http.server</code> and open
<code>/results/index.html</code>, so the links to the asv site and the paper's numbers
resolve).</p>
</header>
{chr(10).join(s for s in sections if s)}
</main>
</body>
</html>
"""
    return Rendered(doc, page.warnings, page.files)
