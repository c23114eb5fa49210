"""What the four layer types share: nn.LSTM-style stacking, batch_first, argument checks, the
backend switch, and the paper's initialisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..recurrence import linear_recurrence
from ..recurrence.registry import REGISTRY

INIT_RANGE = 0.05  # the authors' code: every weight U(-0.05, 0.05), biases 0


def init_linear(linear: nn.Linear, bias_blocks: Sequence[float] = ()) -> None:
    """U(-0.05, 0.05) weights; the bias is zeros except block k (of len(bias_blocks) equal
    blocks) set to bias_blocks[k], e.g. a forget-gate bias."""
    nn.init.uniform_(linear.weight, -INIT_RANGE, INIT_RANGE)
    init_bias(linear.bias, bias_blocks)


def init_bias(bias: torch.Tensor, bias_blocks: Sequence[float] = ()) -> None:
    with torch.no_grad():
        bias.zero_()
        for block, value in zip(bias.chunk(len(bias_blocks) or 1), bias_blocks):
            block.fill_(value)


def check_backend(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type(name).__name__}")
    if name != "auto" and name not in REGISTRY:
        known = ", ".join(repr(n) for n in ("auto", *REGISTRY))
        raise ValueError(f"unknown backend {name!r}; choose one of {known}")
    return name


def check_choice(arg: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{arg} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value  # type: ignore[return-value]


def _check_positive_int(arg: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{arg} must be >= 1, got {value}")
    return value


class LocalTime:
    """The whole time axis in this process: what a layer asks of the sequence it runs over.

    scan(decays, impulses, h0) -> (h, state after the last step)
    window(x, m, before) -> (the m rows before x's first step: `before`, or zeros if None;
                             the last m rows of the sequence, `before` included)
    plrnn.distributed.ShardedTime answers the same questions for a time axis split across
    processes, so the layers are written once for both.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def scan(self, decays, impulses, h0):
        h = linear_recurrence(decays, impulses, h0, backend=self.backend)
        return h, h[-1]

    def window(self, x, m: int, before):
        before = _window_start(x, m, before)
        T = x.shape[0]
        # The last m rows alone (not [before, x] whole, a copy of x), and a copy of them: a view
        # would keep all of x alive for as long as the caller keeps the state.
        last = x[T - m :].clone() if T >= m else torch.cat([before[T:], x])
        return before, last


def _window_start(x, m: int, before):
    """The m rows before x: zeros, or the carried window in x's dtype (under autocast a float32
    window carried in beside bfloat16 inputs, which torch.cat would promote, as the sharded
    halo does not)."""
    return x.new_zeros((m, *x.shape[1:])) if before is None else before.to(x.dtype)


class PaddedTime(LocalTime):
    """Sequences of different lengths in one (T, B, ...) batch, each padded after its end: what
    a PackedSequence input becomes. The recurrence runs over the padding too, but a step never
    reads a later one, so every valid step is exact; the states a layer hands on (after the last
    step, the last m rows) are read at each sequence's own end."""

    def __init__(self, backend: str, lengths: torch.Tensor) -> None:
        super().__init__(backend)
        self.lengths = lengths
        self.batch = torch.arange(lengths.shape[0], device=lengths.device)

    def scan(self, decays, impulses, h0):
        h = linear_recurrence(decays, impulses, h0, backend=self.backend)
        return h, h[self.lengths - 1, self.batch]

    def window(self, x, m: int, before):
        before = _window_start(x, m, before)
        if not m:
            return before, before
        # With `before` in front, sequence b's last m rows are rows [length_b, length_b + m).
        both = torch.cat([before, x])
        rows = self.lengths + torch.arange(m, device=x.device)[:, None]
        return before, both[rows, self.batch]


class StackedRecurrence(nn.Module):
    """num_layers layers of one type, each layer's output the next one's input.

    Subclasses build `self.layers` (one module per layer, called as
    layer(x [T, B, in], state or None, backend, compile_gates) -> (y [T, B, H], state)) and say
    how the public state splits into per-layer states and back.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        batch_first: bool,
        backend: str,
        compile_gates: bool | str,
    ) -> None:
        super().__init__()
        self.input_size = _check_positive_int("input_size", input_size)
        self.hidden_size = _check_positive_int("hidden_size", hidden_size)
        self.num_layers = _check_positive_int("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a float in [0, 1], got {type(dropout).__name__}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.backend = backend
        self.compile_gates = compile_gates
        self.process_group = None  # plrnn.distributed.shard_sequence sets it (a SharedGroup)

    @property
    def backend(self) -> str:
        """The linear_recurrence backend of every layer; assign to switch serial/parallel."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        self._backend = check_backend(name)

    @property
    def compile_gates(self) -> bool | str:
        """Whether the gate math runs through torch.compile: False, True (inductor: fused), or
        the name of a torch.compile backend."""
        return self._compile_gates

    @compile_gates.setter
    def compile_gates(self, value: bool | str) -> None:
        if not isinstance(value, (bool, str)):
            raise TypeError(
                "compile_gates must be a bool or a torch.compile backend name, "
                f"got {type(value).__name__}"
            )
        self._compile_gates = value

    def reset_parameters(self) -> None:
        """Redraws every parameter with the paper's initialisation, as torch.nn.LSTM's does."""
        for layer in self.layers:
            layer.reset_parameters()

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.hidden_size

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}", f"num_layers={self.num_layers}"]
        parts += [f"{k}={v!r}" for k, v in self.options().items()]
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        if self.batch_first:
            parts.append("batch_first=True")
        parts.append(f"backend={self.backend!r}")
        if self.compile_gates is not False:
            parts.append(f"compile_gates={self.compile_gates!r}")
        return ", ".join(parts)

    def options(self) -> dict[str, object]:
        """The layer type's own constructor options, for repr."""
        return {}

    def __setattr__(self, name: str, value: object) -> None:
        # Each layer holds its own copy of these options, so a new value would show in repr
        # while the layers ran with the old one.
        if "layers" in self.__dict__.get("_modules", {}) and name in self.options():
            raise AttributeError(
                f"{type(self).__name__}.{name} is fixed at construction (every layer holds its "
                f"own copy); build a new {type(self).__name__} with {name}={value!r}"
            )
        super().__setattr__(name, value)

    # -- state: subclasses override -------------------------------------------------------
    def split_state(self, state: object, batch: int) -> list:
        raise NotImplementedError

    def merge_state(self, states: list) -> object:
        raise NotImplementedError

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor | PackedSequence,
                state: object = None) -> tuple[torch.Tensor | PackedSequence, object]:
        shared = getattr(self, "process_group", None)  # modules pickled before it existed
        if shared is not None:
            from ..distributed.layers import ShardedTime  # torch.distributed only when asked for

            # Every rank's checks end in one exchange, so that a call refused on one rank is
            # refused on all of them instead of leaving the others in a collective.
            time, per_layer = ShardedTime.open(
                shared.group, self.backend, x, state, self._checked, int(self.batch_first),
                model=(type(self).__name__, self.options(), self.batch_first,
                       [tuple(p.shape) for p in self.parameters()]),
            )
        else:
            if isinstance(x, PackedSequence):
                return self._forward_packed(x, state)
            time, per_layer = LocalTime(self.backend), self._checked(x, state)
        if self.batch_first:
            x = x.transpose(0, 1).contiguous()
        x, final = self._run(x, per_layer, time)
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, final

    def _checked(self, x: object, state: object) -> list:
        """Checks a padded call; returns the per-layer states."""
        if isinstance(x, PackedSequence):
            raise ValueError("a PackedSequence input needs the whole time axis in this process; "
                             "the layers sharded with plrnn.distributed take padded tensors")
        self.check_input(x)
        return self._per_layer(state, x.shape[0 if self.batch_first else 1])

    def _per_layer(self, state: object, batch: int) -> list:
        return [None] * self.num_layers if state is None else self.split_state(state, batch)

    def _run(self, x: torch.Tensor, per_layer: list, time) -> tuple[torch.Tensor, object]:
        """The stack over time-major x [T, B, input_size], from the per-layer states."""
        finals = []
        last = self.num_layers - 1
        for index, (layer, layer_state) in enumerate(zip(self.layers, per_layer)):
            x, final = layer(x, layer_state, time, self.compile_gates)
            finals.append(final)
            if self.dropout and self.training and index < last:
                x = F.dropout(x, self.dropout, training=True)
        return x, self.merge_state(finals)

    def _forward_packed(self, packed: PackedSequence, state: object):
        """As torch.nn.LSTM: a PackedSequence in, one with the same layout out, and the state
        after each sequence's own last step, in the batch's original order."""
        data = packed.data
        if not isinstance(data, torch.Tensor) or data.dim() != 2 or (
                data.shape[-1] != self.input_size):
            raise ValueError(
                f"a PackedSequence input must hold (sum of lengths, input_size={self.input_size})"
                f" data; got {tuple(getattr(data, 'shape', ()))}")
        check_like("x", data, self._param())
        padded, lengths = pad_packed_sequence(packed)  # [T, B, in], the original batch order
        lengths = lengths.to(padded.device)
        per_layer = self._per_layer(state, padded.shape[1])
        y, final = self._run(padded, per_layer, PaddedTime(self.backend, lengths))
        # Back to the packed layout: time-major, within a step the sequences in sorted order.
        order = packed.sorted_indices
        y_sorted = y if order is None else y.index_select(1, order)
        sorted_lengths = lengths if order is None else lengths.index_select(0, order)
        valid = torch.arange(y.shape[0], device=y.device)[:, None] < sorted_lengths
        return PackedSequence(y_sorted[valid], packed.batch_sizes, packed.sorted_indices,
                              packed.unsorted_indices), final

    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    def check_input(self, x: object) -> None:
        layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
        expected = f"{layout} with input_size={self.input_size}"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
        if x.is_nested:  # it would pass the checks below, and h[-1] is then a whole sequence
            raise TypeError(
                f"x must be a padded tensor of shape {expected} or a PackedSequence, not a nested "
                "tensor; pack its sequences with "
                "torch.nn.utils.rnn.pack_sequence(x.unbind(), enforce_sorted=False)"
            )
        if x.dim() != 3:
            raise ValueError(f"x must be 3-D, {expected}; got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"x.shape[-1] must be input_size={self.input_size}, {expected}; "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1 if self.batch_first else 0] == 0:
            raise ValueError(
                f"x must have at least one time step, {expected}; got shape {tuple(x.shape)}"
            )
        check_like("x", x, self._param())

    def split_stacked(self, arg: str, value: object, batch: int) -> list[torch.Tensor]:
        """A (num_layers, B, hidden_size) state tensor, checked, as one [B, H] per layer."""
        shape = (self.num_layers, batch, self.hidden_size)
        return list(self.check_state_tensor(arg, value, shape).unbind(0))

    def check_state_tensor(self, arg: str, value: object, shape: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{arg} must be a torch.Tensor of shape {shape}, got {type(value).__name__}"
            )
        if tuple(value.shape) != shape:
            raise ValueError(f"{arg} must have shape {shape}; got {tuple(value.shape)}")
        check_like(arg, value, self._param())
        return value


def check_like(arg: str, value: torch.Tensor, param: torch.Tensor) -> None:
    autocast = autocast_dtype(param)
    if value.dtype != param.dtype and value.dtype != autocast:
        also = "" if autocast is None else f" or autocast's {autocast}"
        raise TypeError(
            f"{arg} must have the parameters' dtype {param.dtype}{also}; got {value.dtype} "
            "(convert the input, or the module with .to(dtype))"
        )
    if value.device != param.device:
        raise ValueError(
            f"{arg} must be on the parameters' device {param.device}; got {value.device}"
        )


def autocast_dtype(param: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast runs param's matmuls in, or None where it leaves them alone."""
    kind = param.device.type
    # Autocast casts float parameters to its dtype but never float64 ones.
    if (param.dtype == torch.float64 or not param.is_floating_point()
            or not torch.amp.is_autocast_available(kind) or not torch.is_autocast_enabled(kind)):
        return None
    return torch.get_autocast_dtype(kind)


def like_impulses(state: torch.Tensor | None, impulses: torch.Tensor) -> torch.Tensor | None:
    """A layer's initial state in the dtype of its recurrence."""
    # Under autocast the gates come out in autocast's dtype, while the state passed in may be in
    # the parameters' dtype (a fresh one) or autocast's (one carried from the previous call).
    return None if state is None else state.to(impulses.dtype)


def set_backend(module: nn.Module, name: str) -> nn.Module:
    """Sets the linear_recurrence backend of every plrnn layer inside `module` (the paper's
    one-line serial/parallel switch); returns module. Other submodules are left alone."""
    check_backend(name)
    for sub in module.modules():
        if isinstance(sub, StackedRecurrence):
            sub.backend = name
    return module
