"""The two classifiers of Table 3: a recurrent body plus one linear read-out of its last output.

    kind="gilr_lstm": plrnn.layers.GILRLSTM (the linear-surrogate LSTM, parallel recurrences)
    kind="lstm":      torch.nn.LSTM (cuDNN on a GPU), the paper's baseline

Both read the dense one-hot [T, B, 128] input; `SequenceClassifier.forward` builds it from a
TaskBatch in the model's dtype on the model's device (see data.py for its memory).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .data import NUM_CLASSES, NUM_SYMBOLS, TaskBatch

KINDS = ("gilr_lstm", "lstm")


class SequenceClassifier(nn.Module):
    """logits[B, num_classes] = head(body(x)[0][-1]).

    body: any module mapping x [T, B, input_size] to (out [T, B, hidden], state), like nn.LSTM.
    """

    def __init__(self, body: nn.Module, hidden: int, num_classes: int = NUM_CLASSES,
                 kind: str = "custom") -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(hidden, num_classes)
        self.kind = kind

    def forward(self, x: torch.Tensor | TaskBatch) -> torch.Tensor:
        if isinstance(x, TaskBatch):
            x = x.dense(self.head.weight.dtype)
        out = self.body(x)[0]
        # Only the last step feeds the loss; slicing keeps the head's work independent of T.
        return self.head(out[-1])


def _init_lstm(lstm: nn.LSTM, init_scale: float | None, forget_bias: float | None) -> None:
    """Optionally re-initialise like the authors' cuDNN driver: U(-s, s) weights, zero biases and a
    constant forget-gate bias. torch's order of the four gates is i, f, g, o."""
    H = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if init_scale is not None:
                if name.startswith("weight"):
                    p.uniform_(-init_scale, init_scale)
                else:
                    p.zero_()
            if forget_bias is not None and name.startswith("bias"):
                # The two bias vectors add up; put the whole forget bias in one of them.
                p[H : 2 * H] = forget_bias if name.startswith("bias_ih") else 0.0


def _gilr_lstm(input_size: int, hidden: int, num_layers: int, backend: str,
               forget_bias: float | None, surrogate: str | None) -> nn.Module:
    # Imported here: the layers package is optional for users of the data stream and loop alone.
    from plrnn.layers import GILRLSTM

    kwargs: dict[str, object] = {"backend": backend}
    # None keeps the layer's own defaults (paper: forget bias, surrogate s[t-1]).
    if forget_bias is not None:
        kwargs["forget_bias"] = forget_bias
    if surrogate is not None:
        kwargs["surrogate"] = surrogate
    return GILRLSTM(input_size=input_size, hidden_size=hidden, num_layers=num_layers, **kwargs)


def make_model(
    kind: str,
    hidden: int,
    num_layers: int = 2,
    *,
    backend: str = "auto",
    forget_bias: float | None = None,
    surrogate: str | None = None,
    init_scale: float | None = None,
    input_size: int = NUM_SYMBOLS,
    num_classes: int = NUM_CLASSES,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
) -> SequenceClassifier:
    """A SequenceClassifier for the synthetic task.

    kind: "gilr_lstm" or "lstm".
    backend: the recurrence backend of the GILR-LSTM ("auto" or a plrnn.backends() name); the
        LSTM accepts only "auto" (torch picks cuDNN on a GPU).
    forget_bias: constant forget-gate bias; None keeps each body's default init.
    surrogate: GILR-LSTM only, which surrogate state the gates read (None: the layer's default).
    init_scale: LSTM only, U(-s, s) weights and zero biases instead of torch's default init.
    seed: when given, parameters are drawn from this seed (on the CPU, so every device gets the
        same initial weights) without touching the global RNG state.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for name, value in (("hidden", hidden), ("num_layers", num_layers),
                        ("input_size", input_size), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if kind == "lstm":
        if backend != "auto":
            raise ValueError(f"backend must be 'auto' for kind='lstm' (torch chooses cuDNN), got {backend!r}")
        if surrogate is not None:
            raise ValueError(f"surrogate applies to kind='gilr_lstm' only, got surrogate={surrogate!r} for kind='lstm'")
    if kind == "gilr_lstm" and init_scale is not None:
        raise ValueError("init_scale applies to kind='lstm' only (the GILR-LSTM has its paper init)")
    if init_scale is not None and not init_scale > 0:
        raise ValueError(f"init_scale must be > 0 or None, got {init_scale!r}")

    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:  # the CPU generator alone: the model is built on the CPU
            torch.default_generator.manual_seed(seed)  # (torch.manual_seed seeds every GPU too)
        if kind == "lstm":
            body: nn.Module = nn.LSTM(input_size, hidden, num_layers=num_layers)
            _init_lstm(body, init_scale, forget_bias)
        else:
            body = _gilr_lstm(input_size, hidden, num_layers, backend, forget_bias, surrogate)
        model = SequenceClassifier(body, hidden, num_classes, kind=kind)
    return model.to(device=device, dtype=dtype)
