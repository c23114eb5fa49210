"""python -m plrnn.dashboard: options, messages, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from plrnn.dashboard.__main__ import main

from .htmlscan import scan


def test_module_entry_point_writes_the_page(fake_tree, tmp_path):
    out = tmp_path / "site" / "page.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "plrnn.dashboard",
            "--results",
            str(fake_tree.results),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out} (2 machines, 6 artifacts)" in proc.stdout
    assert len(scan(out.read_text(encoding="utf-8")).result_tables) == len(fake_tree.all_tables)


def test_default_out_and_warnings_on_stderr(fake_tree, capsys):
    (fake_tree.gpu / "table2.json").write_text("{broken")
    assert main(["--results", str(fake_tree.results)]) == 0
    captured = capsys.readouterr()
    assert (fake_tree.results / "index.html").is_file()
    assert "warning: cuda-fake-h100/table2.json is not readable JSON" in captured.err


def test_asv_and_paper_folders_can_be_given(fake_tree, tmp_path, capsys):
    asv = tmp_path / "asv-site"
    asv.mkdir()
    (asv / "index.html").write_text("<html></html>")
    main(
        [
            "--results",
            str(fake_tree.results),
            "--asv-html",
            str(asv),
            "--paper",
            str(tmp_path / "no-paper"),
        ]
    )
    page = scan((fake_tree.results / "index.html").read_text(encoding="utf-8"))
    assert any(a["href"].endswith("asv-site/index.html") for a in page.links)
    assert [t for t in page.tables if t.section == "paper"] == []  # no paper section


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--results", "/nonexistent/results"], "--results /nonexistent/results: not a directory"),
        (["--out", "{results}"], "is a directory"),
        (["--out", "{file}/index.html"], "is a file, not a directory"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option(fake_tree, capsys, args, message):
    a_file = fake_tree.results / "a_file"
    a_file.write_text("")
    args = [a.format(results=fake_tree.results, file=a_file) for a in args]
    if "--results" not in args:
        args += ["--results", str(fake_tree.results)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert ("--out" if "--out" in args else "--results") in err.splitlines()[-1]
