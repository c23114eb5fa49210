"""Per-time-step loops written straight from the paper's equations (section 3 of the paper;
docs/paper.md and docs/layers.md), reading a module's parameters but none of its code: the ground truth
of the layer tests when run in float64.

Each loop takes (model, x [T, B, in] time-major, state in the model's public structure or None)
and returns (output [T, B, H], state), differentiable by autograd through the loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACT = {"tanh": torch.tanh, "elu": F.elu}


def _blocks(v: torch.Tensor, n: int) -> list[torch.Tensor]:
    size = v.shape[-1] // n
    return [v[..., k * size : (k + 1) * size] for k in range(n)]


def _zeros(model, batch, like):
    return like.new_zeros(model.num_layers, batch, model.hidden_size)


def gilr_loop(model, x, state=None):
    T, B, _ = x.shape
    h0 = _zeros(model, B, x) if state is None else state
    finals = []
    for layer, h in zip(model.layers, h0):
        W, b = layer.linear.weight, layer.linear.bias
        outs = []
        for t in range(T):
            gate_pre, impulse_pre = _blocks(x[t] @ W.T + b, 2)
            g = torch.sigmoid(gate_pre)
            j = ACT[model.activation](impulse_pre)
            h = g * h + (1 - g) * j
            outs.append(h)
        x = torch.stack(outs)
        finals.append(h)
    return x, torch.stack(finals)


def gilr_lstm_loop(model, x, state=None):
    T, B, _ = x.shape
    s0, c0 = (_zeros(model, B, x), _zeros(model, B, x)) if state is None else state
    finals_s, finals_c = [], []
    for layer, s, c in zip(model.layers, s0, c0):
        Ws, bs = layer.gilr.weight, layer.gilr.bias
        W, b = layer.gates.weight, layer.gates.bias
        outs = []
        for t in range(T):
            g_pre, j_pre = _blocks(x[t] @ Ws.T + bs, 2)
            g = torch.sigmoid(g_pre)
            s_next = g * s + (1 - g) * ACT[model.surrogate_activation](j_pre)
            s_gate = s if model.surrogate == "previous_step" else s_next
            f, i, o, z = _blocks(torch.cat([s_gate, x[t]], -1) @ W.T + b, 4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
            outs.append(torch.sigmoid(o) * c)
            s = s_next
        x = torch.stack(outs)
        finals_s.append(s)
        finals_c.append(c)
    return x, (torch.stack(finals_s), torch.stack(finals_c))


def qrnn_loop(model, x, state=None):
    T, B, _ = x.shape
    k = model.num_taps
    if state is None:
        c0 = _zeros(model, B, x)
        windows = [
            x.new_zeros(k - 1, B, model.layer_input_size(i)) for i in range(model.num_layers)
        ]
    else:
        c0, windows = state
    finals_c, finals_w = [], []
    for layer, c, window in zip(model.layers, c0, windows):
        # history[m] is x[m - (k-1)]: the window's inputs before t=0, then the sequence
        history = list(window.unbind(0)) + list(x.unbind(0))
        outs = []
        for t in range(T):
            pre = layer.bias.expand(B, -1)
            for j in range(k):
                pre = pre + history[t + (k - 1) - j] @ layer.weight[j].T  # W_j x[t - j]
            z, f, o = _blocks(pre, 3)
            f = torch.sigmoid(f)
            c = f * c + (1 - f) * torch.tanh(z)
            outs.append(torch.sigmoid(o) * c)
        finals_w.append(torch.stack(history[len(history) - (k - 1) :]) if k > 1 else window)
        x = torch.stack(outs)
        finals_c.append(c)
    return x, (torch.stack(finals_c), tuple(finals_w))


def sru_loop(model, x, state=None):
    T, B, _ = x.shape
    c0 = _zeros(model, B, x) if state is None else state
    finals = []
    for layer, c in zip(model.layers, c0):
        W, b = layer.linear.weight, layer.linear.bias
        H = model.hidden_size
        outs = []
        for t in range(T):
            pre = x[t] @ W.T + b
            x_tilde, f, r = _blocks(pre[..., : 3 * H], 3)
            skip = x[t] if W.shape[0] == 3 * H else pre[..., 3 * H :]
            f, r = torch.sigmoid(f), torch.sigmoid(r)
            c = f * c + (1 - f) * x_tilde
            outs.append(r * c + (1 - r) * skip)
        x = torch.stack(outs)
        finals.append(c)
    return x, torch.stack(finals)
