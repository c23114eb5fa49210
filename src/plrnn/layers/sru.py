"""SRU as in the authors' code: one linear layer for all gates, a highway connection on x."""

from __future__ import annotations

import torch
from torch import nn

from .base import StackedRecurrence, init_linear, like_impulses
from .gates import fused, sru_gates, sru_output


class SRULayer(nn.Module):
    """One SRU layer; see SRU for the equations.

    `linear` maps x to [x~, f, r] (3H rows), plus a fourth block p (the highway projection)
    when the layer's input size differs from H.
    """

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float):
        super().__init__()
        self.projected = input_size != hidden_size
        self.forget_bias = forget_bias
        blocks = 4 if self.projected else 3
        self.linear = nn.Linear(input_size, blocks * hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_linear(self.linear, (0.0, self.forget_bias, 0.0, 0.0)[: 4 if self.projected else 3])

    def forward(self, x, c0, time, compile_gates):
        pre = self.linear(x)
        f, impulses, r, p = fused(sru_gates, compile_gates)(pre, self.projected)
        c, final = time.scan(f, impulses, like_impulses(c0, impulses))
        # Under autocast x is in the parameters' dtype, pre and c in autocast's: the highway
        # term in x's would promote the output, and every later layer, back to float32.
        skip = p if self.projected else x.to(pre.dtype)
        h = fused(sru_output, compile_gates)(r, c, skip)
        return h, final


class SRU(StackedRecurrence):
    r"""Stacked SRU layers (Lei et al. 2017) as the authors' code wrote them.

    Per layer, with x the layer's input and H = hidden_size::

        [x~, f, r] = W x[t] + b                     one linear layer, no activation on x~
        f, r = sigmoid
        c[t] = f * c[t-1] + (1 - f) * x~            one plrnn.linear_recurrence
        h[t] = r * c[t] + (1 - r) * x[t]            highway; no activation on c (as the code)

    The highway needs x of size H. When a layer's input size differs (the first layer with
    input_size != hidden_size), x in the highway term is replaced by a learned projection
    p = W_p x[t] + b_p, computed as a fourth block of the same linear layer.

    Args:
        input_size, hidden_size, num_layers: as torch.nn.LSTM.
        forget_bias: initial bias of f (default 5.0, as the authors' code).
        dropout, batch_first, backend, compile_gates: as in GILR.

    Initialisation: weights U(-0.05, 0.05), biases 0 except b_f = forget_bias.
    Parameters: ``layers[l].linear``, rows [x~, f, r] or [x~, f, r, p] (H rows each).

    Shapes:
        forward(x, state=None) -> (output, c)
        x: (T, B, input_size); output: (T, B, hidden_size) (batch-first when batch_first).
        state: c[T-1] of every layer, (num_layers, B, hidden_size). As the input it is c[-1]
            (zeros if None); two halves with the state carried equal one run over the whole.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        forget_bias: float = 5.0,
        dropout: float = 0.0,
        batch_first: bool = False,
        backend: str = "auto",
        compile_gates: bool | str = False,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, dropout, batch_first, backend, compile_gates
        )
        self.forget_bias = float(forget_bias)
        self.layers = nn.ModuleList(
            SRULayer(self.layer_input_size(i), hidden_size, self.forget_bias)
            for i in range(num_layers)
        )

    def options(self):
        return {"forget_bias": self.forget_bias}

    def split_state(self, state, batch):
        return self.split_stacked("state", state, batch)

    def merge_state(self, states):
        return torch.stack(states)
