"""The elementwise gate math of the layers, as pure functions of the input projection.

Each layer is: one matmul (the input projection), a gate function (pre-activations -> decays,
impulses), the linear recurrence, and an output function (pre-activations, recurrence state ->
output). Eager, a gate function is a handful of elementwise torch ops, each one a pass over
memory forward and more backward; kept pure and separate from the modules, each can be fused by
torch.compile into one pass (`compile_gates=True` on a layer). The recurrence itself is a custom
op that the compiler cannot see through, so the gate math before it and the output math after
it are compiled separately.

Layouts: `pre` is the input projection, [T, B, n*H], with the gates stacked along the last axis
in the order the functions name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tanh": torch.tanh, "elu": F.elu}


def gilr_gates(pre: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """GILR, pre = [g, j]: g = sigmoid, j = activation; returns (g, (1 - g) * j)."""
    gate_pre, impulse_pre = pre.chunk(2, dim=-1)
    g = torch.sigmoid(gate_pre)
    j = ACTIVATIONS[activation](impulse_pre)
    return g, (1 - g) * j


def lstm_gates(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GILR-LSTM cell, pre = [f, i, o, z]: returns (f, i * z); o is used by `lstm_output`."""
    f_pre, i_pre, _, z_pre = pre.chunk(4, dim=-1)
    return torch.sigmoid(f_pre), torch.sigmoid(i_pre) * torch.tanh(z_pre)


def lstm_output(pre: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """h = o * c with o = sigmoid of the third block of pre = [f, i, o, z] (no tanh on c)."""
    o_pre = pre.chunk(4, dim=-1)[2]
    return torch.sigmoid(o_pre) * c


def fo_gates(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """QRNN fo-pooling, pre = [z, f, o]: returns (f, (1 - f) * z)."""
    z_pre, f_pre, _ = pre.chunk(3, dim=-1)
    f = torch.sigmoid(f_pre)
    return f, (1 - f) * torch.tanh(z_pre)


def fo_output(pre: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """QRNN output h = o * c, o = sigmoid of the last block of pre = [z, f, o]."""
    return torch.sigmoid(pre.chunk(3, dim=-1)[2]) * c


def sru_gates(pre: torch.Tensor, projected: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """SRU, pre = [x~, f, r] or, projected, [x~, f, r, p]: returns (f, (1 - f) * x~)."""
    x_tilde, f_pre = pre.chunk(4 if projected else 3, dim=-1)[:2]
    f = torch.sigmoid(f_pre)
    return f, (1 - f) * x_tilde


def sru_output(pre: torch.Tensor, c: torch.Tensor, highway: torch.Tensor | None) -> torch.Tensor:
    """h = r * c + (1 - r) * skip, r = sigmoid of the third block of pre = [x~, f, r(, p)].

    skip is `highway` (the layer's input x, when input and hidden sizes agree) or, when highway
    is None, the fourth block p of pre: the learned projection W_p x + b_p.
    """
    blocks = pre.chunk(3 if highway is not None else 4, dim=-1)
    r = torch.sigmoid(blocks[2])
    skip = highway if highway is not None else blocks[3]
    return r * c + (1 - r) * skip


_compiled: dict[tuple[Callable, str], Callable] = {}


def fused(fn: Callable, compile_gates: bool | str) -> Callable:
    """fn itself (compile_gates False), or fn under torch.compile, compiled once per process
    and cached: True uses inductor (the fusing compiler), a string names another torch.compile
    backend (e.g. "aot_eager", which traces the same graphs without generating code).

    dynamic=True: one graph serves every sequence length and batch size, so a test suite or a
    sweep over shapes does not recompile per shape.
    """
    if compile_gates is False:
        return fn
    backend = "inductor" if compile_gates is True else compile_gates
    compiled = _compiled.get((fn, backend))
    if compiled is None:
        compiled = _compiled[fn, backend] = torch.compile(fn, dynamic=True, backend=backend)
    return compiled
