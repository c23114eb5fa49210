"""Shared helpers for the linear_recurrence tests: input generation and the comparison rules.

Ground truth is `reference.serial` run in float64. Lower precisions are judged with the
flash-attention rule: a backend's error against the float64 truth may be at most twice the error
of the reference's own math at that precision, plus a floor of a few ulps of the output scale
(FMA contraction and a different summation order legitimately change the rounding).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch

import plrnn
from plrnn.recurrence import reference

# The backends these CPU tests loop over: every registered one that runs on CPU tensors here
# (the CUDA backends do not; tests/recurrence/test_cuda.py runs them on a GPU), and the same
# without the oracle.
ALL_BACKENDS = tuple(s.name for s in plrnn.backends("cpu") if s.available)
BACKENDS = tuple(name for name in ALL_BACKENDS if name != "reference")

F64_RTOL = 1e-10  # float64 against float64: only the summation order differs
FLOOR_ULPS = 4  # the few-ulps floor of the low-precision rule, in units of eps * output scale

DECAY_KINDS = {
    "uniform": lambda u: u,
    "near_one": lambda u: 0.999 + 0.001 * u,
    "near_zero": lambda u: 1e-3 * u,
}


def seed_for(*parts) -> int:
    """A stable per-case seed (Python's hash() of a str is salted per process)."""
    return zlib.crc32(repr(parts).encode())


def shape_id(shape) -> str:
    return "shape=" + "x".join(map(str, shape))


def make_inputs(T, shape, decay_kind="uniform", with_h0=False, seed=0, dtype=torch.float64):
    """(decays, impulses, initial_state or None) from a seeded generator, cast to `dtype`."""
    g = torch.Generator().manual_seed(seed)
    full = (T, *shape)
    a = DECAY_KINDS[decay_kind](torch.rand(full, generator=g, dtype=torch.float64))
    x = torch.randn(full, generator=g, dtype=torch.float64)
    h0 = torch.randn(tuple(shape), generator=g, dtype=torch.float64) if with_h0 else None
    return tuple(None if t is None else t.to(dtype) for t in (a, x, h0))


def cast(tensors, dtype):
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def ref64(a, x, h0=None, reverse=False):
    """The ground truth: reference.serial in float64 on the given inputs, upcast exactly."""
    a, x, h0 = cast((a, x, h0), torch.float64)
    return reference.serial(a, x, h0, reverse)


def adjoint64(a, x, h0, upstream, reverse=False):
    """The float64 gradients (dL/da, dL/dx and, where h0 is given, dL/dh0) of real inputs
    without autograd, cheap at any T (paper section 3.3): dL/dx is the scan the other way of the
    upstream gradient with the decays shifted one step, dL/da[t] = h[t-1] dL/dx[t] (h[t+1]
    reversed, h0 at the first step), dL/dh0 = a dL/dx at the first step. Ordered as grads_of
    returns them."""
    a, x, h0, up = cast((a, x, h0), torch.float64) + (upstream.double(),)
    h = reference.serial(a, x, h0, reverse)
    start = torch.zeros_like(x[:1]) if h0 is None else h0.reshape(x[:1].shape)
    zero = torch.zeros_like(a[:1])
    if reverse:  # g[t] = up[t] + a[t-1] g[t-1]
        g = reference.serial(torch.cat([zero, a[:-1]]), up)
        prev, first = torch.cat([h[1:], start]), -1
    else:  # g[t] = up[t] + a[t+1] g[t+1]
        g = reference.serial(torch.cat([a[1:], zero]), up, reverse=True)
        prev, first = torch.cat([start, h[:-1]]), 0
    grads = (prev * g, g)
    if h0 is None:
        return grads
    return grads + ((a[first] * g[first]).reshape(h0.shape),)


def complex_inputs(T, C, seed, dtype):
    """LRU-style (T, C) decays: moduli spread over (0, 1) with a third of the channels near the
    unit circle (long memory), uniform phases; normal impulses and initial state."""
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(T, C, generator=g, dtype=torch.float64)
    r[:, ::3] = 0.999 + 0.001 * r[:, ::3]
    a = torch.polar(r, 2 * torch.pi * torch.rand(T, C, generator=g, dtype=torch.float64))
    x = torch.randn(T, C, generator=g, dtype=torch.complex128)
    h0 = torch.randn(C, generator=g, dtype=torch.complex128)
    return a.to(dtype), x.to(dtype), h0.to(dtype)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """float64, or complex128 for complex tensors (a cast to float64 would drop the imaginary
    part)."""
    return t.to(torch.complex128) if t.is_complex() else t.double()


def max_err(out: torch.Tensor, truth: torch.Tensor) -> float:
    if out.numel() == 0:
        return 0.0
    return (_wide(out) - _wide(truth)).abs().max().item()


def scale_of(truth: torch.Tensor) -> float:
    if truth.numel() == 0:
        return 1.0
    return max(_wide(truth).abs().max().item(), 1e-300)


def run(name, a, x, h0=None, reverse=False):
    return plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=name)


def check_float64(a, x, h0, reverse, truth, backends=BACKENDS):
    """Each backend in float64 within F64_RTOL of the truth's scale; returns failure lines."""
    failures = []
    tol = F64_RTOL * max(1.0, scale_of(truth))
    for name in backends:
        out = run(name, a, x, h0, reverse)
        if out.shape != x.shape or out.dtype != x.dtype:
            failures.append(f"{name}: got {out.dtype} {tuple(out.shape)}")
            continue
        err = max_err(out, truth)
        if not err <= tol:
            failures.append(f"{name} float64: max error {err:.3e} > {tol:.3e}")
    return failures


def sysfs_cache_bytes(level_wanted: int = 0) -> int | None:
    """Bytes of CPU 0's cache at `level_wanted` (0: the highest level) as sysfs gives them, or
    None without sysfs."""
    best_level, size = 0, None
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        value = int(text.rstrip("KM")) * {"K": 1024, "M": 1 << 20}.get(text[-1], 1)
        if level_wanted and level == level_wanted and value > (size or 0):
            size = value
        elif not level_wanted and level >= best_level and value > 0:
            best_level, size = level, value
    return size


def gradient_allowed(baseline, truth, steps: int) -> float:
    """The 2x rule for a gradient in low precision: twice the error of autograd through the
    reference loop in that dtype (`baseline`), plus a floor of the gradient's scale times
    max(8, 2 sqrt(steps)) ulps of the dtype the kernels accumulate in (float32 for 16-bit
    storage) and, for 16-bit storage, 2 ulps of the stored result's rounding. Each gradient sums
    up to `steps` terms, and the rounding error of another summation order grows like
    sqrt(steps) however lucky the loop's own was: on the host emulator cuda_parallel's float32
    dh0 at T = 1000 (one channel, decays near 1) reached 8.99e-6 against 2x the loop's 4.1e-7
    plus 8 ulps, 9.97e-6, and a case of that test failed on an H200. Counted in bfloat16's own
    ulps that floor was half the gradient's scale at T = 1000, loose enough to pass a gradient
    that dropped the carry halfway; the kernels' bfloat16 gradients came within 0.7 of its ulp
    (Zen 4 VM)."""
    dtype = baseline.dtype
    accumulated = torch.float32 if torch.finfo(dtype).bits == 16 else dtype
    ulps = max(8.0, 2.0 * math.sqrt(steps))
    floor = ulps * torch.finfo(accumulated).eps
    if accumulated != dtype:
        floor += 2 * torch.finfo(dtype).eps
    return 2 * max_err(baseline, truth) + floor * scale_of(truth)


def check_low_precision(a, x, h0, reverse, truth, backends=BACKENDS, ulps=FLOOR_ULPS):
    """The 2x rule at the inputs' dtype; `truth` is ref64 of exactly these inputs."""
    dtype = x.dtype
    baseline = reference.serial(a, x, h0, reverse)
    assert baseline.dtype == dtype
    ref_err = max_err(baseline, truth)
    allowed = 2 * ref_err + ulps * torch.finfo(dtype).eps * scale_of(truth)
    failures = []
    for name in backends:
        out = run(name, a, x, h0, reverse)
        if out.shape != x.shape or out.dtype != dtype:
            failures.append(f"{name}: got {out.dtype} {tuple(out.shape)}, want {dtype}")
            continue
        err = max_err(out, truth)
        if not err <= allowed:
            failures.append(
                f"{name} {dtype}: max error {err:.3e} > allowed {allowed:.3e} "
                f"(reference.serial at {dtype}: {ref_err:.3e})"
            )
    return failures


def grads_of(fn, inputs, upstream):
    """torch.autograd.grad of <fn(*inputs), upstream> w.r.t. the inputs that are not None."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves)
    wrt = [t for t in leaves if t is not None]
    return out.detach(), torch.autograd.grad(out, wrt, upstream)


def check_requires_grad(scan, truth, inputs, which, grad_mode):
    """scan(decays, impulses, initial_state) with the input named `which` ("none": no input)
    requiring grad, under grad_mode: its output must require grad exactly when torch's own ops'
    would, and then carry the gradient of its sum that `truth` (same arguments) gives."""
    inputs = dict(inputs)
    if which != "none":
        inputs[which] = inputs[which].detach().requires_grad_(True)
    with torch.set_grad_enabled(grad_mode):
        h = scan(**inputs)
    want = grad_mode and which != "none"
    assert h.requires_grad == want and (h.grad_fn is not None) == want
    if want:
        (got,) = torch.autograd.grad(h.sum(), inputs[which])
        leaf = inputs[which].detach().requires_grad_(True)
        (expected,) = torch.autograd.grad(truth(**{**inputs, which: leaf}).sum(), leaf)
        torch.testing.assert_close(got, expected, rtol=F64_RTOL, atol=F64_RTOL)


def second_derivatives(scan, truth, a, x):
    """d/dx of sum(d/da sum(h**2)) through scan(a, x) with create_graph=True, and through
    truth(a, x): (got, want), got None where scan refused the double backward by name."""
    def second(fn):
        a_ = a.clone().requires_grad_(True)
        x_ = x.clone().requires_grad_(True)
        (ga,) = torch.autograd.grad((fn(a_, x_) ** 2).sum(), a_, create_graph=True)
        (gx,) = torch.autograd.grad(ga.sum(), x_)
        return gx

    want = second(truth)
    assert want.abs().max() > 0
    try:
        return second(scan), want
    except RuntimeError as err:
        assert "first-order gradients only" in str(err)
        return None, want  # refusing is acceptable


# Decays whose products over a few steps overflow the dtype (float32: 512**15 > 2**128; float64:
# (2**65)**16 > 2**1024); complex ones take that modulus and a phase of one radian.
OVERFLOWING_DECAY = {torch.float32: 2.0**9, torch.complex64: 2.0**9,
                     torch.float64: 2.0**65, torch.complex128: 2.0**65}


def autograd_fwd_bwd(scan, device="cpu"):
    """(a, x, upstream, reverse) -> (h, dL/da, dL/dx) of scan(a, x, reverse) through autograd,
    on `device`, returned on the CPU."""
    def fwd_bwd(a, x, up, reverse):
        h, (da, dx) = grads_of(lambda a_, x_: scan(a_, x_, reverse),
                               (a.to(device), x.to(device)), up.to(device))
        return h.cpu(), da.cpu(), dx.cpu()
    return fwd_bwd


def check_zero_state_through_overflow(fwd_bwd, T, C, dtype, tail=4, seed=0):
    """docs/op.md: where the serial loop's state is exactly zero, no backend multiplies it by a
    product of decays, which overflows here (inf * 0 = NaN). Decays OVERFLOWING_DECAY[dtype],
    impulses zero but on the last `tail` steps the scan visits, the upstream gradient zero but
    on the first (the backward's last): fwd_bwd(a, x, upstream, reverse) -> (h, dL/da, dL/dx) on
    `dtype` inputs is finite, exactly zero where the float64 loop is, close elsewhere, either
    way through time."""
    wide = torch.complex128 if dtype.is_complex else torch.float64
    rtol = 1e-10 if dtype == wide else 1e-5
    g = torch.Generator().manual_seed(seed)
    a = torch.full((T, C), OVERFLOWING_DECAY[dtype], dtype=torch.float64)
    if dtype.is_complex:
        a = torch.polar(a, torch.ones_like(a))
    for reverse in (False, True):
        last, first = slice(T - tail, T), slice(0, tail)
        if reverse:
            last, first = first, last
        x = torch.zeros(T, C, dtype=wide)
        x[last] = torch.randn(tail, C, generator=g, dtype=torch.float64).to(wide)
        up = torch.zeros(T, C, dtype=wide)
        up[first] = 1
        h, (da, dx) = grads_of(lambda a_, x_: reference.serial(a_, x_, None, reverse), (a, x), up)
        got = fwd_bwd(a.to(dtype), x.to(dtype), up.to(dtype), reverse)
        for name, gv, wv in zip(("h", "dL/da", "dL/dx"), got, (h, da, dx), strict=True):
            what = f"{name}, reverse={reverse}"
            gv = gv.to(wide)
            assert torch.isfinite(gv).all(), f"{what}: {int((~torch.isfinite(gv)).sum())} not finite"
            zero = wv == 0
            assert zero.any() and torch.equal(gv[zero], wv[zero]), f"{what}: not 0 where the loop is"
            assert (gv - wv).abs().max() <= rtol * wv.abs().max(), what
