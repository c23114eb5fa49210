"""The benchmark's inputs: seeded inputs per (shape, decay distribution of plrnn.bench.decays,
dtype) that the steady-allocator child draws alike, checked against the float64 loop of
plrnn.bench.oracle before they are timed."""

from __future__ import annotations

import gc
import math
import zlib

import numpy as np
import torch

from ..decays import UNIFORM, make_decays
from ..oracle import truth64

# Outputs are checked over the whole length on this many channels, spread evenly over the row
# from its first to its last, so that every thread's share of a split row, every head of
# per-head decays and every sequence of a batch is read (the first 16 alone had checked one
# thread's share, one head, one sequence). fp32 kernels land ~1e-6 of the state's scale from
# the float64 loop; a wrong one lands O(1).
CHECK_CHANNELS = 64
CHECK_TOL = 1e-4
# 16-bit outputs are rounded to 8 (bfloat16) or 11 (float16) significant bits: 2**-8 of the
# state's scale at most, where a wrong kernel still lands O(1).
CHECK_TOL_16BIT = 1e-2


def checked_channels(width: int) -> torch.Tensor:
    """The channels a check reads in a row of `width` (a (T, *) tensor's flattened row):
    CHECK_CHANNELS spread evenly from the first to the last, all of a narrower row. Every
    benchmark's check (this one, plrnn.bench.gpu, the asv and pytest suites) reads these."""
    return torch.linspace(0, width - 1, min(width, CHECK_CHANNELS)).round().long().unique()


def checked_columns(t: torch.Tensor) -> np.ndarray:
    """The checked channels of a (T, *) tensor, all steps, as a float64 (complex128) host array;
    only those channels leave the tensor's device."""
    wide = torch.complex128 if t.is_complex() else torch.float64
    flat = t.detach().reshape(t.shape[0], -1)
    return flat[:, checked_channels(flat.shape[1]).to(flat.device)].to("cpu", wide).numpy()


class WrongResult(Exception):
    """A backend's output differs from the float64 loop: it is not timed."""


class Inputs:
    """Random inputs per (shape, distribution), created on first use, dropped between sections."""

    def __init__(self, seed: int):
        self.seed = seed
        self._cache: dict = {}

    def clear(self) -> None:
        self._cache.clear()
        gc.collect()

    def _generator(self, shape: tuple[int, ...], dist: str) -> torch.Generator:
        # crc32, not hash(): str hashes change per process, and the steady-allocator child must
        # time the same numbers as its parent.
        salt = zlib.crc32(repr((tuple(shape), dist)).encode())
        return torch.Generator().manual_seed(self.seed * 2**32 + salt)

    def get(self, shape: tuple[int, ...], grad: bool = False, dist: str = UNIFORM,
            dtype: str = "float32"):
        """(a, x) or, with grad=True, (a, x, g) with a and x leaves that require grad. Complex
        decays take the distribution as their modulus and a uniform phase; complex impulses are
        N(0, 1) in each part."""
        key = (shape, grad, dist, dtype)
        if key not in self._cache:
            gen = self._generator(shape, dist)
            a = make_decays(dist, shape, gen)
            x = torch.randn(shape, generator=gen)
            if dtype.startswith("complex"):
                a = torch.polar(a, 2 * math.pi * torch.rand(shape, generator=gen))
                x = torch.complex(x, torch.randn(shape, generator=gen))
            a, x = a.to(getattr(torch, dtype)), x.to(getattr(torch, dtype))
            if grad:
                g = torch.randn(shape, generator=gen)
                self._cache[key] = (a.requires_grad_(), x.requires_grad_(), g)
            else:
                self._cache[key] = (a, x)
        return self._cache[key]

    def shared(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Decays and impulses buffers that rows comparing values with each other refill with
        their own before each round (_shared_op)."""
        key = ("shared", shape)
        if key not in self._cache:
            self._cache[key] = (torch.empty(shape), torch.empty(shape))
        return self._cache[key]

    def out_buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A preallocated output whose pages are already faulted in: out= rows only write."""
        key = ("out", shape)
        if key not in self._cache:
            out = torch.empty(shape)
            out.copy_(self.get(shape)[1])  # touch every page (not zeros: see timing.py)
            self._cache[key] = out
        return self._cache[key]

    def truth(self, shape, dist: str, a: torch.Tensor, x: torch.Tensor) -> np.ndarray:
        """The float64 recurrence of (a, x) on the checked channels (checked_columns), cached."""
        key = ("truth", shape, dist, a.dtype)
        if key not in self._cache:
            self._cache[key] = truth64(checked_columns(a), checked_columns(x))
        return self._cache[key]


def check_output(h: torch.Tensor, truth: np.ndarray, label: str) -> None:
    """WrongResult unless h's checked channels match the float64 truth (tolerance scaled by the
    state's size: decays near 1 let the state grow; wider for 16-bit outputs)."""
    got = checked_columns(h)
    if got.shape != truth.shape:
        raise WrongResult(f"{label}: output shape {tuple(h.shape)} does not match the inputs")
    if not got.size:
        return
    err = float(np.abs(got - truth).max())
    scale = 1.0 + float(np.abs(truth).max())
    tol = CHECK_TOL_16BIT if h.element_size() == 2 else CHECK_TOL
    if not err <= tol * scale:
        raise WrongResult(f"{label}: differs from the float64 loop by {err:.3g} (state scale "
                          f"{scale:.3g}); not timed")
