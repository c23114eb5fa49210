"""The asv history chart per machine under the headline: a PNG beside the page for a machine with
history, a sentence for one without, never an empty chart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote

from plrnn.dashboard import build_dashboard
from plrnn.dashboard.asv_history import load_benchmarks, read_history

from .conftest import CPU, GPU, XEON
from .htmlscan import scan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def build(tree, **kwargs):
    result = build_dashboard(tree.results, **kwargs)
    text = result.path.read_text(encoding="utf-8")
    return result, text, scan(text)


def chart_blocks(text: str) -> dict[str, str]:
    """asv machine -> its block of HTML under the headline."""
    section = text[text.index('<section id="headline"') :]
    section = section[: section.index("</section>")]
    blocks = section.split('<div class="asv-chart" ')[1:]
    out = {}
    for block in blocks:
        machine = block.split('data-asv-machine="', 1)[1].split('"', 1)[0]
        out[machine] = block
    return out


def test_a_chart_beside_the_page_for_the_machine_with_history(headline_tree):
    result, _, page = build(headline_tree)
    chart = headline_tree.results / f"index-asv-{CPU}.png"
    assert result.charts == [chart]
    assert chart.read_bytes().startswith(PNG_MAGIC)
    shown = [img for img in page.images if img["_section"] == "headline"]
    assert len(shown) == 1
    img = shown[0]
    assert img["src"] == chart.name  # relative, beside the page
    assert (result.path.parent / unquote(img["src"])).resolve() == chart.resolve()
    assert "CPU machine cpu-fake-epyc-2c" in img["alt"]
    assert "seq_len=65536, batch=1, hidden=256" in img["alt"]
    assert "cpu_serial and cpu_parallel" in img["alt"]


def test_the_numbers_behind_the_chart_follow_commit_dates_and_skip_old_definitions(headline_tree):
    _, text, page = build(headline_tree)
    numbers = [t for t in page.tables if t.section == "headline"][1]
    assert numbers.rows[0] == [
        "commit",
        "commit date (UTC)",
        "cpu_serial forward (ms)",
        "cpu_parallel forward (ms)",
        "cpu_serial forward+backward (ms)",
        "cpu_parallel forward+backward (ms)",
    ]
    # bbbb2222 is older than aaaa1111 by date, though it sorts after it by name; cccc3333 ran an
    # older definition of the benchmark and is left out, as asv's own graphs leave it out.
    assert [r[0][:8] for r in numbers.rows[1:]] == ["bbbb2222", "aaaa1111"]
    assert [r[2:] for r in numbers.rows[1:]] == [
        ["50", "25", "100", "50"],
        ["30", "15", "60", "30"],
    ]
    assert "1 run(s) of an older definition" in chart_blocks(text)[CPU]
    # torch has no value at the largest size and is not a headline kernel: not charted.
    assert "torch" not in numbers.rows[0][2]


def test_runs_of_other_benchmarks_only_are_counted(headline_tree):
    """`asv run --bench op_inputs` writes a run without the kernels: the note had accounted for
    runs of an older definition but left these out without a word."""
    only_others = {"commit_hash": "dddd4444", "date": 1, "result_columns": ["result"],
                   "results": {"op_inputs.Other.time_it": [[1.0]]}}
    (headline_tree.results / "asv" / CPU / "dddd4444-virtualenv-py3.11.json").write_text(
        json.dumps(only_others))
    _, text, _ = build(headline_tree)
    assert "1 run(s) do not hold this benchmark" in chart_blocks(text)[CPU]
    assert "1 run(s) of an older definition" in chart_blocks(text)[CPU]


def test_values_from_one_timed_call_are_marked(headline_tree):
    # aaaa1111 ran `asv run --quick` (one call per value); bbbb2222 a full run (10 x 3 calls).
    folder = headline_tree.results / "asv" / CPU
    for commit, repeat, number in (("aaaa1111", 1, 1), ("bbbb2222", 10, 3)):
        path = next(folder.glob(f"{commit}*.json"))
        data = json.loads(path.read_text())
        data["result_columns"] += ["stats_repeat", "stats_number"]
        row = data["results"]["kernels.LinearRecurrence.time_linear_recurrence"]
        row += [[repeat] * len(row[0]), [number] * len(row[0])]
        path.write_text(json.dumps(data))
    _, text, page = build(headline_tree)
    numbers = [t for t in page.tables if t.section == "headline"][1]
    assert [r[0][:8] for r in numbers.rows[1:]] == ["bbbb2222", "aaaa1111"]
    assert numbers.rows[1][2:] == ["50", "25", "100", "50"]  # a median of 30 calls: no mark
    assert numbers.rows[2][2:] == ["30*", "15*", "60*", "30*"]
    assert "* one timed call" in chart_blocks(text)[CPU]
    history = read_history(headline_tree.results / "asv", CPU,
                           load_benchmarks(headline_tree.results / "asv"))
    assert {commit[:8] for commit, _ in history.single_call} == {"aaaa1111"}


def test_files_without_call_counts_mark_nothing(headline_tree):
    _, text, page = build(headline_tree)
    numbers = [t for t in page.tables if t.section == "headline"][1]
    assert not any("*" in cell for row in numbers.rows[1:] for cell in row)
    assert "one timed call" not in chart_blocks(text)[CPU]


def test_machines_without_history_say_so_instead_of_an_empty_chart(headline_tree):
    result, text, page = build(headline_tree)
    blocks = chart_blocks(text)
    assert list(blocks) == [CPU, XEON, GPU]
    assert "no asv runs for this machine" in blocks[XEON]  # no results/asv/<machine>/ at all
    assert "no asv runs for this machine" in blocks[GPU]  # machine.json, but no runs
    for machine in (XEON, GPU):
        assert "<img" not in blocks[machine]
        assert not (headline_tree.results / f"index-asv-{machine}.png").exists()
    assert 'data-kind="gpu"><h4><span class="badge gpu">GPU (CUDA)</span>' in blocks[GPU]


def test_runs_without_a_value_for_the_kernels_are_no_history(headline_tree):
    asv = headline_tree.results / "asv" / CPU
    for path in asv.glob("*-virtualenv-py3.11.json"):
        if not path.name.startswith("cccc"):
            path.unlink()
    result, text, _ = build(headline_tree)
    block = chart_blocks(text)[CPU]
    assert "1 of 1 runs are of an older benchmark definition" in block
    assert "<img" not in block and result.charts == []


def test_no_asv_folder_at_all(headline_tree):
    shutil.rmtree(headline_tree.results / "asv")
    result, text, page = build(headline_tree)
    assert result.charts == []
    assert all("no asv runs" in b for b in chart_blocks(text).values())
    assert [img for img in page.images if img["_section"] == "headline"] == []


def test_a_stale_chart_goes_and_a_rebuild_is_byte_identical(headline_tree):
    first = build_dashboard(headline_tree.results)
    page_bytes = first.path.read_bytes()
    chart_bytes = first.charts[0].read_bytes()
    second = build_dashboard(headline_tree.results)
    assert second.path.read_bytes() == page_bytes
    assert second.charts[0].read_bytes() == chart_bytes
    # Someone else's PNG beside the page stays; this page's chart of a gone history goes.
    other = headline_tree.results / "notes.png"
    other.write_bytes(chart_bytes)
    shutil.rmtree(headline_tree.results / "asv" / CPU)
    build_dashboard(headline_tree.results)
    assert not first.charts[0].exists()
    assert other.exists()


def test_charts_follow_the_page_wherever_it_is_written(headline_tree, tmp_path):
    out = tmp_path / "site" / "dash.html"
    result, _, page = build(headline_tree, out=out)
    assert result.charts == [out.parent / f"dash-asv-{CPU}.png"]
    img = next(i for i in page.images if i["_section"] == "headline")
    assert (out.parent / img["src"]).is_file()
    assert not list(headline_tree.results.glob("*.png"))


def test_cli_reports_the_charts(headline_tree, capsys):
    from plrnn.dashboard.__main__ import main

    assert main(["--results", str(headline_tree.results)]) == 0
    assert "wrote 1 asv chart beside it" in capsys.readouterr().out


def test_png_is_readable_and_sized_like_a_chart(headline_tree):
    import matplotlib.image as mpimg

    result = build_dashboard(headline_tree.results)
    pixels = mpimg.imread(Path(result.charts[0]))
    height, width = pixels.shape[:2]
    assert 300 <= height <= 500 and 800 <= width <= 1200  # two panels: forward, forward+backward
