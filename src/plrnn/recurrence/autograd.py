"""The autograd rule of the kernel backends (paper section 3.3).

The compiled ops (CPU and CUDA, plain and packed) carry the same rule in C++
(csrc/scan_autograd.h, no Python on the call path); this module registers it for the ops defined
in Python (Triton, torch), and the refusal of a double backward for all of them.

A backend is a pair of torch.library ops on (T, C) buffers:
    scan(decays, impulses, initial_state, reverse, *extra) -> h
    scan_backward(decays, h, grad_h, initial_state, reverse, *extra)
        -> (grad_impulses, grad_decays, grad_initial_state)
The backward runs the reverse-time recurrence from the saved h; nothing is recomputed.
"""

from __future__ import annotations

import torch


def register_scan_autograd(scan_op, backward_op) -> None:
    """The autograd rule of `scan_op`, whose backward is `backward_op` on the saved decays and h
    and the upstream gradient made contiguous."""
    def setup_context(ctx, inputs, output):
        decays, _impulses, initial_state, reverse, *extra = inputs
        ctx.save_for_backward(decays, output, initial_state)
        ctx.reverse, ctx.extra = reverse, extra

    def backward(ctx, grad_h):
        decays, h, initial_state = ctx.saved_tensors
        gx, ga, gh0 = backward_op(
            decays, h, grad_h.contiguous(), initial_state, ctx.reverse, *ctx.extra
        )
        n_extra = len(ctx.extra)
        return (ga, gx, gh0 if initial_state is not None else None, None) + (None,) * n_extra

    torch.library.register_autograd(scan_op, backward, setup_context=setup_context)
    refuse_double_backward(backward_op)


def refuse_double_backward(backward_op) -> None:
    """Without a rule, torch's fallback would let a double backward silently return zeros."""

    def no_double_backward(ctx, *grads):
        raise RuntimeError(
            "plrnn.linear_recurrence supports first-order gradients only through "
            "torch.autograd; double backward (e.g. create_graph=True followed by another "
            "backward) is not implemented. Higher derivatives work under torch.func "
            "(torch.func.hessian, jacfwd(jacrev(f)), grad(grad(f)))"
        )

    torch.library.register_autograd(backward_op, no_double_backward)
