"""The `torch` backend: a parallel scan from plain torch ops (any device, no compiler).

Hillis-Steele doubling: after the pass with offset k, position t holds the composition of the
steps (t - 2k, t]. log2(T) passes of whole-tensor ops; stable for decays near 0 (products only,
no division), so it is also the fallback when no kernel can be built.
"""

from __future__ import annotations

import torch

from .autograd import register_scan_autograd

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _doubling_scan(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    h, a = x.clone(), a.clone()
    k, T = 1, x.shape[0]
    while k < T:
        h[k:] += a[k:] * h[:-k]
        if 2 * k < T:  # the last pass needs no products
            a[k:] = a[k:] * a[:-k]
        k *= 2
    return h


def _forward(a, x, h0, reverse):
    if reverse:
        return _forward(a.flip(0), x.flip(0), h0, False).flip(0)
    # The first decay multiplies the initial state even when it is zero, so NaN there
    # propagates exactly as in the serial loop.
    first = a[:1] * (torch.zeros_like(x[0]) if h0 is None else h0) + x[:1]
    x = torch.cat([first, x[1:]])
    return _doubling_scan(a, x)


def _backward(a, h, grad, h0, reverse):
    if reverse:
        gx, ga, gh0 = _backward(a.flip(0), h.flip(0), grad.flip(0), h0, False)
        return gx.flip(0), ga.flip(0), gh0
    # g[t] = a[t+1] g[t+1] + dL/dh[t], a reverse-time recurrence; dL/da[t] = h[t-1] g[t].
    # Complex inputs take conjugates as torch's own mul does (a no-op on real tensors).
    a_next = torch.cat([a[1:], torch.zeros_like(a[:1])]).conj_physical_()
    g = _forward(a_next, grad, None, True)
    first = torch.zeros_like(h[:1]) if h0 is None else h0.unsqueeze(0)
    ga = torch.cat([first, h[:-1]]).conj_physical_() * g
    return g, ga, a[0].conj() * g[0]


def _in_compute_dtype(fn):
    """Low-precision storage is computed in float32 and returned in its own dtype."""

    def wrapped(*tensors_and_flag):
        *tensors, flag = tensors_and_flag
        dtype = tensors[1].dtype
        if dtype not in _LOW_PRECISION:
            return fn(*tensors, flag)
        up = [None if t is None else t.float() for t in tensors]
        out = fn(*up, flag)
        return tuple(o.to(dtype) for o in out) if isinstance(out, tuple) else out.to(dtype)

    return wrapped


@torch.library.custom_op("plrnn::torch_scan", mutates_args=())
def torch_scan(
    decays: torch.Tensor, impulses: torch.Tensor, initial_state: torch.Tensor | None, reverse: bool
) -> torch.Tensor:
    if impulses.shape[0] == 0:
        return torch.empty_like(impulses)
    return _in_compute_dtype(_forward)(decays, impulses, initial_state, reverse)


@torch.library.custom_op("plrnn::torch_scan_backward", mutates_args=())
def torch_scan_backward(
    decays: torch.Tensor,
    h: torch.Tensor,
    grad_h: torch.Tensor,
    initial_state: torch.Tensor | None,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if grad_h.shape[0] == 0:
        return (
            torch.empty_like(grad_h),
            torch.empty_like(grad_h),
            grad_h.new_zeros(grad_h.shape[1:]),
        )
    return _in_compute_dtype(_backward)(decays, h, grad_h, initial_state, reverse)


@torch_scan.register_fake
def _(decays, impulses, initial_state, reverse):
    return torch.empty_like(impulses)


@torch_scan_backward.register_fake
def _(decays, h, grad_h, initial_state, reverse):
    return torch.empty_like(grad_h), torch.empty_like(grad_h), grad_h.new_empty(grad_h.shape[1:])


register_scan_autograd(torch_scan, torch_scan_backward)
