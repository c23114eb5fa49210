"""The architectures Table 2 and the throughput heatmap time, and the two passes they time.

Architectures are named as the paper's tables name them: "SRU", "QRNN(k)", "GILR-LSTM", and
"cuDNN LSTM" for torch.nn.LSTM (cuDNN on a GPU, oneDNN or ATen on a CPU).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from plrnn.layers import GILRLSTM, QRNN, SRU

LSTM = "cuDNN LSTM"


def build(
    arch: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    backend: str,
    *,
    qrnn_taps: str = "full",
    compile_gates: bool = False,
) -> nn.Module:
    """A fresh model of `arch` whose every linear recurrence uses `backend`."""
    common = dict(num_layers=num_layers, backend=backend, compile_gates=compile_gates)
    if arch == "SRU":
        return SRU(input_size, hidden_size, **common)
    if arch == "GILR-LSTM":
        return GILRLSTM(input_size, hidden_size, **common)
    if m := re.fullmatch(r"QRNN\((\d+)\)", arch):
        return QRNN(input_size, hidden_size, window=int(m.group(1)), taps=qrnn_taps, **common)
    if arch == LSTM:
        return nn.LSTM(input_size, hidden_size, num_layers=num_layers)
    raise ValueError(f"unknown architecture {arch!r}; use SRU, QRNN(k), GILR-LSTM or {LSTM!r}")


def step_fn(model: nn.Module, x: torch.Tensor, pass_: str) -> Callable[[], object]:
    """One call of the timed pass.

    "train": forward and backward through every parameter (the paper's "forwards and backwards
    propagation"; no optimiser step, which costs the same for both recurrences).
    "forward": the forward pass alone without autograd, as the authors' timing script did.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if pass_ == "train":

        def train():
            for p in params:
                p.grad = None
            out, _ = model(x)
            out.sum().backward()

        return train
    if pass_ == "forward":

        def forward():
            with torch.no_grad():
                return model(x)

        return forward
    raise ValueError(f"pass must be 'train' or 'forward', got {pass_!r}")


def inputs(T: int, batch: int, input_size: int, device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, batch, input_size, generator=g).to(device)
