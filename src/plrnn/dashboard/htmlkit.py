"""What every part of the page shares: escaping, the CPU/GPU badge, and the Page being built."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from .markup import page_url


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def badge(kind: str, label: str) -> str:
    return f'<span class="badge {esc(kind)}">{esc(label)}</span>'


@dataclass
class Page:
    """Collects the page while it is rendered: anchors for the sidebar, warnings, the id of each
    machine's artifact section (the headline links to them) and files written beside the page."""

    page_dir: Path
    toc: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # (machine name, artifact name) -> id of that artifact's <article>.
    artifact_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    # File name (beside the page) -> bytes: the charts; build.py writes them.
    files: dict[str, bytes] = field(default_factory=dict)
    _ids: set[str] = field(default_factory=set)

    def anchor(self, *parts: str) -> str:
        base = "-".join(re.sub(r"[^A-Za-z0-9_]+", "-", p).strip("-") or "x" for p in parts)
        candidate, n = base, 1
        while candidate in self._ids:
            n += 1
            candidate = f"{base}-{n}"
        self._ids.add(candidate)
        return candidate

    def url(self, path: Path) -> str:
        return esc(page_url(path, self.page_dir))

    def warn(self, text: str) -> str:
        self.warnings.append(text)
        return f'<p class="warning">{esc(text)}</p>'
