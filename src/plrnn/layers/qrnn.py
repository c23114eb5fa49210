"""QRNN with fo-pooling: gates from a causal convolution over time, then a linear recurrence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import INIT_RANGE, StackedRecurrence, check_choice, init_bias, like_impulses
from .gates import fo_gates, fo_output, fused

TAPS = ("full", "authors")


def num_taps(window: int, taps: str) -> int:
    # The authors' code stacks x[t], ..., x[t-(k-2)]: k-1 taps, but never fewer than x[t] alone.
    return window if taps == "full" else max(window - 1, 1)


class QRNNLayer(nn.Module):
    """One QRNN layer; see QRNN for the equations.

    `weight[j]` (shape [3H, input]) multiplies x[t-j], j = 0..taps-1; `bias` [3H]; the rows of
    both are the pre-activations [z, f, o].
    """

    def __init__(self, input_size: int, hidden_size: int, taps: int, forget_bias: float):
        super().__init__()
        self.taps = taps
        self.forget_bias = forget_bias
        self.weight = nn.Parameter(torch.empty(taps, 3 * hidden_size, input_size))
        self.bias = nn.Parameter(torch.empty(3 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -INIT_RANGE, INIT_RANGE)
        init_bias(self.bias, (0.0, self.forget_bias, 0.0))

    def forward(self, x, state, time, compile_gates):
        T = x.shape[0]
        c0, window = (None, None) if state is None else state
        window, last_window = time.window(x, self.taps - 1, window)
        padded = torch.cat([window, x]) if self.taps > 1 else x
        # One matmul per tap over a shifted time slice: the stacked (T, B, taps * input)
        # alternative would hold taps copies of the input (GBs at width 10 and 256 inputs).
        # Each tap as torch.addmm onto the sum so far (one fresh tensor per tap, not two) ran
        # 1.08x as long at window 10 with freed pages reused (T = 256, B = 64, H = 256, input 4,
        # 2 layers; Zen 4 VM, 3 alternating pairs of processes).
        lag0 = self.taps - 1
        pre = F.linear(x, self.weight[0], self.bias)
        for j in range(1, self.taps):
            pre = pre + F.linear(padded[lag0 - j : lag0 - j + T], self.weight[j])
        f, impulses, o = fused(fo_gates, compile_gates)(pre)
        c, c_final = time.scan(f, impulses, like_impulses(c0, impulses))
        h = fused(fo_output, compile_gates)(o, c)
        return h, (c_final, last_window)


class QRNN(StackedRecurrence):
    r"""Stacked QRNN layers with fo-pooling (Bradbury et al. 2017), as in Martin & Cundy 2018.

    Per layer, with x the layer's input, H = hidden_size and k = window::

        [z, f, o][t] = sum_{j < taps} W_j x[t-j] + b     (causal convolution over time)
        z = tanh;  f, o = sigmoid
        c[t] = f * c[t-1] + (1 - f) * z                  one plrnn.linear_recurrence
        h[t] = o * c[t]

    Args:
        input_size, hidden_size, num_layers: as torch.nn.LSTM.
        window: the filter width k (default 2).
        taps: "full" (default): k taps, x[t-k+1..t], the true width-k filter. "authors": the
            authors' code, which gives width k only k-1 taps (at least one), so their "QRNN(2)"
            saw x[t] alone (Table 2's variant=authors_code).
        forget_bias: initial bias of f (default 0.0: the authors' code has zero QRNN biases).
        dropout, batch_first, backend, compile_gates: as in GILR.

    Initialisation: weights U(-0.05, 0.05), biases 0 except b_f = forget_bias.
    Parameters: ``layers[l].weight`` (taps, 3H, layer input), W_j = weight[j] reads x[t-j];
    ``layers[l].bias`` (3H,); rows [z, f, o].

    Shapes:
        forward(x, state=None) -> (output, (c, windows))
        x: (T, B, input_size); output: (T, B, hidden_size) (batch-first when batch_first).
        state: a tuple (c, windows). c: (num_layers, B, hidden_size), every layer's c[T-1].
            windows: a tuple of num_layers tensors, windows[l] of shape (taps-1, B, input of
            layer l), time-major even when batch_first: the last taps-1 inputs of layer l (zeros
            before the sequence when T < taps-1). As the input, c is c[-1] and windows[l] the
            inputs x[-(taps-1)..-1] before the sequence (zeros if state is None), so two halves
            with the state carried equal one run over the whole.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        window: int = 2,
        taps: str = "full",
        forget_bias: float = 0.0,
        dropout: float = 0.0,
        batch_first: bool = False,
        backend: str = "auto",
        compile_gates: bool | str = False,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, dropout, batch_first, backend, compile_gates
        )
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(f"window must be an int, got {type(window).__name__}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.taps = check_choice("taps", taps, TAPS)
        self.num_taps = num_taps(window, taps)
        self.forget_bias = float(forget_bias)
        self.layers = nn.ModuleList(
            QRNNLayer(self.layer_input_size(i), hidden_size, self.num_taps, self.forget_bias)
            for i in range(num_layers)
        )

    def options(self):
        return {"window": self.window, "taps": self.taps, "forget_bias": self.forget_bias}

    def split_state(self, state, batch):
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(
                "state must be a tuple (c, windows): c of shape (num_layers, B, hidden_size) and "
                f"a tuple of num_layers windows; got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
            )
        c = self.split_stacked("state[0] (c)", state[0], batch)
        windows = state[1]
        if not isinstance(windows, (tuple, list)) or len(windows) != self.num_layers:
            raise TypeError(
                f"state[1] (windows) must be a tuple of num_layers={self.num_layers} tensors, "
                f"got {type(windows).__name__}"
                + (f" of length {len(windows)}" if isinstance(windows, (tuple, list)) else "")
            )
        checked = [
            self.check_state_tensor(
                f"state[1][{i}] (window of layer {i})",
                w,
                (self.num_taps - 1, batch, self.layer_input_size(i)),
            )
            for i, w in enumerate(windows)
        ]
        return list(zip(c, checked))

    def merge_state(self, states):
        c, windows = zip(*states)
        return torch.stack(c), tuple(windows)
