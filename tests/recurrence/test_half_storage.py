"""float16 and bfloat16 storage: the C++ kernels accumulate in float and round each stored value
once, exactly as torch's own conversion does (round to nearest, ties to even; NaN stays NaN).

Inputs are chosen so that the float arithmetic is exact (unit decays and small integers: every
state, and every product in the gradients, is an integer below 2^24), so the only rounding left is the final conversion to 16
bits, and the kernels' outputs must match the exact values converted by torch, bit for bit. The
states start at 2000-2600, past 256 (bfloat16) and 2048 (float16), where those formats can no
longer hold every integer, so ties and their rounding to even occur throughout. The channel counts cover
every vector width the kernels load and store 16-bit values with (1, 2, 4 and 8 lanes,
overlapping last vectors, several strips), under both layouts of wide rows.
"""

from __future__ import annotations

import pytest
import torch

import plrnn

CHANNELS = (1, 2, 3, 4, 5, 7, 8, 9, 16, 33, 100)
KERNELS = ("cpu_serial", "cpu_parallel")


def integer_inputs(T, C, dtype, seed, nan=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, (T, C), generator=g).double()  # a walk of a few hundred at most
    h0 = torch.randint(2000, 2600, (C,), generator=g).double()
    if nan:
        x[T // 2, ::2] = float("nan")
    decays = torch.ones(T, C, dtype=dtype)
    return decays, x.to(dtype), h0.to(dtype)


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
    walk = torch.flip(torch.cumsum(torch.flip(x.double(), (0,)), 0), (0,)) if reverse else \
        torch.cumsum(x.double(), 0)
    same_bits(h, h0.double() + walk)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("C", CHANNELS)
@pytest.mark.parametrize("T", (3, 300, 20_000))
def test_gradients_round_like_torch(kernel, dtype, C, T, wide_rows):
    a, x, h0 = integer_inputs(T, C, dtype, seed=T * 1000 + C + 7)
    grad_h = integer_inputs(T, C, dtype, seed=T * 1000 + C + 8)[1]
    a.requires_grad_()
    x.requires_grad_()
    h = plrnn.linear_recurrence(a, x, h0, backend=kernel)
    ga, gx = torch.autograd.grad(h, (a, x), grad_h)
    # g[t] = sum of grad_h[t:], exact; dL/dx = g, dL/da[t] = h[t-1] * g[t] with the saved
    # (rounded) h, an exact product of integers below 2^24.
    g = torch.flip(torch.cumsum(torch.flip(grad_h.double(), (0,)), 0), (0,))
    h_prev = torch.cat([h0.double()[None], h.detach().double()[:-1]])
    same_bits(gx, g)
    same_bits(ga, h_prev * g)
