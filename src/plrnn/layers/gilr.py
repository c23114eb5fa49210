"""GILR: the gated impulse linear recurrent layer (paper section 4)."""

from __future__ import annotations

import torch
from torch import nn

from .base import StackedRecurrence, check_choice, init_linear, like_impulses
from .gates import ACTIVATIONS, fused, gilr_gates


class GILRLayer(nn.Module):
    """One GILR layer: g = sigmoid(V_g x + b_g), j = act(V_j x + b_j), h = g*h_prev + (1-g)*j.

    `linear` maps x to [g, j] (rows 0:H the gate, H:2H the impulse).
    """

    def __init__(self, input_size: int, hidden_size: int, activation: str, forget_bias: float):
        super().__init__()
        self.activation = activation
        self.forget_bias = forget_bias
        self.linear = nn.Linear(input_size, 2 * hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_linear(self.linear, (self.forget_bias, 0.0))

    def forward(self, x, h0, time, compile_gates):
        pre = self.linear(x)
        decays, impulses = fused(gilr_gates, compile_gates)(pre, self.activation)
        return time.scan(decays, impulses, like_impulses(h0, impulses))


class GILR(StackedRecurrence):
    r"""Stacked GILR layers (gated impulse linear recurrence, Martin & Cundy 2018, section 4).

    Per layer, with x the layer's input and H = hidden_size::

        g[t] = sigmoid(V_g x[t] + b_g)
        j[t] = act(V_j x[t] + b_j)                  act = tanh (default) or elu
        h[t] = g[t] * h[t-1] + (1 - g[t]) * j[t]    one plrnn.linear_recurrence(g, (1-g)*j)

    The paper writes tanh; the authors' code defaulted to ELU (and used tanh inside the
    GILR-LSTM): ``activation="elu"`` gives the code's layer.

    Args:
        input_size, hidden_size, num_layers: as torch.nn.LSTM.
        activation: "tanh" or "elu", the impulse nonlinearity.
        forget_bias: initial value of b_g (default 0.0, as the authors' code). A large positive
            value starts every gate near 1 (long memory).
        dropout: dropout on each layer's output except the last (training only), as nn.LSTM.
        batch_first: x and output are (B, T, *) instead of (T, B, *); the state is not affected.
        backend: the plrnn.linear_recurrence backend ("auto", "cpu_serial", "cpu_parallel",
            "torch", "reference", ...). An attribute: assign ``model.backend = "cpu_serial"``, or
            call ``plrnn.layers.set_backend(model, name)`` for every layer inside a model.
        compile_gates: False (default), True: run the gate math through torch.compile with
            inductor (fused; compiled once per process), or a torch.compile backend name.
            Not needed for correctness; see the package docs for what it buys.

    Initialisation: weights U(-0.05, 0.05), b_j = 0, b_g = forget_bias.
    Parameters: ``layers[l].linear`` maps the layer's input to [g, j] pre-activations (2H rows).

    Shapes:
        forward(x, state=None) -> (output, state)
        x: (T, B, input_size); output: (T, B, hidden_size) (batch-first when batch_first).
        state: h[T-1] of every layer, (num_layers, B, hidden_size). As the input it is h[-1]
            (zeros if None), so running two halves of a sequence with the first half's state
            carried into the second equals one run over the whole.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        activation: str = "tanh",
        forget_bias: float = 0.0,
        dropout: float = 0.0,
        batch_first: bool = False,
        backend: str = "auto",
        compile_gates: bool | str = False,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, dropout, batch_first, backend, compile_gates
        )
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.forget_bias = float(forget_bias)
        self.layers = nn.ModuleList(
            GILRLayer(self.layer_input_size(i), hidden_size, self.activation, self.forget_bias)
            for i in range(num_layers)
        )

    def options(self):
        return {"activation": self.activation, "forget_bias": self.forget_bias}

    def split_state(self, state, batch):
        return self.split_stacked("state", state, batch)

    def merge_state(self, states):
        return torch.stack(states)
