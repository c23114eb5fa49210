"""The op h[t] = decays[t] * h[t-1] + impulses[t], with one signature over many backends."""

from __future__ import annotations

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
    T = impulses.shape[0]
    channels = impulses[0].numel() if T else 0
    chosen = resolve(backend, impulses.device, T, channels)
    if T == 0 or channels == 0:
        return impulses + 0 * decays  # empty, but still part of the autograd graph
    if chosen.name == "reference":
        return chosen.run(decays, impulses, initial_state, reverse)
    a = decays.reshape(T, channels).contiguous()
    x = impulses.reshape(T, channels).contiguous()
    h0 = None if initial_state is None else initial_state.reshape(channels).contiguous()
    return chosen.run(a, x, h0, reverse).view(impulses.shape)
