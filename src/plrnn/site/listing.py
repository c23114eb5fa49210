"""index.html pages for plain folders of the site (raw results, asv's JSON, the paper's CSVs).

Static hosts such as GitHub Pages list no folders: a link to results/asv/ or to a machine's
folder would be a 404 there. Each folder without an index.html gets a plain listing instead.
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2rem; }}</style>
</head>
<body>
<h1>{title}</h1>
<ul>
<li><a href="../">../</a></li>
{items}
</ul>
</body>
</html>
"""


def _item(path: Path) -> str:
    name = path.name + ("/" if path.is_dir() else "")
    return f'<li><a href="{quote(name)}">{html.escape(name)}</a></li>'


def write_indexes(top: Path, site: Path) -> list[Path]:
    """Writes an index.html into `top` and every folder below it that has none; returns them.

    `site` is the site's root, for the page titles (paths as the reader sees them)."""
    written = []
    for folder in [top, *sorted(p for p in top.rglob("*") if p.is_dir())]:
        index = folder / "index.html"
        if index.exists():
            continue
        entries = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        items = "\n".join(_item(p) for p in entries if not p.name.startswith("."))
        title = html.escape(folder.relative_to(site).as_posix() + "/")
        index.write_text(PAGE.format(title=title, items=items), encoding="utf-8")
        written.append(index)
    return written
