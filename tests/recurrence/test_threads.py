"""The C++ kernels split work across threads (cpu_serial: channel blocks; cpu_parallel: time
chunks via Algorithm 1, only once T * channels >= 2**16). Every thread count must give the
reference's answer, including more threads than cores."""

from __future__ import annotations

import pytest
import torch

from plrnn.recurrence import reference

from .helpers import (
    F64_RTOL,
    FLOOR_ULPS,
    adjoint64,
    cast,
    check_float64,
    check_low_precision,
    grads_of,
    make_inputs,
    max_err,
    ref64,
    run,
    scale_of,
    seed_for,
    shape_id,
    sysfs_cache_bytes,
)

THREADS = (1, 2, 3, 4)
CASES = [
    (4097, (33,)),  # narrow channel groups in registers, time split across threads
    (1000, (128,)),  # wide rows (> 64 channels): sequential rows or register strips
    (1500, (2, 100)),  # wide rows that are not a multiple of any tile
    (30001, (3,)),  # few channels: many chunks in flight per thread
    (64, (2, 1100)),  # many strips, then narrower ones for the last 24 channels
]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"T={c[0]}-{shape_id(c[1])}")
def test_every_thread_count_matches_reference(case, reverse, num_threads, wide_rows):
    T, shape = case
    seed = seed_for("threads", T, shape, reverse)
    inputs32 = make_inputs(T, shape, "near_one", True, seed, torch.float32)
    inputs64 = cast(inputs32, torch.float64)
    truth = ref64(*inputs64, reverse)
    upstream = torch.randn(
        (T, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )

    want = adjoint64(*inputs64, upstream, reverse)

    failures = []
    for n in THREADS:
        num_threads(n)
        assert torch.get_num_threads() == n
        failures += [f"{n} threads: {f}" for f in check_float64(*inputs64, reverse, truth)]
        failures += [f"{n} threads: {f}" for f in check_low_precision(*inputs32, reverse, truth)]
        for name in ("cpu_serial", "cpu_parallel"):
            _, grads = grads_of(lambda a, x, h0: run(name, a, x, h0, reverse), inputs64, upstream)
            for what, g, w in zip(("decays", "impulses", "initial_state"), grads, want,
                                  strict=True):
                err = (g - w).abs().max().item()
                if not err <= F64_RTOL * max(1.0, w.abs().max().item()):
                    failures.append(f"{n} threads: {name} d{what} off by {err:.3e}")
    assert not failures, "\n".join(failures)


def test_concurrent_calls_from_python_threads(num_threads):
    """Several Python threads calling the kernels at once (each call itself multi-threaded) get
    exactly what the same calls give one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    num_threads(2)
    jobs = []
    for i in range(12):
        name = ("cpu_serial", "cpu_parallel", "torch")[i % 3]
        T, shape = ((3000, (40,)), (700, (100,)), (20000, (4,)))[i % 3]
        inputs = make_inputs(T, shape, "uniform", True, seed_for("concurrent", i))
        jobs.append((name, inputs, bool(i % 2)))

    def call(job):
        name, (a, x, h0), reverse = job
        return run(name, a, x, h0, reverse)

    alone = [call(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(call, jobs))
    for (name, _, _), got, want in zip(jobs, together, alone):
        assert torch.equal(got, want), name


# The newer inputs on several threads: a packed batch (big sequences run alone on every thread,
# short ones are spread over the threads), complex numbers (cpu_parallel splits time into one
# chunk per thread from 64 steps each) and time-invariant decays (read as one row; with 160
# channels, cpu_serial's threads take blocks of rows in turn).
NEW_INPUTS = {
    "packed": dict(lengths=[3000, 1, 0, 17, 2500, *([40] * 30)], dtype=torch.float64),
    "complex": dict(lengths=None, dtype=torch.complex128),
    "time_invariant": dict(lengths=None, dtype=torch.float64),
    "time_invariant_wide": dict(lengths=None, dtype=torch.float64, channels=160),
}


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("kind", list(NEW_INPUTS))
def test_newer_inputs_on_every_thread_count(kind, reverse, num_threads):
    import plrnn
    spec = NEW_INPUTS[kind]
    g = torch.Generator().manual_seed(seed_for("threads-new", kind, reverse))
    lengths = spec["lengths"] or [5000]
    T, C = sum(lengths), spec.get("channels", 6)
    a = 0.9 + 0.1 * torch.rand(T, C, generator=g, dtype=torch.float64)
    x = torch.randn(T, C, generator=g, dtype=torch.float64)
    if kind == "complex":
        a = torch.polar(a, torch.rand(T, C, generator=g, dtype=torch.float64))
        x = torch.complex(x, torch.randn(T, C, generator=g, dtype=torch.float64))
    if kind.startswith("time_invariant"):
        a = a[:1]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    h0 = torch.randn(len(lengths), C, generator=g, dtype=x.dtype)
    up = torch.randn(T, C, generator=g, dtype=x.dtype)

    def grads(fn):
        leaves = [t.detach().clone().requires_grad_() for t in (a, x, h0)]
        h = fn(*leaves)
        return h.detach(), torch.autograd.grad((h * up.conj()).sum().real, leaves)

    def ours(name):
        return lambda a_, x_, h0_: plrnn.linear_recurrence(a_, x_, h0_, cu_seqlens=cu,
                                                           reverse=reverse, backend=name)

    want_h, want = grads(lambda a_, x_, h0_: torch.cat([
        reference.serial(a_.expand(T, C)[lo:hi], x_[lo:hi], h0_[n], reverse)
        for n, (lo, hi) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())) if hi > lo]))
    for n in THREADS:
        num_threads(n)
        for name in ("cpu_serial", "cpu_parallel"):
            h, got = grads(ours(name))
            scale = max(1.0, want_h.abs().max().item())
            assert (h - want_h).abs().max().item() <= F64_RTOL * scale, (n, name)
            for which, gv, wv in zip(("decays", "impulses", "initial_state"), got, want):
                tol = F64_RTOL * max(1.0, wv.abs().max().item())
                assert (gv - wv).abs().max().item() <= tol, (n, name, which)


# cpu_serial's schedules for scans streamed from memory (2+ threads, data larger than the
# last-level cache, rows of 256 bytes or more; which one runs is measured per CPU): the pipelined
# one writes h, and in the backward dL/dx and dL/da, with non-temporal stores (plain stores at the
# unaligned head and tail of each row); the time split runs cpu_parallel's Algorithm 1, whose
# forward scans of such rows write with non-temporal stores too.
# PLRNN_STREAM_BYTES replaces the cache size: 0 takes these small inputs through them on any
# machine. 67 channels put rows at every alignment; an out= one element into its storage
# misaligns the whole output. The result is the same bits at any alignment and agrees with the
# reference. T = 1500 is several of the pipelined schedule's blocks at these widths; T = 7001
# gives the time split's reduced third 2 to 5 of its 1 MiB blocks, the last one partial, folded
# from the last to the first. "in_cache": data beyond one core's own cache (the L2) but counted
# as in the last-level cache take the time split with plain stores.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("channels", [67, 128])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(("schedule", "T"), [("pipelined", 1500), ("time_split", 1500),
                                             ("time_split", 7001), ("in_cache", 7001)])
def test_streaming_schedules_at_every_alignment(dtype, channels, reverse, schedule, T,
                                               num_threads, monkeypatch, streaming_schedule):
    import plrnn

    num_threads(2)
    if schedule == "in_cache":
        l2 = sysfs_cache_bytes(2)
        if l2 is None or 3 * T * channels * dtype.itemsize <= l2:
            pytest.skip("no L2 size in sysfs, or these inputs fit in it")
        monkeypatch.setenv("PLRNN_STREAM_BYTES", str(1 << 50))
    else:
        streaming_schedule(schedule)
        monkeypatch.setenv("PLRNN_STREAM_BYTES", "0")
    seed = seed_for("streaming", dtype, channels, reverse)
    a, x, h0 = make_inputs(T, (channels,), "near_one", True, seed, dtype)
    up = torch.randn(T, channels, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    leaves64 = [t.detach().to(torch.float64).requires_grad_() for t in (a, x, h0)]
    truth = ref64(*leaves64, reverse)
    truth_grads = torch.autograd.grad((truth * up.to(torch.float64)).sum(), leaves64)

    h, grads = grads_of(lambda a_, x_, h0_: run("cpu_serial", a_, x_, h0_, reverse), (a, x, h0),
                        up)
    storage = torch.empty(T * channels + 1, dtype=dtype)
    out = storage[1:].view(T, channels)
    with torch.no_grad():
        plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend="cpu_serial", out=out)
    assert torch.equal(h, out), "the misaligned out= changed the result"
    rtol = F64_RTOL if dtype == torch.float64 else 1e-4
    assert max_err(h, truth.detach()) <= rtol * max(1.0, scale_of(truth.detach()))
    for name, got, want in zip(("dL/da", "dL/dx", "dL/dh0"), grads, truth_grads):
        assert max_err(got, want) <= rtol * max(1.0, scale_of(want)), name


# cpu_parallel with and without its in-thread chunks (the calibration picks one per CPU; the
# tests otherwise run the fixed choice): up to 32 channels either way must give the reference.
@pytest.mark.parametrize("chunked", [True, False], ids=["in-thread-chunks", "plain"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", [(30001, (3,)), (2049, (1,)), (4001, (2, 16))],
                         ids=lambda c: f"T={c[0]}-{shape_id(c[1])}")
def test_parallel_with_and_without_in_thread_chunks(case, reverse, chunked, num_threads,
                                                    monkeypatch):
    from plrnn.recurrence import cpu

    T, shape = case
    seed = seed_for("ilp", T, shape, reverse)
    inputs = make_inputs(T, shape, "near_one", True, seed, torch.float64)
    truth = ref64(*inputs, reverse)
    upstream = torch.randn((T, *shape), generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64)
    _, want = grads_of(lambda a, x, h0: run("reference", a, x, h0, reverse), inputs, upstream)
    monkeypatch.setattr(cpu, "_tune_parallel", lambda: None)  # keep the setting made here
    before = torch.ops.plrnn.cpu_ilp_channels(32 if chunked else 0)
    try:
        for n in THREADS[:3]:
            num_threads(n)
            assert not check_float64(*inputs, reverse, truth, backends=("cpu_parallel",)), n
            _, got = grads_of(lambda a, x, h0: run("cpu_parallel", a, x, h0, reverse), inputs,
                              upstream)
            for which, g, w in zip(("decays", "impulses", "initial_state"), got, want):
                assert (g - w).abs().max().item() <= F64_RTOL * max(1.0, w.abs().max().item()), (
                    n, which)
    finally:
        torch.ops.plrnn.cpu_ilp_channels(before)


def test_thread_round_trip_needs_two_threads(num_threads):
    """The probe of where the host put the pool's threads (benchmarks and the calibration
    record it): nan on one thread, a time on two, and it rejects a count of nothing."""
    from plrnn.recurrence import cpu

    if cpu.load() is not None:
        pytest.skip("no C++ kernels here")
    num_threads(1)
    assert torch.isnan(torch.tensor(cpu.thread_round_trip_ns(10)))
    num_threads(2)
    assert 0 < cpu.thread_round_trip_ns(20) < 1e7  # under 10 ms even on a loaded machine
    with pytest.raises(RuntimeError, match="round_trips must be positive"):
        torch.ops.plrnn.cpu_thread_round_trip_ns(0)


_FAILING_ITEM = """
import json, sys, torch
from plrnn.recurrence import cpu
assert cpu.load() is None
threads, parallel, T, C, item, forgetting = map(int, sys.argv[1:])
torch.set_num_threads(threads)
torch.ops.plrnn.cpu_forgetting_split(forgetting)
g = torch.Generator().manual_seed(0)
a, x = torch.sigmoid(torch.randn(T, C, generator=g) + 2), torch.randn(T, C, generator=g)
said = {}
torch.ops.plrnn.cpu_fail_item(item)
for name, call in (
        ("forward", lambda: torch.ops.plrnn.cpu_scan(a, x, None, False, bool(parallel))),
        ("backward", lambda: torch.ops.plrnn.cpu_scan_backward(a, x, x, None, False,
                                                                bool(parallel)))):
    try:
        call()
        said[name] = "returned"
    except RuntimeError as err:
        said[name] = str(err)
torch.ops.plrnn.cpu_fail_item(-1)
h = torch.ops.plrnn.cpu_scan(a, x, None, False, bool(parallel))
ref = torch.ops.plrnn.cpu_scan(a.double(), x.double(), None, False, False)
said["after"] = (h.double() - ref).abs().max().item()
print(json.dumps(said))
"""


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("schedule,parallel,shape,item", [
    ("time_split", True, (65536, 4), 1),  # item 2 waits for the carry item 1 never publishes
    ("time_split", True, (65536, 4), 2),
    # The time split where the decays forget (these do): one chunk per thread, item 1 the last
    # with 2 threads; with 3, item 2 waits for item 1's carry.
    ("forgetting", True, (65536, 4), 1),
    ("pipelined", False, (65536, 128), 5),
], ids=["time_split-1", "time_split-2", "forgetting-1", "pipelined-5"])
def test_a_failing_item_raises_rather_than_leaving_the_others_waiting(schedule, parallel, shape,
                                                                       item, threads):
    """A throw inside a carry-chained parallel region (a failed allocation, here made on
    purpose through plrnn::cpu_fail_item) reaches the caller; the threads waiting for the carry
    it would have published leave too, rather than spin forever. In a subprocess with a time
    limit, so that a hang fails the test."""
    import json
    import os
    import subprocess
    import sys

    from plrnn.recurrence import cpu

    if cpu.load() is not None:
        pytest.skip("no C++ kernels here")
    env = {**os.environ, "PLRNN_STREAM_BYTES": "0", "PLRNN_AUTO_CALIBRATION": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", _FAILING_ITEM, str(threads), str(int(parallel)), *map(str, shape),
         str(item), str(int(schedule == "forgetting"))], capture_output=True, text=True,
        timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("forward", "backward"):
        assert f"item {item} failed on purpose" in said[name], (name, said[name])
    assert said["after"] < 1e-3  # the kernels still work afterwards


# Rows of one float (float32, or 16-bit storage) are scanned eight to a vector in the AVX builds,
# and on 2+ threads so are the reductions of cpu_parallel's time chunks (T * C >= 2**16), forward
# and in the backward. Lengths that leave every chunk a few rows past its last vector of eight,
# per-step and time-invariant decays, the result and gradients against the float64 reference.
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("time_invariant", [False, True], ids=["per_step", "invariant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16"])
def test_rows_of_one_float_through_the_time_split(dtype, time_invariant, reverse, num_threads):
    T = 2**16 + 13
    g = torch.Generator().manual_seed(seed_for("packed-split", str(dtype), time_invariant, reverse))
    a = torch.sigmoid(torch.randn((1 if time_invariant else T, 1), generator=g,
                                  dtype=torch.float64) + 2).to(dtype)
    if time_invariant:
        a = a[0]
    x = torch.randn((T, 1), generator=g, dtype=torch.float64).to(dtype)
    h0 = torch.randn((1,), generator=g, dtype=torch.float64).to(dtype)
    inputs64 = cast((a.expand(T, 1), x, h0), torch.float64)
    truth = ref64(*inputs64, reverse)
    ref_err = max_err(reference.serial(a.expand(T, 1), x, h0, reverse), truth)
    allowed = 2 * ref_err + FLOOR_ULPS * torch.finfo(dtype).eps * scale_of(truth)
    upstream = torch.randn((T, 1), generator=g, dtype=torch.float64)
    _, want = grads_of(lambda a, x, h0: run("reference", a, x, h0, reverse), inputs64, upstream)
    grad_rtol = 1e-4 if dtype == torch.float32 else 2e-2  # 16-bit: gradients stored rounded
    failures = []
    for n in (2, 3):
        num_threads(n)
        out = run("cpu_parallel", a, x, h0, reverse)
        err = max_err(out, truth)
        if out.dtype != dtype or not err <= allowed:
            failures.append(f"{n} threads: {out.dtype} max error {err:.3e} > {allowed:.3e}")
        leaves = [t.detach().clone().requires_grad_(True) for t in (a, x, h0)]
        run("cpu_parallel", *leaves, reverse).double().backward(upstream)
        got = [leaf.grad.double() for leaf in leaves]
        want_a = want[0].sum(0) if time_invariant else want[0]  # shared decays: summed over time
        for which, gr, w in zip(("decays", "impulses", "initial_state"), got,
                                (want_a, want[1], want[2])):
            err = max_err(gr, w)
            if not err <= grad_rtol * max(1.0, scale_of(w)):
                failures.append(f"{n} threads: dL/d{which} differs by {err:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("site", ["decays", "impulses"])
def test_nan_in_a_reduced_chunk_spreads_as_in_the_loop(site, reverse, num_threads):
    """One float a row, 2 threads: a NaN inside the chunk that a thread reduces (packed eight rows
    a vector) makes NaN exactly the steps that the loop makes NaN, and the steps before it keep
    the loop's values."""
    T = 2**16 + 13
    g = torch.Generator().manual_seed(seed_for("packed-split-nan", site, reverse))
    a = torch.sigmoid(torch.randn((T, 1), generator=g) + 2)
    x = torch.randn((T, 1), generator=g)
    h0 = torch.randn((1,), generator=g)
    step = T // 2 + 3  # inside the middle of the three chunks, off a vector's first row
    (a if site == "decays" else x)[T - 1 - step if reverse else step, 0] = float("nan")
    truth = ref64(a, x, h0, reverse)
    finite = ~torch.isnan(truth)
    num_threads(2)
    out = run("cpu_parallel", a, x, h0, reverse)
    assert torch.equal(torch.isnan(out), ~finite)
    ref_err = max_err(reference.serial(a, x, h0, reverse)[finite], truth[finite])
    tol = 2 * ref_err + FLOOR_ULPS * torch.finfo(torch.float32).eps * scale_of(truth[finite])
    assert max_err(out[finite], truth[finite]) <= tol
