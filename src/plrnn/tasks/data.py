"""The synthetic long-dependency task (Hochreiter & Schmidhuber 1997, problem 2b, as modified by
Martin & Cundy 2018, section 4): batches built on the target device, in index form.

A sequence of length T over a 128-symbol alphabet: x[0] = +e0 (class 0) or -e0 (class 1); every
later x[t] is e_k with k drawn uniformly (with replacement) from all 128 symbols, e0 included.
The label is the class, i.e. the sign of x[0]: the model has to carry one bit across T - 1 steps
of noise.

Memory per batch (why the index form exists): a dense one-hot batch is T * B * 128 values, 512
bytes per step and sequence in float32 (512 MiB at T = 2**20, B = 1). The generator therefore
only draws the symbol indices, T * B int64 (8 bytes per step and sequence, 8 MiB at T = 2**20,
B = 1) plus B labels, with a torch.Generator on the target device, so nothing of size T crosses
from the host. Models that need dense input (torch.nn.LSTM) call `TaskBatch.dense(dtype)`, which
fills the one-hot directly in the model's dtype on the device (a scatter into zeros: no int64 or
float64 intermediate of the dense size, unlike `F.one_hot(...).to(dtype)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NUM_SYMBOLS = 128
MARKER = 0  # the symbol whose sign carries the label at t = 0
NUM_CLASSES = 2


@dataclass(frozen=True)
class TaskBatch:
    """One minibatch in index form.

    indices: [T, B] int64 symbol per step; indices[0] is always MARKER (its sign is the label).
    labels: [B] int64 class, 0 (x[0] = +e0) or 1 (x[0] = -e0).
    """

    indices: torch.Tensor
    labels: torch.Tensor
    num_symbols: int = NUM_SYMBOLS

    @property
    def seq_len(self) -> int:
        return self.indices.shape[0]

    @property
    def batch_size(self) -> int:
        return self.indices.shape[1]

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def signs(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[B] the value of x[0][MARKER]: +1 for class 0, -1 for class 1."""
        return (1 - 2 * self.labels).to(dtype)

    def dense(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[T, B, num_symbols] the one-hot input in `dtype` on the batch's device.

        Costs dense_nbytes(T, B, dtype) (plus nothing of that size in between).
        """
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype}")
        T, B = self.indices.shape
        x = torch.zeros(T, B, self.num_symbols, dtype=dtype, device=self.device)
        x.scatter_(2, self.indices.unsqueeze(-1), 1.0)
        x[0, :, MARKER] = self.signs(dtype)
        return x

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(self.indices.to(device), self.labels.to(device), self.num_symbols)


def dense_nbytes(seq_len: int, batch_size: int, dtype: torch.dtype = torch.float32,
                 num_symbols: int = NUM_SYMBOLS) -> int:
    """Bytes of one dense batch: what `TaskBatch.dense` allocates."""
    return seq_len * batch_size * num_symbols * torch.empty((), dtype=dtype).element_size()


def index_nbytes(seq_len: int, batch_size: int) -> int:
    """Bytes of one batch in index form (indices and labels)."""
    return 8 * (seq_len * batch_size + batch_size)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class SyntheticBatches:
    """Endless stream of fresh TaskBatches, generated on `device` from `seed`.

    Class balance: an even batch holds exactly B/2 sequences of each class in a random order.
    An odd batch holds (B-1)/2 of each plus one extra whose class alternates from batch to batch
    (class 0 first), so every two consecutive batches are exactly balanced; with B = 1 the class
    simply alternates 0, 1, 0, 1, ... (the sequences themselves stay random, and a model sees one
    sequence at a time, so the order carries no information it could use).

    The same (seq_len, batch_size, seed, device type) always gives the same stream. CPU and CUDA
    streams differ (different generator algorithms).
    """

    def __init__(
        self,
        seq_len: int,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        num_symbols: int = NUM_SYMBOLS,
    ) -> None:
        self.seq_len = _check_positive_int("seq_len", seq_len)
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.num_symbols = _check_positive_int("num_symbols", num_symbols)
        self.device = torch.device(device)
        self.seed = seed
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.batches_drawn = 0

    def __iter__(self) -> SyntheticBatches:
        return self

    def __next__(self) -> TaskBatch:
        return self.next_batch()

    def _labels(self) -> torch.Tensor:
        B, half = self.batch_size, self.batch_size // 2
        labels = torch.empty(B, dtype=torch.int64, device=self.device)
        labels[:half] = 0
        labels[half : 2 * half] = 1
        if B % 2:
            labels[-1] = self.batches_drawn % 2
        perm = torch.randperm(B, generator=self.generator, device=self.device)
        return labels[perm]

    def next_batch(self) -> TaskBatch:
        labels = self._labels()
        indices = torch.randint(
            0, self.num_symbols, (self.seq_len, self.batch_size),
            generator=self.generator, device=self.device, dtype=torch.int64,
        )
        indices[0] = MARKER
        self.batches_drawn += 1
        return TaskBatch(indices, labels, self.num_symbols)
