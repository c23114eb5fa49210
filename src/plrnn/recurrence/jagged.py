"""Jagged nested tensors (torch.nested, layout=torch.jagged): a batch of B sequences of their own
lengths as one (B, j, *) tensor, time the ragged dimension. Its values are a packed batch,
(sum of lengths, *), and its offsets are cu_seqlens, so the op runs on them as it runs on a packed
batch (varlen.py) and returns h as a jagged tensor with the impulses' offsets.
"""

from __future__ import annotations

import torch

from . import transforms
from .validation import broadcasts_to, type_name

TRANSFORMS_MESSAGE = (
    "linear_recurrence(): jagged nested tensors cannot be used under torch.func transforms or "
    "forward-mode AD (torch has no rules for them there: their values() has no backward "
    "under torch.func.grad); pass their packed values and offsets instead, "
    "linear_recurrence(a.values(), x.values(), cu_seqlens=x.offsets())"
)


def wrapped(t) -> bool:
    """Whether `t` is a jagged nested tensor inside torch.func wrappers, which report
    layout torch.strided and would otherwise pass for a dense (B, j, *) tensor."""
    unwrap = torch._C._functorch
    while unwrap.is_functorch_wrapped_tensor(t):
        t = unwrap.get_unwrapped(t)
    return t.is_nested


def _values(name: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, offsets) of a jagged tensor whose ragged dimension is time (dim 1)."""
    if t._ragged_idx != 1:
        raise ValueError(
            f"{name}: a jagged nested tensor must be ragged in dimension 1, time, as (B, j, *) "
            f"from torch.nested.nested_tensor([...], layout=torch.jagged); got it ragged in "
            f"dimension {t._ragged_idx} of {t.dim()}"
        )
    if t._lengths is not None:
        raise ValueError(
            f"{name}: a jagged nested tensor with holes (narrowed, or built with lengths=) has no "
            "packed values; pass one from torch.nested.nested_tensor(..., layout=torch.jagged) "
            "or .contiguous()"
        )
    return t.values(), t.offsets()


def run(op, decays, impulses, initial_state, *, cu_seqlens, reverse, backend, out,
        return_final_state):
    """op (linear_recurrence) on the packed values of jagged `impulses` (B, j, *), with decays
    jagged alike or dense and time-invariant (*), and initial_state (B, *) or None."""
    if transforms.active():
        raise RuntimeError(TRANSFORMS_MESSAGE)
    if not (isinstance(impulses, torch.Tensor) and impulses.layout is torch.jagged):
        got = f"layout {impulses.layout}" if isinstance(impulses, torch.Tensor) \
            else type_name(impulses)
        raise TypeError(
            "with jagged nested decays, impulses must be a jagged nested tensor too, (B, j, *) "
            f"with the same lengths; got {got}"
        )
    if impulses.is_complex() and torch.is_grad_enabled() and any(
            isinstance(t, torch.Tensor) and t.requires_grad
            for t in (decays, impulses, initial_state)):
        # torch refuses it deep inside, at the jagged views, whatever the op does
        raise TypeError(
            "linear_recurrence(): torch has no autograd for complex jagged nested tensors; pass "
            "their packed values and offsets instead, linear_recurrence(a.values(), x.values(), "
            "cu_seqlens=x.offsets()), or call it without gradients"
        )
    if cu_seqlens is not None:
        raise ValueError(
            "cu_seqlens must be None with jagged nested inputs: their offsets are the sequences"
        )
    if out is not None:
        raise ValueError("out= takes dense tensors; with jagged nested inputs pass out=None")
    x, offsets = _values("impulses", impulses)
    if offsets.is_meta:
        raise ValueError(
            "impulses: a jagged nested tensor with offsets on the meta device has no sequence "
            "lengths to read; build it with nested_tensor_from_jagged(values, offsets) and "
            "offsets on the CPU (or CUDA)"
        )
    first, last = int(offsets[0]), int(offsets[-1])
    if first != 0 or last != x.shape[0]:  # built by hand: nested_tensor_from_jagged(v, offsets)
        raise ValueError(
            "impulses: a jagged nested tensor whose offsets do not run from 0 to its values' "
            f"{x.shape[0]} rows (they run from {first} to {last}) has rows in no sequence; "
            "build it from the values of its sequences alone"
        )
    if decays.layout is torch.jagged:
        a, decay_offsets = _values("decays", decays)
        if a.device != x.device:
            raise ValueError(
                f"decays and impulses must be on the same device; got decays on {a.device} "
                f"and impulses on {x.device}"
            )
        if decay_offsets.is_meta:
            raise ValueError(
                "decays: a jagged nested tensor with offsets on the meta device has no sequence "
                "lengths to compare with the impulses'"
            )
        if decay_offsets is not offsets and not (
            decay_offsets.shape == offsets.shape
            and torch.equal(decay_offsets.to(offsets.device), offsets)
        ):
            raise ValueError(
                "decays and impulses must be jagged nested tensors with the same sequence "
                f"lengths; got offsets {decay_offsets.tolist()} and {offsets.tolist()}"
            )
    elif decays.layout is torch.strided and not decays.is_nested:
        if not broadcasts_to(tuple(decays.shape), (1, *x.shape[1:])):
            raise ValueError(
                "dense decays beside jagged nested impulses (B, j, *) must be time-invariant, "
                f"shape (*) = {tuple(x.shape[1:])} or (1, *), or broadcast to it; got "
                f"{tuple(decays.shape)} (for decays per step, pass a jagged tensor like the "
                "impulses)"
            )
        a = decays
    else:
        got = "a nested tensor of layout torch.strided" if decays.is_nested \
            else f"layout {decays.layout}"
        raise TypeError(
            f"decays must be a jagged nested tensor like the impulses, or a dense tensor; got {got}"
        )
    result = op(a, x, initial_state, cu_seqlens=offsets, reverse=reverse, backend=backend,
                return_final_state=return_final_state)
    h = result[0] if return_final_state else result
    # The impulses' offsets tensor: h gets their ragged size (j1), so h + impulses works.
    nested = torch.nested.nested_tensor_from_jagged(h, offsets)
    return (nested, result[1]) if return_final_state else nested
