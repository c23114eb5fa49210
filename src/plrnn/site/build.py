"""build_site(): every part of the site is built into a staging folder beside the output, which
then takes the previous site's place by renames: a failed build leaves the last good site as it
was, and no reader sees half a site."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .listing import write_indexes

# Written into every site this builds. Only a folder holding it is ever replaced, so a mistyped
# --out cannot delete a folder this command did not make.
MARKER = ".plrnn-site"
# A step that hangs fails with its name instead of blocking a CI job until its own limit.
STEP_TIMEOUT_S = 900
# What the site is built from, relative to the repository root.
NEEDED = ("mkdocs.yml", "docs", "asv.conf.json", "results", "reproductions/paper")


class SiteBuildError(RuntimeError):
    """The site could not be built; the message names the step that failed, if one did."""


@dataclass(frozen=True)
class Step:
    name: str
    what: str  # one line of progress output
    run: Callable[[], None]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_command(step: str, cmd: list[str], cwd: Path, log: Callable[[str], None]) -> str:
    """Runs `cmd` for `step`; its output is shown only when it fails (or says "warning")."""
    # Quiets mkdocs-material's banner about MkDocs 2.0, which would otherwise open every build.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # A session of its own, so that a timeout kills the command's children too (mkdocs and asv
    # may start some) and none is left holding the output pipe.
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=STEP_TIMEOUT_S)
    except BaseException as exc:  # the timeout, or Ctrl-C, which the child's session misses
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        raise SiteBuildError(
            f"step {step!r} timed out after {STEP_TIMEOUT_S} s: {shlex.join(cmd)}\n{_tail(output)}"
        ) from None
    if proc.returncode != 0:
        hint = ""
        if "No module named" in output:
            hint = '\n(the site needs the dev extra: pip install --no-build-isolation -e ".[dev]")'
        raise SiteBuildError(
            f"step {step!r} failed (exit status {proc.returncode}): "
            f"{shlex.join(cmd)}\n{_tail(output)}{hint}"
        )
    for line in output.splitlines():
        if re.match(r"\s*warning\b", line, re.IGNORECASE):
            log(f"    {line.strip()}")
    return output


def copy_raw_results(root: Path, stage: Path) -> None:
    """results/<machine>/ (and results/asv/) as committed, and the paper's CSVs: the files the
    dashboard links to, placed where its relative links point."""
    results = stage / "results"
    results.mkdir()
    for folder in sorted((root / "results").iterdir()):
        if folder.is_dir() and folder.name[0] not in "._":
            shutil.copytree(folder, results / folder.name, ignore=shutil.ignore_patterns(".*"))
    paper = stage / "paper"
    paper.mkdir()
    for csv in sorted((root / "reproductions" / "paper").glob("*.csv")):
        shutil.copy2(csv, paper / csv.name)


def check_asv_history(root: Path, stage: Path, log: Callable[[str], None]) -> None:
    """asv publish succeeds with an empty history when the commits it measured are not in the
    clone (a shallow checkout); say so instead of publishing empty graphs silently."""
    runs = [p for p in (root / "results" / "asv").glob("*/*.json") if p.name != "machine.json"]
    try:
        index = json.loads((stage / "asv" / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # another asv layout: nothing to check
    if runs and not index.get("revision_to_hash"):
        log(
            "    warning: the asv pages show no history: the commits in results/asv/ are not in "
            "this clone (a shallow clone? run git fetch --unshallow, or clone with full history)"
        )


def _steps(root: Path, stage: Path, log: Callable[[str], None]) -> list[Step]:
    def python_m(step: str, *args: str | Path) -> None:
        # sys.executable: the tools of this environment, whatever PATH holds.
        run_command(step, [sys.executable, "-m", *map(str, args)], root, log)

    def docs() -> None:
        python_m("docs", "mkdocs", "build", "--strict", "--config-file", root / "mkdocs.yml",
                 "--site-dir", stage)  # fmt: skip
        # mkdocs writes its 404 page with links from the host's root (/assets/...), which break
        # wherever the site is not served at the root (a GitHub project page): the host's own
        # 404 page is better than an unstyled one.
        (stage / "404.html").unlink(missing_ok=True)

    def asv() -> None:
        python_m("asv", "asv", "publish", "--no-pull", "--config", root / "asv.conf.json",
                 "--html-dir", stage / "asv")  # fmt: skip
        check_asv_history(root, stage, log)

    def dashboard() -> None:
        # Built from the copies inside the site, so that every link it writes stays inside.
        results = stage / "results"
        python_m("dashboard", "plrnn.dashboard", "--results", results,
                 "--out", results / "index.html", "--asv-html", stage / "asv",
                 "--paper", stage / "paper")  # fmt: skip

    def indexes() -> None:
        for top in (stage / "results", stage / "paper"):
            write_indexes(top, stage)

    def raw_results() -> None:
        copy_raw_results(root, stage)

    return [
        # First: mkdocs empties the folder it builds into.
        Step("docs", "mkdocs build --strict (docs/, mkdocs.yml)", docs),
        Step("asv", "asv publish of results/asv/ into asv/", asv),
        Step("raw results", "copy results/<machine>/ and reproductions/paper/", raw_results),
        Step("dashboard", "python -m plrnn.dashboard into results/index.html", dashboard),
        Step("folder indexes", "index.html for folders of raw files", indexes),
    ]


def _check_paths(root: Path, out: Path) -> None:
    missing = [name for name in NEEDED if not (root / name).exists()]
    if missing:
        raise SiteBuildError(
            f"{root} has no {', '.join(missing)}: run from the repository root or pass --root"
        )
    if root.is_relative_to(out):
        raise SiteBuildError(f"--out {out} would replace the repository; pick a folder inside it")
    for source in ("docs", "results", "reproductions"):
        if out.is_relative_to(root / source):
            raise SiteBuildError(f"--out {out} is inside {source}/, which the site is built from")
    if out.exists() and not out.is_dir():
        raise SiteBuildError(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise SiteBuildError(
            f"--out {out} is a folder this command did not build; it is not "
            "replaced: remove it or pick another"
        )


def build_site(
    root: str | os.PathLike = ".",
    out: str | os.PathLike | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Builds the whole site of the repository at `root` into `out` (default <root>/site).

    Steps: docs, asv, raw results, dashboard, folder indexes; each reports its progress
    through `log` (default: print). Raises SiteBuildError naming the step that failed; `out`
    is then left as it was."""
    log = log or (lambda line: print(line, flush=True))
    root = Path(root).resolve()
    out = (Path(out) if out is not None else root / "site").resolve()
    _check_paths(root, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside `out`, on the same file system, so that the final renames are atomic.
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        steps = _steps(root, stage, log)
        for i, step in enumerate(steps, 1):
            log(f"[{i}/{len(steps)}] {step.name}: {step.what}")
            start = time.perf_counter()
            try:
                step.run()
            except SiteBuildError:
                raise
            except Exception as exc:
                raise SiteBuildError(f"step {step.name!r} failed: {exc}") from exc
            log(f"[{i}/{len(steps)}] {step.name}: done in {time.perf_counter() - start:.1f} s")
        (stage / MARKER).write_text("built by python -m plrnn.site build\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp made it private; a site is for reading
        _replace(out, stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log(f"site: {out} (open index.html there, or serve it: python -m http.server -d {out})")
    return out


def _replace(out: Path, stage: Path) -> None:
    if not out.exists():
        stage.rename(out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    out.rename(trash / out.name)
    stage.rename(out)
    shutil.rmtree(trash, ignore_errors=True)
