"""The synthetic long-dependency task of Martin & Cundy (2018), section 4 / Table 3 / Figure 2.

    from plrnn.tasks import RunConfig, ModelConfig, TrainConfig, run
    result = run(RunConfig(seq_len=1024, batch_size=8, model=ModelConfig("gilr_lstm", hidden=64),
                           train=TrainConfig(lr=1e-3), log_path="runs/gilr.csv"))
    result.converged, result.iterations, result.wall_time_s

Pieces for other drivers and benchmarks: `SyntheticBatches` (the data stream), `make_model`,
`train_step`, `ConvergenceMonitor`, `paper_config` (the paper's settings).
"""

from .config import (
    PAPER_LENGTHS,
    ModelConfig,
    RunConfig,
    TrainConfig,
    paper_config,
    resolve_device,
    resolve_dtype,
)
from .convergence import ConvergenceMonitor
from .data import (
    NUM_CLASSES,
    NUM_SYMBOLS,
    SyntheticBatches,
    TaskBatch,
    dense_nbytes,
    index_nbytes,
)
from .models import KINDS, SequenceClassifier, make_model
from .train import LOG_COLUMNS, RunResult, StepOutput, Training, data_seed, run, setup, train_step

__all__ = [
    "ConvergenceMonitor",
    "KINDS",
    "LOG_COLUMNS",
    "ModelConfig",
    "NUM_CLASSES",
    "NUM_SYMBOLS",
    "PAPER_LENGTHS",
    "RunConfig",
    "RunResult",
    "SequenceClassifier",
    "StepOutput",
    "SyntheticBatches",
    "TaskBatch",
    "TrainConfig",
    "Training",
    "data_seed",
    "dense_nbytes",
    "index_nbytes",
    "make_model",
    "paper_config",
    "resolve_device",
    "resolve_dtype",
    "run",
    "setup",
    "train_step",
]
