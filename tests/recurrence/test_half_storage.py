"""float16 and bfloat16 storage: the C++ kernels accumulate in float and round each stored value
once, exactly as torch's own conversion does (round to nearest, ties to even; NaN stays NaN).

Inputs are chosen so that the float arithmetic is exact: decays of 1, and 0 at one step in fifty
(products of decays stay exact, and a zero restarts the sum), small integer impulses, states
starting at 2000-2600 (every state, and every product in the gradients, is an integer below
2^24). So the only rounding left is the final conversion to 16 bits, and the kernels' outputs
must match the exact values converted by torch, bit for bit. The states lie past 256 (bfloat16)
and 2048 (float16), where those formats can no longer hold every integer, so ties and their
rounding to even occur throughout. The channel counts cover every vector width the kernels load
and store 16-bit values with (1, 2, 4 and 8 lanes, overlapping last vectors, several strips),
under both layouts of wide rows.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import plrnn
from plrnn.recurrence import prebuilt

CHANNELS = (1, 2, 3, 4, 5, 7, 8, 9, 16, 33, 100)
KERNELS = ("cpu_serial", "cpu_parallel")


def integer_inputs(T, C, dtype, seed, nan=False):
    g = torch.Generator().manual_seed(seed)
    decays = (torch.rand(T, C, generator=g) > 0.02).double()
    x = torch.randint(-3, 4, (T, C), generator=g).double()  # a walk of a few hundred at most
    h0 = torch.randint(2000, 2600, (C,), generator=g).double()
    if nan:
        x[T // 2, ::2] = float("nan")
    return decays.to(dtype), x.to(dtype), h0.to(dtype)


def exact_scan(a, x, h0, reverse=False):
    """The recurrence in float64 for decays of 0 and 1, vectorised: the sum of the impulses since
    the last zero decay, plus h0 where there was none."""
    a, x, h0 = a.double(), x.double(), h0.double()
    if reverse:
        return torch.flip(exact_scan(torch.flip(a, (0,)), torch.flip(x, (0,)), h0), (0,))
    steps = torch.arange(a.shape[0])[:, None].expand(a.shape)
    last_zero = torch.cummax(torch.where(a == 0, steps, -1), 0).values
    sums = torch.cat([torch.zeros_like(x[:1]), torch.cumsum(x, 0)])
    before = torch.gather(sums, 0, last_zero.clamp(min=0))  # the sum before the last restart
    return sums[1:] - before + torch.where(last_zero < 0, h0, 0.0)


def same_bits(out, exact):
    """out against exact (float64) rounded by torch to out's dtype: identical bits where the
    value is a number, NaN where it is NaN."""
    want = exact.to(out.dtype)
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(out), nan)
    mismatch = (out.view(torch.int16) != want.view(torch.int16)) & ~nan
    assert not mismatch.any(), (
        f"{int(mismatch.sum())} values differ, first at {mismatch.nonzero()[0].tolist()}: "
        f"{out[mismatch][0].item()} against {want[mismatch][0].item()}"
    )


@pytest.mark.parametrize("reverse", (False, True), ids=("fwd", "rev"))
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("C", CHANNELS)
@pytest.mark.parametrize("T", (1, 7, 300, 20_000))
def test_stored_values_round_like_torch(kernel, dtype, C, T, reverse, wide_rows):
    a, x, h0 = integer_inputs(T, C, dtype, seed=T * 1000 + C, nan=T > 2)
    h = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=kernel)
    same_bits(h, exact_scan(a, x, h0, reverse))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("C", CHANNELS)
@pytest.mark.parametrize("T", (3, 300, 20_000))
def test_gradients_round_like_torch(kernel, dtype, C, T, wide_rows):
    check_gradients(kernel, dtype, C, T)


@pytest.mark.parametrize("schedule", ("pipelined", "time_split"))
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("C", (100, 130, 300))
def test_streamed_schedules_round_like_torch(schedule, dtype, C, num_threads, monkeypatch,
                                             streaming_schedule):
    """cpu_serial on two threads with the data taken as streamed from memory: whole blocks of
    rows in turn (pipelined, its scan and reduce rows) or time cut into chunks (time_split)."""
    monkeypatch.setenv("PLRNN_STREAM_BYTES", "0")
    streaming_schedule(schedule)
    num_threads(2)
    T = 3000
    a, x, h0 = integer_inputs(T, C, dtype, seed=C + 11, nan=True)
    h = plrnn.linear_recurrence(a, x, h0, backend="cpu_serial")
    same_bits(h, exact_scan(a, x, h0))
    check_gradients("cpu_serial", dtype, C, T)


def check_gradients(kernel, dtype, C, T):
    a, x, h0 = integer_inputs(T, C, dtype, seed=T * 1000 + C + 7)
    grad_h = integer_inputs(T, C, dtype, seed=T * 1000 + C + 8)[1]
    a.requires_grad_()
    x.requires_grad_()
    h = plrnn.linear_recurrence(a, x, h0, backend=kernel)
    ga, gx = torch.autograd.grad(h, (a, x), grad_h)
    # g[t] = grad_h[t] + a[t+1] g[t+1], exact; dL/dx = g, dL/da[t] = h[t-1] * g[t] with the saved
    # (rounded) h, an exact product of integers below 2^24.
    a_next = torch.cat([a.detach()[1:], torch.ones_like(a[:1])])
    g = exact_scan(a_next, grad_h, torch.zeros_like(h0), reverse=True)
    h_prev = torch.cat([h0.double()[None], h.detach().double()[:-1]])
    same_bits(gx, g)
    same_bits(ga, h_prev * g)


BOTH_LEVELS_SCRIPT = """
import sys, torch, plrnn
from plrnn.recurrence import cpu
torch.set_num_threads(2)
results = {}
for C in (1, 3, 4, 8, 9, 33, 100):
    g = torch.Generator().manual_seed(C)
    a = torch.sigmoid(torch.randn(5000, C, generator=g) * 2 + 2).bfloat16().requires_grad_()
    x = torch.randn(5000, C, generator=g).bfloat16().requires_grad_()
    grad_h = torch.randn(5000, C, generator=g).bfloat16()
    for kernel in ("cpu_serial", "cpu_parallel"):
        h = plrnn.linear_recurrence(a, x, backend=kernel)
        results[(C, kernel)] = (h.detach(), *torch.autograd.grad(h, (a, x), grad_h))
torch.save({"origin": cpu.origin(), "results": results}, sys.argv[1])
"""


def test_avx512_bf16_rounds_as_the_avx2_library(tmp_path):
    """Where the avx512_bf16 library loads, its one-instruction bfloat16 rounding and the avx2
    library's integer sequence store the same bits for the same float states: forward and both
    gradients, random inputs, every narrow width and wide rows (one fresh process per library,
    fixed kernel settings, so the float arithmetic is the same in both)."""
    if "avx512_bf16" not in (prebuilt.build_info() or {}).get("cpu_isas", []):
        pytest.skip("no avx512_bf16 library in this installation")
    if prebuilt.cpu_levels()[0] != "avx512_bf16":
        pytest.skip("this CPU has no AVX-512 BF16")
    runs = {}
    for level, capability in (("avx512_bf16", None), ("avx2", "avx2")):
        env = {**os.environ, "PLRNN_AUTO_CALIBRATION": "0"}
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        path = tmp_path / f"{level}.pt"
        subprocess.run([sys.executable, "-c", BOTH_LEVELS_SCRIPT, str(path)], env=env,
                       check=True, timeout=300)
        runs[level] = torch.load(path)
        assert runs[level]["origin"] == f"prebuilt ({level})"
    for key, fast in runs["avx512_bf16"]["results"].items():
        for name, got, want in zip(("h", "grad_a", "grad_x"), fast,
                                   runs["avx2"]["results"][key]):
            assert torch.equal(got.view(torch.int16), want.view(torch.int16)), (key, name)
