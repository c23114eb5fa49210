"""cpu_parallel's time split where the decays forget (scan_forgetting, cpu_kernels_impl.h): each
thread's chunk is scanned from zero at once, then its first rows again from the carry into it,
where the product of the chunk's decays reaches zero within an eighth of it; in rows of 256
bytes or more, until the second scan's state meets the first's bit for bit. Checked against
the float64 loop, forward and every gradient, against Algorithm 1's two passes (the schedule
switched off with plrnn::cpu_forgetting_split), against one thread's bits where the scans
meet, and for the loop's NaN and inf."""

from __future__ import annotations

import pytest
import torch

import plrnn

from .helpers import ref64


@pytest.fixture
def forgetting():
    """set(on) for the rest of the test; the setting before is restored afterwards."""
    before = torch.ops.plrnn.cpu_forgetting_split(-1)
    yield lambda on: torch.ops.plrnn.cpu_forgetting_split(int(on))
    torch.ops.plrnn.cpu_forgetting_split(before)


def _inputs(T, C, kind, seed, dtype=torch.float64, time_invariant=False):
    g = torch.Generator().manual_seed(seed)
    shape = (C,) if time_invariant else (T, C)
    if kind == "gates":  # forget gates as a model makes them: sigmoid(N(2, 1)), mean 0.86
        a = torch.sigmoid(torch.randn(shape, generator=g, dtype=torch.float64) + 2)
    elif kind == "uniform":
        a = torch.rand(shape, generator=g, dtype=torch.float64)
    else:  # near one: too slow to forget, Algorithm 1 runs
        a = 1 - 1e-4 * torch.rand(shape, generator=g, dtype=torch.float64)
    x = torch.randn(T, C, generator=g, dtype=torch.float64)
    h0 = 100 * torch.randn(C, generator=g, dtype=torch.float64)
    return a.to(dtype), x.to(dtype), h0.to(dtype)


def _parallel(a, x, h0, reverse=False):
    return plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend="cpu_parallel")


def _matches_the_loop(run, a64, x64, h064, dtype, reverse):
    """run(a, x, h0) on the float64 inputs cast to dtype: h and every gradient within the
    dtype's tolerance of the float64 loop's. Returns h, the leaves and the upstream gradient."""
    T, C = x64.shape
    leaves = [t.detach().to(dtype).clone().requires_grad_() for t in (a64, x64, h064)]
    h = run(*leaves)
    upstream = torch.randn(T, C, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h.backward(upstream.to(dtype))
    ref_leaves = [t.detach().clone().requires_grad_() for t in (a64, x64, h064)]
    truth = ref64(ref_leaves[0].expand(T, C), *ref_leaves[1:], reverse)
    truth.backward(upstream)
    rtol = 2e-5 if dtype == torch.float32 else 1e-12
    for name, got, want in zip(("h", "grad decays", "grad impulses", "grad initial state"),
                               (h, *(t.grad for t in leaves)),
                               (truth, *(t.grad for t in ref_leaves))):
        scale = max(1.0, want.abs().max().item())
        err = (got.double() - want).abs().max().item()
        assert err <= rtol * scale * (4 if name == "grad decays" else 1), (name, err, scale)
    return h, leaves, upstream


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T, C, time_invariant", [
    (65549, 4, False), (40001, 1, False), (9001, 37, False), (30011, 5, True)])
@pytest.mark.parametrize("kind", ["gates", "uniform"])
def test_forward_and_gradients_match_the_loop(forgetting, num_threads, threads, reverse, dtype,
                                              T, C, time_invariant, kind):
    forgetting(True)
    num_threads(threads)
    a64, x64, h064 = _inputs(T, C, kind, seed=T + C, time_invariant=time_invariant)
    _matches_the_loop(lambda *t: _parallel(*t, reverse), a64, x64, h064, dtype, reverse)


@pytest.fixture
def no_in_thread_chunks():
    before = torch.ops.plrnn.cpu_ilp_channels(0)
    yield
    torch.ops.plrnn.cpu_ilp_channels(before)


def test_the_schedule_runs_where_decays_forget_and_not_where_they_do_not(
        forgetting, num_threads, no_in_thread_chunks):
    """Its rows from the forgetting point on are the scan from zero, so they round differently
    from Algorithm 1's re-scan from the carry (without the in-thread chunks, which regroup those
    rows the same way); with decays near 1 the probe declines and the two are one schedule."""
    num_threads(2)
    results = {}
    for kind in ("gates", "near_one"):
        a, x, h0 = _inputs(65536, 4, kind, seed=7, dtype=torch.float32)
        for on in (True, False):
            forgetting(on)
            # The op itself: the Python layer would apply the calibrated in-thread chunks.
            results[kind, on] = torch.ops.plrnn.cpu_scan(a, x, h0, False, True)
        truth = ref64(a, x, h0)
        err = (results[kind, True].double() - truth).abs().max().item()
        assert err <= 1e-4 * truth.abs().max().item(), (kind, err)  # 65536 float32 steps
    assert not torch.equal(results["gates", True], results["gates", False])
    assert torch.equal(results["near_one", True], results["near_one", False])


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("C", [4, 5, 37])
def test_the_slowest_channel_decides_where_a_chunk_forgets(forgetting, num_threads,
                                                           no_in_thread_chunks, C, reverse):
    """Every channel but the last forgets in about 90 rows (U[0, 1)), the last in about 1500
    (sigmoid(N(3, 1))): had the probe missed its lanes (C = 4 and 5 pack rows into blocks of 16
    and 80 lanes, 37 leaves 5 lanes past the last group of 16), the rows between would lack a
    carry times products of 1e-2 to 1e-38 and stand far off Algorithm 1's."""
    num_threads(2)
    T = 32768
    g = torch.Generator().manual_seed(C)
    a = torch.rand(T, C, generator=g)
    a[:, -1] = torch.sigmoid(torch.randn(T, generator=g) + 3)
    x = torch.randn(T, C, generator=g)
    h0 = 100 * torch.randn(C, generator=g)
    results = {}
    forgetting(True)
    # It runs items 0 and 1 (one chunk per thread) where Algorithm 1 would also take item 2,
    # which here throws (test_threads.py: such a throw reaches the caller): proof that it ran,
    # where bits cannot tell (both match the loop's bits on most rows at these widths).
    torch.ops.plrnn.cpu_fail_item(2)
    try:
        results[True] = torch.ops.plrnn.cpu_scan(a, x, h0, reverse, True)
    finally:
        torch.ops.plrnn.cpu_fail_item(-1)
    forgetting(False)
    results[False] = torch.ops.plrnn.cpu_scan(a, x, h0, reverse, True)
    gap = (results[True] - results[False]).abs() / (results[False].abs() + 1)
    assert gap.max().item() <= 1e-5, gap.max(dim=0)
    truth = ref64(a, x, h0, reverse)
    assert (results[True].double() - truth).abs().max().item() <= 1e-4 * truth.abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("channels", [67, 128])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_rows_streamed_from_memory(forgetting, num_threads, streaming_schedule, monkeypatch,
                                   dtype, channels, reverse):
    """cpu_serial's time split of rows streamed from memory (PLRNN_STREAM_BYTES=0 sends these
    small inputs there), forward and backward: with streaming stores where rows start on cache
    lines (128 channels), plain ones otherwise (67 channels, and the out= one element into its
    storage), each chunk's first rows streamed twice."""
    forgetting(True)
    num_threads(2)
    streaming_schedule("time_split")
    monkeypatch.setenv("PLRNN_STREAM_BYTES", "0")
    T = 6007 if dtype == torch.float32 else 32003  # doubles forget U[0, 1) in ~710 rows, not 90
    a64, x64, h064 = _inputs(T, channels, "uniform", seed=channels + reverse)
    h, leaves, upstream = _matches_the_loop(
        lambda *t: plrnn.linear_recurrence(*t, reverse=reverse, backend="cpu_serial"),
        a64, x64, h064, dtype, reverse)
    a, x, h0 = (t.detach() for t in leaves)
    # Algorithm 1 would take item 2, which throws here: proof that the forgetting split ran, in
    # the forward (into a misaligned out=) and in the backward.
    out = torch.empty(T * channels + 1, dtype=dtype)[1:].view(T, channels)
    torch.ops.plrnn.cpu_fail_item(2)
    try:
        with torch.no_grad():
            plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend="cpu_serial", out=out)
        grads = torch.ops.plrnn.cpu_scan_backward(a, h.detach(), upstream.to(dtype), h0,
                                                  reverse, False)
    finally:
        torch.ops.plrnn.cpu_fail_item(-1)
    assert torch.equal(out, h.detach())
    assert torch.equal(grads[0], leaves[1].grad) and torch.equal(grads[1], leaves[0].grad)


@pytest.mark.parametrize("C", [4, 128])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e36], ids=["nan", "inf", "huge"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_a_carry_the_loop_does_not_forget(forgetting, num_threads, value, reverse, C):
    """A NaN, an infinity or a carry so large that its product with a vanished product of decays
    still shows (1e36 x 1e-38) enters the next chunk as the loop takes it: that chunk is scanned
    again whole from it (at 128 channels, rows streamed from memory, because the second scan
    never meets the first)."""
    forgetting(True)
    num_threads(2)
    T = 65536
    a, x, h0 = _inputs(T, C, "gates", seed=3)
    last_of_first_chunk = T // 2 if reverse else T // 2 - 1
    x[last_of_first_chunk, 1] = value
    got = _parallel(a.float(), x.float(), h0.float(), reverse).double()
    truth = ref64(a.float(), x.float(), h0.float(), reverse)
    # As docs/op.md has it for every regrouping backend: NaN where the loop has NaN, and no
    # number after a non-finite state (an infinity may turn NaN).
    assert torch.equal(got.isfinite(), truth.isfinite())
    assert bool((got.isnan() | ~truth.isnan()).all())
    finite = truth.isfinite()
    err = (got[finite] - truth[finite]).abs() / truth[finite].abs().clamp_min(1.0)
    assert err.max().item() <= 1e-5


def test_a_zero_carry_is_the_scan_from_zero(forgetting, num_threads):
    forgetting(True)
    num_threads(2)
    a, x, _ = _inputs(65536, 3, "gates", seed=5, dtype=torch.float32)
    x[: 65536 // 2] = 0
    got = _parallel(a, x, None)
    torch.testing.assert_close(got.double(), ref64(a, x), rtol=1e-5, atol=1e-6)
    assert torch.equal(got[: 65536 // 2], torch.zeros(65536 // 2, 3))


def _one_thread_bits(num_threads, a, x, h0, upstream, reverse):
    """One thread's loop (cpu_serial's op): h, and the op's gradients for the upstream one."""
    num_threads(1)
    h = torch.ops.plrnn.cpu_scan(a, x, h0, reverse, False)
    return h, torch.ops.plrnn.cpu_scan_backward(a, h, upstream, h0, reverse, False)


def _split_bits(num_threads, threads, backend, a, x, h0, upstream, reverse):
    """h and the gradients (x, a, h0) through the op and autograd on `threads` threads, where
    Algorithm 1's item 2 throws: proof that the forgetting split ran, forward and backward."""
    num_threads(threads)
    leaves = [t.clone().requires_grad_() for t in (a, x, h0)]
    torch.ops.plrnn.cpu_fail_item(2)
    try:
        h = plrnn.linear_recurrence(*leaves, reverse=reverse, backend=backend)
        h.backward(upstream)
    finally:
        torch.ops.plrnn.cpu_fail_item(-1)
    return h.detach(), leaves[1].grad, leaves[0].grad, leaves[2].grad


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "cached"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype, C, bias", [
    (torch.float32, 128, 5.0), (torch.float32, 67, 5.0), (torch.float64, 33, 3.0),
    (torch.complex64, 64, 5.0)], ids=["f32x128", "f32x67", "f64x33", "c64x64"])
def test_wide_rows_give_one_threads_bits(forgetting, num_threads, streaming_schedule, monkeypatch,
                                         dtype, C, bias, reverse, streamed):
    """Rows of 256 bytes or more: each chunk's second scan stops at the first block whose state
    equals the first scan's bit for bit, so the forward and every gradient are one thread's
    bits. sigmoid(N(5, 1)) gates take about 8000 rows for their product to vanish, past the
    eighth of a chunk that the underflow probe allows (Algorithm 1 ran there before); the scans
    meet after about 2000, within the quarter of a 15006-row chunk that the probe allows for
    rows from memory (cpu_serial's time split, streaming stores at 128 channels, plain ones at
    67) and the eighth of a 30006-row chunk for rows from cache (cpu_parallel). Complex decays
    with those moduli and phases up to 0.1."""
    forgetting(True)
    streaming_schedule("time_split")
    monkeypatch.setenv("PLRNN_STREAM_BYTES", "0" if streamed else str(1 << 40))
    T = 30011 if streamed else 60013
    g = torch.Generator().manual_seed(C + 2 * reverse + streamed)
    a = torch.sigmoid(torch.randn(T, C, generator=g, dtype=torch.float64) + bias)
    if dtype.is_complex:
        a = torch.polar(a, 0.1 * torch.rand(T, C, generator=g, dtype=torch.float64))
    a = a.to(dtype)
    x, upstream = (torch.randn(T, C, generator=g, dtype=dtype) for _ in range(2))
    h0 = 100 * torch.randn(C, generator=g, dtype=dtype)
    h1, (gx1, ga1, gh01) = _one_thread_bits(num_threads, a, x, h0, upstream, reverse)
    got = _split_bits(num_threads, 2, "cpu_serial" if streamed else "cpu_parallel",
                      a, x, h0, upstream, reverse)
    for name, mine, loop in zip(("h", "grad impulses", "grad decays", "grad initial state"), got,
                                (h1, gx1, ga1, gh01)):
        assert torch.equal(mine, loop), (name, (mine.double() - loop.double()).abs().max())


def test_a_chunk_whose_scans_never_meet_publishes_its_second_scans_state(forgetting,
                                                                          num_threads):
    """The probe's bet lost: the middle chunk of three forgets at first (decays of 0.9 for 200
    rows, a product of 7e-10) and then holds (decays of 1), and the carry into it is 1e6, so
    its second scan stays 7e-4 off the first to the chunk's end. Its final state, the carry
    into the last chunk, is then the second scan's: the result is one thread's bits."""
    forgetting(True)
    T, C = 3 * 16384, 64
    g = torch.Generator().manual_seed(11)
    a = torch.rand(T, C, generator=g)
    a[16384:16384 + 200] = 0.9
    a[16384 + 200:32768] = 1.0
    x = torch.randn(T, C, generator=g)
    x[16383] = 1e6
    h0 = torch.zeros(C)
    num_threads(1)
    h1 = torch.ops.plrnn.cpu_scan(a, x, h0, False, False)
    from_zero = torch.ops.plrnn.cpu_scan(a[16384:32768], x[16384:32768], None, False, False)
    assert (h1[32767] - from_zero[-1]).abs().min().item() > 1e-4  # the two never meet
    num_threads(3)
    torch.ops.plrnn.cpu_fail_item(3)  # Algorithm 1's item 3 (of 4 chunks) would throw
    try:
        h = torch.ops.plrnn.cpu_scan(a, x, h0, False, True)
    finally:
        torch.ops.plrnn.cpu_fail_item(-1)
    assert torch.equal(h, h1), (h.double() - h1.double()).abs().max()
