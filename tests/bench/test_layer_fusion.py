"""plrnn.bench.layer_fusion, the compile_gates benchmark: where it lives and its command line.
Nothing here times or compiles anything."""

from __future__ import annotations

import ast
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
