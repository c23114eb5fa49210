"""The benchmark grid: the one place the asv suite (benchmarks/) and the pytest-benchmark suite
(benchmarks/pytest_suite/) take their sizes, backends and layers from.

    PLRNN_BENCH_GRID=cpu        the default: `asv run --quick` in under 10 minutes on 2 CPU cores
    PLRNN_BENCH_GRID=cpu-full   more sizes, the Python reference loop, peak host memory everywhere
    PLRNN_BENCH_GRID=gpu        CUDA: larger sizes, the CUDA/Triton backends, accelerated-scan
    PLRNN_BENCH_GRID=tiny       one small size per suite, for CI smoke runs

Standard library only, and no relative imports, on purpose: the asv suite loads this file by
path from the checkout it runs from (not from the installed plrnn), so every commit of an asv
history is measured on the same sizes, also commits that predate this module, and reading the
grid imports no torch (asv starts a fresh process per parameter combination; combinations that
the grid rules out are skipped before torch is imported).
"""

from __future__ import annotations

import itertools
import math
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

ENV_VAR = "PLRNN_BENCH_GRID"
DEFAULT_GRID = "cpu"

FORWARD = "forward"
FORWARD_BACKWARD = "forward+backward"
PASSES = (FORWARD, FORWARD_BACKWARD)

# Backend names per device. Whether one is available is asked at run time
# (plrnn.backends(device)); these lists only fix the parameter axis, so that results stay
# comparable across commits where backends come and go. tests/bench checks that every backend
# of the registry appears here.
CPU_BACKENDS = ("reference", "torch", "cpu_serial", "cpu_parallel", "auto")
CUDA_BACKENDS = ("torch", "cuda_serial", "cuda_paper", "cuda_parallel", "triton", "auto")
# Not plrnn backends: torch's generic associative_scan, and the accelerated-scan package (GPU).
CPU_BASELINES = ("associative_scan",)
CUDA_BASELINES = ("associative_scan", "accelerated_scan.warp", "accelerated_scan.scalar")
BASELINES = frozenset(CPU_BASELINES + CUDA_BASELINES)

# The recurrence a layer runs with, by the paper's "single line of code" switch.
RECURRENCE_BACKEND = {
    "cpu": {"serial": "cpu_serial", "parallel": "cpu_parallel"},
    "cuda": {"serial": "cuda_serial", "parallel": "cuda_parallel"},
}
# What the reporting layer divides by for "speedup over serial" / "over cuDNN".
SERIAL_BASELINE = {"cpu": "cpu_serial", "cuda": "cuda_serial"}
CUDNN_BASELINE = "LSTM"  # torch.nn.LSTM (cuDNN on a GPU)

LAYERS = ("GILR", "GILR-LSTM", "QRNN(2)", "QRNN(10)", "SRU")
TRAIN_MODELS = ("GILR-LSTM", "LSTM")

KERNEL_PARAM_NAMES = ("seq_len", "batch", "hidden", "backend", "pass")
LAYER_PARAM_NAMES = ("layer", "recurrence", "seq_len", "batch", "pass")
LSTM_PARAM_NAMES = ("seq_len", "batch", "pass")
TRAIN_PARAM_NAMES = ("model", "seq_len", "batch")
COPY_PARAM_NAMES = ("numel",)


class GridError(ValueError):
    """An unknown grid name or an inconsistent grid definition."""


@dataclass(frozen=True)
class KernelGrid:
    """plrnn.linear_recurrence on (seq_len, batch, hidden) fp32 inputs, over backends and passes.

    Combinations with more than max_elements elements per tensor, more than a backend's
    backend_max_elements, or longer than a backend's max_seq_len, are skipped (the Python
    reference loop takes about 15 us per step; the pure-torch scans seconds on large inputs).
    """

    seq_len: tuple[int, ...]
    batch: tuple[int, ...]
    hidden: tuple[int, ...]
    backends: tuple[str, ...]
    passes: tuple[str, ...] = PASSES
    max_elements: int = 2**24
    max_seq_len: Mapping[str, int] = field(default_factory=dict)
    backend_max_elements: Mapping[str, int] = field(default_factory=dict)

    param_names = KERNEL_PARAM_NAMES

    def params(self) -> list[list]:
        return [list(self.seq_len), list(self.batch), list(self.hidden), list(self.backends),
                list(self.passes)]

    def skip_reason(self, seq_len: int, batch: int, hidden: int, backend: str,
                    pass_: str) -> str | None:
        """Why the grid leaves this combination out, or None if it is measured."""
        numel = seq_len * batch * hidden
        if numel > self.max_elements:
            return f"{seq_len}x{batch}x{hidden} = {numel} elements > this grid's {self.max_elements}"
        cap = self.max_seq_len.get(backend)
        if cap is not None and seq_len > cap:
            return f"backend {backend!r} is capped at seq_len {cap} in this grid"
        cap = self.backend_max_elements.get(backend)
        if cap is not None and numel > cap:
            return f"backend {backend!r} is capped at {cap} elements in this grid"
        return None

    def cases(self) -> Iterator[tuple]:
        """The (seq_len, batch, hidden, backend, pass) combinations the grid measures."""
        for combo in itertools.product(*self.params()):
            if self.skip_reason(*combo) is None:
                yield combo


@dataclass(frozen=True)
class LayerGrid:
    """The paper's layers (Table 2 setting: num_layers x hidden, input_size features) over
    seq_len x batch, each with its serial and its parallel recurrence, plus torch.nn.LSTM."""

    seq_len: tuple[int, ...]
    batch: tuple[int, ...]
    layers: tuple[str, ...] = LAYERS
    recurrences: tuple[str, ...] = ("serial", "parallel")
    passes: tuple[str, ...] = PASSES
    hidden: int = 256
    input_size: int = 4
    num_layers: int = 2
    max_tokens: int = 2**16  # seq_len * batch; the paper's Table 2 keeps b*T = 65,536

    def params(self) -> list[list]:
        return [list(self.layers), list(self.recurrences), list(self.seq_len), list(self.batch),
                list(self.passes)]

    def lstm_params(self) -> list[list]:
        return [list(self.seq_len), list(self.batch), list(self.passes)]

    def skip_reason(self, seq_len: int, batch: int) -> str | None:
        if seq_len * batch > self.max_tokens:
            return f"seq_len*batch = {seq_len * batch} > this grid's {self.max_tokens} tokens"
        return None

    def cases(self) -> Iterator[tuple]:
        for combo in itertools.product(*self.params()):
            if self.skip_reason(combo[2], combo[3]) is None:
                yield combo

    def lstm_cases(self) -> Iterator[tuple]:
        for combo in itertools.product(*self.lstm_params()):
            if self.skip_reason(combo[0], combo[1]) is None:
                yield combo


@dataclass(frozen=True)
class TrainGrid:
    """One optimiser step (forward, backward, clip, Adam) on the synthetic long-dependency task."""

    seq_len: tuple[int, ...]
    batch: tuple[int, ...]
    models: tuple[str, ...] = TRAIN_MODELS
    hidden: int = 512
    num_layers: int = 2

    def params(self) -> list[list]:
        return [list(self.models), list(self.seq_len), list(self.batch)]

    def cases(self) -> Iterator[tuple]:
        yield from itertools.product(*self.params())


@dataclass(frozen=True)
class Grid:
    name: str
    device: str  # "cpu" or "cuda"
    description: str
    kernels: KernelGrid
    # Sizes for memory and device metrics: peak host memory (asv peakmem_) and, on CUDA grids,
    # peak GPU memory and CUDA-event time (track_); a few large sizes, since every combination
    # and metric is a process of its own in asv.
    memory: KernelGrid
    layers: LayerGrid
    train: TrainGrid
    copy_numel: int  # elements per buffer of the copy_ probe; large enough to miss the caches
    seed: int = 0

    def __post_init__(self):
        if self.device not in RECURRENCE_BACKEND:
            raise GridError(f"grid {self.name!r}: device must be 'cpu' or 'cuda', "
                            f"got {self.device!r}")
        for kg in (self.kernels, self.memory):
            unknown = [p for p in kg.passes if p not in PASSES]
            if unknown:
                raise GridError(f"grid {self.name!r}: unknown passes {unknown}; "
                                f"choose from {PASSES}")
        unknown = [la for la in self.layers.layers if la not in LAYERS]
        if unknown:
            raise GridError(f"grid {self.name!r}: unknown layers {unknown}; choose from {LAYERS}")

    def recurrence_backend(self, recurrence: str) -> str:
        try:
            return RECURRENCE_BACKEND[self.device][recurrence]
        except KeyError:
            raise GridError(f"recurrence must be one of {sorted(RECURRENCE_BACKEND[self.device])},"
                            f" got {recurrence!r}") from None


def seed_for(*parts) -> int:
    """A stable seed per benchmark case (hash() of a str is salted per process)."""
    return zlib.crc32(repr(parts).encode())


def elements(seq_len: int, batch: int, hidden: int) -> int:
    return math.prod((seq_len, batch, hidden))


_PYTHON_LOOP_CAP = {"reference": 4096}

GRIDS: dict[str, Grid] = {
    g.name: g
    for g in (
        Grid(
            name="cpu",
            device="cpu",
            description="default: a few sizes that show the latency-bound (4 channels) and the "
                        "bandwidth-bound (256 channels) regimes; `asv run --quick` < 10 min on "
                        "2 cores",
            kernels=KernelGrid(
                seq_len=(1024, 65536), batch=(1,), hidden=(4, 256),
                backends=("torch", "cpu_serial", "cpu_parallel", "auto", "associative_scan"),
                backend_max_elements={"torch": 2**18, "associative_scan": 2**18},
            ),
            memory=KernelGrid(
                seq_len=(65536,), batch=(1,), hidden=(256,),
                backends=("torch", "cpu_serial", "cpu_parallel", "associative_scan"),
                passes=(FORWARD_BACKWARD,),
            ),
            layers=LayerGrid(seq_len=(1024,), batch=(4,), passes=(FORWARD_BACKWARD,)),
            train=TrainGrid(seq_len=(1024,), batch=(8,), hidden=64),
            copy_numel=2**24,
        ),
        Grid(
            name="cpu-full",
            device="cpu",
            description="the CPU grid of the paper's shapes: Table 1 (batch 1, 4-128 channels, "
                        "T up to 65536), batch 8 x 256 hidden, Table 2's b*T = 65536 layers",
            kernels=KernelGrid(
                seq_len=(256, 4096, 65536), batch=(1, 8), hidden=(4, 32, 128, 256),
                backends=CPU_BACKENDS + CPU_BASELINES, max_seq_len=_PYTHON_LOOP_CAP,
            ),
            memory=KernelGrid(
                seq_len=(4096, 65536), batch=(8,), hidden=(256,),
                backends=CPU_BACKENDS + CPU_BASELINES, max_seq_len=_PYTHON_LOOP_CAP,
            ),
            layers=LayerGrid(seq_len=(256, 4096, 65536), batch=(1, 16, 256)),
            train=TrainGrid(seq_len=(1024, 8192), batch=(8, 4), hidden=512),
            copy_numel=2**25,
        ),
        Grid(
            name="gpu",
            device="cuda",
            description="CUDA: few and many channels up to T = 2**20 (Table 1's regime and "
                        "batch 8 x 256 hidden), Table 2's layers at b*T <= 65536, Table 3's "
                        "training shapes",
            kernels=KernelGrid(
                seq_len=(4096, 65536, 2**20), batch=(1, 8), hidden=(4, 256),
                backends=CUDA_BACKENDS + CUDA_BASELINES, max_elements=2**28,
            ),
            memory=KernelGrid(
                seq_len=(65536, 2**20), batch=(1,), hidden=(256,),
                backends=CUDA_BACKENDS + CUDA_BASELINES, max_elements=2**28,
            ),
            layers=LayerGrid(seq_len=(4096, 65536), batch=(1, 16)),
            train=TrainGrid(seq_len=(1024, 8192), batch=(8, 4), hidden=512),
            copy_numel=2**28,
        ),
        Grid(
            name="tiny",
            device="cpu",
            description="CI smoke run: one small size per suite, every CPU backend",
            kernels=KernelGrid(
                seq_len=(64,), batch=(2,), hidden=(3,), backends=CPU_BACKENDS + CPU_BASELINES,
            ),
            memory=KernelGrid(
                seq_len=(64,), batch=(2,), hidden=(3,), backends=("cpu_serial",),
                passes=(FORWARD_BACKWARD,),
            ),
            layers=LayerGrid(seq_len=(16,), batch=(2,), hidden=8, input_size=4),
            train=TrainGrid(seq_len=(16,), batch=(2,), hidden=8),
            copy_numel=2**12,
        ),
    )
}


def get(name: str) -> Grid:
    try:
        return GRIDS[name]
    except KeyError:
        raise GridError(f"unknown benchmark grid {name!r} (from {ENV_VAR}); "
                        f"choose one of {sorted(GRIDS)}") from None


def selected(environ: Mapping[str, str] | None = None) -> Grid:
    """The grid named by $PLRNN_BENCH_GRID, or the default CPU grid when it is unset or empty."""
    environ = os.environ if environ is None else environ
    return get(environ.get(ENV_VAR, "").strip() or DEFAULT_GRID)
