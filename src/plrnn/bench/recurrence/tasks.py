"""What is timed: a Task per measurement (method, pass, shape, how to build the call), built
lazily against an Env (config, inputs, backend statuses), and the tasks of each section."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

import plrnn

from ..decays import UNIFORM
from .config import Config
from .inputs import Inputs, check_output

COMPARED = ("cpu_serial", "cpu_parallel", "torch", "auto")
FWD, FWD_BWD = "forward", "forward+backward"
MUL = "torch.mul"  # the practical limit: the same bytes as the scan, no dependency chain

SEC_BANDWIDTH = "1 bandwidth"
SEC_LATENCY = "2 latency"
SEC_GRID = "3 table-1 grid"
SEC_DIST = "4 decay distributions"
SEC_FWD_BWD = "5 forward+backward"
SEC_DTYPES = "6 dtypes"
SEC_LAYOUTS = "7 input layouts"
SEC_SWEEP = "auto sweep"


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
    # call on, reading and writing two more tensors. One pass is 36 B/element, 4 more than the
    # scan's 32: the backward's two multiplies, g * x and g * a, each read g.
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
             note="practical limit: y = a * x, then autograd.grad(y, (a, x), g); 36 B/elem"),
        Task(sec, "associative_scan", FWD_BWD, shape, _assoc_build(env, shape), min_run_time=slow,
             every_round=True,
             note='torch._higher_order_ops associative_scan, combine_mode="generic", eager'),
        Task(sec, "reference (Python loop)", FWD, shape, _reference(env, shape, FWD),
             how="single", note="forward only; one cold run"),
        Task(sec, "reference (Python loop)", FWD_BWD, shape, _reference(env, shape, FWD_BWD),
             how="single", note="autograd through the loop; one cold run"),
    ]


# ------------------------------------------------------------------------- section 7: layouts
AS_GIVEN, CALLER_COPY, KERNEL_LAYOUT = "as given", "copied by the caller", "kernel layout"
LAYOUT_METHODS = (AS_GIVEN, CALLER_COPY, KERNEL_LAYOUT, MUL)
HEAD_SHARED, BATCH_FIRST = "one decay per head", "batch-first sequences"
LAYOUT_DECAYS = "sigmoid(N(2,1))"  # forget gates


def _layout_views(case: str, memory, grad: bool, env: Env, dist: str):
    """(a, x, g, leaves) of a layout case: a and x as the method passes them before its own
    copies, g (None without grad) in the layout of h, and the leaves that the gradient reaches.
    Per head: x (T, 1, H, P) and decays (T, 1, H, 1), the first channel of each head of the
    drawn decays. Batch-first: (T, B, C) views of (B, T, C) memory."""
    got = env.inputs.get(memory, grad=grad, dist=dist)
    a, x, g = (*got, None) if not grad else got
    if case == HEAD_SHARED:
        a = a.detach()[..., :1].contiguous().requires_grad_(grad)
        return a, x, g, (a, x)
    views = a.transpose(0, 1), x.transpose(0, 1)
    return (*views, None if g is None else g.transpose(0, 1), (a, x))


def _layout_build(env: Env, case: str, method: str, memory, pass_: str, dist: str):
    def build():
        a, x, g, leaves = _layout_views(case, memory, pass_ == FWD_BWD, env, dist)
        shape = tuple(x.shape)
        full = a.detach().expand(shape)
        if method == KERNEL_LAYOUT or method == MUL:
            # the same values, contiguous time-major, fresh leaves: what the kernels read as is
            leaves = (full.contiguous().requires_grad_(g is not None),
                      x.detach().contiguous().requires_grad_(g is not None))
            a, x = leaves
            g = None if g is None else g.contiguous()

        def op(a_, x_):
            if method == MUL:
                return torch.mul(a_, x_)
            if method == CALLER_COPY:  # inside the timed call, as a scan without the layout needs
                a_, x_ = a_.expand(x_.shape).contiguous(), x_.contiguous()
            return plrnn.linear_recurrence(a_, x_, backend="auto")

        if method != MUL:
            with torch.no_grad():
                env.check(op(a, x), shape, dist, full, x.detach(), f"{case} {method}")
        if g is None:
            return (lambda: op(a, x)), (a, x)

        def fwd_bwd():
            torch.autograd.grad(op(a, x), leaves, g)

        return fwd_bwd, (a, x, g)

    return build


def layout_tasks(env: Env) -> list[Task]:
    """auto on inputs in the layouts of today's models, as given, copied by the caller into
    the op's own layout inside the timed call, and in that layout from the start, beside
    torch.mul on the latter: one cell per case and pass."""
    T = env.cfg.layout_T
    cases = ((HEAD_SHARED, (T, 1, 32, 64), (T, 1, 32, 64)),
             (BATCH_FIRST, (8, T, 256), (T, 8, 256)))
    return [Task(SEC_LAYOUTS, method, p, shape,
                 _layout_build(env, case, method, memory, p, LAYOUT_DECAYS), decays=LAYOUT_DECAYS,
                 note=case, every_round=True)
            for case, memory, shape in cases for p in (FWD, FWD_BWD)
            for method in LAYOUT_METHODS]
