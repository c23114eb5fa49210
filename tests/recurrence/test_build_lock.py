"""The first-use build cannot hang: a builder killed mid-build leaves nothing that blocks the next
process, and waiting for a live builder is bounded and says what it waits for.

Each test runs plrnn in fresh interpreters with PLRNN_PREBUILT=0 (the path of a checkout that
was never built) and its own TORCH_EXTENSIONS_DIR. Every subprocess has a timeout, so a hang
fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

import plrnn
from plrnn.recurrence import cpu, jit, prebuilt, sources

from .helpers import sysfs_cache_bytes

pytestmark = pytest.mark.skipif(
    jit.missing_toolchain() is not None, reason="needs a C++ compiler and ninja"
)

LOAD_AND_CHECK = textwrap.dedent(
    """
    import json, time
    import torch, plrnn
    from plrnn.recurrence import cpu, reference
    start = time.monotonic()
    reason = cpu.load()
    out = {"reason": reason, "origin": cpu.origin(), "seconds": time.monotonic() - start}
    if reason is None:
        a = torch.rand(300, 5, dtype=torch.float64)
        x = torch.randn(300, 5, dtype=torch.float64)
        h = plrnn.linear_recurrence(a, x, backend="cpu_serial")
        out["err"] = (h - reference.serial(a, x)).abs().max().item()
        out["status"] = [list(s) for s in plrnn.backends("cpu") if s.name == "cpu_serial"][0]
    print("RESULT " + json.dumps(out))
    """
)


def _env(ext_dir: Path, **extra: str) -> dict:
    env = dict(os.environ, PLRNN_PREBUILT="0", TORCH_EXTENSIONS_DIR=str(ext_dir), **extra)
    env.pop("PLRNN_VERBOSE_BUILD", None)
    return env


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _build_dir(ext_dir: Path) -> Path:
    return ext_dir / cpu.first_use_name()


def test_build_killed_midway_then_next_process_builds(tmp_path):
    """kill -9 of a first-use build (its whole process group, as a closed terminal would), then
    a new process: it must clean up and build, or fail with a message, within a bounded time."""
    ext_dir = tmp_path / "ext"
    build_dir = _build_dir(ext_dir)
    first = subprocess.Popen(
        [sys.executable, "-c", LOAD_AND_CHECK],
        env=_env(ext_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        # The compiler is running once torch has written its ninja file; give it a few seconds
        # so objects are half-written, then kill everything.
        deadline = time.monotonic() + 120
        while not (build_dir / "build.ninja").exists():
            assert first.poll() is None, "the first build ended before it could be killed"
            assert time.monotonic() < deadline, "the first build never started"
            time.sleep(0.2)
        time.sleep(5)
        assert first.poll() is None, "the first build finished too fast to be interrupted"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    # What used to hang every later process forever: torch's lock file of the dead build.
    assert (build_dir / "lock").exists()
    assert not (build_dir / jit._COMPLETE).exists()

    second = subprocess.run(
        [sys.executable, "-c", LOAD_AND_CHECK],
        env=_env(ext_dir, PLRNN_BUILD_TIMEOUT="60"),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    out = _result(second)
    assert out["reason"] is None, out
    assert out["err"] <= 1e-12
    assert out["origin"] == f"built at first use ({build_dir})"
    assert out["status"][3] == out["origin"]  # backends() reports it
    assert "removing the unfinished or outdated build" in second.stderr
    assert "compiled now" in second.stderr
    assert (build_dir / jit._COMPLETE).exists() and not (build_dir / "lock").exists()

    # A third process finds the finished build and loads it without building, and without a
    # compiler (a node without one sharing the cache of a node that built).
    third = subprocess.run(
        [sys.executable, "-c", LOAD_AND_CHECK],
        env=_env(ext_dir, CXX="/nonexistent/c++"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    out = _result(third)
    assert out["reason"] is None and out["err"] <= 1e-12
    assert "removing" not in third.stderr
    assert "compiled now" not in third.stderr and "built at first use in" in third.stderr


def test_wait_for_a_live_builder_is_bounded_and_says_where(tmp_path):
    """While another process holds the build lock, a newcomer waits at most PLRNN_BUILD_TIMEOUT
    seconds, naming the lock file and its holder, then reports the kernels unavailable."""
    ext_dir = tmp_path / "ext"
    lock = ext_dir / f"{_build_dir(ext_dir).name}.lock"
    with jit.build_lock(lock, "test", timeout=1):
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", LOAD_AND_CHECK],
            env=_env(ext_dir, PLRNN_BUILD_TIMEOUT="3"),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        elapsed = time.monotonic() - start
    out = _result(proc)
    assert out["reason"] is not None
    assert "timed out after 3 s waiting for another process" in out["reason"]
    assert str(lock) in out["reason"] and f"pid {os.getpid()}" in out["reason"]
    assert "waiting for another process to finish building" in proc.stderr
    assert str(lock) in proc.stderr
    assert 3 <= out["seconds"] < 60 and elapsed < 120
    assert not _build_dir(ext_dir).exists()  # nothing was built or touched
    assert "compiled now" not in proc.stderr  # said only once the lock is held


def test_an_unreadable_build_folder_is_a_reason_not_an_exception(tmp_path, monkeypatch):
    def unreadable(build_dir, key):
        raise PermissionError(13, "Permission denied", str(build_dir / jit._COMPLETE))

    monkeypatch.setattr(jit, "_finished", unreadable)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    source = tmp_path / "k.cpp"
    source.write_text("int k() { return 0; }\n")
    reason, origin = jit.build_at_first_use("test kernels", "plrnn_k", "no prebuilt kernels", None,
                                            "a second", sources=[str(source)])
    assert origin == ""
    assert reason.startswith("the first-use build folder cannot be read ([Errno 13]")
    assert "TORCH_EXTENSIONS_DIR" in reason and reason.endswith("; and no prebuilt kernels")


def test_each_build_has_its_own_folder(tmp_path):
    """Another torch, other sources, headers or flags: another folder, so environments that share
    a cache do not delete each other's builds."""
    source, header = tmp_path / "k.cpp", tmp_path / "k.h"
    source.write_text("int k() { return 0; }\n")
    header.write_text("// v1\n")
    name = jit.first_use_name("plrnn_k", sources=[str(source)], headers=[str(header)])
    assert name.startswith("plrnn_k_")
    assert jit.first_use_name("plrnn_k", sources=[str(source)], headers=[str(header)]) == name
    assert jit.first_use_name("plrnn_k", sources=[str(source)], headers=[str(header)],
                              extra_cflags=["-O2"]) != name
    header.write_text("// v2\n")
    assert jit.first_use_name("plrnn_k", sources=[str(source)], headers=[str(header)]) != name


def _old_build(root: Path, name: str, days: float, stamped: bool = True) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "k.so").write_bytes(b"\0" * 16)
    when = time.time() - days * 86400
    if stamped:
        (folder / jit._COMPLETE).write_text("key")
        os.utime(folder / jit._COMPLETE, (when, when))
    os.utime(folder, (when, when))
    return folder


def test_a_new_build_prunes_the_builds_unused_for_a_month(tmp_path, monkeypatch):
    """Every edit of the sources and every torch upgrade gives a new folder: the old ones go once
    no process has loaded them for STALE_DAYS, except where another process holds their lock,
    and nothing of another extension is touched."""
    old = _old_build(tmp_path, "plrnn_k_0123456789", jit.STALE_DAYS + 5)
    legacy = _old_build(tmp_path, "plrnn_k", jit.STALE_DAYS + 5)  # before a folder per build
    unfinished = _old_build(tmp_path, "plrnn_k_aaaaaaaaaa", jit.STALE_DAYS + 5, stamped=False)
    recent = _old_build(tmp_path, "plrnn_k_bbbbbbbbbb", jit.STALE_DAYS - 5)
    busy = _old_build(tmp_path, "plrnn_k_cccccccccc", jit.STALE_DAYS + 5)
    other = _old_build(tmp_path, "plrnn_kernels_0123456789", jit.STALE_DAYS + 5)
    suffixed = _old_build(tmp_path, "plrnn_k_01234567890", jit.STALE_DAYS + 5)  # not a key
    source = tmp_path / "k.cpp"
    source.write_text("int k() { return 0; }\n")
    name = jit.first_use_name("plrnn_k", sources=[str(source)])
    new = tmp_path / name

    def built(what, name, sources, **kwargs):
        new.mkdir()
        return None

    monkeypatch.setattr(jit, "build_extension", built)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    with jit.build_lock(tmp_path / f"{busy.name}.lock", "kernels", 1.0):
        reason, origin = jit.build_at_first_use("test kernels", "plrnn_k", "no prebuilt kernels",
                                                None, "a second", sources=[str(source)])
    assert reason is None and origin == f"built at first use ({new})"
    assert not old.exists() and not legacy.exists() and not unfinished.exists()
    assert new.exists() and recent.exists() and busy.exists()
    assert other.exists() and suffixed.exists() and source.exists()


def test_loading_a_finished_build_keeps_it_from_pruning(tmp_path, monkeypatch):
    source = tmp_path / "k.cpp"
    source.write_text("int k() { return 0; }\n")
    name = jit.first_use_name("plrnn_k", sources=[str(source)])
    key = jit._build_key([str(source)], [], {})
    folder = _old_build(tmp_path, name, jit.STALE_DAYS + 5)
    (folder / jit._COMPLETE).write_text(key)
    os.utime(folder / jit._COMPLETE, (0, 0))
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    reason, _ = jit.build_at_first_use("test kernels", "plrnn_k", "no prebuilt kernels", None,
                                       "a second", sources=[str(source)])
    assert reason is None
    assert (folder / jit._COMPLETE).stat().st_mtime > time.time() - 60


@pytest.mark.skipif(
    prebuilt.build_info() is None or os.environ.get("PLRNN_PREBUILT") == "0",
    reason="an installation without install-time kernels",
)
def test_installed_kernels_are_the_prebuilt_ones():
    """Where setup.py built the kernels, they are what this process runs, for its own torch."""
    assert prebuilt.unusable() is None
    assert cpu.load() is None
    status = {s.name: s for s in plrnn.backends("cpu")}
    built = prebuilt.build_info()["cpu_isas"]
    best = next(level for level in prebuilt.cpu_levels() if level in built)
    assert status["cpu_serial"].origin == status["cpu_parallel"].origin == f"prebuilt ({best})"
    assert status["torch"].origin == ""


@pytest.mark.parametrize(
    "capability, bf16, levels",
    [
        ("AVX512", True, ["avx512_bf16", "avx512", "avx2", "default"]),
        ("AVX512", False, ["avx512", "avx2", "default"]),
        ("AVX2", True, ["avx2", "default"]),  # ATEN_CPU_CAPABILITY=avx2 on such a CPU
        ("DEFAULT", False, ["default"]),
    ],
)
def test_cpu_levels_take_avx512_bf16_only_where_the_cpu_has_it(capability, bf16, levels,
                                                               monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16, raising=False)
    assert prebuilt.cpu_levels() == levels


def test_first_calls_from_several_threads_build_once():
    # Four Python threads calling a backend for the first time together: one builds (and
    # registers the ops' Python side), the others wait for its answer.
    calls = []

    def slow_build():
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return None

    load = jit.build_once(slow_build)
    start = threading.Barrier(4)
    answers = []

    def first_call():
        start.wait()
        answers.append(load())

    threads = [threading.Thread(target=first_call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(calls) == 1 and answers == [None] * 4


FORK_MID_BUILD = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from plrnn.recurrence import jit
    started, builds = threading.Event(), []
    def slow_build():
        builds.append(os.getpid())
        started.set()
        time.sleep(0.5)
        return "built"
    load = jit.build_once(slow_build)
    t = threading.Thread(target=load)
    t.start()
    started.wait()
    pid = os.fork()  # while the other thread builds, holding the lock
    if pid == 0:
        signal.alarm(20)  # the hang this guards against: a SIGALRM exit, not a stuck test
        os._exit(0 if load() == "built" and builds == [os.getppid()] else 3)
    t.join()
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """
)


def test_a_fork_during_a_build_gives_a_child_that_loads():
    """A DataLoader forking its workers while another thread made the first call: the child had
    inherited the build lock held by a thread it does not have, and waited forever. The fork now
    waits for the build, and the child has its answer without building again."""
    done = subprocess.run([sys.executable, "-c", FORK_MID_BUILD], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)


def test_failed_build_says_the_compilers_first_error(tmp_path, monkeypatch):
    # ninja's last line ("build stopped: subcommand failed") is all torch's exception ends with;
    # the reason a user sees must name what failed to compile.
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    bad = tmp_path / "bad.cpp"
    bad.write_text("int broken() { return undeclared_name; }\n")
    reason = jit.build_extension("test kernels", "plrnn_bad_source", sources=[str(bad)])
    assert reason is not None
    assert reason.startswith("building the test kernels failed: ")
    assert "error:" in reason and "undeclared_name" in reason
    assert "subcommand failed" not in reason


def test_a_static_libstdcxx_reads_and_formats_numbers(tmp_path):
    # The lent GPU machine's g++ linked the extension with a libstdc++ of its own: reading sysfs
    # through iostreams crashed there. -static-libstdc++ reproduces the mix here, where without
    # sources.LINK_FLAGS the cache size read failed silently and error messages lost their
    # numbers. A fresh interpreter: the ops may be registered once per process.
    script = textwrap.dedent(
        f"""
        import torch
        from plrnn.recurrence import jit
        reason = jit.build_extension(
            "C++ kernels", "plrnn_cpu_static_libstdcxx",
            sources={[str(sources.CSRC / name) for name in sources.CPU_COMPILED]!r},
            extra_cflags={sources.CPU_FLAGS!r},
            extra_ldflags=["-fopenmp", "-static-libstdc++", *{sources.LINK_FLAGS!r}],
        )
        assert reason is None, reason
        try:
            torch.ops.plrnn.cpu_streaming_schedule(5)
        except RuntimeError as err:
            print(str(err).splitlines()[0])
        print(torch.ops.plrnn.cpu_stream_bytes())
        """
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    env.pop("PLRNN_STREAM_BYTES", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    message, stream_bytes = done.stdout.strip().splitlines()[-2:]
    assert message.endswith("got 5"), message
    want = sysfs_cache_bytes()
    if want is None:
        pytest.skip("no cache sizes in /sys/devices/system/cpu/cpu0/cache")
    assert int(stream_bytes) == want
