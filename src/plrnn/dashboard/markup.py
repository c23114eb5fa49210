"""Markdown and CSV files -> HTML fragments for the dashboard.

Markdown goes through markdown-it-py (CommonMark + GitHub pipe tables), the dialect GitHub shows
the .md files in, so the page and the repository agree on what a table looks like.
"""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path
from urllib.parse import quote, urlsplit

from markdown_it import MarkdownIt


def page_url(target: Path, page_dir: Path) -> str:
    """A relative URL from the page's folder to `target`: works from file:// and any HTTP root
    that contains both."""
    rel = os.path.relpath(target.resolve(), page_dir.resolve())
    return quote(Path(rel).as_posix(), safe="/")


def _is_relative_url(url: str) -> bool:
    parts = urlsplit(url)
    return not (parts.scheme or parts.netloc or url.startswith(("/", "#")) or not parts.path)


def _shift_headings_and_links(state) -> None:
    """Core rule: demote headings below the page's own (h1 page, h2 machine, h3 artifact) and
    rebase relative links, which the .md wrote relative to its own folder, onto the page's."""
    env = state.env
    offset = env.get("heading_offset", 0)
    for token in state.tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1]) + offset)}"
        for child in token.children or ():
            attr = {"link_open": "href", "image": "src"}.get(child.type)
            if attr is None:
                continue
            url = child.attrGet(attr)
            if url and _is_relative_url(url) and "source_dir" in env:
                parts = urlsplit(url)
                target = Path(env["source_dir"]) / Path(parts.path)
                new = page_url(target, Path(env["page_dir"]))
                if parts.query:
                    new += "?" + parts.query
                if parts.fragment:
                    new += "#" + parts.fragment
                child.attrSet(attr, new)


def _markdown_parser() -> MarkdownIt:
    # html=False: a stray tag in a generated .md is shown as text, never executed or half-parsed.
    # breaks=True: the generated reports write one fact per line ("Goal PASS: ..."); joining
    # those lines into one paragraph, as plain CommonMark would, hides where each starts.
    md = (
        MarkdownIt("commonmark", {"html": False, "breaks": True})
        .enable("table")
        .enable("strikethrough")
    )
    md.core.ruler.push("plrnn_rebase", _shift_headings_and_links)
    # Wide benchmark tables scroll inside their own box instead of widening the whole page.
    md.add_render_rule("table_open", lambda *a: '<div class="table-wrap"><table>\n')
    md.add_render_rule("table_close", lambda *a: "</table></div>\n")
    return md


_MD = _markdown_parser()


def render_markdown(text: str, *, heading_offset: int, source_dir: Path, page_dir: Path) -> str:
    env = {
        "heading_offset": heading_offset,
        "source_dir": str(source_dir),
        "page_dir": str(page_dir),
    }
    return _MD.render(text, env)


def render_csv(path: Path, *, max_rows: int = 200) -> str:
    """A small CSV (the paper's published numbers) as an HTML table. Lines starting with '#' are
    the file's notes and become the caption."""
    notes, body = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        (notes if line.startswith("#") else body).append(line)
    rows = [row for row in csv.reader(io.StringIO("\n".join(body))) if row]
    if not rows:
        return f"<p>{html.escape(path.name)} holds no rows.</p>\n"
    header, data = rows[0], rows[1:]
    out = ['<div class="table-wrap"><table>']
    if notes:
        caption = " ".join(n.lstrip("#").strip() for n in notes)
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append(
        "<thead><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in header)
        + "</tr></thead><tbody>"
    )
    for row in data[:max_rows]:
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table></div>")
    if len(data) > max_rows:
        out.append(f"<p>first {max_rows} of {len(data)} rows; the CSV has them all.</p>")
    return "\n".join(out) + "\n"
