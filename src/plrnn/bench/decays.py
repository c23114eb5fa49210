"""The decay (gate) distributions the CPU benchmarks draw from: `python -m plrnn.bench.recurrence`
and asv's DecayDistribution (benchmarks/op_inputs.py), which loads this file by path from the
checkout, so it imports nothing from plrnn and torch only when drawing.

U[0,1) puts many decays near 0; U[0.9,1) and sigmoid(N(b, 1)) are forget gates as models have
them (a forget bias b pushes them towards 1). Products of such decays over a chunk pass through
the subnormal range, which is where a kernel without flush-to-zero slows down, so a kernel's
speed is only known once it is measured under each.
"""

from __future__ import annotations

UNIFORM = "U[0,1)"
SIGMOID_MEANS = {"sigmoid(N(0,1))": 0.0, "sigmoid(N(2,1))": 2.0, "sigmoid(N(5,1))": 5.0}
DISTRIBUTIONS = (UNIFORM, "U[0.9,1)", *SIGMOID_MEANS)


def make_decays(dist: str, shape: tuple[int, ...], gen):
    """Float32 decays of `shape` from one of DISTRIBUTIONS, drawn with the torch.Generator `gen`."""
    import torch

    if dist == UNIFORM:
        return torch.rand(shape, generator=gen)
    if dist == "U[0.9,1)":
        # 0.9 + 0.1 * u rounds to 1.0 for u near 1 in fp32; clamp to keep the interval half-open.
        return (0.9 + 0.1 * torch.rand(shape, generator=gen)).clamp_(max=1 - 2**-24)
    if dist in SIGMOID_MEANS:
        return torch.randn(shape, generator=gen).add_(SIGMOID_MEANS[dist]).sigmoid_()
    raise ValueError(f"decays distribution must be one of {DISTRIBUTIONS}, got {dist!r}")
