"""linear_recurrence under torch.func (grad, vjp, jacrev, jacfwd, jvp, vmap, hessian) and
forward-mode AD (torch.autograd.forward_ad).

The kernels' autograd rules cannot run there: the C++ one (csrc/scan_autograd.h) is a
torch::autograd::Function, which functorch refuses outright, and the Function that
torch.library.register_autograd generates has no setup_context, which functorch requires
(pytorch/pytorch#170834). So under a transform the op runs through `_Scan`: the chosen backend's
forward kernel, with
- a vmap rule that moves the batch into the channels: the recurrence is independent per channel,
  so a batch of B scans of (T, *) is one scan of (T, B, *), one kernel call;
- backward and forward-mode rules written as linear recurrences themselves, run by the same
  backend, so that transforms compose (hessian, vmap of grad for per-sample gradients).
Outside transforms nothing here runs: the kernels keep their own fused backward.
"""

from __future__ import annotations

import torch
from torch._C._functorch import TransformType
from torch.autograd import forward_ad


def active() -> bool:
    """Whether a torch.func transform that needs `_Scan` (grad, vjp, jvp, vmap and those built on
    them) or a forward-mode AD level is active."""
    if forward_ad._current_level >= 0:
        return True
    if not torch._C._are_functorch_transforms_active():
        return False
    # torch.func.functionalize alone needs no rule (the kernels mutate nothing) and cannot run
    # an autograd.Function ("NYI: Functionalize rule for custom_function_call"). Dynamo cannot
    # trace the interpreter stack (a warning and a graph break), so a trace does not look.
    return torch.compiler.is_compiling() or any(
        level.key() != TransformType.Functionalize
        for level in torch._C._functorch.get_interpreter_stack()
    )


def scan(compute, backend: str, decays, impulses, initial_state, reverse):
    """h from `compute(decays, impulses, initial_state, reverse)`, the backend named `backend`
    on (T, *) inputs of one shape, differentiable and batchable by every torch.func transform."""
    if torch.compiler.is_compiling() and forward_ad._current_level >= 0:
        # Dynamo traces an autograd.Function's forward ops in place of its jvp rule, and the
        # kernels have no forward-mode rule: the tangents would come out zero. Raising makes
        # dynamo run this frame eagerly (and names the reason under fullgraph=True).
        raise RuntimeError(
            "linear_recurrence(): forward-mode AD (torch.func.jvp, jacfwd, hessian, "
            "torch.autograd.forward_ad) cannot be traced by torch.compile; apply it outside"
        )
    return _Scan.apply(decays, impulses, initial_state, reverse, backend, compute)


def batch_as_channels(batch_size, in_dims, decays, impulses, initial_state):
    """The batched inputs of a vmapped scan as one scan's: (T, B, *) inputs and (B, *) state,
    the batch at dim 1 of the result. Decays and impulses have one logical shape."""
    def rows(t, dim):
        if dim is None:
            return t.unsqueeze(1).expand(t.shape[0], batch_size, *t.shape[1:])
        return t.movedim(dim, 1)

    a, x = rows(decays, in_dims[0]), rows(impulses, in_dims[1])
    h0 = initial_state
    if h0 is not None:
        h0 = h0.expand(batch_size, *h0.shape) if in_dims[2] is None else h0.movedim(in_dims[2], 0)
    return a, x, h0


def _earlier(t, first, reverse):
    """t one step earlier in the scan's order (t[i-1], or t[i+1] with reverse), `first` (one
    row) where the scan starts."""
    first = first.unsqueeze(0)
    return torch.cat([t[1:], first]) if reverse else torch.cat([first, t[:-1]])


def _start(h, initial_state):
    return torch.zeros_like(h[0]) if initial_state is None else initial_state


class _Scan(torch.autograd.Function):
    @staticmethod
    def forward(decays, impulses, initial_state, reverse, backend, compute):
        return compute(decays, impulses, initial_state, reverse)

    @staticmethod
    def setup_context(ctx, inputs, output):
        decays, _impulses, initial_state, reverse, backend, _compute = inputs
        ctx.save_for_backward(decays, output, initial_state)
        ctx.save_for_forward(decays, output, initial_state)
        ctx.reverse, ctx.backend = reverse, backend

    @staticmethod
    def backward(ctx, grad_h):
        from . import linear_recurrence  # this module is imported by the op's own

        decays, h, initial_state = ctx.saved_tensors
        reverse = ctx.reverse
        # g[t] = dL/dh[t] + conj(a[t+1]) g[t+1], the scan run the other way; then
        # dL/dx[t] = g[t], dL/da[t] = conj(h[t-1]) g[t] and dL/dh0 = conj(a[first]) g[first]
        # (torch's convention for complex inputs; conj is free on real tensors).
        later = _earlier(decays, torch.zeros_like(decays[0]), not reverse)
        g = linear_recurrence(later.conj(), grad_h, reverse=not reverse, backend=ctx.backend)
        grad_decays = grad_h0 = None
        if ctx.needs_input_grad[0]:
            grad_decays = _earlier(h, _start(h, initial_state), reverse).conj() * g
        if ctx.needs_input_grad[2]:
            first = -1 if reverse else 0
            grad_h0 = decays[first].conj() * g[first]
        return grad_decays, g, grad_h0, None, None, None

    @staticmethod
    def jvp(ctx, decays_dot, impulses_dot, initial_state_dot, *_):
        from . import linear_recurrence

        decays, h, initial_state = ctx.saved_tensors
        # The tangent obeys the same recurrence, driven by x' + a' h[t-1] from h0'.
        drive = torch.zeros_like(h) if impulses_dot is None else impulses_dot
        if decays_dot is not None:
            drive = drive + decays_dot * _earlier(h, _start(h, initial_state), ctx.reverse)
        return linear_recurrence(decays, drive, initial_state_dot, reverse=ctx.reverse,
                                 backend=ctx.backend)

    @staticmethod
    def vmap(info, in_dims, decays, impulses, initial_state, reverse, backend, compute):
        a, x, h0 = batch_as_channels(info.batch_size, in_dims[:3], decays, impulses,
                                     initial_state)
        return _Scan.apply(a, x, h0, reverse, backend, compute), 1
