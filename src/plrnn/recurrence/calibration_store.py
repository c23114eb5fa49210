"""Where calibration.py keeps its measurements: one JSON record per CPU (model and feature
flags), build of the kernels (their sources' digest) and thread count, in PLRNN_CACHE_DIR
(default ~/.cache/plrnn).

- Written whole: into a temporary file beside the record, then renamed over it, so that a
  process reading it meanwhile reads the old record or the new one. A write that fails (a
  read-only folder, a full disk, a folder that is a file) leaves nothing behind and says so in
  a warning: each process then measures again.
- Measured by one process at a time (`exclusive`): the threads of a process, and the processes
  sharing the folder on one CPU (an flock on `calibrating-<cpu>.lock` there, released by the
  kernel if its holder dies). Two measurements at once time each other's kernels; the waiter
  reads the record the first one wrote.
- Pruned: a record (or a temporary file of a write killed midway) that no process has read for
  STALE_DAYS is removed when a new record is written. Only files named as this module names
  them are touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from . import sources

log = logging.getLogger(__name__)

STALE_DAYS = 30  # records unread for this long are removed when a new one is written
# How long a process waits for another one's measurement before measuring itself (the other
# may be stopped, or its folder's locks slow): a calibration takes about 12 s on idle CPUs, and
# took 4.5 min on a 2-core VM at a load average of 7, where a second measurement running beside
# it would have slowed and disturbed both.
LOCK_WAIT_S = 360.0

_DIGEST = "[0-9a-f]{10}"
# The records' names (cache_file, layout_cache_file), and those of their temporary files.
_OWN = re.compile(rf"(auto-cpu-{_DIGEST}-{_DIGEST}-t[0-9]+|rows-cpu-{_DIGEST}-{_DIGEST})\.json"
                  r"(\.[0-9]+-[0-9a-f]{8}\.tmp)?")


def cache_file(threads: int) -> Path:
    return _cache_path(f"auto-cpu-{{cpu}}-{{kernels}}-t{threads}.json")


def layout_cache_file() -> Path:
    return _cache_path("rows-cpu-{cpu}-{kernels}.json")


def cache_root() -> Path:
    """PLRNN_CACHE_DIR, else ~/.cache/plrnn; OSError where there is no home folder to find (no
    HOME, and no passwd entry for this user: a container run under an arbitrary uid)."""
    configured = os.environ.get("PLRNN_CACHE_DIR")
    if configured:
        return Path(configured)
    try:
        return Path.home() / ".cache" / "plrnn"
    except RuntimeError as err:
        raise OSError(f"{err} (no HOME; set PLRNN_CACHE_DIR to a folder to cache it in)") from None


def _cache_path(pattern: str) -> Path:
    return cache_root() / pattern.format(cpu=_cpu_key(), kernels=kernels_key())


def kernels_key() -> str:
    """The kernels a record measured: their sources; the build loaded (an ISA level's vector
    width, or the first-use build's -march=native, decides which in-thread chunks and row
    layouts pay); torch's version (its OpenMP pool and allocator); and PLRNN_STREAM_BYTES where
    set, which moves the threshold the streaming settings are measured against."""
    from . import cpu

    build = cpu.origin()
    build = build if build.startswith("prebuilt") else "first use"
    stream = os.environ.get("PLRNN_STREAM_BYTES", "")
    text = f"{sources.digest(sources.CPU_ALL)}|{build}|{torch.__version__}|{stream}"
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _cpu_key() -> str:
    return hashlib.sha1((cpu_model() + _cpu_flags()).encode()).hexdigest()[:10]


def _cpuinfo_field(prefix: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(prefix)), "")
    except OSError:
        return ""


def cpu_model() -> str:
    import platform

    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> str:
    return _cpuinfo_field("flags")


_said_unwritable: set[Path] = set()  # the folders write_record has warned of


def write_record(path: Path, record: dict) -> None:
    """Writes `record` to `path` whole (see the module's docstring), as readable as the umask
    allows any file of the user's; a failure is said in a warning, and leaves no file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1)
            os.replace(tmp, path)  # atomic: a concurrent process reads one whole record
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    except OSError as err:
        if path.parent not in _said_unwritable:  # once a folder: its other records fail alike
            _said_unwritable.add(path.parent)
            log.warning("plrnn: could not cache the calibration in %s (%s), so each process "
                        "will measure it again; set PLRNN_CACHE_DIR to a writable folder, or "
                        "PLRNN_AUTO_CALIBRATION=0 to use fixed rules", path.parent, err)
    prune_stale(path.parent)


def read_record(path: Path) -> dict:
    """A cached record, marked as just used (its mtime) so that prune_stale keeps it. OSError
    where it cannot be read, ValueError where it holds no JSON object."""
    record = json.loads(path.read_text())
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds a JSON {type(record).__name__}, not a record")
    with contextlib.suppress(OSError):
        os.utime(path)
    return record


def prune_stale(root: Path) -> None:
    """Removes the records no process has read for STALE_DAYS: each new build of the kernels
    (and each CPU) gets its own, and an upgrade would otherwise leave the old ones forever. Two
    installations that share the folder keep theirs as long as either is used. Temporary files
    of writes killed midway go too; a write in progress is not that old."""
    cutoff = time.time() - STALE_DAYS * 86400
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            if (_OWN.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                os.unlink(entry.path)


# exclusive()'s state: the threads of this process take _lock (reentrant: the per-thread-count
# measurement asks for the layout of wide rows, which has its own record); the outermost holder
# also holds the flock on _fd.
_lock = threading.RLock()
_depth = 0
_fd: int | None = None


def _forget_in_child() -> None:
    """A child forked while another thread measured holds neither lock: that thread is not in
    it (its copy of the RLock would stay taken forever, and its flock belongs to the parent)."""
    global _lock, _depth, _fd
    _lock = threading.RLock()
    _depth = 0
    if _fd is not None:
        with contextlib.suppress(OSError):
            os.close(_fd)  # the parent's copy keeps its flock
    _fd = None


os.register_at_fork(after_in_child=_forget_in_child)


@contextlib.contextmanager
def exclusive(path: Path | None) -> Iterator[None]:
    """Holds the calibration lock for the record at `path` (None: no folder, this process
    only): one measurement at a time among this process's threads and, where the folder takes
    a lock file, among the processes that share it on this CPU. Waits at most LOCK_WAIT_S for
    another process, then goes on without it."""
    global _depth, _fd
    lock = _lock
    with lock:
        if _depth == 0 and path is not None:
            _fd = _flock(path.parent / f"calibrating-{_cpu_key()}.lock")
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
            if _depth == 0 and _fd is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(_fd, fcntl.LOCK_UN)  # for a forked child's copy of it too
                with contextlib.suppress(OSError):
                    os.close(_fd)
                _fd = None


def _flock(path: Path) -> int | None:
    """An fd holding an exclusive flock on `path`, or None where the folder takes no lock file
    or another process held it for LOCK_WAIT_S."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None  # the write will fail too, and say so
    start = time.monotonic()
    said = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                pass
            except OSError:  # a file system without locks
                os.close(fd)
                return None
            waited = time.monotonic() - start
            if waited >= LOCK_WAIT_S:
                log.warning("plrnn: another process has been measuring this CPU for %.0f s "
                            "(lock file %s); measuring here too", waited, path)
                os.close(fd)
                return None
            if not said:
                said = True
                log.warning("plrnn: waiting for another process measuring this CPU (lock file "
                            "%s), to read its answer", path)
            time.sleep(0.05)
    except BaseException:  # Ctrl-C while waiting: no descriptor left open for the process's life
        os.close(fd)
        raise
