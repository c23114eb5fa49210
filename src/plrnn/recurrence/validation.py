"""Argument checks for linear_recurrence: every message names the argument and what was expected,
and all of them run before any kernel does."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_inputs(decays, impulses, initial_state, reverse) -> None:
    for name, value in (("decays", decays), ("impulses", impulses)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape (T, *), got {type(value).__name__}"
            )
        if value.dim() == 0:
            raise ValueError(
                f"{name} must have a leading time axis, shape (T, *); got a 0-d tensor"
            )
        if value.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must be float16, bfloat16, float32 or float64; got {value.dtype}"
            )
    if decays.shape != impulses.shape:
        raise ValueError(
            "decays and impulses must have the same shape (T, *); "
            f"got decays {_shape(decays)} and impulses {_shape(impulses)}"
        )
    if decays.dtype != impulses.dtype:
        raise TypeError(
            f"decays and impulses must have the same dtype; got decays {decays.dtype} "
            f"and impulses {impulses.dtype}"
        )
    if decays.device != impulses.device:
        raise ValueError(
            f"decays and impulses must be on the same device; got decays on {decays.device} "
            f"and impulses on {impulses.device}"
        )
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor):
            raise TypeError(
                f"initial_state must be a torch.Tensor or None, got {type(initial_state).__name__}"
            )
        if initial_state.shape != impulses.shape[1:]:
            raise ValueError(
                f"initial_state must have shape {_shape(impulses)[1:]} (impulses.shape[1:]); "
                f"got {_shape(initial_state)}"
            )
        if initial_state.dtype != impulses.dtype:
            raise TypeError(
                f"initial_state must have the impulses' dtype {impulses.dtype}; "
                f"got {initial_state.dtype}"
            )
        if initial_state.device != impulses.device:
            raise ValueError(
                f"initial_state must be on the impulses' device {impulses.device}; "
                f"got {initial_state.device}"
            )
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
