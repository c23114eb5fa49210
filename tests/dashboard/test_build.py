"""The page built from a hand-written results tree: tables, figures, links, labels, metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from plrnn.dashboard import build_dashboard

from .conftest import (
    BENCH_TABLES,
    CPU,
    GPU,
    PAPER_TABLES,
    TABLE1_TABLES,
    TABLE2_TABLES,
)
from .htmlscan import scan


def build(tree, **kwargs):
    result = build_dashboard(tree.results, **kwargs)
    return result, scan(result.path.read_text(encoding="utf-8"))


def resolve(page: Path, url: str) -> Path:
    parts = urlsplit(url)
    assert not parts.scheme and not parts.netloc, f"not a relative link: {url}"
    assert not url.startswith("/"), f"absolute path in a link: {url}"
    return (page.parent / unquote(parts.path)).resolve()


def test_tables_match_the_markdown_cell_by_cell(fake_tree):
    result, page = build(fake_tree)
    assert result.path == fake_tree.results / "index.html"

    def tables(machine, artifact):
        return [t.rows for t in page.tables if (t.machine, t.artifact) == (machine, artifact)]

    assert tables(CPU, "table1") == TABLE1_TABLES
    assert tables(CPU, "recurrence_bench") == BENCH_TABLES
    assert tables(GPU, "table2") == TABLE2_TABLES
    assert [t.rows for t in page.tables if t.section == "paper"] == PAPER_TABLES
    assert len(page.result_tables) == len(fake_tree.all_tables)


def test_every_image_in_results_is_shown_with_alt_text_and_nothing_else(fake_tree):
    result, page = build(fake_tree)
    shown = sorted(resolve(result.path, img["src"]) for img in page.images)
    on_disk = sorted(p.resolve() for p in fake_tree.results.rglob("*.png"))
    assert shown == on_disk
    for img in page.images:
        assert img["_machine"] in img["alt"], img
        assert ("CPU" if img["_machine"] == CPU else "GPU") in img["alt"]
    # recurrence_bench has no PNG: its section is there, without a figure.
    assert "recurrence_bench" in {t.artifact for t in page.tables}
    assert not [img for img in page.images if img["_artifact"] == "recurrence_bench"]


def test_every_link_is_relative_and_resolves(fake_tree):
    result, page = build(fake_tree)
    external = [a["href"] for a in page.links if urlsplit(a["href"]).scheme]
    assert external == ["https://arxiv.org/abs/1709.04057"]  # written in table1.md itself
    for a in page.links:
        href = a["href"]
        if href in external:
            continue
        if href.startswith("#"):
            assert href[1:] in page.ids, f"dangling anchor {href}"
        else:
            assert resolve(result.path, href).exists(), f"dangling link {href}"


def test_every_data_file_is_linked(fake_tree):
    result, page = build(fake_tree)
    linked = {
        resolve(result.path, a["href"])
        for a in page.links
        if not urlsplit(a["href"]).scheme and not a["href"].startswith("#")
    }
    machine_files = [p.resolve() for d in (fake_tree.cpu, fake_tree.gpu) for p in d.iterdir()]
    assert len(machine_files) == 14
    assert sorted(set(machine_files) - linked) == []
    # The CSV link sits in its own artifact's section.
    csv_links = {
        (a["_artifact"], Path(unquote(a["href"])).name)
        for a in page.links
        if a["href"].endswith(".csv") and a["_machine"]
    }
    assert {
        ("table1", "table1.csv"),
        ("recurrence_bench", "recurrence_bench.csv"),
        ("zz_custom", "zz_custom.csv"),
        ("table2", "table2.csv"),
    } <= csv_links


def test_markdown_relative_links_are_rebased_onto_the_page(fake_tree, tmp_path):
    out = tmp_path / "elsewhere" / "deep" / "dash.html"
    result, page = build(fake_tree, out=out)
    assert result.path == out
    md_link = [
        a
        for a in page.links
        if a["_artifact"] == "table1" and a.get("href", "").endswith("table1.csv")
    ]
    assert md_link and all(
        resolve(out, a["href"]) == (fake_tree.cpu / "table1.csv").resolve() for a in md_link
    )
    assert sorted(resolve(out, i["src"]) for i in page.images) == sorted(
        p.resolve() for p in fake_tree.results.rglob("*.png")
    )


def test_cpu_and_gpu_sections_are_labelled_and_apart(fake_tree):
    _, page = build(fake_tree)
    assert [(s["data-machine"], s["data-kind"]) for s in page.sections] == [
        (CPU, "cpu"),
        (GPU, "gpu"),
    ]
    h2 = {m: text for tag, text, m in page.headings if tag == "h2" and m}
    assert h2[CPU] == f"CPU {CPU}"
    assert h2[GPU] == f"GPU (CUDA) {GPU}"
    assert "GPU (CUDA)" not in page.text_by_machine[CPU]
    assert "NVIDIA H100" not in page.text_by_machine[CPU]
    assert "NVIDIA H100" in page.text_by_machine[GPU]
    for tag, text, machine in page.headings:
        if tag == "h3" and machine:
            assert text.endswith("CPU" if machine == CPU else "GPU (CUDA)"), text
    assert page.warnings == []


def test_artifacts_in_the_known_order_then_alphabetical(fake_tree):
    _, page = build(fake_tree)
    ids = [i for i in page.ids if i.startswith(CPU)]
    assert ids == [
        f"{CPU}-table1",
        f"{CPU}-recurrence_bench",
        f"{CPU}-extra_figure",
        f"{CPU}-notes-2-v",
        f"{CPU}-zz_custom",
    ]


def test_one_h1_and_markdown_headings_nested_below_the_artifact(fake_tree):
    _, page = build(fake_tree)
    assert [h for h in page.headings if h[0] == "h1"] == [("h1", "plrnn results", None)]
    inside = [(tag, text) for tag, text, m in page.headings if m == CPU]
    assert ("h4", "Table 1 reproduction") in inside
    assert ("h5", "ours vs the paper") in inside


def test_one_fact_per_line_stays_one_per_line(fake_tree):
    result, _ = build(fake_tree)
    text = result.path.read_text(encoding="utf-8")
    assert "<p>Goal PASS: serial at copy bandwidth<br />\nGoal FAIL: parallel 2x faster</p>" in text


def test_raw_html_in_markdown_is_text_and_nothing_loads_from_outside(fake_tree):
    result, page = build(fake_tree)
    text = result.path.read_text(encoding="utf-8")
    assert len(page.scripts) == 1 and "src" not in page.scripts[0]
    assert "&lt;script&gt;document.title" in text
    assert page.stylesheets == []
    assert not [i for i in page.images if urlsplit(i["src"]).scheme]
    assert "@import" not in text and "url(" not in text


def test_metadata_is_a_definition_list_with_the_run_facts(fake_tree):
    result, _ = build(fake_tree)
    text = result.path.read_text(encoding="utf-8")
    assert "<dt>commit</dt><dd>abcdef012345</dd>" in text
    assert "<dt>commit</dt><dd>fedcba987654</dd>" in text
    assert "<dt>torch</dt><dd>2.13.0+cpu</dd>" in text
    assert "<dt>GPU</dt><dd>NVIDIA H100, driver 550.1, CUDA 12.4</dd>" in text
    assert "<dt>grid_T</dt><dd>16, 65536</dd>" in text  # the full config, nested
    assert "<dt>ratio</dt><dd>1.25</dd>" in text


def test_asv_link_when_published_else_how_to_build_it(fake_tree):
    (fake_tree.root / "asv.conf.json").write_text(
        '// comment lines, as asv allows\n{"version": 1,\n "html_dir": ".asv/html"}\n'
    )
    result, page = build(fake_tree)
    text = result.path.read_text(encoding="utf-8")
    assert "asv publish" in text
    assert not [a for a in page.links if a["href"].endswith("index.html")]
    assert "2 runs on 1 machine (fakebox)" in text
    asv_index = fake_tree.root / ".asv" / "html" / "index.html"
    asv_index.parent.mkdir(parents=True)
    asv_index.write_text("<html></html>")
    result, page = build(fake_tree)
    hits = [a for a in page.links if a["href"].endswith("index.html")]
    assert [resolve(result.path, a["href"]) for a in hits] == [asv_index.resolve()]
    assert "asv publish" in result.path.read_text(encoding="utf-8")  # says what built it


def test_asv_site_defaults_to_asvs_own_default_without_a_config(fake_tree):
    asv_index = fake_tree.root / "html" / "index.html"
    asv_index.parent.mkdir(parents=True)
    asv_index.write_text("<html></html>")
    result, page = build(fake_tree)
    hits = [a for a in page.links if a["href"].endswith("index.html")]
    assert [resolve(result.path, a["href"]) for a in hits] == [asv_index.resolve()]


def test_paper_csv_comment_becomes_the_caption(fake_tree):
    _, page = build(fake_tree)
    paper = [t for t in page.tables if t.section == "paper"]
    assert paper[0].caption == "Published speedups, exactly as printed."


def test_device_in_metadata_contradicting_the_folder_is_flagged(fake_tree):
    meta = json.loads((fake_tree.cpu / "table1.json").read_text())
    meta["config"]["device"] = "cuda:0"
    (fake_tree.cpu / "table1.json").write_text(json.dumps(meta))
    result, page = build(fake_tree)
    assert len(result.warnings) == 1 and "cuda:0" in result.warnings[0]
    assert len(page.warnings) == 1 and "labelled CPU" in page.warnings[0]


def test_unreadable_metadata_is_reported_and_the_rest_still_renders(fake_tree):
    (fake_tree.cpu / "table1.json").write_text("{not json")
    (fake_tree.gpu / "table2.json").write_text("[1, 2]")
    result, page = build(fake_tree)
    assert len(result.warnings) == 2
    assert "table1.json is not readable JSON" in result.warnings[0]
    assert "not an object" in result.warnings[1]
    assert len(page.result_tables) == len(fake_tree.all_tables)


def test_empty_results_folder(tmp_path):
    (tmp_path / "results").mkdir()
    result = build_dashboard(tmp_path / "results")
    page = scan(result.path.read_text(encoding="utf-8"))
    assert result.machines == [] and page.result_tables == [] and page.images == []
    assert any("No results yet" in w for w in page.warnings)


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="results_dir"):
        build_dashboard(tmp_path / "missing")
    (tmp_path / "results").mkdir()
    with pytest.raises(IsADirectoryError, match="out"):
        build_dashboard(tmp_path / "results", tmp_path)


def test_rebuild_is_byte_identical_and_replaces_the_old_page(fake_tree):
    out = fake_tree.results / "index.html"
    out.write_text("old page")
    first = build_dashboard(fake_tree.results).path.read_bytes()
    second = build_dashboard(fake_tree.results).path.read_bytes()
    assert first == second and b"old page" not in first
    assert sorted(p.name for p in fake_tree.results.iterdir() if p.is_file()) == ["index.html"]
    assert (out.stat().st_mode & 0o044) == 0o044  # readable by the web server's user too


def test_failed_write_keeps_the_old_page_and_leaves_no_temp_file(fake_tree, monkeypatch):
    out = fake_tree.results / "index.html"
    out.write_text("old page")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        build_dashboard(fake_tree.results)
    assert out.read_text() == "old page"
    assert sorted(p.name for p in fake_tree.results.iterdir() if p.is_file()) == ["index.html"]
