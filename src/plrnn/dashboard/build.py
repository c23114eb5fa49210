"""build_dashboard(): results/ -> one static index.html and its asv charts, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .discover import Machine, find_machines
from .page import render_page


@dataclass
class BuildResult:
    path: Path
    machines: list[Machine]
    warnings: list[str]
    charts: list[Path] = field(default_factory=list)  # the asv charts written beside the page


def atomic_write(path: Path, content: str | bytes) -> None:
    """Readers (a browser, http.server) see the old file or the new one, never half of one."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); a published page must be world-readable like
        # any file the user creates.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def asv_html_dir(root: Path) -> Path:
    """Where `asv publish` writes: asv.conf.json's html_dir, else asv's default "html"."""
    conf = root / "asv.conf.json"
    try:
        # asv.conf.json allows // comment lines, which json does not.
        lines = conf.read_text(encoding="utf-8").splitlines()
        data = json.loads("\n".join(ln for ln in lines if not ln.lstrip().startswith("//")))
        html_dir = data["html_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return root / "html"
    return root / html_dir


def build_dashboard(
    results_dir: str | os.PathLike = "results",
    out: str | os.PathLike | None = None,
    *,
    asv_html: str | os.PathLike | None = None,
    paper_dir: str | os.PathLike | None = None,
) -> BuildResult:
    """Render `results_dir` into `out` (default <results_dir>/index.html).

    asv_html: folder `asv publish` wrote (default: html_dir of <results_dir>/../asv.conf.json);
    paper_dir: the published numbers (default <results_dir>/../reproductions/paper).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(
            f"results_dir {str(results_dir)!r} is not a directory: pass the results folder "
            "(results/<machine>/<name>.csv ...), e.g. --results results from the repository root"
        )
    out = Path(out) if out is not None else results_dir / "index.html"
    if out.is_dir():
        raise IsADirectoryError(f"out {str(out)!r} is a directory: give the HTML file to write")
    root = results_dir.resolve().parent
    asv_html = Path(asv_html) if asv_html is not None else asv_html_dir(root)
    paper_dir = Path(paper_dir) if paper_dir is not None else root / "reproductions" / "paper"
    machines = find_machines(results_dir)
    rendered = render_page(
        page_dir=out.resolve().parent,
        results_dir=results_dir.resolve(),
        machines=machines,
        asv_results=results_dir / "asv",
        asv_html=asv_html,
        paper_dir=paper_dir,
        chart_prefix=out.stem,
    )
    # Charts first: the new page never points at a chart that is not there yet.
    charts = [out.parent / name for name in sorted(rendered.files)]
    for path in charts:
        write_if_changed(path, rendered.files[path.name])
    atomic_write(out, rendered.text)
    remove_stale_charts(out, keep=charts)
    return BuildResult(out, machines, rendered.warnings, charts)


def write_if_changed(path: Path, data: bytes) -> None:
    """Same bytes, no write: a rebuild leaves unchanged charts (and their mtimes) alone."""
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write(path, data)


def remove_stale_charts(out: Path, keep: list[Path]) -> None:
    """Charts of machines whose asv history is gone; only this page's own chart names match."""
    kept = {path.name for path in keep}
    for path in out.parent.glob(f"{out.stem}-asv-*.png"):
        if path.name not in kept:
            path.unlink(missing_ok=True)
