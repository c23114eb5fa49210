"""The first-use build of the C++ and CUDA kernels (torch.utils.cpp_extension.load), once a
process, for an installation without usable prebuilt kernels (see prebuilt.py).

torch guards a build directory with a lock file that only its holder deletes: a builder killed
mid-build (kill -9, a closed terminal, an out-of-memory kill, a scheduler's time limit) leaves it
behind and every later process waits on it forever. So every build here first takes an flock on
`<extension>.lock` beside the build directory. The kernel releases an flock when its holder dies,
so that lock can never go stale; while we hold it no other plrnn process can be building, and
anything left in the build directory by a build that did not finish (torch's lock, half-written
objects) is removed before building. Waiting for another process's build is bounded
(PLRNN_BUILD_TIMEOUT seconds, default 900) and says what it waits for and where the lock is.

Each build has a folder of its own (first_use_name), so every edit of the sources, and every
torch upgrade, leaves the last build behind (about 6 MB each for the CPU kernels). A new build
removes the builds of the same extension that no process has loaded for STALE_DAYS, each under
its own lock (prune_stale).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_UNSET = object()
DEFAULT_TIMEOUT_S = 900.0
_COMPLETE = "plrnn-build-complete"  # written into the build directory once a build succeeded
STALE_DAYS = 30  # builds no process has loaded for this long go when a new one is made


def missing_toolchain() -> str | None:
    """Why torch.utils.cpp_extension cannot build here (no C++ compiler, no ninja), or None."""
    from torch.utils.cpp_extension import is_ninja_available

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler found (looked for {cxx!r} on PATH; set CXX to choose one)"
    if not is_ninja_available():
        return ("the ninja build tool is not on PATH (pip install ninja, in an environment that "
                "is activated)")
    return None


def build_once(build: Callable[[], str | None]) -> Callable[[], str | None]:
    """A backend module's `load()`: runs `build` at the first call and returns its answer (why
    the kernels are unavailable, or None) ever after."""
    status: object = _UNSET
    # Python threads making their first call together: one builds and registers, the others wait
    # (without the lock each registered the ops' Python side again, and torch warned of kernels
    # overridden).
    lock = threading.RLock()

    # A fork (a DataLoader starting its workers) waits for a build in another thread to finish,
    # so the child holds a whole one or none: forked mid-build, it had inherited the lock taken
    # by a thread that does not exist in it, and its first call waited forever. Reentrant for a
    # fork from inside the build itself.
    def fresh_in_child() -> None:
        nonlocal lock
        lock = threading.RLock()

    os.register_at_fork(before=lambda: lock.acquire(), after_in_parent=lambda: lock.release(),
                        after_in_child=fresh_in_child)

    @torch._dynamo.assume_constant_result  # run once at trace time; torch.compile sees the answer
    def load() -> str | None:
        nonlocal status
        if status is _UNSET:
            with lock:
                if status is _UNSET:
                    status = build()
        return status

    load.__doc__ = build.__doc__
    return load


def extensions_root() -> Path:
    """Where torch.utils.cpp_extension keeps first-use builds: TORCH_EXTENSIONS_DIR, else a
    folder per Python and torch flavour under ~/.cache/torch_extensions (torch's own layout)."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    flavour = "cpu"
    if torch.version.hip:
        flavour = "rocm" + torch.version.hip.replace(".", "")
    elif torch.version.cuda:
        flavour = "cu" + torch.version.cuda.replace(".", "")
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{python}_{flavour}"


def timeout_s() -> float:
    raw = os.environ.get("PLRNN_BUILD_TIMEOUT")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        log.warning("plrnn: PLRNN_BUILD_TIMEOUT=%r is not a number; using %s s", raw, DEFAULT_TIMEOUT_S)
        return DEFAULT_TIMEOUT_S


class LockTimeout(RuntimeError):
    pass


@contextlib.contextmanager
def build_lock(path: Path, what: str, timeout: float) -> Iterator[None]:
    """Holds an exclusive flock on `path` (created if missing, never deleted: a deleted lock file
    would let a newcomer lock a fresh inode while a waiter holds the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        next_note = start
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise LockTimeout(
                        f"timed out after {waited:.0f} s waiting for another process to finish "
                        f"building the {what} ({_holder(fd)}; lock file {path}; "
                        "PLRNN_BUILD_TIMEOUT sets the wait)"
                    ) from None
                if time.monotonic() >= next_note:
                    log.warning(
                        "plrnn: waiting for another process to finish building the %s (%s; lock "
                        "file %s), %.0f s of at most %.0f s",
                        what, _holder(fd), path, waited, timeout,
                    )
                    next_note += 30.0
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return f"held by {text}" if text else "holder unknown"


def _build_key(sources: list[str], headers: list[str], flags: dict) -> str:
    digest = hashlib.sha256(torch.__version__.encode())
    for src in [*sources, *headers]:
        digest.update(Path(src).read_bytes())
    digest.update(repr(sorted(flags.items())).encode())
    return digest.hexdigest()


def _finished(build_dir: Path, key: str) -> bool:
    """Whether build_dir holds a finished build with this key (OSError where it cannot be read)."""
    stamp = build_dir / _COMPLETE
    return stamp.exists() and stamp.read_text() == key


def build_extension(what: str, name: str, sources: list[str], *, headers: list[str] = (),
                    announce: Callable[[], None] = lambda: None, **kwargs) -> str | None:
    """torch.utils.cpp_extension.load of an extension that registers torch ops, under the build
    lock, calling `announce` first when it compiles (not when another process finished the same
    build meanwhile); returns why it failed ("building the <what> failed: <last line of the
    error>"), or None."""
    from torch.utils.cpp_extension import load

    root = extensions_root()
    build_dir = root / name
    try:
        with build_lock(root / f"{name}.lock", what, timeout_s()):
            key = _build_key(sources, list(headers), kwargs)
            if not _finished(build_dir, key):
                announce()
                if build_dir.exists():
                    log.warning("plrnn: removing the unfinished or outdated build in %s", build_dir)
                    shutil.rmtree(build_dir)
            stale = build_dir / "lock"
            if stale.exists():  # torch's lock of a load killed after the build had finished
                log.warning("plrnn: removing the stale lock %s (its process is gone)", stale)
                stale.unlink()
            build_dir.mkdir(parents=True, exist_ok=True)
            load(
                name=name,
                sources=sources,
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=os.environ.get("PLRNN_VERBOSE_BUILD") == "1",
                **kwargs,
            )
            (build_dir / _COMPLETE).write_text(key)
    except LockTimeout as err:
        return f"building the {what} failed: {err}"
    except PermissionError as err:
        return (f"building the {what} failed: {err} (TORCH_EXTENSIONS_DIR chooses where first-use "
                "builds go)")
    except Exception as err:  # noqa: BLE001 - any build failure means "unavailable, here is why"
        return f"building the {what} failed: {_first_error(str(err)) or type(err).__name__}"
    return None


def _first_error(log: str) -> str:
    """The compiler's first error in a failed build's log (ninja's own last line, "build
    stopped: subcommand failed", says nothing), else the log's last line."""
    lines = [line.strip() for line in log.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return (errors[0] if errors else lines[-1] if lines else "")[:300]


def first_use_name(name: str, *, sources: list[str], headers: list[str] = (), **flags) -> str:
    """The extension's name and build folder for these sources, headers and flags: one folder
    per build, so environments with another torch or other sources that share a cache keep
    their own builds instead of deleting each other's."""
    return _folder_name(name, _build_key(sources, list(headers), flags))


def _folder_name(name: str, key: str) -> str:
    return f"{name}_{key[:10]}"


def build_at_first_use(
    what: str, name: str, why: str, missing: str | None, duration: str, *, sources: list[str],
    headers: list[str] = (), **flags
) -> tuple[str | None, str]:
    """The fallback when no prebuilt library can be used (`why`): loads the build of these
    sources, headers and flags that an earlier process finished (no compiler needed: a node
    without one can share another's cache), else builds extension `name` here unless a
    prerequisite is `missing`. Returns (why the kernels are unavailable or None, their origin
    for backends())."""
    from torch.utils.cpp_extension import LIB_EXT

    key = _build_key(sources, list(headers), flags)
    base, name = name, _folder_name(name, key)
    where = extensions_root() / name
    try:
        finished = _finished(where, key)
    except OSError as err:
        return (f"the first-use build folder cannot be read ({err}; TORCH_EXTENSIONS_DIR chooses "
                f"another); and {why}", "")
    if finished:
        try:
            torch.ops.load_library(str(where / f"{name}{LIB_EXT}"))
        except OSError as err:  # dlopen refused it (no static initialiser ran): build it again
            log.warning("plrnn: the build in %s does not load (%s)", where, err)
        else:
            with contextlib.suppress(OSError):
                os.utime(where / _COMPLETE)  # loaded now: prune_stale keeps it
            log.warning("plrnn: %s, so the %s built at first use in %s are loaded", why, what, where)
            return None, f"built at first use ({where})"
    if missing:
        return f"{missing}; and {why}", ""

    def announce() -> None:
        log.warning("plrnn: %s, so the %s are compiled now (first use only, %s; cached in %s)",
                    why, what, duration, where)

    reason = build_extension(what, name, sources, headers=headers, announce=announce, **flags)
    if reason is None:
        prune_stale(extensions_root(), base, keep=name)
    return reason, "" if reason else f"built at first use ({where})"


def prune_stale(root: Path, base: str, keep: str) -> None:
    """Removes the first-use builds of extension `base` other than `keep` (its older folders
    `<base>_<key>`, and `<base>` itself, where builds went before they had a folder each) that
    no process has loaded for STALE_DAYS (the mtime of their completion stamp, which each load
    renews; a folder without one is an unfinished build). A build whose lock another process
    holds is left alone; the lock files stay (build_lock says why)."""
    cutoff = time.time() - STALE_DAYS * 86400
    own = re.compile(re.escape(base) + "(_[0-9a-f]{10})?")
    try:
        entries = [e for e in os.scandir(root) if own.fullmatch(e.name) and e.name != keep]
    except OSError:
        return
    for entry in entries:
        folder = Path(entry.path)
        with contextlib.suppress(OSError):
            if not entry.is_dir(follow_symlinks=False):
                continue
            stamp = folder / _COMPLETE
            used = stamp.stat().st_mtime if stamp.exists() else folder.stat().st_mtime
            if used >= cutoff:
                continue
            with contextlib.suppress(LockTimeout), build_lock(
                    root / f"{entry.name}.lock", "kernels", timeout=0):  # held: in use
                log.info("plrnn: removing %s, a build unused for %d days", folder, STALE_DAYS)
                shutil.rmtree(folder)
