"""python -m plrnn.site build: the docs, the dashboard, the asv pages and the raw result files in
one folder whose relative links all resolve inside it.

The whole site is built once (under a minute on 2 cores), in a subprocess under a time limit,
so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from plrnn.site import SiteBuildError, build_site
from plrnn.site import build as site_build
from plrnn.site.__main__ import main as site_main

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 300
STEPS = ("docs", "asv", "raw results", "dashboard", "folder indexes")


def run_site_build(*args: str) -> tuple[int, str]:
    """`python -m plrnn.site build ARGS`: (exit status, stdout and stderr together)."""
    # A session of its own, so that on a timeout its children (mkdocs, asv) are killed too and
    # cannot keep the pipe open.
    proc = subprocess.Popen(
        [sys.executable, "-m", "plrnn.site", "build", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the site build ran over {BUILD_TIMEOUT_S} s:\n{output}")
    return proc.returncode, output


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("site") / "site"
    status, output = run_site_build("--out", str(out))
    assert status == 0, output
    return out, output


class _Refs(HTMLParser):
    """Every URL a page refers to: links, images, scripts, stylesheets."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.refs.append((tag, value))


def refs(page: Path) -> list[tuple[str, str]]:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.refs


def is_relative(url: str) -> bool:
    parts = urlsplit(url)
    return not (parts.scheme or parts.netloc) and bool(parts.path)


def target(page: Path, url: str) -> Path:
    """The file a relative URL on `page` serves: a folder serves its index.html."""
    path = Path(os.path.normpath(page.parent / unquote(urlsplit(url).path)))
    return path / "index.html" if path.is_dir() else path


def docs_pages(out: Path) -> list[Path]:
    return sorted([*out.glob("*.html"), *out.glob("api/*.html")])


def test_progress_names_every_step(site):
    _, output = site
    for i, step in enumerate(STEPS, 1):
        assert f"[{i}/{len(STEPS)}] {step}: " in output
        assert f"[{i}/{len(STEPS)}] {step}: done in" in output


def test_site_holds_every_part(site):
    out, _ = site
    for page in (
        "index.html",
        "op.html",
        "paper.html",
        "api/plrnn.html",
        "api/layers.html",
        "api/distributed.html",
        "results/index.html",
        "asv/index.html",
        "paper/table1.csv",
        "paper/index.html",
        "results/asv/index.html",
    ):
        assert (out / page).is_file(), page
    # Every committed raw result file, where the dashboard's links expect it.
    for machine in (p for p in (ROOT / "results").iterdir() if p.is_dir()):
        for f in (p for p in machine.rglob("*") if p.is_file() and not p.name.startswith(".")):
            assert (out / "results" / f.relative_to(ROOT / "results")).is_file(), f


def test_api_reference_is_generated_from_the_docstrings(site):
    out, _ = site
    for page, names in {
        "api/plrnn.html": ["plrnn.linear_recurrence", "plrnn.backends"],
        "api/layers.html": [
            "plrnn.layers.GILR",
            "plrnn.layers.GILRLSTM",
            "plrnn.layers.QRNN",
            "plrnn.layers.SRU",
        ],
        "api/distributed.html": [
            "plrnn.distributed.linear_recurrence",
            "plrnn.distributed.shard_sequence",
        ],
    }.items():
        text = (out / page).read_text(encoding="utf-8")
        for name in names:
            assert f'id="{name}"' in text, (page, name)


def test_every_relative_link_of_the_dashboard_and_the_docs_resolves(site):
    out, _ = site
    dashboard = out / "results" / "index.html"
    pages = [dashboard, *docs_pages(out)]
    assert len(pages) > 10
    resolved: dict[Path, set[Path]] = {}
    for page in pages:
        for tag, url in refs(page):
            if not is_relative(url):
                continue
            path = target(page, url)
            assert path.is_relative_to(out), f"{page.relative_to(out)}: {url} leaves the site"
            assert path.is_file(), f"{page.relative_to(out)}: <{tag}> {url} -> {path} is missing"
            resolved.setdefault(page, set()).add(path)
    # The dashboard's links reach the raw files of every machine.
    machines = {p.parent.name for p in resolved[dashboard] if p.suffix == ".csv"}
    committed = {m.name for m in (ROOT / "results").iterdir() if m.is_dir() and m.name != "asv"}
    assert committed <= machines
    # And each machine's folder listing, where its logs and run records are: no link had
    # reached them.
    listings = {p.parent.name for p in resolved[dashboard] if p.name == "index.html"}
    assert committed <= listings


def test_docs_link_to_the_dashboard_and_asv(site):
    out, _ = site
    for page in (out / "index.html", out / "api" / "layers.html"):
        linked = {target(page, url) for _, url in refs(page) if is_relative(url)}
        assert out / "results" / "index.html" in linked, page
        assert out / "asv" / "index.html" in linked, page
    dashboard = out / "results" / "index.html"
    assert out / "asv" / "index.html" in {target(dashboard, u) for _, u in refs(dashboard)}


def test_docs_and_dashboard_load_nothing_from_outside(site):
    # Readers with only the repository (or offline) get every style, script and image.
    out, _ = site
    for page in [out / "results" / "index.html", *docs_pages(out)]:
        for tag, url in refs(page):
            if tag in ("script", "link", "img"):
                assert is_relative(url) or url.startswith("data:"), (page, tag, url)


def test_a_failing_step_is_named_and_the_previous_site_kept(tmp_path):
    repo = tmp_path / "repo"
    for folder in ("docs", "results", "reproductions/paper"):
        (repo / folder).mkdir(parents=True)
    (repo / "asv.conf.json").write_text("{}")
    (repo / "mkdocs.yml").write_text("site_name: [unclosed\n")  # mkdocs cannot read it
    previous = repo / "site"
    previous.mkdir()
    (previous / site_build.MARKER).write_text("")
    (previous / "index.html").write_text("the last good site")
    progress: list[str] = []

    with pytest.raises(SiteBuildError, match="step 'docs' failed") as failure:
        build_site(repo, log=progress.append)

    assert "mkdocs" in str(failure.value)  # the command, and the tail of its output
    assert progress == ["[1/5] docs: mkdocs build --strict (docs/, mkdocs.yml)"]
    assert (previous / "index.html").read_text() == "the last good site"
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        ["docs", "results", "reproductions", "asv.conf.json", "mkdocs.yml", "site"]
    )  # no staging folder left behind


def test_the_command_reports_errors_with_exit_status_1(tmp_path, capsys):
    assert site_main(["build", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "run from the repository root or pass --root" in err


def test_refuses_to_replace_a_folder_it_did_not_build(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    with pytest.raises(SiteBuildError, match="did not build"):
        build_site(ROOT, foreign, log=lambda line: None)
    assert (foreign / "todo.txt").read_text() == "keep me"


def test_a_hanging_step_fails_with_its_name(monkeypatch):
    monkeypatch.setattr(site_build, "STEP_TIMEOUT_S", 1)
    with pytest.raises(SiteBuildError, match="step 'asv' timed out"):
        site_build.run_command(
            "asv", [sys.executable, "-c", "import time; time.sleep(60)"], ROOT, lambda line: None
        )
