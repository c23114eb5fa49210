"""Cases for the op's newer inputs: packed variable-length batches, broadcast decays (time-invariant,
shared over the batch, one per head), batch-first sequences, complex recurrences and 16-bit
storage, each beside what a user would otherwise run (or, for a storage dtype, beside torch.mul
in that dtype, the practical limit); and the CPU kernels under each decay distribution of
plrnn.bench.decays.

Inputs are drawn as models produce them: decays are forget gates, sigmoid(N(3, 1)) (most in
(0.9, 1)), complex decays have that modulus and a uniform phase (the LRU's diagonal), and the
lengths of a packed batch are log-normal (many short sequences, a few long ones). Every case is
checked against a float64 (complex128) loop before it is timed, forward+backward cases on both
gradients too, on the channels _support.check_cols reads: a few dozen spread over the whole row,
every sequence and head.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from ._support import (
    GRID,
    Case,
    _backend_status,
    _checkout_module,
    _combine,
    _generator,
    _torch_on,
    check_cols,
    oracle,
)

decays = _checkout_module("decays")

# The `tiny` grid (CI's check that the benchmark code runs) takes a sixteenth of the lengths.
_SHORT = 16 if GRID.name == "tiny" else 1
PACKED = {"sequences": 64, "median_length": 512 // _SHORT, "max_length": 4096 // _SHORT,
          "channels": 64}
BROADCAST = {"seq_len": 16384 // _SHORT, "batch": 8, "channels": 64}
# 64 MiB per float32 tensor: past glibc's largest mmap threshold (32 MiB), where a plain
# process's fresh copies fault their pages in, as a model's activations do, and so do the
# materialized layouts' copies here; with PLRNN_BENCH_ALLOCATOR=steady they reuse freed pages.
# `python -m plrnn.bench.recurrence` shows both (its section 7).
HEADS = {"seq_len": 16384 // _SHORT, "batch": 2, "heads": 8, "head_dim": 64}
COMPLEX = {"seq_len": 16384 // _SHORT, "channels": 64}
STORAGE = {"seq_len": 16384 // _SHORT, "channels": 256}
# (T, C): few channels over a long sequence (cpu_parallel splits time), and many channels.
DISTRIBUTION_SHAPES = {f"{T}x{C}": (T, C) for T, C in ((262144 // _SHORT, 4),
                                                      (65536 // _SHORT, 128))}
PACKED_LAYOUTS = ("packed", "padded", "padded_associative_scan")
DECAY_LAYOUTS = ("time_invariant", "materialized")
SHARED_LAYOUTS = ("batch_shared", "materialized")
HEAD_LAYOUTS = ("head_shared", "materialized")
SEQUENCE_LAYOUTS = ("batch_first", "time_major")
COMPLEX_METHODS = ("plrnn", "associative_scan")
STORAGE_DTYPES = ("float32", "bfloat16", "float16")
STORAGE_METHODS = ("plrnn", "torch.mul")
# Tolerance against the float64 loop on the rounded inputs: a few units of the dtype's last place
# at outputs of order 10 (a wrong kernel lands O(1) away). Absolute only: as a relative tolerance
# too it would pass bfloat16 outputs 30% off.
STORAGE_TOL = {"float32": 1e-4, "bfloat16": 0.3, "float16": 0.04}
# Gradients, as (rtol, atol of the largest gradient): each is rounded once to the dtype.
STORAGE_GRAD_TOL = {"float32": (1e-4, 1e-5), "bfloat16": (2e-2, 1e-3), "float16": (4e-3, 1e-4)}
PASSES = ("forward", "forward_backward")


def _needs(feature: str) -> None:
    """NotImplementedError where the plrnn of the commit under test predates `feature`."""
    import torch

    import plrnn

    params = inspect.signature(plrnn.linear_recurrence).parameters
    if feature == "cu_seqlens" and "cu_seqlens" not in params:
        raise NotImplementedError("this plrnn has no cu_seqlens")
    if feature == "complex" and not any(getattr(s, "complex", False) for s in plrnn.backends()):
        raise NotImplementedError("this plrnn takes no complex inputs")
    if feature == "broadcast":
        try:
            plrnn.linear_recurrence(torch.ones(2), torch.ones(3, 2))
        except ValueError:
            raise NotImplementedError("this plrnn takes no broadcast decays") from None


def _gates(torch, shape, gen):
    return torch.sigmoid(3.0 + torch.randn(shape, generator=gen))


def _associative_scan(torch):
    try:
        from torch._higher_order_ops.associative_scan import associative_scan
    except ImportError as err:
        raise NotImplementedError(f"torch has no associative_scan here: {err}") from None
    return lambda a, x: associative_scan(_combine, (a, x), dim=0, combine_mode="generic")[1]


def _check(got, want, label, tol=1e-4, rtol=None):
    if not np.allclose(got, want, rtol=tol if rtol is None else rtol, atol=tol):
        err = float(np.abs(got - want).max())
        raise AssertionError(f"{label}: differs from the float64 loop (max abs error {err:.3g})")


def _sum_to(grad, shape):
    """grad summed over the dims a broadcast input of `shape` was expanded along."""
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes).reshape(shape) if axes else grad


def _by_decay(t, decay_shape):
    """t (the impulses' shape, or decay_shape itself) as (T, decays per step, channels sharing
    one): the dims along which decay_shape (as many dims as t) is broadcast go last."""
    shared = [d for d in range(1, t.dim()) if decay_shape[d] == 1 < t.shape[d]]
    own = [d for d in range(1, t.dim()) if d not in shared]
    return t.permute(0, *own, *shared).reshape(t.shape[0], -1,
                                               math.prod(t.shape[d] for d in shared))


def _decay_cols(t, decay_shape):
    """check_cols's pick among the decays of a step, with every channel that reads each: t's
    (T, k * S) float64 (complex128) array, the S channels sharing a decay side by side."""
    t3 = _by_decay(t, decay_shape)
    T, _, S = t3.shape
    # The S sharing channels as rows: check_cols then picks among the decays alone.
    picked = check_cols(t3.permute(2, 0, 1).reshape(S * T, -1))
    return picked.reshape(S, T, -1).transpose(1, 2, 0).reshape(T, -1)


def _check_grads(got, want, label, rtol, atol):
    for name, g, w in zip(("decays", "impulses"), got, want):
        # Scaled to the largest gradient: a decay's gradient sums over the steps it reaches.
        if not np.allclose(g, w, rtol=rtol, atol=atol * max(1.0, float(np.abs(w).max()))):
            err = float(np.abs(g - w).max())
            raise AssertionError(f"{label}: gradient of the {name} differs from the float64 "
                                 f"loop (max abs error {err:.3g})")


def _timed(torch, fn, inputs, pass_, gen, label, info, grads64=None, tol=(1e-4, 1e-5)):
    """The case's Case. Forward+backward is checked first: grads64(a, x, g) gives the float64
    (d decays, d impulses) of the channels reading the checked decays (_decay_cols; a expanded
    to x's shape; default: the plain recurrence), compared within tol = (rtol, atol of the
    largest), the decays' gradient summed over the channels and steps sharing each decay."""
    if pass_ not in PASSES:
        raise ValueError(f"pass_ must be one of {PASSES}, got {pass_!r}")
    if pass_ == "forward":
        return Case(lambda: fn(*inputs), "cpu", label, inputs, info)
    a, x = inputs
    h = fn(a, x)  # the upstream gradient in h's layout, as elementwise ops downstream give it
    up = torch.empty_like(h).copy_(torch.randn(h.shape, generator=gen, dtype=x.dtype))
    oracle_grads = grads64 or oracle.recurrence_grads64
    # Decays broadcast over time take a time axis of 1, as the recurrence reads them.
    shape = (1,) * (x.dim() - a.dim()) + tuple(a.shape)
    da, dx = oracle_grads(*(_decay_cols(t, shape) for t in (a.expand(x.shape), x, up)))
    sharing = math.prod(x.shape[1:]) // math.prod(shape[1:])
    k = da.shape[1] // sharing
    want = (_sum_to(da.reshape(-1, k, sharing), (shape[0], k, 1)).reshape(shape[0], k), dx)
    a.requires_grad_()
    x.requires_grad_()

    def forward_backward():
        return torch.autograd.grad(fn(a, x), (a, x), up)

    da_got, dx_got = forward_backward()  # also the warm-up call
    got = (_decay_cols(da_got.reshape(shape), shape), _decay_cols(dx_got, shape))
    _check_grads(got, want, label, *tol)
    return Case(forward_backward, "cpu", label, inputs, info)


def packed_lengths() -> list[int]:
    rng = np.random.default_rng(7)  # the same batch in every process and commit
    p = PACKED
    raw = rng.lognormal(math.log(p["median_length"]), 1.0, p["sequences"])
    return [int(v) for v in np.clip(np.round(raw), 1, p["max_length"])]


def packed_case(layout: str, backend: str, pass_: str) -> Case:
    """N sequences of log-normal lengths: one packed call (cu_seqlens), or padded to the longest
    as (T_max, N, C) through plrnn or torch's associative_scan (the padding built beforehand)."""
    if layout not in PACKED_LAYOUTS:
        raise ValueError(f"layout must be one of {PACKED_LAYOUTS}, got {layout!r}")
    torch = _torch_on("cpu")
    _needs("cu_seqlens")
    import plrnn

    C, lengths = PACKED["channels"], packed_lengths()
    gen = _generator("packed", C, sum(lengths))
    a, x = _gates(torch, (sum(lengths), C), gen), torch.randn(sum(lengths), C, generator=gen)
    cu = torch.tensor([0, *np.cumsum(lengths)])
    scan = layout == "padded_associative_scan"  # torch's, whatever `backend` says
    info = {"suite": "op_inputs", "op": "packed", "layout": layout,
            "backend": "associative_scan" if scan else backend, "pass": pass_,
            "sequences": len(lengths), "rows": sum(lengths), "max_length": max(lengths),
            "channels": C}
    label = f"packed {layout} {backend} {pass_}"
    pieces = list(zip(cu[:-1].tolist(), cu[1:].tolist()))
    want = np.concatenate([oracle.truth64(check_cols(a[lo:hi]), check_cols(x[lo:hi]))
                           for lo, hi in pieces])
    if layout == "packed":
        _backend_status("cpu", backend)
        fn = lambda a_, x_: plrnn.linear_recurrence(a_, x_, cu_seqlens=cu, backend=backend)  # noqa: E731
        _check(check_cols(fn(a, x)), want, label)
        return _timed(torch, fn, (a, x), pass_, gen, label, info,
                      grads64=lambda *arrays: oracle.recurrence_grads64(*arrays, pieces))
    pad = torch.nn.utils.rnn.pad_sequence
    # Padding decays of 1 and impulses of 0 carry each sequence's last state to the end.
    a_pad = pad([a[lo:hi] for lo, hi in pieces], padding_value=1.0)
    x_pad = pad([x[lo:hi] for lo, hi in pieces])
    if scan:
        fn = _associative_scan(torch)
    else:
        _backend_status("cpu", backend)
        fn = lambda a_, x_: plrnn.linear_recurrence(a_, x_, backend=backend)  # noqa: E731
    # Every sequence: a kernel wrong only past the first one of a batch must not be timed.
    h = fn(a_pad, x_pad)
    _check(np.concatenate([check_cols(h[: hi - lo, n]) for n, (lo, hi) in enumerate(pieces)]),
           want, label)
    info["padded_rows"] = max(lengths) * len(lengths)
    return _timed(torch, fn, (a_pad, x_pad), pass_, gen, label, info)


def broadcast_case(decays: str, backend: str, pass_: str) -> Case:
    """(T, B, C) impulses with time-invariant (B, C) decays, passed as they are or materialized
    over time inside the timed call (expand + contiguous, what a scan without broadcasting needs;
    its backward then sums the decays' gradient over time)."""
    if decays not in DECAY_LAYOUTS:
        raise ValueError(f"decays must be one of {DECAY_LAYOUTS}, got {decays!r}")
    B, C = BROADCAST["batch"], BROADCAST["channels"]
    return _broadcast((B, C), decays == "materialized", backend, pass_,
                      f"decays {decays} {backend} {pass_}", {"op": "broadcast", "decays": decays})


def batch_shared_case(decays: str, backend: str, pass_: str) -> Case:
    """(T, B, C) impulses with (T, 1, C) decays, the same for every sequence of the batch, passed
    as they are or materialized over the batch inside the timed call."""
    if decays not in SHARED_LAYOUTS:
        raise ValueError(f"decays must be one of {SHARED_LAYOUTS}, got {decays!r}")
    T, C = BROADCAST["seq_len"], BROADCAST["channels"]
    return _broadcast((T, 1, C), decays == "materialized", backend, pass_,
                      f"batch-shared decays {decays} {backend} {pass_}",
                      {"op": "batch_shared", "decays": decays})


def head_shared_case(decays: str, backend: str, pass_: str) -> Case:
    """(T, B, H, P) impulses with one decay per head and step, (T, B, H, 1) (Mamba-2's), passed
    as they are or materialized over each head's P channels inside the timed call."""
    if decays not in HEAD_LAYOUTS:
        raise ValueError(f"decays must be one of {HEAD_LAYOUTS}, got {decays!r}")
    T, B, H, P = (HEADS[k] for k in ("seq_len", "batch", "heads", "head_dim"))
    return _broadcast((T, B, H, 1), decays == "materialized", backend, pass_,
                      f"head-shared decays {decays} {backend} {pass_}",
                      {"op": "head_shared", "decays": decays, "heads": H, "head_dim": P},
                      x_shape=(T, B, H, P))


def _broadcast(decay_shape, materialize, backend, pass_, label, info, x_shape=None) -> Case:
    torch = _torch_on("cpu")
    _needs("broadcast")
    _backend_status("cpu", backend)
    import plrnn

    T, B, C = BROADCAST["seq_len"], BROADCAST["batch"], BROADCAST["channels"]
    x_shape = x_shape or (T, B, C)
    T, B = x_shape[:2]
    gen = _generator(info["op"], *x_shape)
    a = _gates(torch, decay_shape, gen)
    x = torch.randn(x_shape, generator=gen)
    if materialize:
        fn = lambda a_, x_: plrnn.linear_recurrence(  # noqa: E731
            a_.expand(x_shape).contiguous(), x_, backend=backend)
    else:
        fn = lambda a_, x_: plrnn.linear_recurrence(a_, x_, backend=backend)  # noqa: E731
    # Channels of every sequence and head: broadcast decays are read at another offset for each.
    _check(check_cols(fn(a, x)), oracle.truth64(check_cols(a.expand(x_shape)), check_cols(x)),
           label)
    info = {"suite": "op_inputs", **info, "backend": backend, "pass": pass_, "seq_len": T,
            "batch": B, "channels": math.prod(x_shape[2:])}
    return _timed(torch, fn, (a, x), pass_, gen, label, info)


def batch_first_case(layout: str, backend: str, pass_: str) -> Case:
    """B sequences of (T, C) lying batch-first in memory, passed as the (T, B, C) view
    x.transpose(0, 1) (decays alike), or the same values time-major, the op's own layout."""
    if layout not in SEQUENCE_LAYOUTS:
        raise ValueError(f"layout must be one of {SEQUENCE_LAYOUTS}, got {layout!r}")
    torch = _torch_on("cpu")
    _backend_status("cpu", backend)
    import plrnn

    T, B, C = BROADCAST["seq_len"], BROADCAST["batch"], BROADCAST["channels"]
    gen = _generator("batch_first", T, B, C)
    a = _gates(torch, (B, T, C), gen).transpose(0, 1)
    x = torch.randn(B, T, C, generator=gen).transpose(0, 1)
    if layout == "time_major":
        a, x = a.contiguous(), x.contiguous()
    fn = lambda a_, x_: plrnn.linear_recurrence(a_, x_, backend=backend)  # noqa: E731
    label = f"{layout} sequences {backend} {pass_}"
    _check(check_cols(fn(a, x)), oracle.truth64(check_cols(a), check_cols(x)), label)
    info = {"suite": "op_inputs", "op": "batch_first", "layout": layout, "backend": backend,
            "pass": pass_, "seq_len": T, "batch": B, "channels": C}
    return _timed(torch, fn, (a, x), pass_, gen, label, info)


def complex_case(method: str, pass_: str) -> Case:
    """A complex64 diagonal recurrence (T, C): plrnn's auto choice, or torch's associative_scan."""
    if method not in COMPLEX_METHODS:
        raise ValueError(f"method must be one of {COMPLEX_METHODS}, got {method!r}")
    torch = _torch_on("cpu")
    _needs("complex")
    import plrnn

    T, C = COMPLEX["seq_len"], COMPLEX["channels"]
    gen = _generator("complex", T, C)
    a = torch.polar(_gates(torch, (T, C), gen), 2 * math.pi * torch.rand(T, C, generator=gen))
    x = torch.randn(T, C, generator=gen, dtype=torch.complex64)
    if method == "plrnn":
        fn = lambda a_, x_: plrnn.linear_recurrence(a_, x_)  # noqa: E731
    else:
        fn = _associative_scan(torch)
    label = f"complex {method} {pass_}"
    _check(check_cols(fn(a, x)), oracle.truth64(check_cols(a), check_cols(x)), label)
    info = {"suite": "op_inputs", "op": "complex", "method": method, "pass": pass_,
            "seq_len": T, "channels": C}
    return _timed(torch, fn, (a, x), pass_, gen, label, info)


def storage_case(dtype: str, method: str, pass_: str) -> Case:
    """(T, C) inputs stored in `dtype`: plrnn's auto choice, or torch.mul (y = a * x, the same
    bytes moved, and its backward) in that dtype."""
    if dtype not in STORAGE_DTYPES or method not in STORAGE_METHODS:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES} and method one of "
                         f"{STORAGE_METHODS}, got {dtype!r}, {method!r}")
    torch = _torch_on("cpu")
    import plrnn

    T, C = STORAGE["seq_len"], STORAGE["channels"]
    gen = _generator("storage", T, C)
    kind = getattr(torch, dtype)
    a = _gates(torch, (T, C), gen).to(kind)
    x = torch.randn(T, C, generator=gen).to(kind)
    if method == "plrnn":
        fn = lambda a_, x_: plrnn.linear_recurrence(a_, x_)  # noqa: E731
        want = oracle.truth64(check_cols(a), check_cols(x))
    else:
        fn = torch.mul
        want = check_cols(a) * check_cols(x)
    label = f"{dtype} storage {method} {pass_}"
    _check(check_cols(fn(a, x)), want, label, STORAGE_TOL[dtype], rtol=0)
    info = {"suite": "op_inputs", "op": "storage", "dtype": dtype, "method": method,
            "pass": pass_, "seq_len": T, "channels": C}
    return _timed(torch, fn, (a, x), pass_, gen, label, info,
                  grads64=None if method == "plrnn" else lambda a_, x_, g: (g * x_, g * a_),
                  tol=STORAGE_GRAD_TOL[dtype])


def decay_distribution_case(distribution: str, shape: str, backend: str, pass_: str) -> Case:
    """(T, C) fp32 inputs with decays from one of plrnn.bench.decays' distributions (impulses
    N(0, 1)): a kernel that slows down under gates near 1 (products of decays passing through
    the subnormal range) shows here, where the other cases draw one distribution."""
    if distribution not in decays.DISTRIBUTIONS or shape not in DISTRIBUTION_SHAPES:
        raise ValueError(f"distribution must be one of {decays.DISTRIBUTIONS} and shape one of "
                         f"{tuple(DISTRIBUTION_SHAPES)}, got {distribution!r}, {shape!r}")
    torch = _torch_on("cpu")
    _backend_status("cpu", backend)
    import plrnn

    T, C = DISTRIBUTION_SHAPES[shape]
    gen = _generator("decay_distribution", distribution, T, C)
    a = decays.make_decays(distribution, (T, C), gen)
    x = torch.randn(T, C, generator=gen)
    fn = lambda a_, x_: plrnn.linear_recurrence(a_, x_, backend=backend)  # noqa: E731
    label = f"decays {distribution} {shape} {backend} {pass_}"
    _check(check_cols(fn(a, x)), oracle.truth64(check_cols(a), check_cols(x)), label)
    info = {"suite": "op_inputs", "op": "decay_distribution", "decays": distribution,
            "backend": backend, "pass": pass_, "seq_len": T, "channels": C}
    return _timed(torch, fn, (a, x), pass_, gen, label, info)
