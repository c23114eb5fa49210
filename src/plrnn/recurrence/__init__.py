"""The op h[t] = decays[t] * h[t-1] + impulses[t], with one signature over many backends."""

from __future__ import annotations

import math

import torch

from .registry import REGISTRY, BackendStatus, backends, resolve
from .validation import check_inputs

__all__ = ["linear_recurrence", "backends", "BackendStatus", "REGISTRY"]


def linear_recurrence(
    decays: torch.Tensor,
    impulses: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Linear recurrence over the leading (time) axis.

    h[t] = decays[t] * h[t-1] + impulses[t], with h[-1] = initial_state (zeros if None);
    with reverse=True, h[t] = decays[t] * h[t+1] + impulses[t] from the end.

    Args:
        decays: [T, *] float tensor (a, the gates).
        impulses: [T, *] tensor of the same shape, dtype and device (x).
        initial_state: [*] or None.
        reverse: run from t = T-1 down to 0.
        backend: "auto" or a name from `plrnn.backends(device)`.

    Returns:
        h: [T, *], the impulses' dtype. float16/bfloat16 accumulate in float32.
    Gradients flow to decays, impulses and initial_state.
    """
    check_inputs(decays, impulses, initial_state, reverse)
    shape = impulses.shape
    T, channels = shape[0], math.prod(shape[1:])
    chosen = resolve(backend, impulses.device, T, channels)
    if T == 0 or channels == 0:
        return impulses + 0 * decays  # empty, but still part of the autograd graph
    if chosen.name == "reference":
        return chosen.run(decays, impulses, initial_state, reverse)
    # The kernels take (T, C) contiguous buffers; reshapes are skipped where they are no-ops
    # because each costs microseconds of dispatch on short sequences.
    flat = impulses.dim() != 2
    a = (decays.reshape(T, channels) if flat else decays).contiguous()
    x = (impulses.reshape(T, channels) if flat else impulses).contiguous()
    h0 = initial_state
    if h0 is not None:
        h0 = (h0.reshape(channels) if flat else h0).contiguous()
    h = chosen.run(a, x, h0, reverse)
    return h.reshape(shape) if flat else h
