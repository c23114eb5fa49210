"""plrnn.bench.layer_fusion, the compile_gates benchmark: where it lives and its command line.
Nothing here times or compiles anything."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import plrnn.layers
from plrnn.bench import layer_fusion

LAYERS_DIR = Path(plrnn.layers.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a file under plrnn/layers/ imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            package = ["plrnn", "layers"][: max(0, 3 - node.level)] if node.level else []
            base = ".".join(package + ([node.module] if node.module else []))
            names.update([base] + [f"{base}.{alias.name}" for alias in node.names])
    return names


@pytest.mark.parametrize("path", sorted(LAYERS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_layer_module_imports_the_benchmarks(path):
    bench = sorted(n for n in imported_modules(path) if n.split(".")[:2] == ["plrnn", "bench"])
    assert not bench, f"{path.name} imports {bench}; benchmarks belong in plrnn.bench"


def test_the_model_package_does_not_load_the_benchmarks():
    # The layers are library code; the benchmark harness (and what it imports) must stay out of
    # a plain `import plrnn.layers`.
    code = "import sys, plrnn.layers; print(sorted(m for m in sys.modules if 'plrnn.bench' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_help_runs_nothing(capsys):
    with pytest.raises(SystemExit) as exit_info:
        layer_fusion.main(["--help"])
    assert exit_info.value.code == 0
    assert "Does compile_gates pay?" in capsys.readouterr().out


def test_cpu_clock_needs_one_thread(capsys):
    with pytest.raises(SystemExit) as exit_info:
        layer_fusion.main(["--clock", "cpu"])
    assert exit_info.value.code == 2
    assert "--clock cpu needs --threads 1" in capsys.readouterr().err


SHAPE_ERROR = "argument --shapes: expected TxB with positive integers T and B (e.g. 4096x16), got "


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shapes", "4096"], SHAPE_ERROR + "'4096'"),
        (["--shapes", "8xb"], SHAPE_ERROR + "'8xb'"),
        (["--shapes", "0x16"], SHAPE_ERROR + "'0x16'"),
        (["--shapes", "4x4x4"], SHAPE_ERROR + "'4x4x4'"),
        (["--rounds", "0"], "argument --rounds: expected a positive integer, got '0'"),
        (["--threads", "-1"], "argument --threads: expected a positive integer, got '-1'"),
        (["--hidden-size", "x"], "argument --hidden-size: expected a positive integer, got 'x'"),
        (["--layers"], "--layers needs at least one of: GILR"),
        (["--layers", "QRNN"], "argument --layers: invalid choice: 'QRNN'"),
    ],
)
def test_bad_arguments_are_usage_errors_before_any_measuring(argv, message, monkeypatch, capsys):
    def no_measuring(*args, **kwargs):
        raise AssertionError("measured despite a bad argument")

    monkeypatch.setattr(layer_fusion, "run", no_measuring)
    monkeypatch.setattr(layer_fusion, "run_gates", no_measuring)
    monkeypatch.setattr(layer_fusion, "reuse_freed_pages", no_measuring)
    with pytest.raises(SystemExit) as exit_info:
        layer_fusion.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_shape_errors_say_the_expected_form():
    for text in ("4096", "8xb", "0x16", "-4x2"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected TxB with positive integers"):
            layer_fusion._shape(text)
    assert layer_fusion._shape("4096x16") == (4096, 16)


def _fake_run(monkeypatch, seen_dirs, json_path=None):
    def fake(name, T, B, args):
        if json_path is not None:
            seen_dirs.append(json_path.parent.is_dir())
        return {
            "layer": name,
            "T": T,
            "B": B,
            "eager_ms": 2.0,
            "compiled_ms": 1.0,
            "speedup": 2.0,
            "max_rel_diff": 0.0,
        }

    monkeypatch.setattr(layer_fusion, "run", fake)
    monkeypatch.setattr(layer_fusion, "reuse_freed_pages", lambda: "test")
    monkeypatch.setattr(layer_fusion, "machine_info", lambda: {"machine": "test"})


def test_json_into_a_missing_directory_creates_it_before_measuring(monkeypatch, tmp_path, capsys):
    out = tmp_path / "missing" / "dir" / "x.json"
    seen_dirs: list[bool] = []
    _fake_run(monkeypatch, seen_dirs, out)
    layer_fusion.main(["--layers", "GILR", "--shapes", "8x2", "--rounds", "1", "--json", str(out)])
    assert seen_dirs == [True]
    written = json.loads(out.read_text())
    assert written["config"]["shapes"] == ["8x2"]
    assert written["config"]["json"] == str(out)
    assert [(r["layer"], r["T"], r["B"]) for r in written["records"]] == [("GILR", 8, 2)]
    assert "| GILR | 8 | 2 | 2.0 | 1.0 | 2.00x |" in capsys.readouterr().out


def test_an_uncreatable_json_directory_is_a_usage_error_before_measuring(
    monkeypatch, tmp_path, capsys
):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setattr(layer_fusion, "run", lambda *a: pytest.fail("measured"))
    with pytest.raises(SystemExit) as exit_info:
        layer_fusion.main(["--layers", "GILR", "--json", str(blocker / "sub" / "x.json")])
    assert exit_info.value.code == 2
    assert "--json: cannot create the directory" in capsys.readouterr().err


def test_gates_alone_may_leave_the_layers_out(monkeypatch, capsys):
    _fake_run(monkeypatch, [])
    monkeypatch.setattr(layer_fusion, "run", lambda *a: pytest.fail("timed a layer"))
    monkeypatch.setattr(
        layer_fusion,
        "run_gates",
        lambda name, T, B, args: {
            "function": name,
            "T": T,
            "B": B,
            "eager_ms": 1,
            "compiled_ms": 1,
        },
    )
    layer_fusion.main(["--gates", "--layers", "--shapes", "8x2"])
    out = capsys.readouterr().out
    assert "| gilr_gates | 8 | 2 |" in out and "| layer |" not in out
