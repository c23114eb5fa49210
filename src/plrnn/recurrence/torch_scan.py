"""The `torch` backend: a parallel scan from plain torch ops (any device, no compiler).

Hillis-Steele doubling: after the pass with offset k, position t holds the composition of the
steps (t - 2k, t]. log2(T) passes of whole-tensor ops; stable for decays near 0 (products only,
no division), so it is also the fallback when no kernel can be built. Products of decays too
small to matter are set to zero (_flush_below), so no pass does subnormal arithmetic.
"""

from __future__ import annotations

import torch

from .autograd import register_scan_autograd

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _doubling_scan(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # Pass i writes buffer i % 2 and reads the other (the inputs on the first pass): one fused
    # addcmul for h and one mul for the decay products, where `h[k:] += a[k:] * h[:-k]` in place
    # needs a temporary and a second pass over it. The inputs are only read.
    h_bufs = (torch.empty_like(x), torch.empty_like(x))
    a_bufs = (torch.empty_like(a), torch.empty_like(a))
    h, tiny, guard = x, _flush_below(a.dtype), _may_grow(a)
    k, i, T = 1, 0, x.shape[0]
    while k < T:
        out = h_bufs[i]
        out[:k] = h[:k]
        torch.addcmul(h[k:], a[k:], h[:-k], out=out[k:])
        if guard:
            # A zero state entering the window leaves the window's own state, as in the serial
            # loop, which never multiplies it by the window's product of decays: for decays
            # above 1 that overflows to inf (2**128 in float32), and inf * 0 is NaN where the
            # loop has a number.
            torch.where(h[:-k] == 0, h[k:], out[k:], out=out[k:])
        h = out
        if 2 * k < T:  # the last pass needs no products
            out = a_bufs[i]
            out[:k] = a[:k]
            _flush(torch.mul(a[k:], a[:-k], out=out[k:]), tiny)
            a = out
        k, i = 2 * k, 1 - i
    return h if h is not x else x.clone()


def _may_grow(a: torch.Tensor) -> bool:
    """Whether a product of these decays can overflow: only then does the scan need its guard
    for zero states, a where() per pass that took the scan from 2.5 to 5.2 ms at (65536, 4)
    and from 129 to 210 ms at (65536, 128) (2 threads, Zen 4 VM); this check is one pass over
    the decays. (A NaN decay compares false, and needs no guard: NaN propagates either way.)"""
    if a.is_complex():
        return bool((a.abs() > 1).any())
    lo, hi = torch.aminmax(a)
    return bool(hi > 1) or bool(lo < -1)


def _flush_below(dtype: torch.dtype) -> float:
    """Products of decays smaller than sqrt(smallest normal) in magnitude are set to zero, so the
    next pass multiplies normal numbers or zeros and never makes a subnormal one: subnormal
    arithmetic takes a microcode assist on x86 (1.2-1.5x slower scans under sigmoid gates,
    measured), and torch.set_flush_denormal reaches only the calling thread. A dropped product
    p < 2**-63 (float32; 2**-511 for float64) changes h[t] by at most p * |h[t - 2k]|."""
    real = torch.empty((), dtype=dtype).real.dtype
    return torch.finfo(real).tiny ** 0.5


def _flush(products: torch.Tensor, tiny: float) -> None:
    real = torch.view_as_real(products) if products.is_complex() else products
    torch.ops.aten.hardshrink.out(real, tiny, out=real)


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
