"""Benchmark of plrnn.linear_recurrence: what users pay, every CPU backend side by side, one run.

    python -m plrnn.bench.recurrence                     # default run (about 5 min on 2 cores)
    python -m plrnn.bench.recurrence --quick             # smaller shapes, shorter timing (~1.5 min)
    python -m plrnn.bench.recurrence --smoke             # tiny shapes: the whole pipeline, seconds
    python -m plrnn.bench.recurrence --all-distributions # the Table-1 grid under all five decays
    python -m plrnn.bench.recurrence --sweep-auto        # only the channels x T sweep behind `auto`

What users pay: every method is called in a plain loop with a fresh output per call (rows marked
`out=` write into a preallocated buffer instead), and every measurement is taken twice:
* allocator `default`: this process as it starts, glibc malloc untouched. A large fresh output is
  then mmap'd from the OS and page-faulted on every call, which can cost several times the
  kernel itself: that is what a user's loop pays. The CPU kernels' own outputs of 1 MiB and more
  come from their cache of freed outputs (csrc/cpu_output_cache.cpp), so theirs do not fault
  after the first call where torch's ops' may.
* allocator `steady`: a child process (`python -m plrnn.bench.recurrence ... --allocator steady`)
  that first calls timing.reuse_freed_pages() (glibc mallopt), so freed pages are reused and a
  fresh output costs no page faults: the kernels' own speed. mallopt cannot be undone in-process,
  hence the child. `--allocator default` or `--allocator steady` runs one of the two alone.
Tables show the two side by side; the CSV's `allocator` column says which one each row used, and
its `faults_per_call` whether a row's calls paid page faults (sections 1 and 5 show it).

Decays (the gates) come from one of DISTRIBUTIONS: U[0,1) (many decays near 0), U[0.9,1), and
sigmoid(N(mu, 1)) for mu = 0, 2, 5 (forget gates; means 0.50, 0.84, 0.99); impulses and grad_h are
N(0, 1). Each input comes from a generator seeded by (--seed, shape, distribution), and every
backend's output is checked against a float64 loop once before it is timed (a wrong kernel is an
`error` row, never a time).

Sections (CPU, fp32 but for the last):
1. Bandwidth, forward at (T, C) = (65536, 128), (65536, 1024), (4096, 16384) on 1 and 2 torch
   threads: cpu_serial with a fresh output and with out=, against the practical limit torch.mul
   (the same 12 bytes/element, fresh and out=) and the physical limit dst.copy_(src).
2. Latency-bound regime: 4 and 32 channels, long T, forward and forward+backward; auto's
   forward against torch.mul (fresh outputs), which a dependency chain, not memory, bounds here.
3. The paper's Table-1 grid (batch 1, m channels, T steps), forward, under U[0,1) and
   sigmoid(N(2,1)) (all five with --all-distributions); auto against the best backend.
4. Decay distributions: every backend, forward at (262144, 4) and (65536, 128) under each
   distribution, relative to the same backend and shape under U[0,1).
5. Forward+backward at T=65536, 128 channels against the practical limit y = a * x with its
   backward (32 bytes/element), torch's associative_scan and the Python loop.
6. Dtypes: auto's forward in each of DTYPES at (65536, 4) and (65536, 128) against torch.mul on
   the same dtype (no goal).
Each section ends with goal lines computed from this run's medians, per allocator; a goal that
is not met says so. The Goals section at the end repeats them all.

Writes into --out (default results/<machine_name()>/): recurrence_bench.csv (every measurement of
both allocators, with the raw blocked_autorange block times), recurrence_bench.md (the tables
under a header naming machine, torch, commit, allocators, distributions and config) and
recurrence_bench.json (machine_info, config, goals). With --sweep-auto: auto_sweep.{csv,md,json}.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.benchmark import Measurement
from tqdm.auto import tqdm

import plrnn
from plrnn.recurrence import sources
from plrnn.recurrence.cpu import thread_round_trip_ns

from .bandwidth import BYTES_PER_ELEMENT, COPY_BYTES_PER_ELEMENT, copy_measurement
from .machine import machine_info, machine_name, steal_seconds
from .tables import fmt_ms, fmt_x, markdown_table
from .timing import (
    BLOCK_CALLS_MIN,
    BLOCK_S,
    calls_per_block,
    faults_per_call,
    measure,
    paired_ratio,
    per_call_times,
    reuse_freed_pages,
    rotated,
    single_time,
    take_turns,
)

# plrnn.recurrence re-exports a *function* named `backends`, which shadows the module attribute.
backend_registry = importlib.import_module("plrnn.recurrence.registry")

KERNELS = ("cpu_serial", "cpu_parallel")
COMPARED = ("cpu_serial", "cpu_parallel", "torch", "auto")
FWD, FWD_BWD = "forward", "forward+backward"
MUL = "torch.mul"  # the practical limit: the same bytes as the scan, no dependency chain

ALLOCATORS = ("default", "steady")
UNIFORM = "U[0,1)"
SIGMOID_MEANS = {"sigmoid(N(0,1))": 0.0, "sigmoid(N(2,1))": 2.0, "sigmoid(N(5,1))": 5.0}
DISTRIBUTIONS = (UNIFORM, "U[0.9,1)", *SIGMOID_MEANS)
GRID_DISTRIBUTIONS = (UNIFORM, "sigmoid(N(2,1))")

SEC_BANDWIDTH = "1 bandwidth"
SEC_LATENCY = "2 latency"
SEC_GRID = "3 table-1 grid"
SEC_DIST = "4 decay distributions"
SEC_FWD_BWD = "5 forward+backward"
SEC_DTYPES = "6 dtypes"
SEC_SWEEP = "auto sweep"

GOAL_BANDWIDTH_VS_MUL = 0.80
GOAL_LATENCY_SPEEDUP = 2.0
GOAL_NARROW_VS_MUL = 0.40  # few channels: a dependency chain bounds the scan, not memory
GOAL_PARALLEL_FLOOR = 0.80  # cpu_parallel no slower than this fraction of cpu_serial, anywhere
GOAL_AUTO_RATIO = 1.10
GOAL_AUTO_OVERHEAD = 1.05  # median over the grid of auto / the backend it runs
GOAL_DIST_SLOWDOWN = 1.20
GOAL_FWD_BWD_VS_MUL = 0.80
GOAL_VS_ASSOC = 8.0
SWEEP_TIE = 0.05  # sweep cells where the kernels are within 5% of each other are ties

# Outputs are checked on this many channels over the whole length (the recurrence is independent
# per channel, so a subset is an exact check). fp32 kernels land ~1e-6 of the state's scale from
# the float64 loop; a wrong one lands O(1).
CHECK_CHANNELS = 16
CHECK_TOL = 1e-4
# 16-bit outputs are rounded to 8 (bfloat16) or 11 (float16) significant bits: 2**-8 of the
# state's scale at most, where a wrong kernel still lands O(1).
CHECK_TOL_16BIT = 1e-2

# Every dtype the op takes on CPU, each against torch.mul on the same dtype: the kernels load
# 16-bit values into float registers and round each stored one back, and complex products mix
# real and imaginary lanes, so each dtype has a speed of its own.
DTYPES = ("float32", "float64", "bfloat16", "float16", "complex64")


# --------------------------------------------------------------------------------------- config
SIZES = {
    "full": {
        "min_run_time": 0.5,
        "bandwidth_shapes": ((65536, 128), (65536, 1024), (4096, 16384)),
        "latency_T": (65536, 262144),
        "grid_m": (4, 32, 128),
        "grid_T": (16, 256, 4096, 65536),
        "dist_shapes": ((262144, 4), (65536, 128)),
        "fb_T": 65536,
        "dtype_shapes": ((65536, 4), (65536, 128)),
        "sweep_channels": (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
        "sweep_T": (16, 64, 256, 1024, 4096, 16384, 65536),
    },
    "quick": {
        "min_run_time": 0.1,
        "bandwidth_shapes": ((16384, 128), (16384, 1024), (1024, 16384)),
        "latency_T": (16384, 65536),
        "grid_m": (4, 32, 128),
        "grid_T": (16, 256, 4096),
        "dist_shapes": ((65536, 4), (16384, 128)),
        "fb_T": 16384,
        "dtype_shapes": ((16384, 4), (16384, 128)),
        "sweep_channels": (1, 4, 16, 64, 256, 1024),
        "sweep_T": (16, 256, 4096, 65536),
    },
    # Tiny shapes and timing: runs every code path in seconds (the tests use it); no numbers.
    "smoke": {
        "min_run_time": 0.002,
        "bandwidth_shapes": ((256, 16), (256, 64), (16, 512)),
        "latency_T": (256, 1024),
        "grid_m": (4, 32),
        "grid_T": (16, 256),
        "dist_shapes": ((1024, 4), (256, 32)),
        "fb_T": 256,
        "dtype_shapes": ((256, 4), (64, 32)),
        "sweep_channels": (1, 32),
        "sweep_T": (16, 256),
    },
}

@dataclass
class Config:
    mode: str  # "full" | "quick" | "smoke"
    min_run_time: float
    slow_min_run_time: float  # for methods that take about a second per call
    threads: int
    seed: int
    bandwidth_shapes: tuple[tuple[int, int], ...]
    bandwidth_threads: tuple[int, ...]
    latency_channels: tuple[int, ...]
    latency_T: tuple[int, ...]
    grid_m: tuple[int, ...]
    grid_T: tuple[int, ...]
    grid_distributions: tuple[str, ...]
    dist_shapes: tuple[tuple[int, int], ...]
    distributions: tuple[str, ...]
    fb_T: int
    fb_channels: int
    dtype_shapes: tuple[tuple[int, int], ...]
    dtypes: tuple[str, ...]
    sweep_channels: tuple[int, ...]
    sweep_T: tuple[int, ...]
    sweep_min_run_time: float
    allocator: str  # "default" | "steady": how this process allocates (its rows' `allocator`)
    allocator_detail: str
    allocators: tuple[str, ...]  # the allocator columns of the tables
    sections: tuple[str, ...]
    device: str = "cpu"
    dtype: str = "float32"  # of sections 1-5; section 6 times each of `dtypes`
    inputs: str = ("decays ~ the row's distribution, impulses ~ N(0,1), grad_h ~ N(0,1); fp32 "
                   "(section 6: each dtype), contiguous, time-major")


def make_config(args: argparse.Namespace) -> Config:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[mode]
    mrt = args.min_run_time if args.min_run_time is not None else size["min_run_time"]
    # mallopt first, before anything large is allocated; the default state is left untouched.
    steady = args.allocator == "steady"
    detail = reuse_freed_pages() if steady else "default: glibc malloc as the process starts"
    return Config(
        mode=mode,
        min_run_time=mrt,
        slow_min_run_time=min(mrt, 0.2),
        threads=torch.get_num_threads(),
        seed=args.seed,
        bandwidth_shapes=size["bandwidth_shapes"],
        bandwidth_threads=(1, 2),
        latency_channels=(4, 32),
        latency_T=size["latency_T"],
        grid_m=size["grid_m"],
        grid_T=size["grid_T"],
        grid_distributions=DISTRIBUTIONS if args.all_distributions else GRID_DISTRIBUTIONS,
        dist_shapes=size["dist_shapes"],
        distributions=DISTRIBUTIONS,
        fb_T=size["fb_T"],
        fb_channels=128,
        dtype_shapes=size["dtype_shapes"],
        dtypes=DTYPES,
        sweep_channels=size["sweep_channels"],
        sweep_T=size["sweep_T"],
        sweep_min_run_time=min(mrt, 0.2),
        allocator="steady" if steady else "default",
        allocator_detail=detail,
        allocators=ALLOCATORS if args.allocator == "both" else (args.allocator,),
        sections=tuple(args.sections),
    )


# --------------------------------------------------------------------------------------- inputs
def make_decays(dist: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Decays from one of DISTRIBUTIONS."""
    if dist == UNIFORM:
        return torch.rand(shape, generator=gen)
    if dist == "U[0.9,1)":
        # 0.9 + 0.1 * u rounds to 1.0 for u near 1 in fp32; clamp to keep the interval half-open.
        return (0.9 + 0.1 * torch.rand(shape, generator=gen)).clamp_(max=1 - 2**-24)
    if dist in SIGMOID_MEANS:
        return torch.randn(shape, generator=gen).add_(SIGMOID_MEANS[dist]).sigmoid_()
    raise ValueError(f"decays distribution must be one of {DISTRIBUTIONS}, got {dist!r}")


def truth64(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """h[t] = a[t] * h[t-1] + x[t] from h[-1] = 0 on (T, k) float64 arrays, one step at a time:
    independent of every backend, so it can judge them all."""
    h = np.empty_like(x)
    prev = np.zeros_like(x[0])
    for t in range(x.shape[0]):
        prev = a[t] * prev + x[t]
        h[t] = prev
    return h


def _columns(t: torch.Tensor) -> np.ndarray:
    wide = torch.complex128 if t.is_complex() else torch.float64
    return t.detach().reshape(t.shape[0], -1)[:, :CHECK_CHANNELS].to(wide).numpy()


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
        """The float64 recurrence of (a, x) on the first CHECK_CHANNELS channels, cached."""
        key = ("truth", shape, dist, a.dtype)
        if key not in self._cache:
            self._cache[key] = truth64(_columns(a), _columns(x))
        return self._cache[key]


def check_output(h: torch.Tensor, truth: np.ndarray, label: str) -> None:
    """WrongResult unless h's first channels match the float64 truth (tolerance scaled by the
    state's size: decays near 1 let the state grow; wider for 16-bit outputs)."""
    got = _columns(h)
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


# ---------------------------------------------------------------------------------------- tasks
class Unavailable(Exception):
    """This measurement cannot run here; the message says why."""


@dataclass
class Task:
    section: str
    method: str  # backend name or probe
    pass_: str
    shape: tuple[int, ...]
    # -> (fn, inputs) or (fn, inputs, load): fn timed, inputs checked not all zero, load (if
    # any) run before each round that times fn.
    build: Callable[[], tuple] | None
    how: str = "autorange"  # "autorange" | "single" | "copy"
    min_run_time: float | None = None
    note: str = ""
    decays: str = UNIFORM
    output: str = "fresh"  # "fresh" (allocated by each call) | "out=" | "preallocated"
    threads: int | None = None  # None: the process's torch thread count
    dtype: str = "float32"
    # Timed in every round even where a call outlasts the round's share (SLOW_STRIDE): for rows
    # that a goal compares with each other, which a median of five calls left to chance.
    every_round: bool = False

    @property
    def T(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return math.prod(self.shape[1:])


@dataclass
class Env:
    cfg: Config
    inputs: Inputs
    status: dict  # backend name -> BackendStatus

    def require(self, backend: str) -> None:
        if backend == "auto" or backend not in self.status:
            return
        st = self.status[backend]
        if not st.available:
            raise Unavailable(st.reason)

    def check(self, h, shape, dist: str, a, x, label: str) -> None:
        check_output(h, self.inputs.truth(shape, dist, a, x), f"{label} {shape} {dist}")


def _op(env: Env, backend: str, shape, pass_: str, dist: str = UNIFORM, dtype: str = "float32"):
    def build():
        env.require(backend)
        if pass_ == FWD:
            a, x = env.inputs.get(shape, dist=dist, dtype=dtype)

            def fwd():
                return plrnn.linear_recurrence(a, x, backend=backend)

            env.check(fwd(), shape, dist, a, x, backend)  # also the first, cold call
            return fwd, (a, x)
        a, x, g = env.inputs.get(shape, grad=True, dist=dist)
        with torch.no_grad():
            env.check(plrnn.linear_recurrence(a, x, backend=backend), shape, dist, a, x, backend)

        def fwd_bwd():
            h = plrnn.linear_recurrence(a, x, backend=backend)
            torch.autograd.grad(h, (a, x), g)

        return fwd_bwd, (a, x, g)

    return build


def _shared_op(env: Env, backend: str, shape, dist: str):
    """The forward of `backend` on the shape's shared buffers, which each round first fills
    with this distribution's inputs: rows then differ by their values only. With a buffer pair
    of their own, they also differed by where their buffers lay, for as long as they lived: on
    the Zen 4 VM the same values in five buffer pairs ran 3.2-3.9 ms (cpu_serial, (65536, 128), 2
    threads), and a benchmark run put one loop 1.0-1.6x apart across its five distributions,
    where one pair refilled with each of them measured 0.88-1.11x."""

    def build():
        env.require(backend)
        a, x = env.inputs.get(shape, dist=dist)
        shared_a, shared_x = env.inputs.shared(shape)

        def load():
            shared_a.copy_(a)
            shared_x.copy_(x)

        def fwd():
            return plrnn.linear_recurrence(shared_a, shared_x, backend=backend)

        load()
        env.check(fwd(), shape, dist, a, x, backend)
        return fwd, (shared_a, shared_x), load

    return build


def _serial_bw(env: Env, shape, preallocated: bool):
    """cpu_serial as users call it: a fresh h per call, or into a preallocated out=."""

    def build():
        env.require("cpu_serial")
        a, x = env.inputs.get(shape)
        out = env.inputs.out_buffer(shape) if preallocated else None

        def fn():
            return plrnn.linear_recurrence(a, x, backend="cpu_serial", out=out)

        env.check(fn(), shape, UNIFORM, a, x, "cpu_serial")
        return fn, (a, x)

    return build


def _mul_bw(env: Env, shape, preallocated: bool, dtype: str = "float32"):
    """torch.mul(a, x): reads a and x and writes one output, 12 B/element in fp32 like the
    scan."""

    def build():
        a, x = env.inputs.get(shape, dtype=dtype)
        out = env.inputs.out_buffer(shape) if preallocated else None

        def fn():
            return torch.mul(a, x) if out is None else torch.mul(a, x, out=out)

        return fn, (a, x)

    return build


# ------------------------------------------------------------------------------------- sections
def bandwidth_tasks(env: Env) -> list[Task]:
    sec, tasks = SEC_BANDWIDTH, []
    for shape in env.cfg.bandwidth_shapes:
        for n in env.cfg.bandwidth_threads:
            tasks += [
                Task(sec, "copy_", "copy", shape, None, how="copy", output="preallocated",
                     threads=n, note="dst.copy_(src), preallocated: the physical limit"),
                Task(sec, MUL, FWD, shape, _mul_bw(env, shape, False), threads=n,
                     note="torch.mul(a, x)"),
                Task(sec, "cpu_serial", FWD, shape, _serial_bw(env, shape, False), threads=n,
                     note="linear_recurrence(a, x, backend='cpu_serial')"),
                Task(sec, MUL, FWD, shape, _mul_bw(env, shape, True), output="out=", threads=n,
                     note="torch.mul(a, x, out=o)"),
                Task(sec, "cpu_serial", FWD, shape, _serial_bw(env, shape, True), output="out=",
                     threads=n, note="linear_recurrence(a, x, backend='cpu_serial', out=o)"),
            ]
    return tasks


def latency_tasks(env: Env) -> list[Task]:
    tasks = []
    for C in env.cfg.latency_channels:
        for T in env.cfg.latency_T:
            for p in (FWD, FWD_BWD):
                tasks += [Task(SEC_LATENCY, b, p, (T, C), _op(env, b, (T, C), p)) for b in COMPARED]
                if p == FWD:
                    tasks.append(Task(SEC_LATENCY, MUL, p, (T, C), _mul_bw(env, (T, C), False),
                                      note="torch.mul(a, x): the practical limit"))
    return tasks


def grid_tasks(env: Env) -> list[Task]:
    c = env.cfg
    return [
        Task(SEC_GRID, b, FWD, (T, 1, m), _op(env, b, (T, 1, m), FWD, dist), decays=dist)
        for m in c.grid_m for T in c.grid_T for dist in c.grid_distributions for b in COMPARED
    ]


def distribution_tasks(env: Env) -> list[Task]:
    # One cell per shape: every distribution and backend timed in interleaved rounds, on one
    # pair of buffers (_shared_op), so that neither a slow spell of a shared machine nor where a
    # row's buffers lie reads as a distribution's cost. The torch backend's calls (100-170 ms at
    # (65536, 128)) are timed in every round too: in one round of three, its five calls per
    # distribution came out 1.22x apart under identical work (Zen 4 VM), where a standalone loop
    # of 12 calls each, alternating, measured 0.97-1.00x.
    c = env.cfg
    return [
        Task(SEC_DIST, b, FWD, shape, _shared_op(env, b, shape, dist), decays=dist,
             min_run_time=c.slow_min_run_time if b == "torch" else None, every_round=True)
        for shape in c.dist_shapes for dist in c.distributions for b in COMPARED
    ]


def dtype_tasks(env: Env) -> list[Task]:
    return [
        task for shape in env.cfg.dtype_shapes for dtype in env.cfg.dtypes for task in (
            Task(SEC_DTYPES, MUL, FWD, shape, _mul_bw(env, shape, False, dtype), dtype=dtype,
                 note=f"torch.mul(a, x) on {dtype}: the practical limit"),
            Task(SEC_DTYPES, "auto", FWD, shape, _op(env, "auto", shape, FWD, dtype=dtype),
                 dtype=dtype))
    ]


def _combine(left, right):
    return left[0] * right[0], right[0] * left[1] + right[1]


def _assoc_build(env: Env, shape):
    def build():
        try:
            from torch._higher_order_ops.associative_scan import associative_scan
        except ImportError as err:
            raise Unavailable(f"torch._higher_order_ops.associative_scan: {err}") from None
        a, x, g = env.inputs.get(shape, grad=True)

        def scan(a, x):
            return associative_scan(_combine, (a, x), dim=0, combine_mode="generic")[1]

        with torch.no_grad():
            env.check(scan(a, x), shape, UNIFORM, a, x, "associative_scan")

        def fn():
            torch.autograd.grad(scan(a, x), (a, x), g)

        return fn, (a, x, g)

    return build


def _mul_fwd_bwd(env: Env, shape):
    # autograd.grad like the scan rows: y.backward(g) would accumulate into .grad from the second
    # call on, reading and writing two more tensors than the 32 B/element of one pass.
    def build():
        a, x, g = env.inputs.get(shape, grad=True)

        def fn():
            torch.autograd.grad(a * x, (a, x), g)

        return fn, (a, x, g)

    return build


def _reference(env: Env, shape, pass_: str):
    def build():
        if pass_ == FWD:
            a, x = env.inputs.get(shape)
            return (lambda: plrnn.linear_recurrence(a, x, backend="reference")), (a, x)
        a, x, g = env.inputs.get(shape, grad=True)

        def fn():
            torch.autograd.grad(plrnn.linear_recurrence(a, x, backend="reference"), (a, x), g)

        return fn, (a, x, g)

    return build


def fwd_bwd_tasks(env: Env) -> list[Task]:
    # Every method in every round: with the default allocator each call's four 32 MiB outputs
    # are page-faulted or not by glibc's state at that moment, so one method's rounds are
    # bimodal (8 or about 40 ms at (65536, 128), Zen 4 VM), and five rounds (one in three, for
    # methods slower than a round's share) put auto's median at 24.5 ms and cpu_serial's at 8.6
    # ms for the same kernel in one run.
    c = env.cfg
    shape = (c.fb_T, c.fb_channels)
    sec, slow = SEC_FWD_BWD, c.slow_min_run_time
    tasks = [Task(sec, b, FWD_BWD, shape, _op(env, b, shape, FWD_BWD),
                  min_run_time=slow if b == "torch" else None,  # torch: ~1/3 s per call
                  every_round=True)
             for b in COMPARED]
    return tasks + [
        Task(sec, MUL, FWD_BWD, shape, _mul_fwd_bwd(env, shape), every_round=True,
             note="practical limit: y = a * x, then autograd.grad(y, (a, x), g); 32 B/elem"),
        Task(sec, "associative_scan", FWD_BWD, shape, _assoc_build(env, shape), min_run_time=slow,
             every_round=True,
             note='torch._higher_order_ops associative_scan, combine_mode="generic", eager'),
        Task(sec, "reference (Python loop)", FWD, shape, _reference(env, shape, FWD),
             how="single", note="forward only; one cold run"),
        Task(sec, "reference (Python loop)", FWD_BWD, shape, _reference(env, shape, FWD_BWD),
             how="single", note="autograd through the loop; one cold run"),
    ]


def sweep_tasks(env: Env) -> list[Task]:
    c = env.cfg
    return [
        Task(SEC_SWEEP, b, FWD, (T, C), _op(env, b, (T, C), FWD),
             min_run_time=c.sweep_min_run_time)
        for C in c.sweep_channels for T in c.sweep_T for b in KERNELS
    ]


# ----------------------------------------------------------------------------------------- run
def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# The methods of one cell are timed in turn, this many times each. Many short rounds, not a few
# long ones: on a shared VM the same kernel ran 1.5x slower for seconds at a time, and with 5
# rounds of 0.1 s over 20 methods, identical work came out up to 1.6x apart between cells
# (Zen 4 VM, the distributions section at (65536, 128)).
ROUNDS = 15
# Methods whose calls outlast a round's share of their time (the torch backend's Python loop,
# hundreds of ms a call) are timed in every SLOW_STRIDE-th round only, with that many rounds'
# time: each round costs blocked_autorange a warm-up call, which would otherwise triple them.
SLOW_STRIDE = 3
# After its first measurement, a method with short calls goes on in blocks (timing.BLOCK_S), the
# methods of a cell taking turns block by block until each has had its round's time. Methods
# whose rows refill shared buffers before being timed (`load`) keep one measurement per round.


def _cell_key(task: Task) -> tuple | None:
    """Tasks with equal keys, consecutive, form a cell; None: the task stands alone."""
    if task.how != "autorange":
        return None
    return (task.section, task.shape, task.pass_, task.threads, task.dtype)


def _cells(tasks: list[Task]) -> list[list[Task]]:
    """Consecutive tasks timing the same shape, pass and thread count: they are measured
    interleaved, so a slow spell of a shared machine hits every method of a cell alike."""
    cells: list[list[Task]] = []
    for task in tasks:
        key = _cell_key(task)
        if cells and key is not None and key == _cell_key(cells[-1][0]):
            cells[-1].append(task)
        else:
            cells.append([task])
    return cells


@contextlib.contextmanager
def _num_threads(n: int):
    """torch's intra-op thread count set to n for a block, and restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _new_record(env: Env, task: Task, threads: int) -> dict:
    rec = {
        "section": task.section, "method": task.method, "pass": task.pass_,
        "allocator": env.cfg.allocator, "decays": task.decays, "output": task.output,
        "dtype": task.dtype,
        "threads": threads, "T": task.T, "channels": task.channels,
        "shape": "x".join(map(str, task.shape)), "numel": math.prod(task.shape),
        "note": task.note, "auto_choice": None, "status": "ok", "reason": "",
        "timing": task.how, "median_s": math.nan, "mean_s": math.nan, "iqr_s": math.nan,
        "blocks": 0, "number_per_run": 0, "block_times_s": "", "round_medians_s": "",
        "round_steal_s": "",
        "round_trip_ns": "", "faults_per_call": math.nan, "round_faults": "",
    }
    if task.method == "auto":  # under the cell's thread count: auto reads it
        rec["auto_choice"] = backend_registry.choose_auto(
            torch.device(env.cfg.device), task.T, task.channels)
    return rec


def _failed(rec: dict, err: BaseException) -> None:
    if isinstance(err, Unavailable):
        rec.update(status="unavailable", reason=str(err))
    else:
        rec.update(status="error", reason=_first_line(err))


def _min_run_time(env: Env, task: Task) -> float:
    return task.min_run_time if task.min_run_time is not None else env.cfg.min_run_time


def _prepare(env: Env, task: Task, rec: dict, threads: int):
    """Times the one-off rows (copy probe, single cold runs) now; returns (fn, inputs, load)
    for an autorange row, or None."""
    if task.how == "copy":
        m = copy_measurement(math.prod(task.shape), env.cfg.device, _min_run_time(env, task),
                             num_threads=threads)
        rec.update(_from_per_call(per_call_times(m), m.number_per_run))
        return None
    fn, inputs, *load = task.build()
    if task.how == "single":
        t = single_time(fn, inputs=inputs)
        rec.update(median_s=t, mean_s=t, blocks=1, number_per_run=1, block_times_s=repr(t))
        return None
    return fn, inputs, load[0] if load else None


def _run_cell(env: Env, cell: list[Task], threads: int, index: int = 0) -> list[dict]:
    recs = [{**_new_record(env, task, threads), "cell": index} for task in cell]
    built = {}
    for i, (task, rec) in enumerate(zip(cell, recs, strict=True)):
        try:
            prepared = _prepare(env, task, rec, threads)
            if prepared is not None:
                built[i] = prepared
        except Exception as err:  # noqa: BLE001 - one failing row must not lose the others
            _failed(rec, err)
    first: dict[int, Measurement] = {}  # each method's first measurement (blocked_autorange)
    per_call: dict[int, list[float]] = {i: [] for i in built}
    # each method's median per call in each round, nan where it sat out: ratios between the
    # methods of a cell are taken round by round (paired_ratio)
    by_round: dict[int, list[float]] = {i: [math.nan] * ROUNDS for i in built}
    # Per round, what the host did to the VM: the seconds it took from the VM's CPUs (steal), and
    # the slower of two cache-line round trips between the pool's first two threads, before and
    # after the round (nan on one thread). 2-thread rows that switch between two speeds for
    # seconds (cpu_parallel and torch at (65536, 4), Zen 4 VM) followed the round trip, 60 or
    # 330 ns, with no steal at all.
    steal = [math.nan] * ROUNDS
    # Per round, the page faults of one more call right after the method's timed calls: the
    # allocator's state then is the one its timed calls met (a probe after all rounds once showed
    # every call of a row faulting where most of its timed calls had not).
    faults: dict[int, list[float]] = {i: [math.nan] * ROUNDS for i in built}
    # one probe before the first round and one after each: round r lies between probes r, r + 1
    boundary_trips = [thread_round_trip_ns()] if built else []
    calls: dict[int, int] = {}  # calls per block of the methods that take turns in blocks
    for r in range(ROUNDS if built else 0):
        steal_before = steal_seconds()
        due = {}  # seconds each method still has in this round, in this round's order
        for i in rotated(list(built), r):
            if recs[i]["status"] != "ok":
                continue
            share = _min_run_time(env, cell[i]) / ROUNDS
            slow = not cell[i].every_round and i in first and first[i].median > share
            if not (slow and r % SLOW_STRIDE):
                due[i] = share * (SLOW_STRIDE if slow else 1)
        turns = {i: t for i, t in due.items() if i in calls}  # in blocks after a first measurement
        for i in due:  # in this round's order: a whole measurement each, before the turns
            if i in turns:
                continue
            fn, inputs, load = built[i]
            try:
                if load is not None:
                    load()
                m = measure(fn, due[i], num_threads=threads, inputs=inputs)
                per_call[i].extend(per_call_times(m))
                by_round[i][r] = m.median
                faults[i][r] = faults_per_call(fn, calls=1)
                first.setdefault(i, m)
                number = calls_per_block(m.median)
                if load is None and number is not None:
                    calls[i] = number
            except Exception as err:  # noqa: BLE001
                _failed(recs[i], err)
        blocks = take_turns({i: built[i][0] for i in turns}, calls, turns,
                            on_error=lambda i, err: _failed(recs[i], err))
        for i, times in blocks.items():
            per_call[i].extend(times)
            if times:
                by_round[i][r] = statistics.median(times)
                faults[i][r] = faults_per_call(built[i][0], calls=1)
        steal[r] = steal_seconds() - steal_before
        boundary_trips.append(thread_round_trip_ns())
    round_trip = [max(before, after) for before, after in zip(boundary_trips, boundary_trips[1:])]
    for i, counts in faults.items():
        if recs[i]["status"] == "ok" and any(math.isfinite(c) for c in counts):
            recs[i]["faults_per_call"] = statistics.median(c for c in counts if math.isfinite(c))
            recs[i]["round_faults"] = ";".join(f"{c:.0f}" for c in counts)
    for i, times in per_call.items():
        if times and recs[i]["status"] == "ok":
            recs[i].update(_from_per_call(times, first[i].number_per_run))
            recs[i]["round_medians_s"] = ";".join(f"{t:.6e}" for t in by_round[i])
            recs[i]["round_steal_s"] = ";".join(f"{t:.2f}" for t in steal)
            recs[i]["round_trip_ns"] = ";".join(f"{t:.0f}" for t in round_trip)
    return recs


def run_tasks(env: Env, tasks: list[Task]) -> list[dict]:
    records, section = [], None
    bar = tqdm(total=len(tasks), desc=f"{env.cfg.allocator} allocator", unit="meas",
               dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
    for index, cell in enumerate(_cells(tasks)):
        first = cell[0]
        if first.section != section:
            env.inputs.clear()
            section = first.section
        bar.set_postfix_str(f"{first.section}: {first.pass_} {first.shape}")
        with _num_threads(first.threads or env.cfg.threads) as threads:
            records.extend(_run_cell(env, cell, threads, index))
        bar.update(len(cell))
    bar.close()
    env.inputs.clear()
    return records


def _from_per_call(times: list[float], number_per_run: int) -> dict:
    """Statistics of the per-call times of all blocks of all rounds of one method."""
    per_call = np.array(times)
    q1, median, q3 = np.percentile(per_call, [25, 50, 75])
    return {
        "median_s": float(median), "mean_s": float(per_call.mean()), "iqr_s": float(q3 - q1),
        "blocks": int(per_call.size), "number_per_run": number_per_run,
        "block_times_s": ";".join(f"{t:.6e}" for t in per_call),
    }


# ---------------------------------------------------------------------------------------- goals
@dataclass
class Goal:
    """One goal, judged on one allocator's medians: `value` is the worst case over the rows the
    goal covers (`where` names that row); `missing` rows had no time, and then it is not met."""

    name: str
    allocator: str
    text: str
    value: float
    threshold: float
    at_least: bool  # met when value >= threshold (else when value <= threshold)
    where: str = ""
    missing: int = 0

    @property
    def met(self) -> bool:
        if self.missing or not math.isfinite(self.value):
            return False
        return self.value >= self.threshold if self.at_least else self.value <= self.threshold

    def line(self, machine: str) -> str:
        worst = (f"worst {fmt_x(self.value)}" + (f" at {self.where}" if self.where else "")
                 if math.isfinite(self.value) else "not measured")
        if self.missing:
            worst += f"; {self.missing} row(s) not measured"
        state = "met" if self.met else "NOT met"
        return f"Goal {state} [{machine}, {self.allocator} allocator]: {self.text}: {worst}"

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "met": self.met}


def make_goal(name: str, allocator: str, text: str, values: list[tuple[float, str]],
              threshold: float, at_least: bool = True) -> Goal:
    """The goal over (value, where) pairs, judged by the worst finite value."""
    finite = [(v, w) for v, w in values if math.isfinite(v)]
    pick = min if at_least else max
    value, where = pick(finite, key=lambda p: p[0]) if finite else (math.nan, "")
    return Goal(name, allocator, text, value, threshold, at_least, where,
                len(values) - len(finite))


# -------------------------------------------------------------------------------------- tables
def _time(df: pd.DataFrame, **where) -> float:
    row = _ok_row(df, where)
    return float(row["median_s"]) if row is not None else math.nan


def _faults(df: pd.DataFrame, **where) -> str:
    """The row's minor page faults per call (faults_per_call), "" where not counted."""
    row = _ok_row(df, where)
    value = math.nan if row is None else row.get("faults_per_call", math.nan)
    return f"{value:.0f}" if isinstance(value, (int, float)) and math.isfinite(value) else ""


def _ok_row(df: pd.DataFrame, where: dict):
    sel = df
    for key, value in where.items():
        sel = sel[sel[key] == value]
    ok = sel[sel["status"] == "ok"]
    return ok.iloc[0] if len(ok) else None


def _per_round(row, column: str) -> list[float]:
    """A ";"-joined per-round column of a record (round_medians_s, round_trip_ns, round_faults)
    as numbers; [] where the row has none."""
    text = row.get(column, "")
    return [float(t) for t in text.split(";")] if isinstance(text, str) and text else []


def _ratio(df: pd.DataFrame, num: dict, den: dict) -> float:
    """num's time / den's (rows picked by column values): the median of per-round ratios
    (paired_ratio) where both rows are methods of one cell, else the ratio of their medians."""
    n, d = _ok_row(df, num), _ok_row(df, den)
    if n is None or d is None:
        return math.nan
    rn, rd = _per_round(n, "round_medians_s"), _per_round(d, "round_medians_s")
    if (rn and len(rn) == len(rd) and n["allocator"] == d["allocator"]
            and n.get("cell") == d.get("cell")):
        paired = paired_ratio(rn, rd)
        if math.isfinite(paired):
            return paired
    return float(n["median_s"]) / float(d["median_s"])


# The run's round trips fall into levels, one per kind of place the host gave the two threads
# (Zen 4 VM: 27-32 ns, two hardware threads of one core; 54-108 ns, two cores of one die;
# 256-430 ns, two dies): sorted, a value more than PLACEMENT_GAP times the one before starts a
# level, and levels with under PLACEMENT_MIN_SHARE of the rounds join their nearest neighbour.
PLACEMENT_GAP = 1.5
PLACEMENT_MIN_SHARE = 0.03


def _placement_levels(df: pd.DataFrame) -> list[list[float]]:
    """The run's round trips (every cell's, once per process) grouped in levels, in order."""
    per_cell = df.drop_duplicates(["allocator", "cell"]) if "cell" in df else df
    trips = sorted(t for text in per_cell.get("round_trip_ns", pd.Series(dtype=object))
                   if isinstance(text, str) and text for t in map(float, text.split(";"))
                   if math.isfinite(t) and t > 0)
    levels: list[list[float]] = []
    for t in trips:
        if levels and t <= PLACEMENT_GAP * levels[-1][-1]:
            levels[-1].append(t)
        else:
            levels.append([t])
    while len(levels) > 1:
        small = [i for i, lv in enumerate(levels) if len(lv) < PLACEMENT_MIN_SHARE * len(trips)]
        if not small:
            break
        i = small[0]
        if i == 0 or (i < len(levels) - 1 and levels[i + 1][0] / levels[i][-1]
                      < levels[i][0] / levels[i - 1][-1]):
            joining = levels.pop(i)
            levels[i][:0] = joining
        else:
            levels[i - 1].extend(levels.pop(i))
    return levels


def _placement_line(df: pd.DataFrame, num: dict, den: dict, label: str,
                    levels: list[list[float]]) -> str:
    """num's time / den's, paired over the rounds of each placement level: the goals take every
    round, users get every level; this says which level a shortfall came from."""
    n, d = _ok_row(df, num), _ok_row(df, den)
    trips = _per_round(n, "round_trip_ns") if n is not None else []
    if d is None or len(levels) < 2 or len(trips) != len(_per_round(n, "round_medians_s")):
        return ""
    rn, rd = _per_round(n, "round_medians_s"), _per_round(d, "round_medians_s")
    parts = []
    for lv in levels:
        sel = [i for i, t in enumerate(trips) if lv[0] <= t <= lv[-1]]
        if sel:
            ratio = paired_ratio([rn[i] for i in sel], [rd[i] for i in sel])
            parts.append(f"{fmt_x(ratio)} in {len(sel)} rounds at {statistics.median(lv):.0f} ns")
    return f"{label}, by the threads' round trip: " + "; ".join(parts)


# A call that faults this many pages or more (1 MiB) paid for fresh memory in that round.
FAULTED_PAGES = 256


def _faults_line(df: pd.DataFrame, num: dict, den: dict, label: str) -> str:
    """num's time / den's, paired over the rounds grouped by which of the two rows' probe calls
    faulted in (FAULTED_PAGES or more): says how much of a ratio is the allocator's; "" where
    the rounds all fall in one group."""
    n, d = _ok_row(df, num), _ok_row(df, den)
    if n is None or d is None:
        return ""
    fn, fd = _per_round(n, "round_faults"), _per_round(d, "round_faults")
    rn, rd = _per_round(n, "round_medians_s"), _per_round(d, "round_medians_s")
    if not (len(fn) == len(fd) == len(rn) == len(rd)) or not fn:
        return ""
    groups: dict[tuple[bool, bool], list[int]] = {}
    for i, (a, b) in enumerate(zip(fn, fd, strict=True)):
        if math.isfinite(a) and math.isfinite(b):
            groups.setdefault((b >= FAULTED_PAGES, a >= FAULTED_PAGES), []).append(i)
    if len(groups) < 2:
        return ""
    names = {False: "did not", True: "did"}
    parts = [f"{fmt_x(paired_ratio([rn[i] for i in sel], [rd[i] for i in sel]), 1)} in "
             f"{len(sel)} round{'s' * (len(sel) != 1)} where {den['method']}'s call "
             f"{names[ours]} and {num['method']}'s {names[theirs]} fault"
             for (ours, theirs), sel in sorted(groups.items())]
    return f"{label}, by the rounds' page faults: " + "; ".join(parts)


def _reasons(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] != "ok"].drop_duplicates(["method", "allocator", "status", "reason"])
    return [f"n/a  {r.method} ({r.allocator} allocator): {r.status}: {r.reason}"
            for _, r in bad.iterrows()]


def _auto_choice(g: pd.DataFrame) -> str:
    choices = [c for c in g.loc[g["method"] == "auto", "auto_choice"] if isinstance(c, str) and c]
    return choices[0] if choices else ""


@dataclass
class Section:
    title: str
    tables: list[pd.DataFrame]
    lines: list[str]  # footnotes
    goals: list[Goal] = field(default_factory=list)


def _section_rows(df: pd.DataFrame, section: str) -> pd.DataFrame:
    return df[df["section"] == section]


BANDWIDTH_ROWS = (("copy_", "preallocated"), (MUL, "fresh"), ("cpu_serial", "fresh"),
                  (MUL, "out="), ("cpu_serial", "out="))


def _bytes_per_element(method: str) -> int:
    return COPY_BYTES_PER_ELEMENT if method == "copy_" else BYTES_PER_ELEMENT[FWD]


FAULTS_LINE = ("faults: minor page faults of a call made right after the row's timed calls of "
               "each round, median over the rounds; "
               "a fresh output that the allocator maps anew faults once per 4 KiB page it "
               "writes, at a cost that can exceed the scan's own")


def bandwidth_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_BANDWIDTH)
    rows, ratio_rows = [], []
    ratios: dict[str, list] = {al: [] for al in allocators}
    for (shape, threads), g in d.groupby(["shape", "threads"], sort=False):
        numel = int(g["numel"].iloc[0])
        for method, output in BANDWIDTH_ROWS:
            per = _bytes_per_element(method)
            row = {"T x C": shape, "threads": str(threads), "measurement": method,
                   "output": output, "B/elem": str(per)}
            for al in allocators:
                t = _time(g, method=method, output=output, allocator=al)
                row[f"{al} ms"] = fmt_ms(t)
                row[f"{al} GB/s"] = fmt_x(per * numel / t / 1e9)
                row[f"{al} faults"] = _faults(g, method=method, output=output, allocator=al)
            rows.append(row)
        for output in ("fresh", "out="):
            row = {"T x C": shape, "threads": str(threads), "output": output}
            for al in allocators:
                of_mul = _ratio(g, dict(method=MUL, output=output, allocator=al),
                                dict(method="cpu_serial", output=output, allocator=al))
                row[f"{al} cpu_serial/torch.mul"] = fmt_x(of_mul)
                ratios[al].append((of_mul, f"{shape}, {threads} thread(s), {output}"))
            ratio_rows.append(row)
    goals = [make_goal("bandwidth_cpu_serial_vs_torch_mul", al,
                       f"cpu_serial forward >= {GOAL_BANDWIDTH_VS_MUL:.2f} of torch.mul's "
                       "bandwidth (fresh vs fresh, out= vs out=), every shape and thread count",
                       ratios[al], GOAL_BANDWIDTH_VS_MUL) for al in allocators]
    lines = ["GB/s: the scan and torch.mul move 12 B/elem (read a, x; write h), copy_ 8 B/elem; "
             "fresh: a new output allocated by every call (what a plain loop pays), out=: into a "
             "preallocated, already faulted-in buffer",
             "cpu_serial/torch.mul: torch.mul's time / cpu_serial's time, same output kind and "
             "allocator (1.00 = cpu_serial moves memory as fast as the practical limit)",
             FAULTS_LINE,
             *_reasons(d)]
    return Section("1. Bandwidth (forward, fp32)", [pd.DataFrame(rows), pd.DataFrame(ratio_rows)],
                   lines, goals)


def _per_allocator_times(g: pd.DataFrame, allocators, **where) -> dict:
    return {al: {b: _time(g, method=b, allocator=al, **where) for b in COMPARED}
            for al in allocators}


def latency_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_LATENCY)
    rows, speedups = [], {al: [] for al in allocators}
    worst: dict[str, tuple] = {}  # allocator -> (speedup, label, cell rows) of its slowest row
    levels = _placement_levels(df)
    of_mul: dict[str, list] = {al: [] for al in allocators}
    for (T, C, pass_), g in d.groupby(["T", "channels", "pass"], sort=False):
        row = {"T": str(T), "C": str(C), "pass": pass_, "auto ->": _auto_choice(g)}
        for al, t in _per_allocator_times(g, allocators).items():
            row.update({f"{al} {b} ms": fmt_ms(t[b]) for b in COMPARED})
            speedup = _ratio(g, dict(method="cpu_serial", allocator=al),
                             dict(method="cpu_parallel", allocator=al))
            row[f"{al} parallel speedup"] = fmt_x(speedup)
            speedups[al].append((speedup, f"C={C}, T={T}, {pass_}"))
            if math.isfinite(speedup) and speedup < worst.get(al, (math.inf,))[0]:
                worst[al] = (speedup, f"C={C}, T={T}, {pass_}", g)
            if pass_ == FWD:
                auto = _ratio(g, dict(method=MUL, allocator=al), dict(method="auto", allocator=al))
                row[f"{al} auto of torch.mul"] = fmt_x(auto)
                of_mul[al].append((auto, f"C={C}, T={T}"))
            else:
                row[f"{al} auto of torch.mul"] = ""
        rows.append(row)
    goals = [make_goal(name, al,
                       f"cpu_parallel >= {goal:g}x cpu_serial in every row "
                       "(speedup = cpu_serial time / cpu_parallel time)", speedups[al], goal)
             for name, goal in (("latency_parallel_speedup", GOAL_LATENCY_SPEEDUP),
                                ("latency_parallel_floor", GOAL_PARALLEL_FLOOR))
             for al in allocators]
    goals += [make_goal("latency_auto_vs_torch_mul", al,
                        f"auto forward >= {GOAL_NARROW_VS_MUL:.2f} of torch.mul's bandwidth "
                        "(torch.mul time / auto time, both with a fresh output), every row",
                        of_mul[al], GOAL_NARROW_VS_MUL) for al in allocators]
    channels = " and ".join(str(c) for c in d["channels"].drop_duplicates())
    threads = int(d["threads"].max()) if len(d) else 1
    lines = ["decays U[0,1); auto of torch.mul: torch.mul(a, x)'s time / auto's, the same 12 "
             "B/elem and a fresh output each (forward rows): here one thread's dependency chain "
             "bounds the serial loop, not memory",
             f"on p threads cpu_parallel's two passes (p + 1 chunks: one scanned while p - 1 are "
             f"reduced, then p scanned), each pass as costly per step as the serial loop, take "
             f"2/(p + 1) of its time: a speedup of about {(threads + 1) / 2:g}x on the {threads} "
             f"thread(s) here, so the {GOAL_LATENCY_SPEEDUP:g}x goal needs "
             f"{math.ceil(2 * GOAL_LATENCY_SPEEDUP - 1)} threads or more; where the decays "
             "forget within an eighth of a chunk (U[0,1) does), p chunks are scanned once each "
             "from zero and only their first rows again, up to p times faster",
             "where the host had put the two threads in each round: a round trip of one cache "
             "line between them before and after it (round_trip_ns, the slower of the two); the "
             "run's round trips fall into levels (each level's median below): on the Zen 4 VM "
             "one core's two hardware threads, two cores of one die, two dies",
             *(line for al, (_, label, g) in worst.items()
               if (line := _placement_line(g, dict(method="cpu_serial", allocator=al),
                                           dict(method="cpu_parallel", allocator=al),
                                           f"{al} parallel speedup of the slowest row ({label})",
                                           levels)) != ""),
             *_reasons(d)]
    return Section(f"2. Latency-bound regime ({channels} channels)", [pd.DataFrame(rows)],
                   lines, goals)


CANDIDATES = ("cpu_serial", "cpu_parallel", "torch")  # what auto chooses from on the CPU


def _over_best(g: pd.DataFrame, allocator: str, method: str) -> float:
    """method's time / the fastest candidate's (the largest of its ratios to each candidate)."""
    if not method or not math.isfinite(_time(g, method=method, allocator=allocator)):
        return math.nan
    ours = dict(method=method, allocator=allocator)
    ratios = [_ratio(g, ours, dict(method=b, allocator=allocator))
              for b in CANDIDATES if b != method]
    finite = [r for r in ratios if math.isfinite(r)] + ([1.0] if method in CANDIDATES else [])
    return max(finite) if finite else math.nan


def _choice_placement_lines(worst: dict, levels: list[list[float]]) -> list[str]:
    """Where auto's choice between the two C++ kernels was furthest from the best: their ratio
    in each placement level of the threads (which one leads can change with it)."""
    pair = ("cpu_serial", "cpu_parallel")
    return [line for al, (_, where, g, choice) in worst.items() if choice in pair
            if (line := _placement_line(
                g, dict(method=choice, allocator=al),
                dict(method=pair[1 - pair.index(choice)], allocator=al),
                f"{al} {choice} time / {pair[1 - pair.index(choice)]}'s at {where}",
                levels)) != ""]


def grid_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_GRID)
    rows = []
    choice_ratios, overheads = {al: [] for al in allocators}, {al: [] for al in allocators}
    worst: dict[str, tuple] = {}  # allocator -> (choice/best, where, cell rows, choice)
    for (m, T, dist), g in d.groupby(["channels", "T", "decays"], sort=False):
        choice = _auto_choice(g)
        row = {"m": str(m), "T": str(T), "decays": dist, "auto ->": choice}
        where = f"(m={m}, T={T}, {dist})"
        for al, t in _per_allocator_times(g, allocators).items():
            row.update({f"{al} {b} ms": fmt_ms(t[b]) for b in COMPARED})
            row[f"{al} auto/best"] = fmt_x(_over_best(g, al, "auto"))
            over = _over_best(g, al, choice)
            row[f"{al} choice/best"] = fmt_x(over)
            choice_ratios[al].append((over, where))
            if over > worst.get(al, (1.0,))[0]:
                worst[al] = (over, where, g, choice)
            overheads[al].append(_ratio(g, dict(method="auto", allocator=al),
                                        dict(method=choice, allocator=al)) if choice else math.nan)
        rows.append(row)
    goals = []
    for al in allocators:
        over = [f"{w}: {v:.2f}" for v, w in choice_ratios[al] if v > GOAL_AUTO_RATIO]
        goals.append(make_goal(
            "grid_auto_choice", al,
            f"the backend auto runs is within {GOAL_AUTO_RATIO - 1:.0%} of the best backend (min "
            "of cpu_serial, cpu_parallel, torch; each backend's own row) in every cell and "
            "distribution" + (f" (over: {', '.join(over)})" if over else ""),
            choice_ratios[al], GOAL_AUTO_RATIO, at_least=False))
        finite = [v for v in overheads[al] if math.isfinite(v)]
        goals.append(make_goal(
            "grid_auto_overhead", al,
            f"auto costs at most {GOAL_AUTO_OVERHEAD - 1:.0%} over the backend it runs (auto's "
            "row / that backend's row, median over the cells)",
            [(statistics.median(finite) if finite else math.nan, "median")],
            GOAL_AUTO_OVERHEAD, at_least=False))
    lines = ["inputs (T, 1, m), forward; auto/best = auto's time / the fastest other backend's; "
             "choice/best = the time of the backend auto runs (its own row) / the fastest's. "
             "auto's row times that same kernel once more, through auto's dispatch, so auto/best "
             "differs from choice/best by that dispatch (a few microseconds) and by the host's "
             "noise between two measurements of one kernel",
             *_choice_placement_lines(worst, _placement_levels(df)),
             *_reasons(d)]
    return Section("3. Table-1 grid (batch 1, forward)", [pd.DataFrame(rows)], lines, goals)


def distribution_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_DIST)
    rows, ratios = [], {al: [] for al in allocators}
    for (shape, b), g in d.groupby(["shape", "method"], sort=False):
        for dist in g["decays"].drop_duplicates():
            row = {"T x C": shape, "backend": b, "decays": dist,
                   "auto ->": _auto_choice(g) if b == "auto" else ""}
            for al in allocators:
                row[f"{al} ms"] = fmt_ms(_time(g, decays=dist, allocator=al))
                slowdown = _ratio(g, dict(decays=dist, allocator=al),
                                  dict(decays=UNIFORM, allocator=al))
                row[f"{al} x U[0,1)"] = fmt_x(slowdown)
                if dist != UNIFORM:
                    ratios[al].append((slowdown, f"{b} at {shape} under {dist}"))
            rows.append(row)
    goals = [make_goal("distribution_slowdown", al,
                       f"no decay distribution makes a backend more than "
                       f"{GOAL_DIST_SLOWDOWN:.2f}x slower than under U[0,1) (same backend, "
                       "shape and allocator)", ratios[al], GOAL_DIST_SLOWDOWN, at_least=False)
             for al in allocators]
    lines = ["forward; x U[0,1) = the row's time / the same backend's time at the same shape "
             "under U[0,1); impulses N(0,1); every row of a shape runs on one pair of input "
             "buffers, refilled with its own values before each round", *_reasons(d)]
    return Section("4. Decay distributions (forward)", [pd.DataFrame(rows)], lines, goals)


def dtype_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_DTYPES)
    rows = []
    for (shape, dtype), g in d.groupby(["shape", "dtype"], sort=False):
        per = 3 * torch.empty((), dtype=getattr(torch, dtype)).element_size()
        numel = int(g["numel"].iloc[0])
        row = {"T x C": shape, "dtype": dtype, "B/elem": str(per), "auto ->": _auto_choice(g)}
        for al in allocators:
            t = _time(g, method="auto", allocator=al)
            row[f"{al} torch.mul ms"] = fmt_ms(_time(g, method=MUL, allocator=al))
            row[f"{al} auto ms"] = fmt_ms(t)
            row[f"{al} auto GB/s"] = fmt_x(per * numel / t / 1e9)
            row[f"{al} auto/torch.mul"] = fmt_x(_ratio(g, dict(method=MUL, allocator=al),
                                                       dict(method="auto", allocator=al)))
        rows.append(row)
    lines = ["forward, a fresh output per call, decays U[0,1) (complex: that modulus, a uniform "
             "phase); auto/torch.mul = torch.mul's time / auto's on the same dtype and shape (1.00 "
             "= the scan moves memory as fast as the practical limit); B/elem: read a and x, "
             "write h. No goal: the rows show what each dtype costs, 16-bit storage (converted "
             "to float in registers and back) and complex arithmetic among them", *_reasons(d)]
    return Section("6. Dtypes (forward)", [pd.DataFrame(rows)], lines)


def _fwd_bwd_ratio_rows(d: pd.DataFrame, allocators, goals_in: dict) -> list[dict]:
    rows = []
    for b in ("cpu_serial", "auto"):
        row = {"backend": b}
        for al in allocators:
            ours = {"method": b, "allocator": al, "pass": FWD_BWD}
            of_mul = _ratio(d, {"method": MUL, "allocator": al, "pass": FWD_BWD}, ours)
            of_assoc = _ratio(d, {"method": "associative_scan", "allocator": al}, ours)
            row[f"{al} of a*x"] = fmt_x(of_mul)
            row[f"{al} x associative_scan"] = fmt_x(of_assoc, 1)
            goals_in[(b, "mul", al)] = of_mul
            goals_in[(b, "assoc", al)] = of_assoc
        rows.append(row)
    return rows


def fwd_bwd_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_FWD_BWD)
    rows = []
    for (method, pass_), g in d.groupby(["method", "pass"], sort=False):
        row = {"method": method, "pass": pass_,
               "auto ->": _auto_choice(g), "timing": g["timing"].iloc[0]}
        for al in allocators:
            row[f"{al} ms"] = fmt_ms(_time(g, allocator=al))
            row[f"{al} faults"] = _faults(g, allocator=al)
            of_auto = _ratio(d, {"method": method, "pass": pass_, "allocator": al},
                             {"method": "auto", "pass": FWD_BWD, "allocator": al})
            row[f"{al} x auto"] = fmt_x(of_auto, 1)
        rows.append(row)
    values: dict = {}
    ratio_rows = _fwd_bwd_ratio_rows(d, allocators, values)
    goals = []
    for al in allocators:
        for b in ("cpu_serial", "auto"):
            goals += [
                make_goal(f"fwd_bwd_{b}_vs_mul", al,
                          f"{b} forward+backward >= {GOAL_FWD_BWD_VS_MUL:.2f} of the practical "
                          "limit y = a * x with its backward (torch.mul time / its time)",
                          [(values[(b, "mul", al)], "")], GOAL_FWD_BWD_VS_MUL),
                make_goal(f"fwd_bwd_{b}_vs_associative_scan", al,
                          f"{b} forward+backward >= {GOAL_VS_ASSOC:.0f}x faster than torch's "
                          "associative_scan", [(values[(b, "assoc", al)], "")], GOAL_VS_ASSOC),
            ]
    by_faults = [line for al in allocators for b in ("cpu_serial", "auto")
                 if (line := _faults_line(
                     d, {"method": "associative_scan", "allocator": al},
                     {"method": b, "pass": FWD_BWD, "allocator": al},
                     f"{al} allocator, {b} x associative_scan"))]
    T, C = (int(d["T"].iloc[0]), int(d["channels"].iloc[0])) if len(d) else (0, 0)
    lines = ["x auto = that row's time / auto's forward+backward time (same allocator); "
             "torch.mul: y = a * x and autograd.grad(y, (a, x), g), 32 B/elem like the scan",
             FAULTS_LINE,
             "second table: of a*x = torch.mul's time / the backend's (goal >= "
             f"{GOAL_FWD_BWD_VS_MUL:.2f}); x associative_scan = associative_scan's time / the "
             f"backend's (goal >= {GOAL_VS_ASSOC:.0f})", *by_faults, *_reasons(d)]
    return Section(f"5. Forward+backward, T={T}, {C} channels, decays U[0,1)",
                   [pd.DataFrame(rows), pd.DataFrame(ratio_rows)], lines, goals)


def _sweep_winner(s: float, p: float) -> str:
    if not (math.isfinite(s) and math.isfinite(p)):
        return "n/a"
    if abs(s / p - 1) <= SWEEP_TIE:
        return "tie"
    return "cpu_parallel" if p < s else "cpu_serial"


def _sweep_tables(d: pd.DataFrame, threads: int, allocator: str) -> list[Section]:
    rows = []
    for (C, T), g in d.groupby(["channels", "T"], sort=False):
        s = _time(g, method="cpu_serial", allocator=allocator)
        p = _time(g, method="cpu_parallel", allocator=allocator)
        auto = backend_registry.choose_auto(torch.device("cpu"), int(T), int(C))
        rows.append({"C": int(C), "T": int(T), "C/thread": C / threads, "serial": s,
                     "parallel": p, "winner": _sweep_winner(s, p), "auto": auto})
    long = pd.DataFrame([{
        "C": str(r["C"]), "T": str(r["T"]), "C/thread": f"{r['C/thread']:g}",
        "cpu_serial ms": fmt_ms(r["serial"]), "cpu_parallel ms": fmt_ms(r["parallel"]),
        "serial/parallel": fmt_x(r["serial"] / r["parallel"]), "winner": r["winner"],
        "auto picks": r["auto"],
        "auto agrees": "yes" if r["auto"] == r["winner"] else ("tie" if r["winner"] == "tie"
                                                                else "NO"),
    } for r in rows])
    letter = {"cpu_serial": "S", "cpu_parallel": "P", "tie": "=", "n/a": "-"}
    grid = pd.DataFrame(rows).pivot(index="C", columns="T", values="winner").map(letter.get)
    agree = pd.DataFrame(rows).pivot(index="C", columns="T", values="auto")
    marked = grid.copy()
    for C in grid.index:
        for T in grid.columns:
            if letter.get(agree.loc[C, T]) != grid.loc[C, T] and grid.loc[C, T] in "SP":
                marked.loc[C, T] = grid.loc[C, T] + "*"
    marked = marked.reset_index().rename(columns={"C": "C \\ T"}).astype(str)
    marked.columns = [str(c) for c in marked.columns]
    return [
        Section(f"auto sweep ({allocator} allocator): cpu_serial vs cpu_parallel, forward (T, C)",
                [long], [f"{threads} torch threads; auto picks what "
                         "plrnn.recurrence.registry.choose_auto says (see its comment)"]),
        Section(f"auto sweep ({allocator} allocator): winner per cell (S serial, P parallel, = "
                f"within {SWEEP_TIE:.0%}, * = auto picks the other)", [marked], []),
    ]


def sweep_section(df: pd.DataFrame, threads: int, allocators) -> list[Section]:
    d = _section_rows(df, SEC_SWEEP)
    sections = []
    for al in allocators:
        sections += _sweep_tables(d, threads, al)
    if sections:
        sections[-1].lines += _reasons(d)
    return sections


# name -> (tasks, section); in the order they run and print
SECTIONS: dict[str, tuple[Callable, Callable]] = {
    "bandwidth": (bandwidth_tasks, bandwidth_section),
    "latency": (latency_tasks, latency_section),
    "grid": (grid_tasks, grid_section),
    "distributions": (distribution_tasks, distribution_section),
    "fwd-bwd": (fwd_bwd_tasks, fwd_bwd_section),
    "dtypes": (dtype_tasks, dtype_section),
}
SECTION_NAMES = tuple(SECTIONS)


# ---------------------------------------------------------------------------------------- main
def cpu_kernels_digest() -> str | None:
    """sha256 of every C++ CPU kernel source (the digest the prebuilt libraries and the auto
    calibration are keyed by), shortened: it tells runs of different kernels apart."""
    try:
        return sources.digest(sources.CPU_ALL)[:12]
    except OSError:
        return None


def kernel_settings() -> dict | None:
    """The C++ CPU kernels' process-wide settings in effect (measured per CPU and thread count by
    plrnn.recurrence.calibration and applied at the first kernel call), or None without them."""
    from plrnn.recurrence import calibration, cpu

    if cpu.load() is not None:
        return None
    ops = torch.ops.plrnn
    name = {table_name: {v: k for k, v in table.items()}
            for table_name, table in (("rows", calibration.WIDE_ROWS),
                                      ("stream", calibration.STREAMING),
                                      ("beyond", calibration.STREAMED_BEYOND))}
    settings = {"wide_rows": name["rows"][ops.cpu_wide_rows(-1)],
                "streaming_schedule": name["stream"][ops.cpu_streaming_schedule(-1)],
                "streamed_beyond": name["beyond"][ops.cpu_streamed_beyond(-1)],
                "stream_bytes": ops.cpu_stream_bytes(),
                "ilp_channels": ops.cpu_ilp_channels(-1),
                "output_cache_bytes": ops.cpu_output_cache(-1),
                "calibrated": calibration.enabled()}
    # What the schedule was chosen on: a choice the benchmark then contradicts is worth a look.
    if calibration.enabled():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            record = json.loads(calibration.cache_file(torch.get_num_threads()).read_text())
            settings["pipelined_over_time_split"] = record.get("pipelined_over_time_split")
            settings["last_level_over_private"] = record.get("last_level_over_private")
            settings["calibration_round_trip_ns"] = record.get("thread_round_trip_ns")
            settings["calibration_others_cores"] = record.get("others_cores")
    return settings


def header(info: dict, cfg: Config, argv: list[str], statuses, load,
           allocator_details: dict) -> list[str]:
    commit = info["git_commit"] or "unknown"
    if info["git_dirty"]:
        commit += " (with uncommitted changes)"
    alloc = "; ".join(f"`{al}`: {allocator_details.get(al, 'not run')}" for al in cfg.allocators)
    return [
        "# plrnn linear_recurrence benchmark",
        "",
        f"- machine: `{machine_name()}`: {info['cpu']}, {info['logical_cores']} logical cores, "
        f"{info['torch_threads']} torch threads ({info['torch_parallel_backend']})"
        + (f"; GPU {info['gpu']['name']}" if info["gpu"] else ""),
        f"- torch {info['torch_version']}, Python {info['python_version']}, {info['platform']}",
        f"- commit: {commit}; CPU kernel sources digest: {info['cpu_kernels_digest']}",
        f"- date (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}; load average "
        f"before the run: {load[0]:.2f} on {info['logical_cores']} cores (other processes "
        "competing for the cores make the numbers noisy, threaded kernels most)",
        f"- command: `{' '.join(['python -m plrnn.bench.recurrence', *argv])}`",
        "- backends: " + "; ".join(
            f"{s.name}: {'available' if s.available else 'UNAVAILABLE (' + s.reason + ')'}"
            for s in statuses),
        "- CPU kernel settings (plrnn.recurrence.calibration, measured once per CPU and thread "
        f"count unless PLRNN_AUTO_CALIBRATION=0): {json.dumps(info.get('kernel_settings'))}",
        "- calls: a plain loop, a fresh output per call unless the row says out= (preallocated)",
        "- allocator columns: `default` = the process as users run it (glibc malloc untouched: "
        "a large fresh output is mmap'd and page-faulted on every call, except the CPU "
        "kernels' own outputs of 1 MiB and more, which they recycle from their freed ones "
        "unless PLRNN_CPU_OUTPUT_CACHE=0); `steady` = a child "
        "process that first calls plrnn.bench.timing.reuse_freed_pages(), so freed pages are "
        "reused and outputs cost no page faults (the kernels' own speed). The CSV's `allocator` "
        f"column says which each row used. This run: {alloc}",
        "- decays distributions: U[0,1) = torch.rand; U[0.9,1) = 0.9 + 0.1 U[0,1); "
        "sigmoid(N(mu,1)) for mu = 0, 2, 5 (forget gates; means 0.50, 0.84, 0.99). Impulses and "
        "grad_h ~ N(0,1). Sections 1, 2 and 5 use U[0,1); the grid uses "
        f"{', '.join(cfg.grid_distributions)}; section 4 all five",
        "- timing: median per call over the blocks of torch.utils.benchmark blocked_autorange "
        f"(methods of a cell interleaved over {ROUNDS} rounds, each round starting one method "
        f"later; after its first round, a method with calls under {BLOCK_S * 1e3 / BLOCK_CALLS_MIN:g} "
        f"ms goes on in blocks of about {BLOCK_S * 1e3:g} ms, the cell's methods taking turns "
        "block by block; methods slower "
        f"than a round's share of their time, one round in {SLOW_STRIDE}, except in sections 4 "
        "and 5) "
        "unless marked 'single' (one cold run); every backend's output checked against a "
        "float64 loop first",
        "- ratios between two methods timed in one cell (speedups, x U[0,1), of torch.mul, "
        "auto/best): the median over rounds of the ratio within each round, so they can differ "
        "from the ratio of the two medians shown",
        f"- config: `{json.dumps(dataclasses.asdict(cfg))}`",
    ]


def _loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (math.nan, math.nan, math.nan)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m plrnn.bench.recurrence",
        description="Benchmark plrnn.linear_recurrence backends (CPU) side by side, as users "
                    "call them, with the default and the steady-state allocator.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="smaller shapes and shorter timing (a couple of minutes)")
    size.add_argument("--smoke", action="store_true",
                      help="tiny shapes and timing: every code path in seconds, numbers "
                           "meaningless (for tests)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: results/<machine_name()>/)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds of timing per measurement (default 0.5, --quick 0.1)")
    p.add_argument("--allocator", choices=("both", *ALLOCATORS), default="both",
                   help="both (default): this process as it starts, then a child process with "
                        "the steady-state allocator; or only one of them")
    p.add_argument("--all-distributions", action="store_true",
                   help="time the Table-1 grid under all five decay distributions (default: "
                        f"{' and '.join(GRID_DISTRIBUTIONS)})")
    p.add_argument("--sections", nargs="+", choices=SECTION_NAMES, default=list(SECTION_NAMES),
                   help="run only these sections (default: all)")
    p.add_argument("--sweep-auto", action="store_true",
                   help="run only the channels x T sweep of cpu_serial vs cpu_parallel that the "
                        "auto rule is derived from; writes auto_sweep.{csv,md,json}")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.min_run_time is not None and not args.min_run_time > 0:
        p.error(f"--min-run-time must be a positive number of seconds, got {args.min_run_time}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        p.error(f"--out must be a directory; {args.out} is a file")
    return args


def steady_child_argv(args: argparse.Namespace, out: Path) -> list[str]:
    """The same run in a child process with the steady-state allocator, writing into `out`."""
    argv = ["--allocator", "steady", "--out", str(out), "--seed", str(args.seed),
            "--sections", *args.sections]
    if args.quick:
        argv.append("--quick")
    if args.smoke:
        argv.append("--smoke")
    if args.min_run_time is not None:
        argv += ["--min-run-time", repr(args.min_run_time)]
    if args.all_distributions:
        argv.append("--all-distributions")
    if args.sweep_auto:
        argv.append("--sweep-auto")
    return argv


TEXT_COLUMNS = ("note", "reason", "block_times_s", "round_medians_s", "round_steal_s",
                "round_trip_ns", "round_faults", "output", "decays", "auto_choice", "dtype")


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Empty text cells as "" whether the frame was built here or read back from a CSV."""
    df = df.copy()
    if "dtype" not in df:  # runs from before section 6 timed fp32 only
        df["dtype"] = "float32"
    for col in TEXT_COLUMNS:
        if col in df:
            df[col] = df[col].astype(object).where(df[col].notna(), "")
    return df


def run_steady_child(args: argparse.Namespace, stem: str) -> tuple[pd.DataFrame, dict]:
    """Runs the steady-allocator child; (its records, what happened) -- empty records if it
    failed, so its columns read n/a and its goals not met, never silently dropped."""
    with tempfile.TemporaryDirectory(prefix="plrnn-bench-steady-") as tmp:
        cmd = [sys.executable, "-m", "plrnn.bench.recurrence", *steady_child_argv(args, Path(tmp))]
        print("plrnn bench: steady-state allocator run in a child process ...", file=sys.stderr,
              flush=True)
        # stdout (its own steady-only tables) is kept out of ours; its progress goes to stderr.
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        info = {"command": cmd[2:], "returncode": proc.returncode}
        csv_path, meta_path = Path(tmp) / f"{stem}.csv", Path(tmp) / f"{stem}.json"
        if proc.returncode != 0 or not csv_path.exists():
            info["stdout_tail"] = proc.stdout[-2000:]
            return pd.DataFrame(), info
        info["allocator_detail"] = json.loads(meta_path.read_text())["config"]["allocator_detail"]
        return normalize(pd.read_csv(csv_path, dtype={"shape": str})), info


def _load_backends(cfg: Config) -> tuple[list, dict]:
    print("plrnn bench: loading the C++ kernels (the first build takes about a minute) ...",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    statuses = plrnn.backends(cfg.device)
    print(f"plrnn bench: backends ready in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr, flush=True)
    return statuses, {s.name: s for s in statuses}


def build_sections(df: pd.DataFrame, cfg: Config, sweep: bool) -> list[Section]:
    if sweep:
        return sweep_section(df, cfg.threads, cfg.allocators)
    return [SECTIONS[name][1](df, cfg.allocators) for name in cfg.sections]


def render(sections: list[Section], machine: str) -> str:
    body = []
    for s in sections:
        body += [f"## {s.title}", ""]
        for table in s.tables:
            body += [markdown_table(table), ""]
        body += [*s.lines, *(g.line(machine) for g in s.goals), ""]
    goals = [g for s in sections for g in s.goals]
    if goals:
        met = sum(g.met for g in goals)
        body += ["## Goals", "",
                 f"On `{machine}`, from the medians of this run: {met} of {len(goals)} met.", "",
                 *(f"- {g.line(machine)}" for g in goals), ""]
    return "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cfg = make_config(args)  # first: the steady child's mallopt precedes every allocation
    out = args.out if args.out is not None else Path("results") / machine_name()
    out.mkdir(parents=True, exist_ok=True)
    # The kernel source as the run starts: what was built, whatever is edited while it runs.
    info, load = {**machine_info(), "cpu_kernels_digest": cpu_kernels_digest()}, _loadavg()
    stem = "auto_sweep" if args.sweep_auto else "recurrence_bench"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # auto's fallback note; shown in tables
        statuses, status = _load_backends(cfg)
        env = Env(cfg, Inputs(cfg.seed), status)
        if args.sweep_auto:
            tasks = sweep_tasks(env)
        else:
            tasks = [t for name in cfg.sections for t in SECTIONS[name][0](env)]
        start = time.perf_counter()
        records = run_tasks(env, tasks)
        elapsed = time.perf_counter() - start
    info["kernel_settings"] = kernel_settings()  # applied by the run's first kernel call

    df = normalize(pd.DataFrame.from_records(records))
    details = {cfg.allocator: cfg.allocator_detail}
    meta = {"machine_name": machine_name(), "machine": info, "config": dataclasses.asdict(cfg),
            "cpu_kernels_digest": info["cpu_kernels_digest"], "argv": argv,
            "backends": {s.name: {"available": s.available, "reason": s.reason}
                         for s in statuses},
            "measurement_seconds": elapsed, "loadavg_before": load}
    if args.allocator == "both":
        steady, meta["steady_child"] = run_steady_child(args, stem)
        details["steady"] = meta["steady_child"].get(
            "allocator_detail", f"child FAILED (exit {meta['steady_child']['returncode']})")
        df = pd.concat([df, steady], ignore_index=True)
    meta["loadavg_after"] = _loadavg()
    meta["allocators"] = details

    sections = build_sections(df, cfg, args.sweep_auto)
    meta["goals"] = [g.as_dict() for s in sections for g in s.goals]
    head = header(info, cfg, argv, statuses, load, details)
    text = render(sections, machine_name())
    text += f"\n({len(df)} measurements; {elapsed:.0f} s in this process)"
    busy = ""
    if load[0] > 0.5:
        busy = (f"\nWARNING: load average {load[0]:.2f} before the run: other processes share "
                "the cores, so threaded rows (cpu_parallel, torch) are timed under contention.\n")
    print("\n" + "\n".join(head[2:6]) + "\n" + busy + "\n" + text)

    df.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.md").write_text("\n".join(head) + "\n\n" + text + "\n")
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(f"\nwrote {out / stem}.csv, .md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
