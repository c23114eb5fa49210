"""The page in a real browser (headless Chromium): from a file path and from `python -m http.server`.

The page's inline script writes what went wrong onto <html> (data-errors, data-images-broken,
data-loaded on each <img>); --dump-dom returns the DOM after the load event, and Chromium prints
every console message (errors included) to stderr as "CONSOLE" lines. A control test breaks an
image and throws from a script, to show these checks do catch failures.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from plrnn.dashboard import build_dashboard

from .htmlscan import scan


def _find_chromium() -> str | None:
    for name in (
        os.environ.get("PLRNN_CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        if name and (path := shutil.which(name)):
            return path
    return None


CHROMIUM = _find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (Debian: apt-get install -y chromium; or set "
    "PLRNN_CHROMIUM to the binary); CI installs it, so these run there",
)


def load_in_chromium(url: str, profile: Path) -> tuple[str, list[str]]:
    """(DOM after load, console lines from stderr)."""
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return proc.stdout, console


def assert_page_loaded_cleanly(dom: str, console: list[str], expected_tables, n_images: int):
    page = scan(dom)
    assert page.root_attrs.get("data-ready") == "yes", "the load event never ran"
    assert console == []
    assert page.root_attrs.get("data-errors") == ""
    assert page.root_attrs.get("data-images-broken") == "0"
    assert [t.rows for t in page.result_tables] == expected_tables
    assert len(page.images) == n_images
    assert [img.get("data-loaded") for img in page.images] == ["yes"] * n_images


def expected_tables(tree):
    # Page order: CPU machine (table1, recurrence_bench), GPU machine (table2), paper.
    return tree.all_tables


def test_page_from_a_file_path(fake_tree, tmp_path):
    result = build_dashboard(fake_tree.results)
    dom, console = load_in_chromium(result.path.as_uri(), tmp_path / "profile")
    assert_page_loaded_cleanly(dom, console, expected_tables(fake_tree), n_images=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_server(directory: Path):
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "http.server exited at start"
                assert time.monotonic() < deadline, "http.server did not start within 30 s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_page_from_http_server(fake_tree, tmp_path):
    """Served from the repository root, as `python -m http.server` there would."""
    build_dashboard(fake_tree.results)
    with http_server(fake_tree.root) as base:
        dom, console = load_in_chromium(f"{base}/results/index.html", tmp_path / "profile")
    assert_page_loaded_cleanly(dom, console, expected_tables(fake_tree), n_images=3)


def test_control_broken_image_and_script_error_are_caught(fake_tree, tmp_path):
    result = build_dashboard(fake_tree.results)
    (fake_tree.gpu / "table2.png").unlink()
    text = result.path.read_text(encoding="utf-8")
    result.path.write_text(
        text.replace("</main>", '</main><script>throw new Error("control-failure")</script>')
    )
    dom, console = load_in_chromium(result.path.as_uri(), tmp_path / "profile")
    page = scan(dom)
    assert "control-failure" in page.root_attrs.get("data-errors", "")
    assert page.root_attrs.get("data-images-broken") == "1"
    assert [
        i["src"].endswith("table2.png") for i in page.images if i.get("data-loaded") == "no"
    ] == [True]
    assert any("control-failure" in line for line in console)


def test_headline_and_asv_chart_load_cleanly(headline_tree, tmp_path):
    """The page with the headline table and an asv chart, served from the repository root."""
    result = build_dashboard(headline_tree.results)
    assert len(result.charts) == 1
    with http_server(headline_tree.root) as base:
        dom, console = load_in_chromium(f"{base}/results/index.html", tmp_path / "profile")
    page = scan(dom)
    assert page.root_attrs.get("data-ready") == "yes", "the load event never ran"
    assert console == []
    assert page.root_attrs.get("data-errors") == ""
    assert page.root_attrs.get("data-images-broken") == "0"
    charts = [img for img in page.images if img["_section"] == "headline"]
    assert [img.get("data-loaded") for img in charts] == ["yes"]
    headline = next(t for t in page.tables if t.section == "headline")
    assert headline.rows[1][0] == "Table 1"
