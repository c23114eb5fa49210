"""Training on the synthetic task: one step (`train_step`), and a whole run to convergence or a cap
(`run`), logged to a CSV as it goes.

Conventions:
* A step's accuracy and loss are those of its minibatch in the forward pass *before* the update
  (the batch is fresh, so this is an unbiased estimate of the current model). The authors' driver
  re-evaluated the batch after the update, which flatters a little.
* `iterations` counts optimizer steps; a converged run stops at the step that completed the window.
* Wall time runs from just before the first step to the end of the last (model construction and
  the optional warm-up are outside it); it includes data generation, as in the paper.
"""

from __future__ import annotations

import csv
import math
import operator
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig, resolve_device, resolve_dtype
from .convergence import ConvergenceMonitor
from .data import SyntheticBatches, TaskBatch
from .models import SequenceClassifier, make_model

LOG_COLUMNS = ("step", "wall_time_s", "accuracy", "loss", "grad_norm",
               "model", "T", "batch_size", "hidden", "seed")

# The data stream gets its own seed, derived from the run's, so that on the CPU (one mt19937
# algorithm for both) the data draws never replay the stream the initial weights came from.
_DATA_SEED_OFFSET = 0x5EED_DA7A


def data_seed(seed: int) -> int:
    return (seed + _DATA_SEED_OFFSET) % 2**63


class StepOutput(NamedTuple):
    """Detached 0-d tensors on the model's device (reading them synchronises a GPU)."""

    loss: torch.Tensor
    accuracy: torch.Tensor
    grad_norm: torch.Tensor  # global norm before clipping


def train_step(model: nn.Module, batch: TaskBatch | tuple[torch.Tensor, torch.Tensor],
               optimizer: torch.optim.Optimizer, clip: float | None = None) -> StepOutput:
    """One Adam (or any optimizer) step on one minibatch with global-norm gradient clipping.

    batch: a TaskBatch, or (x [T, B, 128] dense, labels [B]).
    clip: max global gradient norm, None for no clipping.
    """
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip!r}")
    x, labels = (batch, batch.labels) if isinstance(batch, TaskBatch) else batch
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    # Cross-entropy in float32 at least: a half-precision softmax over 2 logits loses the loss.
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip if clip is not None else math.inf)
    optimizer.step()
    accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
    return StepOutput(loss.detach(), accuracy, grad_norm.detach())


class Training(NamedTuple):
    model: SequenceClassifier
    optimizer: torch.optim.Optimizer
    batches: SyntheticBatches
    device: torch.device
    dtype: torch.dtype


def setup(config: RunConfig) -> Training:
    """Model, optimizer and data stream of a run (cheap: also what a step benchmark builds)."""
    try:  # numpy integers too, as plain ints (the data seed adds an offset to it)
        seed = None if isinstance(config.seed, bool) else operator.index(config.seed)
    except TypeError:
        seed = None
    if seed is None or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {config.seed!r}")
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype)
    if dtype == torch.float16:
        raise ValueError(
            "dtype float16 cannot train here: Adam's eps (1e-8) is 0 in float16, so a weight "
            "whose gradient is 0 becomes 0/0 = NaN at the first step, and this loop keeps no "
            "float32 master weights; use bfloat16 or float32"
        )
    m = config.model
    model = make_model(
        m.kind, m.hidden, m.num_layers, backend=m.backend, forget_bias=m.forget_bias,
        surrogate=m.surrogate, init_scale=m.init_scale, device=device, dtype=dtype,
        seed=seed,
    )
    if not config.train.lr > 0:
        raise ValueError(f"train.lr must be > 0, got {config.train.lr!r}")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    batches = SyntheticBatches(config.seq_len, config.batch_size, device=device,
                               seed=data_seed(seed))
    return Training(model, optimizer, batches, device, dtype)


@dataclass
class RunResult:
    converged: bool
    iterations: int  # optimizer steps taken; the convergence step when converged
    wall_time_s: float
    final_accuracy: float  # minibatch accuracy of the last step
    final_loss: float
    stop_reason: str  # "converged" | "max_steps" | "max_wall_time" | "nonfinite_loss"
    log_path: str | None
    config: RunConfig

    def to_dict(self) -> dict:
        return asdict(self)


class CsvLog:
    """Rows appended and flushed one by one, so an interrupted run keeps everything logged."""

    def __init__(self, path: str | Path | None, constants: dict[str, object]) -> None:
        self.path = Path(path) if path is not None else None
        self.constants = constants
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=LOG_COLUMNS)
            self._writer.writeheader()
            self._file.flush()

    def write(self, **row: object) -> None:
        if self._file is not None:
            self._writer.writerow({**row, **self.constants})
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _check_caps(config: RunConfig) -> None:
    t = config.train
    if t.max_steps is None and t.max_wall_time_s is None:
        raise ValueError("train.max_steps and train.max_wall_time_s are both None: a run needs a cap")
    if t.max_steps is not None and (isinstance(t.max_steps, bool) or not isinstance(t.max_steps, int)
                                    or t.max_steps < 1):
        raise ValueError(f"train.max_steps must be a positive int or None, got {t.max_steps!r}")
    if t.max_wall_time_s is not None and not t.max_wall_time_s > 0:
        raise ValueError(f"train.max_wall_time_s must be > 0 or None, got {t.max_wall_time_s!r}")
    if isinstance(t.log_every, bool) or not isinstance(t.log_every, int) or t.log_every < 1:
        raise ValueError(f"train.log_every must be a positive int, got {t.log_every!r}")


def _warm_up(training: Training, config: RunConfig) -> None:
    # A short throwaway batch from its own generator: the run's data stream is left untouched, and
    # no optimizer step is taken, so the run's trajectory is the same with or without warm-up.
    stream = SyntheticBatches(min(config.seq_len, 16), config.batch_size, device=training.device,
                              seed=0)
    batch = next(stream)
    model = training.model
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(batch).float(), batch.labels).backward()
    model.zero_grad(set_to_none=True)
    if training.device.type == "cuda":
        torch.cuda.synchronize(training.device)


def run(config: RunConfig) -> RunResult:
    """Train until `config.train.window` consecutive full-accuracy checks, or a cap."""
    from tqdm.auto import tqdm

    _check_caps(config)
    t = config.train
    training = setup(config)
    model, optimizer, batches = training.model, training.optimizer, training.batches
    monitor = ConvergenceMonitor(t.window, t.check_every)
    if t.warmup:
        _warm_up(training, config)
    log = CsvLog(config.log_path, {
        "model": config.model.kind, "T": config.seq_len, "batch_size": config.batch_size,
        "hidden": config.model.hidden, "seed": config.seed,
    })
    bar = tqdm(total=t.max_steps, disable=not t.progress, unit="step",
               desc=f"{config.model.kind} T={config.seq_len} seed={config.seed}")
    step, logged_step, stop_reason = 0, 0, "max_steps"
    accuracy = loss = math.nan
    out = None
    start = time.perf_counter()
    try:
        while t.max_steps is None or step < t.max_steps:
            step += 1
            out = train_step(model, next(batches), optimizer, t.clip)
            bar.update()
            # Reading the values syncs a GPU, so only do it on check and log steps.
            is_log = step % t.log_every == 0
            if monitor.is_check(step) or is_log:
                accuracy, loss = out.accuracy.item(), out.loss.item()
            if is_log:
                log.write(step=step, wall_time_s=time.perf_counter() - start, accuracy=accuracy,
                          loss=loss, grad_norm=out.grad_norm.item())
                logged_step = step
                bar.set_postfix(acc=f"{accuracy:.3f}", loss=f"{loss:.4f}", refresh=False)
                if not math.isfinite(loss):
                    stop_reason = "nonfinite_loss"
                    break
            if monitor.update(step, accuracy):
                stop_reason = "converged"
                break
            if t.max_wall_time_s is not None and time.perf_counter() - start >= t.max_wall_time_s:
                stop_reason = "max_wall_time"
                break
        if out is not None:
            accuracy, loss = out.accuracy.item(), out.loss.item()
            if not math.isfinite(loss):  # diverged since the last log step
                stop_reason = "nonfinite_loss"
        wall = time.perf_counter() - start
        if step and logged_step != step:
            log.write(step=step, wall_time_s=wall, accuracy=accuracy, loss=loss,
                      grad_norm=out.grad_norm.item())
    finally:
        bar.close()
        log.close()
    return RunResult(
        converged=stop_reason == "converged", iterations=step, wall_time_s=wall,
        final_accuracy=accuracy, final_loss=loss, stop_reason=stop_reason,
        log_path=config.log_path, config=config,
    )
