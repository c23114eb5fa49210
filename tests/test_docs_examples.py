"""Every ```python block of the README and docs/ runs as written: the blocks of one file in order,
in one fresh interpreter (a later block may use an earlier one's names), under a time limit. A
block whose first line is a `torchrun ...` comment runs under that command, its ranks on gloo."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_S = 300
FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
TORCHRUN = re.compile(r"^#\s*torchrun\s+(.*?)\s+\S+\.py\b")


def python_blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


def test_the_docs_have_examples_to_run():
    """The fence pattern still finds them (a changed fence style would otherwise skip them all)."""
    assert sum(len(python_blocks(p)) for p in PAGES) >= 6


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(page, tmp_path):
    blocks = python_blocks(page)
    for block in blocks:
        compile(block, str(page), "exec")  # a block that is not Python belongs in ```text
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))
    ranks = [TORCHRUN.match(b) for b in blocks]
    if any(ranks):
        assert len(blocks) == 1, "a torchrun example must be the page's only Python block"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               *shlex.split(ranks[0].group(1)), str(script)]
    else:
        cmd = [sys.executable, str(script)]
    env = {**os.environ, "PLRNN_AUTO_CALIBRATION": "0"}
    # A session of its own, so that a timeout kills torchrun's ranks along with it.
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the examples of {page.name} still ran after {TIMEOUT_S} s")
    assert proc.returncode == 0, f"{page.name}'s examples failed:\n{output}"
