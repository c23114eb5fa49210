"""The CPU kernels' cache of freed outputs (csrc/cpu_output_cache.cpp): a freed output's buffer
comes back for the next output of its size, with nothing of its old contents in the result;
gradients take them too; the cap bounds what is held; plrnn.empty_cache() and
PLRNN_CPU_OUTPUT_CACHE=0 hand everything back."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import plrnn
from plrnn.recurrence import cpu

from .helpers import F64_RTOL, make_inputs, max_err, ref64, scale_of, seed_for

KERNELS = ("cpu_serial", "cpu_parallel")
# float64 (T, C) = (2049, 65): 1,065,480 bytes, just past the cache's 1 MiB floor; odd sizes.
CACHED = (2049, 65)


@pytest.fixture
def cache():
    """The ops, with the cache empty, and its cap as the test leaves it restored afterwards."""
    why = cpu.load()
    if why is not None:
        pytest.skip(why)
    ops = torch.ops.plrnn
    cap = ops.cpu_output_cache(-1)
    plrnn.empty_cache()
    yield ops
    ops.cpu_output_cache(cap)
    plrnn.empty_cache()


def inputs(*tag, shape=CACHED, requires_grad=False):
    T, C = shape
    a, x, _ = make_inputs(T, (C,), "uniform", False, seed_for("cache", *tag))
    return a.requires_grad_(requires_grad), x.requires_grad_(requires_grad)


def assert_matches_loop(h, a, x):
    truth = ref64(a.detach(), x.detach())
    assert max_err(h, truth) <= F64_RTOL * scale_of(truth) * 10


@pytest.mark.parametrize("backend", KERNELS)
def test_a_freed_output_comes_back_without_its_old_values(cache, backend):
    a, x = inputs(1, backend)
    h = plrnn.linear_recurrence(a, x, backend=backend)
    where = h.data_ptr()
    h.fill_(float("nan"))  # what the next output must not show
    del h
    assert cache.cpu_output_cache_held() >= CACHED[0] * CACHED[1] * 8
    a2, x2 = inputs(2, backend)
    h2 = plrnn.linear_recurrence(a2, x2, backend=backend)
    assert h2.data_ptr() == where, "the freed buffer of the same size was not reused"
    assert_matches_loop(h2, a2, x2)
    assert cache.cpu_output_cache_held() == 0


def assert_gradients_match_loop(grads, a, x, g):
    a64, x64 = a.detach().requires_grad_(), x.detach().requires_grad_()
    for got, truth in zip(grads, torch.autograd.grad(ref64(a64, x64), (a64, x64), g)):
        assert max_err(got, truth) <= F64_RTOL * scale_of(truth) * 10


@pytest.mark.parametrize("backend", KERNELS)
def test_gradients_come_from_the_cache_and_are_right(cache, backend):
    g = torch.randn(CACHED, dtype=torch.float64)
    kept: set[int] = set()
    for step in range(3):
        a, x = inputs(3, backend, step, requires_grad=True)
        h = plrnn.linear_recurrence(a, x, backend=backend)
        ga, gx = torch.autograd.grad(h, (a, x), g)
        assert_gradients_match_loop((ga, gx), a, x, g)
        # The step before freed its h, dL/da and dL/dx: this step's three outputs take them back.
        now = {h.data_ptr(), ga.data_ptr(), gx.data_ptr()}
        assert not step or now == kept, "an output missed the cache"
        kept = now
        for t in (h, ga, gx):
            t.detach().fill_(float("nan"))
        del h, ga, gx, t


def test_a_loop_stops_faulting_its_outputs_in(cache):
    # float32 (65536, 128): 32 MiB per tensor, which glibc maps afresh for each allocation; three
    # outputs a call (h, dL/dx, dL/da) are 24576 pages to fault when nothing is reused.
    a, x = inputs(4, shape=(65536, 128), requires_grad=True)
    a, x = (t.detach().float().requires_grad_() for t in (a, x))
    g = torch.randn_like(x)

    def call():
        torch.autograd.grad(plrnn.linear_recurrence(a, x, backend="cpu_serial"), (a, x), g)

    call()
    call()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    call()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 2048, f"{faults} page faults in a warm call; its outputs were not reused"


def freed_block(cache) -> int:
    """The bytes one freed CACHED output leaves in the cache: its size rounded up to its class."""
    before = cache.cpu_output_cache_held()
    del_me = plrnn.linear_recurrence(*inputs("block"), backend="cpu_serial")
    del del_me
    return cache.cpu_output_cache_held() - before


def test_the_cap_bounds_what_is_held(cache):
    block = freed_block(cache)
    assert block >= CACHED[0] * CACHED[1] * 8
    cache.cpu_output_cache(3 * block)
    outs = [plrnn.linear_recurrence(*inputs(5, i), backend="cpu_serial") for i in range(5)]
    del outs
    assert cache.cpu_output_cache_held() == 3 * block, "the three most recently freed are kept"
    assert cache.cpu_output_cache(block) == 3 * block  # returns the previous cap
    assert cache.cpu_output_cache_held() == block, "lowering the cap evicts at once"
    cache.cpu_output_cache(0)
    assert cache.cpu_output_cache_held() == 0
    h = plrnn.linear_recurrence(*inputs(6), backend="cpu_serial")
    del h
    assert cache.cpu_output_cache_held() == 0, "a zero cap keeps nothing"


def test_lengths_that_vary_a_little_share_a_buffer(cache):
    # Packed batches change their total length from call to call: 2049 and 2080 rows of 65
    # float64 fall in one size class (1/8 of a power of two).
    h = plrnn.linear_recurrence(*inputs(12), backend="cpu_serial")
    where = h.data_ptr()
    del h
    a, x = inputs(13, shape=(2080, 65))
    h = plrnn.linear_recurrence(a, x, backend="cpu_serial")
    assert h.data_ptr() == where
    assert_matches_loop(h, a, x)


def test_empty_cache_hands_everything_back(cache):
    outs = [plrnn.linear_recurrence(*inputs(7, i), backend="cpu_serial") for i in range(2)]
    del outs
    held = cache.cpu_output_cache_held()
    assert held > 0
    assert plrnn.empty_cache() == held
    assert cache.cpu_output_cache_held() == 0
    assert plrnn.empty_cache() == 0


def test_small_outputs_are_left_to_the_system_allocator(cache):
    h = plrnn.linear_recurrence(*inputs(8, shape=(64, 7)), backend="cpu_serial")
    del h
    assert cache.cpu_output_cache_held() == 0


def test_a_cached_output_resizes_and_frees_like_any_tensor(cache):
    a, x = inputs(9)
    h = plrnn.linear_recurrence(a, x, backend="cpu_serial")
    truth = ref64(a, x)
    h.resize_(CACHED[0] * 2, CACHED[1])  # a new buffer from the same allocator, contents copied
    assert max_err(h[: CACHED[0]], truth) <= F64_RTOL * scale_of(truth) * 10
    first = cache.cpu_output_cache_held()
    assert first >= CACHED[0] * CACHED[1] * 8, "the first buffer went back when it was left"
    del h
    assert cache.cpu_output_cache_held() >= first + 2 * CACHED[0] * CACHED[1] * 8


def test_threads_allocating_and_freeing_at_once_get_their_own_results(cache):
    errors = []

    def work(k):
        try:
            for i in range(6):
                a, x = inputs(10, k, i)
                h = plrnn.linear_recurrence(a, x, backend="cpu_serial")
                assert_matches_loop(h, a, x)
                h.fill_(float("nan"))
        except BaseException as err:  # noqa: BLE001 - reported from the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors[0]


def _child(env_value: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent("""
        import torch, plrnn
        a, x = torch.rand(2049, 65, dtype=torch.float64), torch.rand(2049, 65, dtype=torch.float64)
        h = plrnn.linear_recurrence(a, x, backend="cpu_serial")
        del h
        print(torch.ops.plrnn.cpu_output_cache_held())
    """)
    env = {**os.environ, "PLRNN_CPU_OUTPUT_CACHE": env_value}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240, env=env)


def test_the_environment_variable_sets_the_cap():
    off = _child("0")
    assert off.returncode == 0, off.stderr
    assert off.stdout.split()[-1] == "0"
    bad = _child("1GiB")
    assert bad.returncode != 0
    assert "PLRNN_CPU_OUTPUT_CACHE must be a number of bytes" in bad.stderr


def test_the_profiler_counts_cached_outputs(cache):
    a, x = inputs(11)
    plrnn.linear_recurrence(a, x, backend="cpu_serial")  # freed at once: the next call reuses it
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        h = plrnn.linear_recurrence(a, x, backend="cpu_serial")
    nbytes = CACHED[0] * CACHED[1] * 8
    scans = [e for e in prof.events() if e.name == "plrnn::cpu_scan"]
    assert scans and max(e.cpu_memory_usage for e in scans) >= nbytes, "the output went uncounted"
    del h


def test_a_forked_child_uses_the_cache():
    # The child inherits the cache's buffers, and its lock released (pthread_atfork); its one
    # thread may split the scan otherwise than the parent's two did, hence allclose.
    code = textwrap.dedent("""
        import os, torch, plrnn
        a, x = torch.rand(2049, 65, dtype=torch.float64), torch.rand(2049, 65, dtype=torch.float64)
        want = plrnn.linear_recurrence(a, x, backend="cpu_serial", reverse=True).clone()
        pid = os.fork()
        if pid == 0:
            torch.set_num_threads(1)  # as DataLoader workers do: OpenMP's pool does not fork
            h = plrnn.linear_recurrence(a, x, backend="cpu_serial", reverse=True)
            os._exit(0 if torch.allclose(h, want, rtol=1e-12, atol=1e-12) else 3)
        print("child", os.waitpid(pid, 0)[1])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "0", done.stdout


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex64, torch.bfloat16])
def test_strided_inputs_are_copied_into_recycled_buffers(cache, dtype):
    """cpu.contiguous: a copy of 1 MiB or more comes from the cache, with the values (conjugate
    views resolved) and a gradient that flows back to the strided input; smaller ones and
    contiguous tensors are torch's own."""
    g = torch.Generator().manual_seed(seed_for("recycled-copy", dtype))
    base = torch.randn(CACHED[1] * 9, CACHED[0], generator=g, dtype=torch.float64).to(dtype)
    if dtype.is_complex:
        base = base.conj()  # a conjugate view, resolved by the copy
    leaf = base.detach().requires_grad_()
    strided = leaf.t()
    assert cpu.contiguous(leaf) is leaf
    copy = cpu.contiguous(strided)
    assert copy.is_contiguous() and torch.equal(copy.detach(), strided.detach().contiguous())
    weights = torch.randn(copy.shape, generator=g, dtype=torch.float64).to(dtype)
    (copy * weights).real.sum().backward()
    # d(sum re(c * w)) / dc is w, conjugated in torch's convention for complex inputs
    assert torch.equal(leaf.grad, (weights.conj() if dtype.is_complex else weights).t())
    del copy
    assert cache.cpu_output_cache_held() >= strided.numel() * strided.element_size()
    plrnn.empty_cache()
    small = torch.randn(40, 30, generator=g, dtype=torch.float64).t()
    assert torch.equal(cpu.contiguous(small), small.contiguous())
    assert cache.cpu_output_cache_held() == 0


def test_recycled_copies_under_fake_tensors(cache):
    """torch.compile traces the copy with fake tensors (its registered fake kernel)."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    torch.library.opcheck(cache.cpu_contiguous.default, (torch.randn(600, 1000).t(),))
    with FakeTensorMode():
        copy = cpu.contiguous(torch.empty(1000, 600).t())
    assert isinstance(copy, FakeTensor) and copy.shape == (600, 1000) and copy.is_contiguous()
