"""A tiny HTML reader for the tests: tables as cell text, images, links, sections.

Written against the HTML standard's structure, not against the dashboard's code, so the tests
check what a browser would see rather than re-deriving the renderer's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Table:
    machine: str | None
    artifact: str | None
    section: str | None = None  # id of the enclosing <section>
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""
    row_attrs: list[dict] = field(default_factory=list)  # per row: the <tr>'s attributes
    cell_attrs: list[list[dict]] = field(default_factory=list)  # per row, per cell


@dataclass
class Scan:
    root_attrs: dict = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    scripts: list[dict] = field(default_factory=list)
    stylesheets: list[dict] = field(default_factory=list)
    sections: list[dict] = field(default_factory=list)
    headings: list[tuple[str, str, str | None]] = field(default_factory=list)  # tag, text, machine
    ids: list[str] = field(default_factory=list)
    articles: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # id -> where
    text_by_machine: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def result_tables(self) -> list[Table]:
        """The tables of the machine and paper sections: everything but the headline's."""
        return [t for t in self.tables if t.section != "headline"]


class _Reader(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scan = Scan()
        self.machine = None
        self.section = None
        self.artifact = None
        self.table = None
        self.cell = None
        self.caption = None
        self.heading = None
        self.warning = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.scan.ids.append(a["id"])
        if tag == "html":
            self.scan.root_attrs = a
        elif tag == "section":
            self.section = a.get("id")
            self.machine = a.get("data-machine")
            if self.machine:
                self.scan.sections.append(a)
        elif tag == "article":
            self.artifact = a.get("data-artifact")
            if "id" in a:
                self.scan.articles[a["id"]] = (self.machine, self.artifact)
        elif tag == "table":
            self.table = Table(self.machine, self.artifact, self.section)
        elif tag == "tr" and self.table is not None:
            self.table.rows.append([])
            self.table.row_attrs.append(a)
            self.table.cell_attrs.append([])
        elif tag in ("td", "th") and self.table is not None:
            self.cell = []
            self.table.cell_attrs[-1].append(a)
        elif tag == "caption":
            self.caption = []
        elif tag == "img":
            self.scan.images.append({**a, **self._where()})
        elif tag == "a" and "href" in a:
            self.scan.links.append({**a, **self._where()})
        elif tag == "script":
            self.scan.scripts.append(a)
        elif tag == "link" and "stylesheet" in a.get("rel", ""):
            self.scan.stylesheets.append(a)
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.heading = (tag, [])
        elif tag == "p" and "warning" in a.get("class", ""):
            self.warning = []

    def _where(self) -> dict:
        return {"_machine": self.machine, "_artifact": self.artifact, "_section": self.section}

    def handle_endtag(self, tag):
        if tag == "section":
            self.machine = None
            self.section = None
        elif tag == "article":
            self.artifact = None
        elif tag == "table" and self.table is not None:
            self.scan.tables.append(self.table)
            self.table = None
        elif tag in ("td", "th") and self.cell is not None:
            self.table.rows[-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "caption" and self.caption is not None:
            self.table.caption = "".join(self.caption).strip()
            self.caption = None
        elif self.heading is not None and tag == self.heading[0]:
            text = " ".join("".join(self.heading[1]).split())
            self.scan.headings.append((tag, text, self.machine))
            self.heading = None
        elif tag == "p" and self.warning is not None:
            self.scan.warnings.append("".join(self.warning).strip())
            self.warning = None

    def handle_data(self, data):
        for sink in (self.cell, self.caption, self.warning):
            if sink is not None:
                sink.append(data)
        if self.heading is not None:
            self.heading[1].append(data)
        if self.machine:
            self.scan.text_by_machine[self.machine] = (
                self.scan.text_by_machine.get(self.machine, "") + data
            )


def scan(text: str) -> Scan:
    reader = _Reader()
    reader.feed(text)
    reader.close()
    return reader.scan
