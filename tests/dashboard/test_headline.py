"""The headline table at the top of the page: one row per paper artifact, the paper's number
beside each machine's best, CPU and GPU labelled, every number linked to its section."""

from __future__ import annotations

import json

from plrnn.dashboard import build_dashboard

from .conftest import CPU, GPU, XEON
from .htmlscan import Table, scan

ARTIFACTS = ["table1", "table2", "table3", "figure2", "throughput_heatmap"]


def build(tree, **kwargs):
    result = build_dashboard(tree.results, **kwargs)
    return result, scan(result.path.read_text(encoding="utf-8"))


def headline(page) -> Table:
    # The first table of the section; the asv charts' numbers follow it.
    return next(t for t in page.tables if t.section == "headline")


def cells(table: Table) -> dict[tuple[str, str], str]:
    """(artifact row, column) -> cell text; columns 'paper' or the machine's name."""
    header = table.cell_attrs[0]
    columns = [a.get("data-machine") or a.get("data-source") for a in header]
    out = {}
    for row, tr in zip(table.rows[1:], table.row_attrs[1:]):
        artifact = tr["data-artifact"]
        for column, text in zip(columns, row):
            if column:
                out[(artifact, column)] = text
    return out


def test_the_headline_opens_the_page_and_the_sidebar(headline_tree):
    result, page = build(headline_tree)
    text = result.path.read_text(encoding="utf-8")
    first_section = text[text.index("</header>") :].split("<section", 2)[1]
    assert first_section.startswith(' id="headline"')
    assert [s for s in page.ids if s in ("headline", "asv-history")] == ["headline", "asv-history"]
    toc = text[text.index('<nav class="toc"') : text.index("</nav>")]
    assert toc.index('href="#headline"') < toc.index(f'href="#machine-{CPU}"')


def test_one_row_per_paper_artifact_in_the_papers_order(headline_tree):
    _, page = build(headline_tree)
    table = headline(page)
    assert [r[0] for r in table.rows[1:]] == [
        "Table 1",
        "Table 2",
        "Table 3",
        "Figure 2",
        "Throughput heatmap",
    ]
    # artifact, what is compared, the paper's number, then one column per machine, CPUs first.
    assert [a.get("data-machine") for a in table.cell_attrs[0][3:]] == [CPU, XEON, GPU]


def test_the_papers_numbers_come_from_the_published_csvs(headline_tree):
    _, page = build(headline_tree)
    got = cells(headline(page))
    assert got[("table1", "paper")] == "41.8× m=32, T=65536"
    assert got[("table2", "paper")] == "9.21× SRU, T=65536, b=1"
    # LSTM hours / GILR-LSTM hours: 0.28 / 0.031 at T=1024 beats 0.58 / 0.10 at T=8192; at
    # T=1048576 the LSTM never converged, so there is no ratio there.
    assert got[("table3", "paper")] == "9.03× T=1024"
    assert got[("figure2", "paper")] == "curves only: the paper publishes no numbers for Figure 2"
    # The cuDNN LSTM's 772 is not a GILR-LSTM cell.
    assert got[("throughput_heatmap", "paper")] == "527k steps/s T=16384, b=8"


def test_ours_is_each_machines_best_by_the_artifacts_own_rule(headline_tree):
    _, page = build(headline_tree)
    got = cells(headline(page))
    # The script's headline kernel, not torch's larger speedup; a NaN cell is skipped.
    assert got[("table1", CPU)] == "1.25× cpu_parallel, m=32, T=65536"
    assert got[("table1", XEON)] == "1.19× cpu_parallel, m=32, T=16"
    # On CUDA both the paper's kernel and ours count; `auto` and the paper's-way column do not.
    assert got[("table1", GPU)] == "30.0× cuda_paper, m=32, T=65536"
    # The train step, as the paper's Table 2; the forward pass's 3.0 is not it.
    assert got[("table2", CPU)] == "1.07× GILR-LSTM, T=4096, b=4"
    # A capped LSTM makes the speedup a lower bound, and the cell says so.
    assert got[("table3", CPU)] == "≥ 52.5× T=256; the LSTM hit its time cap"
    assert got[("table3", GPU)] == "7.50× T=1024"
    # The end of the longest curves, not the LSTM's earlier peak.
    assert got[("figure2", CPU)] == (
        "GILR-LSTM 0.94 vs LSTM 0.52 mean accuracy at the end, T=1024, 10.0 min"
    )
    # The median round per cell (44, not the outlier 100), GILR-LSTM cells only.
    assert got[("throughput_heatmap", CPU)] == "44.0k steps/s T=16384, b=1"


def test_a_machine_without_an_artifact_shows_not_run(headline_tree):
    _, page = build(headline_tree)
    table = headline(page)
    got = cells(table)
    for artifact in ARTIFACTS[1:]:
        assert got[(artifact, XEON)] == "not run"
    for artifact in ("table2", "figure2", "throughput_heatmap"):
        assert got[(artifact, GPU)] == "not run"
    states = {
        (a.get("data-machine"), a.get("data-state"))
        for row in table.cell_attrs[1:]
        for a in row
        if a.get("data-machine")
    }
    assert (XEON, "not-run") in states and (CPU, "not-run") not in states


def test_cpu_and_gpu_columns_are_labelled_and_the_paper_is_gpu(headline_tree):
    _, page = build(headline_tree)
    table = headline(page)
    header = dict(
        zip(
            [a.get("data-machine") or a.get("data-source") for a in table.cell_attrs[0]],
            table.rows[0],
        )
    )
    assert header["paper"].startswith("paper GPU")
    assert header[CPU] == f"ours CPU {CPU}"
    assert header[XEON] == f"ours CPU {XEON}"
    assert header[GPU] == f"ours GPU (CUDA) {GPU}"
    for row, attrs in zip(table.rows[1:], table.cell_attrs[1:]):
        for text, a in zip(row, attrs):
            if a.get("data-machine"):
                kind = "gpu" if a["data-machine"] == GPU else "cpu"
                assert a["data-kind"] == kind
                if kind == "cpu":
                    assert "GPU" not in text and "cuda" not in text
            if a.get("data-source") == "paper":
                assert a["data-kind"] == "gpu"


def test_every_headline_link_opens_that_artifacts_section(headline_tree):
    _, page = build(headline_tree)
    links = [a for a in page.links if a["_section"] == "headline"]
    assert links
    targets = set()
    for a in links:
        assert a["href"].startswith("#"), a
        target = a["href"][1:]
        assert target in page.ids, f"dangling anchor {a['href']}"
        targets.add(target)
    # Each machine's number links to its own article of that artifact.
    for machine, artifacts in ((CPU, ARTIFACTS), (XEON, ["table1"]), (GPU, ["table1", "table3"])):
        for artifact in artifacts:
            anchor = f"{machine}-{artifact}"
            assert anchor in targets
            assert page.articles[anchor] == (machine, artifact)


def test_a_row_links_to_the_first_machine_that_ran_it(headline_tree):
    result, page = build(headline_tree)
    text = result.path.read_text(encoding="utf-8")
    assert f'<th scope="row"><a href="#{CPU}-table1">Table 1</a></th>' in text
    # No CPU ran Table 3 but the EPYC; the GPU's link is in its own cell.
    assert f'<th scope="row"><a href="#{CPU}-table3">Table 3</a></th>' in text


# context_parallel.csv as the script writes it: one row per rank, case, length and rank count.
CONTEXT_PARALLEL_CSV = """\
case,T,channels,shard_T,time_s,peak_bytes,base_bytes,rank,ranks
op,1048576,64,1048576,0.5,1000,100,0,1
op,1048576,64,524288,0.6,600,100,0,2
op,1048576,64,524288,0.6,650,100,1,2
op,1048576,64,262144,0.7,400,100,0,4
op,1048576,64,262144,0.7,450,100,3,4
GILR-LSTM train step,4096,64,4096,0.1,800,100,0,1
GILR-LSTM train step,4096,64,1024,0.1,700,100,0,4
"""


def test_context_parallel_row_only_once_a_machine_ran_it(headline_tree):
    _, page = build(headline_tree)
    assert "context_parallel" not in {k[0] for k in cells(headline(page))}
    (headline_tree.machine(GPU) / "context_parallel.csv").write_text(CONTEXT_PARALLEL_CSV)
    (headline_tree.machine(CPU) / "context_parallel.md").write_text("# a run without its CSV\n")
    _, page = build(headline_tree)
    got = cells(headline(page))
    # The largest rank's peak over one process's, per case and length: 450 / 1000 at 4 ranks
    # beats 650 / 1000 at 2 and the train step's 700 / 800.
    assert got[("context_parallel", GPU)] == (
        "0.45× of 1 process peak memory per rank: 4 ranks, op, T=2^20"
    )
    assert got[("context_parallel", CPU)] == ("no headline number: context_parallel.csv is missing")
    assert got[("context_parallel", XEON)] == "not run"
    assert got[("context_parallel", "paper")] == "not in the paper"
    assert page.articles[f"{GPU}-context_parallel"] == (GPU, "context_parallel")


def test_a_device_contradicting_the_folder_hides_the_number(headline_tree):
    path = headline_tree.machine(CPU) / "table1.json"
    data = json.loads(path.read_text())
    data["device"] = "cuda"
    path.write_text(json.dumps(data))
    result, page = build(headline_tree)
    table = headline(page)
    got = cells(table)
    assert got[("table1", CPU)] == "device unclear: see its section"
    assert "1.25" not in got[("table1", CPU)]
    # The section itself carries the warning.
    assert any("'cuda'" in w and "labelled CPU" in w for w in result.warnings)


def test_files_without_the_summary_say_so_in_the_cell(headline_tree):
    (headline_tree.machine(CPU) / "table2.json").write_text(json.dumps({"device": "cpu"}))
    (headline_tree.machine(CPU) / "table3.json").write_text("{broken")
    _, page = build(headline_tree)
    got = cells(headline(page))
    assert got[("table2", CPU)] == "no headline number: table2.json has no 'summary' list"
    assert got[("table3", CPU)] == ("no headline number: table3.json is missing or unreadable "
                                    "(the headline reads its 'speedups' list)")
    assert got[("table1", CPU)] == "1.25× cpu_parallel, m=32, T=65536"


def test_without_the_papers_csvs_the_paper_column_says_so(headline_tree, tmp_path):
    _, page = build(headline_tree, paper_dir=tmp_path / "no-paper")
    got = cells(headline(page))
    assert got[("table1", "paper")] == "no published numbers (table1.csv is not in no-paper/)"
    assert got[("table1", CPU)] == "1.25× cpu_parallel, m=32, T=65536"
    # The row still links to the machine's section; no link points at a missing paper section.
    assert all(a["href"][1:] in page.ids for a in page.links if a["href"].startswith("#"))


def test_table3_prefers_the_ratio_of_medians():
    from types import SimpleNamespace

    from plrnn.dashboard import our_numbers

    art = SimpleNamespace(name="table3")
    rows = [
        {"T": 256, "ours": 26.2, "ours is a lower bound": False, "ours, medians": 0.38,
         "medians: lower bound": False},
        {"T": 1024, "ours": 7.7, "ours is a lower bound": True, "ours, medians": 11.7,
         "medians: lower bound": True},
    ]
    number = our_numbers.table3(art, {"speedups": rows})
    assert number.value == 11.7
    assert number.text == "≥ 11.7×"
    assert number.where == "T=1024; medians, the LSTM hit its time cap"
    assert our_numbers.table3(art, {"speedups": rows[:1]}).where == "T=256; medians"
