"""GILR-LSTM: an LSTM whose gates read a GILR "linear surrogate" state instead of h[t-1]."""

from __future__ import annotations

import torch
from torch import nn

from .base import StackedRecurrence, check_choice, init_linear, like_impulses
from .gates import ACTIVATIONS, fused, gilr_gates, lstm_gates, lstm_output

SURROGATES = ("previous_step", "same_step")


class GILRLSTMLayer(nn.Module):
    """One GILR-LSTM layer; see GILRLSTM for the equations.

    `gilr` maps x to the GILR's [g, j] (2H rows); `gates` maps the concatenation [s, x]
    (columns 0:H the surrogate, H: the input) to the pre-activations [f, i, o, z] (4H rows).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        surrogate: str,
        surrogate_activation: str,
        forget_bias: float,
    ):
        super().__init__()
        self.surrogate_mode = surrogate
        self.surrogate_activation = surrogate_activation
        self.forget_bias = forget_bias
        self.gilr = nn.Linear(input_size, 2 * hidden_size)
        self.gates = nn.Linear(hidden_size + input_size, 4 * hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_linear(self.gilr)
        init_linear(self.gates, (self.forget_bias, 0.0, 0.0, 0.0))

    def forward(self, x, state, time, compile_gates):
        s0, c0 = (None, None) if state is None else state
        g, impulses = fused(gilr_gates, compile_gates)(self.gilr(x), self.surrogate_activation)
        s0 = like_impulses(s0, impulses)
        s, s_final = time.scan(g, impulses, s0)
        if self.surrogate_mode == "previous_step":
            before, _ = time.window(s, 1, None if s0 is None else s0.unsqueeze(0))
            s_in = torch.cat([before, s[:-1]])
        else:
            s_in = s
        # One matmul on the concatenation [s, x]. As two matmuls into one buffer (no copy of s
        # and x, no dL/dx where x needs none) a 2-layer train step took 0.95-0.97x the time with
        # the default allocator but 1.10x with freed pages reused, as Table 2 times it (T = 4096,
        # B = 4, H = 256, input 4; Zen 4 VM, medians of 4 alternating pairs of processes, each
        # pair within +-15%): the matmuls' halves run less efficiently than one whole.
        pre = self.gates(torch.cat([s_in, x], dim=-1))
        f, i_z, o = fused(lstm_gates, compile_gates)(pre)
        c, c_final = time.scan(f, i_z, like_impulses(c0, i_z))
        h = fused(lstm_output, compile_gates)(o, c)
        return h, (s_final, c_final)


class GILRLSTM(StackedRecurrence):
    r"""Stacked GILR-LSTM layers (Martin & Cundy 2018, section 4): an LSTM whose gates read the
    state of a GILR layer (a linear recurrence, so parallel over time) in place of h[t-1].

    Per layer, with x the layer's input and H = hidden_size::

        s[t] = GILR(x)[t]:  g = sigmoid(V_g x + b_g), j = tanh(V_j x + b_j),
                            s[t] = g * s[t-1] + (1 - g) * j          (linear recurrence 1)
        [f, i, o, z] = W [s[t-1], x[t]] + b                          (one linear layer)
        f, i, o = sigmoid;  z = tanh
        c[t] = f * c[t-1] + i * z                                    (linear recurrence 2)
        h[t] = o * c[t]                                              (no tanh on c, as the paper)

    Args:
        input_size, hidden_size, num_layers: as torch.nn.LSTM.
        surrogate: "previous_step" (default): the gates read s[t-1] as the paper writes, with
            s[-1] the initial surrogate state; "same_step": they read s[t], as the authors' code
            does. Report which one a result used.
        surrogate_activation: the GILR's impulse nonlinearity, "tanh" (default, as the code)
            or "elu".
        forget_bias: initial bias of the forget gate f (default 5.0, the authors' final code;
            their synthetic-task runs used 10.0).
        dropout, batch_first, backend, compile_gates: as in GILR.

    Initialisation: weights U(-0.05, 0.05), biases 0 except b_f = forget_bias.
    Parameters: ``layers[l].gilr`` (x -> [g, j], 2H rows) and ``layers[l].gates``
    ([s, x] -> [f, i, o, z], 4H rows; the first H input columns read s).

    Shapes:
        forward(x, state=None) -> (output, (s, c))
        x: (T, B, input_size); output: (T, B, hidden_size) (batch-first when batch_first).
        state: a tuple (s, c), each (num_layers, B, hidden_size): every layer's surrogate
            s[T-1] and cell c[T-1]. As the input they are s[-1] and c[-1] (zeros if None), so
            two halves of a sequence with the state carried equal one run over the whole.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        surrogate: str = "previous_step",
        surrogate_activation: str = "tanh",
        forget_bias: float = 5.0,
        dropout: float = 0.0,
        batch_first: bool = False,
        backend: str = "auto",
        compile_gates: bool | str = False,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, dropout, batch_first, backend, compile_gates
        )
        self.surrogate = check_choice("surrogate", surrogate, SURROGATES)
        self.surrogate_activation = check_choice(
            "surrogate_activation", surrogate_activation, tuple(ACTIVATIONS)
        )
        self.forget_bias = float(forget_bias)
        self.layers = nn.ModuleList(
            GILRLSTMLayer(
                self.layer_input_size(i),
                hidden_size,
                self.surrogate,
                self.surrogate_activation,
                self.forget_bias,
            )
            for i in range(num_layers)
        )

    def options(self):
        return {
            "surrogate": self.surrogate,
            "surrogate_activation": self.surrogate_activation,
            "forget_bias": self.forget_bias,
        }

    def split_state(self, state, batch):
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(
                "state must be a tuple (s, c) of two (num_layers, B, hidden_size) tensors, "
                f"got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
            )
        s = self.split_stacked("state[0] (s)", state[0], batch)
        c = self.split_stacked("state[1] (c)", state[1], batch)
        return list(zip(s, c))

    def merge_state(self, states):
        s, c = zip(*states)
        return torch.stack(s), torch.stack(c)
