"""Without a C++ compiler: the kernels report why they are unavailable, naming them fails with
that reason, and backend='auto' falls back to the torch backend with exactly one warning.

Runs in a fresh interpreter (the kernels' load() result is cached per process) with an empty
TORCH_EXTENSIONS_DIR and PLRNN_PREBUILT=0, so neither a previously built kernel nor the
install-time build can mask the missing compiler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from plrnn.recurrence import prebuilt

SCRIPT = textwrap.dedent(
    """
    import json, warnings
    import torch
    import plrnn
    from plrnn.recurrence import reference

    out = {}
    out["status"] = {s.name: [s.available, s.reason] for s in plrnn.backends("cpu")}
    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, 3, generator=g, dtype=torch.float64)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    try:
        plrnn.linear_recurrence(a, x, backend="cpu_serial")
        out["explicit_error"] = None
    except RuntimeError as err:
        out["explicit_error"] = str(err)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h1 = plrnn.linear_recurrence(a, x)
        h2 = plrnn.linear_recurrence(a, x, reverse=True)
    out["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
    out["err_fwd"] = (h1 - reference.serial(a, x)).abs().max().item()
    out["err_rev"] = (h2 - reference.serial(a, x, None, True)).abs().max().item()
    print("RESULT " + json.dumps(out))
    """
)


def test_missing_compiler_reports_refuses_and_falls_back(tmp_path):
    ext_dir = tmp_path / "torch_extensions"
    ext_dir.mkdir()
    env = dict(
        os.environ, CXX="/nonexistent/c++", TORCH_EXTENSIONS_DIR=str(ext_dir), PLRNN_PREBUILT="0"
    )
    env.pop("PLRNN_VERBOSE_BUILD", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))

    # (a) backends() says why
    status = out["status"]
    assert status["reference"][0] and status["torch"][0]
    for name in ("cpu_serial", "cpu_parallel"):
        available, reason = status[name]
        assert available is False
        assert "no C++ compiler found" in reason and "/nonexistent/c++" in reason

    # (b) asking for the kernel by name fails with that reason
    assert out["explicit_error"] is not None
    assert out["explicit_error"].startswith(
        "backend 'cpu_serial' is not available for inputs on cpu"
    )
    assert "no C++ compiler found" in out["explicit_error"]

    # (c) auto warns once over two calls, and still computes the right thing
    assert len(out["warnings"]) == 1, out["warnings"]
    category, message = out["warnings"][0]
    assert category == "RuntimeWarning"
    assert "'torch' backend" in message and "no C++ compiler found" in message
    assert out["err_fwd"] <= 1e-12 and out["err_rev"] <= 1e-12

    # nothing was built
    assert list(ext_dir.iterdir()) == []


def test_an_install_without_a_compiler_stops_with_one_line_naming_the_way_out(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, CXX="/nonexistent/c++")
    env.pop("PLRNN_NO_EXTENSIONS", None)
    proc = subprocess.run([sys.executable, "setup.py", "--name"], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("plrnn setup: no C++ compiler ('/nonexistent/c++' is not on PATH")
    assert "PLRNN_NO_EXTENSIONS=1" in last and "Traceback" not in proc.stderr


def test_an_install_without_cuda_kernels_says_so(monkeypatch):
    info = dict(prebuilt.build_info() or {}, torch=torch.__version__, cuda_sources=None)
    monkeypatch.setattr(prebuilt, "build_info", lambda: info)
    monkeypatch.delenv("PLRNN_PREBUILT", raising=False)
    assert prebuilt.unusable("cuda") == ("this installation has no prebuilt CUDA kernels (built "
                                         "without nvcc or a CUDA build of torch)")
