"""What the asv suite (benchmarks/*.py) and the pytest-benchmark suite (benchmarks/pytest_suite/)
share: the grid, and the cases (the work one benchmark times, built from fixed seeds).

A case builder raises NotImplementedError with the reason when a combination does not apply
(the grid leaves it out, no GPU, a backend unavailable here, a module missing in an older
commit): asv records it as skipped, the pytest suite calls pytest.skip.

Nothing heavy at import: torch and plrnn are imported by the builders, so that asv's discovery
and the combinations the grid rules out cost no torch import. The grid, the float64 loops and the
channels they check come from the checkout these files sit in (src/plrnn/bench/, loaded by path),
not from the installed plrnn: asv installs older commits that may predate them, and every commit
must be measured on one grid and checked alike.

The process allocates as a user's does (glibc malloc as it starts) unless
PLRNN_BENCH_ALLOCATOR=steady asks for freed pages to be reused: ALLOCATOR, recorded in every
result (asv: the benchmark's version; pytest-benchmark: extra_info).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_BENCH_SRC = REPO / "src" / "plrnn" / "bench"


_CHECKOUT = "_plrnn_checkout_bench"


def _checkout_module(name: str):
    """src/plrnn/bench/<name>.py of this checkout ("recurrence.inputs" for a subpackage's),
    imported from a private package rooted there, so its relative imports stay in the checkout."""
    if _CHECKOUT not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _CHECKOUT, _BENCH_SRC / "__init__.py", submodule_search_locations=[str(_BENCH_SRC)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[_CHECKOUT] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{_CHECKOUT}.{name}")


grid = _checkout_module("grid")
oracle = _checkout_module("oracle")  # the float64 loops every case is checked against
GRID = grid.selected()

# Outputs are checked against oracle.truth64 on the channels that `python -m
# plrnn.bench.recurrence` checks (check_cols). The recurrence is independent per channel, so a
# subset over the whole length is an exact check, and a few dozen channels keep the check's memory
# small: asv's peakmem_ is the peak of the whole process, setup included.
CHECK_RTOL = CHECK_ATOL = 1e-4  # fp32 kernels land ~1e-6 from the truth; a wrong one lands O(1)
# Layers against the same model in float64 on the serial CPU kernel, relative to the largest value
# of each output or gradient: fp32 lands ~1e-5 from it on the CPU, cuDNN's LSTM may round its
# matmuls to TF32 (10-bit mantissa), and a wrong recurrence lands O(1) away.
LAYER_TOL = 1e-2
# The kernel cases' decays: forget gates as models have them (and as `auto`'s calibration times
# them), not U[0,1), which the histories before the allocator's version drew: most of those
# decays sit far from 1, and a state forgotten within a few steps hides the slow paths of gates
# near 1.
KERNEL_DECAYS = "sigmoid(N(2,1))"
LAYER_REFERENCE_BACKEND = "cpu_serial"

ALLOCATOR_ENV = "PLRNN_BENCH_ALLOCATOR"
# The allocators of `python -m plrnn.bench.recurrence --allocator`: "default", glibc malloc as a
# user's process starts (large fresh outputs fault their pages in on every call, as users pay),
# and "steady", freed pages reused (timing.reuse_freed_pages), the kernels' own speed.
ALLOCATORS = ("default", "steady")


def selected_allocator(environ=None) -> str:
    """The allocator named by $PLRNN_BENCH_ALLOCATOR, "default" when it is unset or empty."""
    environ = os.environ if environ is None else environ
    name = environ.get(ALLOCATOR_ENV, "").strip() or ALLOCATORS[0]
    if name not in ALLOCATORS:
        raise ValueError(f"{ALLOCATOR_ENV}={name!r}: choose one of {ALLOCATORS}")
    return name


ALLOCATOR = selected_allocator()


def sync_timer() -> float:
    """perf_counter() after waiting for queued CUDA work; a plain clock when CUDA is not in use.

    asv calls it at both ends of a timed block (the class attribute `timer`), so asynchronous
    kernel launches are timed to their completion.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


_built: dict = {}  # prepare()'s one case of this process: key, case, number


class AsvDefaults:
    """asv attributes shared by the suite's classes (asv reads them from the class).

    One round: every parameter combination is a fresh process (launch_method "spawn"), and
    importing torch and plrnn costs several seconds each on a small machine. A few samples per
    combination, warm-up short since setup already made one checked call."""

    timer = staticmethod(sync_timer)
    timeout = 600  # the first process of a commit also compiles plrnn's C++ kernels
    rounds = 1
    repeat = (3, 10, 5.0)  # at least 3 samples, at most 10, stop adding after 5 s
    sample_time = 0.05
    warmup_time = 0.1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # asv keeps one history per benchmark version, by default a hash of the method's and
        # setup's code. The allocator changes what every number means without changing that code:
        # it goes into the version (so each result records it and a switch starts a new series),
        # beside a hash of the class's code (so that a change of the code still starts one).
        code = hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()[:16]
        cls.version = f"allocator={ALLOCATOR} code={code}"

    def prepare(self, builder: Callable[..., Case], *args, **kwargs) -> None:
        """self.case = builder(*args, **kwargs), built once per process, and self.number (calls
        per sample) sized so that a sample takes about sample_time.

        asv_runner 0.3.2 runs a benchmark's setup before every timed call (asv#966), and with
        number unset times one call per sample. Building the case in setup then timed one cold
        call after hundreds of milliseconds of building inputs: 0.68 ms at (262144, 4) for a
        call that takes 0.18 ms in a user's loop (Zen 4 VM). No call changes the work of the next
        (a train step changes weights, not shapes), so the one build serves every call, which
        then runs warm, as in a user's loop, whichever asv_runner runs it."""
        key = (type(self).__name__, builder.__name__, args, tuple(sorted(kwargs.items())))
        if _built.get("key") != key:
            _built.clear()  # a process times one parameter combination: hold one case
            case = builder(*args, **kwargs)
            timed = any(name.startswith("time_") for name in dir(type(self)))
            per_call = case.seconds_per_call(self.sample_time / 5) if timed else 0.0
            number = max(1, round(self.sample_time / per_call)) if per_call > 0 else 1
            _built.update(key=key, case=case, number=number)
        self.case = _built["case"]
        self.number = _built["number"]


@dataclass
class Case:
    """One benchmark's timed work: call run(); what it needs was built beforehand."""

    run: Callable[[], object]
    device: str
    label: str
    inputs: tuple = ()
    info: dict = field(default_factory=dict)  # sizes, backend, ... for the report

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def run_synced(self) -> None:
        self.run()
        self.sync()

    def seconds_per_call(self, min_time: float = 0.05) -> float:
        """A rough host-clock estimate (at least one call), used to size pedantic rounds."""
        calls, start = 0, time.perf_counter()
        while True:
            self.run_synced()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time or calls >= 1000:
                return elapsed / calls

    def cuda_event_seconds(self, min_time: float = 0.1, repeats: int = 5) -> float:
        """Median device time per call between CUDA events, over `repeats` blocks of calls."""
        import torch

        self._require_cuda()
        per_call = self.seconds_per_call()
        calls = max(1, min(1000, int(min_time / max(per_call, 1e-7))))
        times = []
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                self.run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / calls)
        return statistics.median(times)

    def cuda_peak_bytes(self) -> int:
        """Peak CUDA memory one call allocates above what was allocated before it (its outputs
        and workspace, autograd's saved tensors included)."""
        import torch

        self._require_cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        self.run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before

    def _require_cuda(self) -> None:
        if self.device != "cuda":
            raise NotImplementedError(f"{self.label}: CUDA metrics need a CUDA case")


# ------------------------------------------------------------------------------ environment
def _torch_on(device: str):
    """torch, after checking that `device` can run here."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device here (the grid selects device 'cuda')")
    _use_allocator()
    return torch


_steady_detail: str | None = None


def _use_allocator() -> None:
    """Makes this process allocate as ALLOCATOR says, before the case allocates its inputs."""
    global _steady_detail
    if ALLOCATOR != "steady":
        return
    if _steady_detail is None:
        # From the checkout, so every commit of an asv history runs with the same allocator.
        _steady_detail = _checkout_module("timing").reuse_freed_pages()
    if _steady_detail.startswith("default"):
        raise NotImplementedError(f"{ALLOCATOR_ENV}=steady, but freed pages cannot be reused "
                                  f"here: {_steady_detail}")


def _backend_status(device: str, name: str) -> None:
    """NotImplementedError unless plrnn backend `name` runs on `device` at this commit."""
    import plrnn

    if name == "auto":
        return
    statuses = {s.name: s for s in plrnn.backends(device)}
    if name not in statuses:
        raise NotImplementedError(f"backend {name!r} does not exist in this version of plrnn "
                                  f"(it has {sorted(statuses)})")
    if not statuses[name].available:
        raise NotImplementedError(f"backend {name!r} is unavailable: {statuses[name].reason}")


def _generator(*parts):
    import torch

    return torch.Generator().manual_seed(grid.seed_for(GRID.seed, *parts))


def check_recurrence(h, decays, impulses, label: str) -> None:
    """AssertionError unless h (T, *) is the recurrence of (decays, impulses) on a channel subset,
    against float64 on the CPU: a wrong kernel must not be timed."""
    T = decays.shape[0]
    if T == 0:
        return
    want = oracle.truth64(check_cols(decays), check_cols(impulses))
    _assert_close(check_cols(h), want, f"{label}: output")


def gradients64(decays, impulses, grad_out) -> tuple:
    """(d decays, d impulses) of sum(h * grad_out) on the channels check_recurrence checks, from
    float64 loops (oracle.recurrence_grads64)."""
    if decays.shape[0] == 0:
        return ()
    return oracle.recurrence_grads64(check_cols(decays), check_cols(impulses),
                                     check_cols(grad_out))


def check_gradients(grads, want, label: str) -> None:
    """AssertionError unless grads (tensors of (T, *)) are gradients64's `want`: a
    forward+backward case must not time a wrong backward either."""
    for name, got, ref in zip(("decays", "impulses"), grads, want):
        _assert_close(check_cols(got), ref, f"{label}: gradient of the {name}")


def check_cols(t):
    """The checked channels of a (T, *) tensor as a (T, k) float64 (complex128) host array:
    plrnn.bench.recurrence.inputs.checked_columns, CHECK_CHANNELS spread from the row's first
    channel to its last, so that every thread's share of a row, every sequence of a batch and
    every head is read."""
    return _checkout_module("recurrence.inputs").checked_columns(t)


def _assert_close(got, want, what: str) -> None:
    import numpy as np

    if not np.allclose(got, want, rtol=CHECK_RTOL, atol=CHECK_ATOL):
        err = float(np.abs(got - want).max())
        raise AssertionError(f"{what} differs from the float64 reference "
                             f"(max abs error {err:.3g}); not timing a wrong result")


# ------------------------------------------------------------------------------------ kernels
def _combine(left, right):
    # (a1, x1) then (a2, x2): h = a2 * (a1 * h0 + x1) + x2
    return left[0] * right[0], right[0] * left[1] + right[1]


def _time_major_op(backend: str, device: str, seq_len: int) -> Callable:
    """(decays, impulses) [T, B, H] -> h [T, B, H] for a plrnn backend or a baseline."""
    import plrnn

    if backend == "associative_scan":
        try:
            from torch._higher_order_ops.associative_scan import associative_scan
        except ImportError as err:
            raise NotImplementedError(f"torch has no associative_scan here: {err}") from None
        return lambda a, x: associative_scan(_combine, (a, x), dim=0, combine_mode="generic")[1]
    if backend.startswith("accelerated_scan."):
        if device != "cuda":
            raise NotImplementedError(f"{backend} runs on CUDA only")
        if seq_len < 32 or seq_len & (seq_len - 1):
            raise NotImplementedError(f"{backend} needs seq_len a power of two >= 32, "
                                      f"got {seq_len}")
        try:
            module = importlib.import_module(backend)
        except Exception as err:  # noqa: BLE001 - not installed, or its CUDA build failed
            raise NotImplementedError(f"cannot import {backend}: {err}") from None
        # Layout (B, H, T): the transposes are part of the baseline's cost in a time-major
        # model, so they are timed with it.
        return lambda a, x: module.scan(a.permute(1, 2, 0).contiguous(),
                                        x.permute(1, 2, 0).contiguous()).permute(2, 0, 1)
    _backend_status(device, backend)
    return lambda a, x: plrnn.linear_recurrence(a, x, backend=backend)


def kernel_case(seq_len: int, batch: int, hidden: int, backend: str, pass_: str,
                kernel_grid=None, device: str | None = None) -> Case:
    """linear_recurrence (or a baseline) on [seq_len, batch, hidden] fp32 inputs: decays forget
    gates (KERNEL_DECAYS), impulses ~ N(0, 1), the same for every backend at one size."""
    kernel_grid = GRID.kernels if kernel_grid is None else kernel_grid
    device = GRID.device if device is None else device
    reason = kernel_grid.skip_reason(seq_len, batch, hidden, backend, pass_)
    if reason:
        raise NotImplementedError(reason)
    if pass_ not in grid.PASSES:
        raise ValueError(f"pass_ must be one of {grid.PASSES}, got {pass_!r}")
    torch = _torch_on(device)
    op = _time_major_op(backend, device, seq_len)
    gen = _generator("kernels", seq_len, batch, hidden)
    shape = (seq_len, batch, hidden)
    a = _checkout_module("decays").make_decays(KERNEL_DECAYS, shape, gen).to(device)
    x = torch.randn(shape, generator=gen).to(device)
    label = f"{backend} {pass_} T={seq_len} B={batch} H={hidden} on {device}"
    check_recurrence(op(a, x), a, x, label)  # also the warm-up call
    info = {"suite": "kernels", "op": "linear_recurrence", "backend": backend, "pass": pass_,
            "seq_len": seq_len, "batch": batch, "hidden": hidden, "device": device}
    if pass_ == grid.FORWARD:
        return Case(lambda: op(a, x), device, label, (a, x), info)
    a.requires_grad_()
    x.requires_grad_()
    g = torch.randn(shape, generator=gen).to(device)

    def forward_backward():
        return torch.autograd.grad(op(a, x), (a, x), g)

    # The reference first, while the process holds the least: asv's peakmem_ includes setup.
    want = gradients64(a, x, g)
    check_gradients(forward_backward(), want, label)  # also the warm-up call
    return Case(forward_backward, device, label, (a, x, g), info)


def copy_case(numel: int, device: str | None = None) -> Case:
    """dst.copy_(src) on preallocated fp32 buffers: the bandwidth yardstick (8 bytes/element)."""
    device = GRID.device if device is None else device
    torch = _torch_on(device)
    src = torch.rand(numel, generator=_generator("copy", numel)).to(device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in: the timed copy then only moves data
    info = {"suite": "copy", "op": "copy_", "numel": numel, "device": device}
    return Case(lambda: dst.copy_(src), device, f"copy_ {numel} on {device}", (src,), info)


# ------------------------------------------------------------------------------------- layers
_QRNN = re.compile(r"QRNN\((\d+)\)")


def _layers_module():
    try:
        return importlib.import_module("plrnn.layers")
    except ImportError as err:
        raise NotImplementedError(f"plrnn.layers is not in this version of plrnn: {err}") from None


def _make_layer(name: str, input_size: int, hidden: int, num_layers: int):
    layers = _layers_module()
    if name == "GILR":
        return layers.GILR(input_size, hidden, num_layers)
    if name == "GILR-LSTM":
        return layers.GILRLSTM(input_size, hidden, num_layers)
    if name == "SRU":
        return layers.SRU(input_size, hidden, num_layers)
    m = _QRNN.fullmatch(name)
    if m:
        return layers.QRNN(input_size, hidden, num_layers, window=int(m.group(1)))
    raise ValueError(f"layer must be one of {grid.LAYERS}, got {name!r}")


def _model_case(make_model: Callable, backend: str | None, suite: str, name: str, seq_len: int,
                batch: int, pass_: str, layer_grid, device: str, info: dict) -> Case:
    """The case of make_model(backend) (a CPU model, built from the suite's seed), checked once
    against make_model(LAYER_REFERENCE_BACKEND) in float64 on the CPU: the output and, for
    forward+backward, every parameter's gradient."""
    torch = _torch_on(device)

    def seeded(backend_):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(grid.seed_for(GRID.seed, suite, name))
            return make_model(backend_)

    reference = seeded(LAYER_REFERENCE_BACKEND).to(torch.float64)
    model = seeded(backend).to(device)
    gen = _generator(suite, seq_len, batch)
    x = torch.randn(seq_len, batch, layer_grid.input_size, generator=gen)
    label = f"{name} {pass_} T={seq_len} B={batch} on {device}"
    info = {"suite": suite, "pass": pass_, "seq_len": seq_len, "batch": batch,
            "hidden": layer_grid.hidden, "input_size": layer_grid.input_size,
            "num_layers": layer_grid.num_layers, "device": device, **info}
    x_here = x.to(device)
    if pass_ == grid.FORWARD:
        model.eval()
        reference.eval()

        def forward():  # inference: no autograd graph, like the kernels' forward pass
            with torch.no_grad():
                return model(x_here)[0]

        with torch.no_grad():
            want = reference(x.double())[0]
        _check_model_value(forward(), want, f"{label}: output")  # also the warm-up call
        return Case(forward, device, label, (x_here,), info)
    g = torch.randn(seq_len, batch, layer_grid.hidden, generator=gen)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    g_here = g.to(device)

    def forward_backward():
        return torch.autograd.grad(model(x_here)[0], params, g_here)

    want_out = reference(x.double())[0]
    want_grads = torch.autograd.grad(want_out, [p for p in reference.parameters()
                                                if p.requires_grad], g.double())
    out = model(x_here)[0]  # forward_backward, keeping the output: also the warm-up call
    grads = torch.autograd.grad(out, params, g_here)
    _check_model_value(out, want_out, f"{label}: output")
    for (param, _), got, ref in zip(named, grads, want_grads, strict=True):
        _check_model_value(got, ref, f"{label}: gradient of {param}")
    return Case(forward_backward, device, label, (x_here, g_here), info)


def _check_model_value(got, want, what: str) -> None:
    """AssertionError unless got is finite and within LAYER_TOL times the largest |want|."""
    import torch

    got, want = got.detach().to("cpu", torch.float64), want.detach()
    if not bool(torch.isfinite(got).all()):
        raise AssertionError(f"{what} is not finite; not timing it")
    scale = float(want.abs().max()) if want.numel() else 0.0
    scale = scale or 1.0  # a gradient that is zero throughout: compare absolutely
    err = float((got - want).abs().max()) if want.numel() else 0.0
    if not err <= LAYER_TOL * scale:
        raise AssertionError(f"{what} differs from the float64 model on "
                             f"{LAYER_REFERENCE_BACKEND} by {err:.3g} (largest value "
                             f"{scale:.3g}); not timing a wrong result")


def layer_case(layer: str, recurrence: str, seq_len: int, batch: int, pass_: str,
               layer_grid=None, device: str | None = None) -> Case:
    """A stack of the paper's layers with its serial or its parallel recurrence backend."""
    layer_grid = GRID.layers if layer_grid is None else layer_grid
    device = GRID.device if device is None else device
    reason = layer_grid.skip_reason(seq_len, batch)
    if reason:
        raise NotImplementedError(reason)
    if layer not in grid.LAYERS:
        raise ValueError(f"layer must be one of {grid.LAYERS}, got {layer!r}")
    backend = grid.RECURRENCE_BACKEND[device][recurrence]
    _torch_on(device)
    set_backend = _layers_module().set_backend
    _backend_status(device, backend)
    _backend_status("cpu", LAYER_REFERENCE_BACKEND)

    def make(backend_):
        model = _make_layer(layer, layer_grid.input_size, layer_grid.hidden,
                            layer_grid.num_layers)
        return set_backend(model, backend_)

    return _model_case(make, backend, "layers", layer, seq_len, batch, pass_, layer_grid, device,
                       {"op": "layer", "layer": layer, "recurrence": recurrence,
                        "backend": backend})


def lstm_case(seq_len: int, batch: int, pass_: str, layer_grid=None,
              device: str | None = None) -> Case:
    """torch.nn.LSTM at the layers' size: the paper's cuDNN baseline."""
    layer_grid = GRID.layers if layer_grid is None else layer_grid
    device = GRID.device if device is None else device
    reason = layer_grid.skip_reason(seq_len, batch)
    if reason:
        raise NotImplementedError(reason)
    torch = _torch_on(device)

    def make(_backend):  # torch's own recurrence: the reference is the same LSTM in float64
        return torch.nn.LSTM(layer_grid.input_size, layer_grid.hidden, layer_grid.num_layers)

    return _model_case(make, None, "layers", grid.CUDNN_BASELINE, seq_len, batch, pass_,
                       layer_grid, device, {"op": "layer", "layer": grid.CUDNN_BASELINE,
                                            "recurrence": "cudnn" if device == "cuda" else "torch"})


# -------------------------------------------------------------------------------------- train
_TASK_KINDS = {"GILR-LSTM": "gilr_lstm", "LSTM": "lstm"}
_CLIP = {"GILR-LSTM": 20.0, "LSTM": 100.0}  # the paper's clipping norms at n = 1024


def train_case(model: str, seq_len: int, batch: int, train_grid=None,
               device: str | None = None) -> Case:
    """One optimiser step of the synthetic task (plrnn.tasks.train_step: forward, backward,
    global-norm clipping, Adam) on one pre-drawn minibatch."""
    train_grid = GRID.train if train_grid is None else train_grid
    device = GRID.device if device is None else device
    if model not in _TASK_KINDS:
        raise ValueError(f"model must be one of {sorted(_TASK_KINDS)}, got {model!r}")
    torch = _torch_on(device)
    try:
        from plrnn.tasks import SyntheticBatches, make_model, train_step
    except ImportError as err:
        raise NotImplementedError(f"plrnn.tasks is not in this version of plrnn: {err}") from None
    seed = grid.seed_for(GRID.seed, "train", model)
    net = make_model(_TASK_KINDS[model], train_grid.hidden, train_grid.num_layers,
                     device=device, seed=seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    data = next(SyntheticBatches(seq_len, batch, device=device, seed=seed))
    clip = _CLIP[model]

    def step():
        return train_step(net, data, optimizer, clip)

    out = step()
    if not bool(torch.isfinite(out.loss)):
        raise AssertionError(f"{model} train step: non-finite loss")
    info = {"suite": "train", "op": "train_step", "model": model, "seq_len": seq_len,
            "batch": batch, "hidden": train_grid.hidden, "num_layers": train_grid.num_layers,
            "device": device}
    return Case(step, device, f"{model} train step T={seq_len} B={batch} on {device}", (), info)


# ------------------------------------------------------------------------- placeholders
def cuda_only_params(params: list[list]) -> list[list]:
    """The parameter lists of a CUDA-only benchmark: the grid's own on a CUDA grid; on a CPU grid
    its first combination alone (skipped in setup), so no process is started per combination."""
    if GRID.device == "cuda":
        return params
    return [values[:1] for values in params]


def require_cuda_grid() -> None:
    if GRID.device != "cuda":
        raise NotImplementedError(f"CUDA metrics; grid {GRID.name!r} runs on {GRID.device} "
                                  f"(set {grid.ENV_VAR}=gpu on a GPU machine)")
