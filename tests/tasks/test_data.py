"""The synthetic task's data stream, checked against the task's definition written out directly
(numpy one-hot rows, float64), not against the generator's own helpers."""

from __future__ import annotations

import contextlib
import ctypes

import numpy as np
import pytest
import torch

from plrnn.tasks import NUM_SYMBOLS, SyntheticBatches, TaskBatch, dense_nbytes, index_nbytes

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def expected_dense(batch: TaskBatch) -> np.ndarray:
    """The task's input by definition: x[0] = +e0 (class 0) / -e0 (class 1), x[t>0] = e_k."""
    idx = batch.indices.cpu().numpy()
    labels = batch.labels.cpu().numpy()
    x = np.eye(NUM_SYMBOLS, dtype=np.float64)[idx]
    x[0] = 0.0
    x[0, :, 0] = np.where(labels == 0, 1.0, -1.0)
    return x


@pytest.mark.parametrize("batch_size", [2, 8, 16])
def test_even_batches_are_exactly_half_and_half(batch_size):
    stream = SyntheticBatches(5, batch_size, seed=3)
    first_positions = set()
    for _ in range(40):
        labels = next(stream).labels
        assert labels.dtype == torch.int64
        assert sorted(labels.tolist()) == [0] * (batch_size // 2) + [1] * (batch_size // 2)
        first_positions.add(int(labels[0]))
    assert first_positions == {0, 1}, "classes must be shuffled within the batch"


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_odd_batches_balance_over_each_pair_and_alternate_the_extra(batch_size):
    stream = SyntheticBatches(4, batch_size, seed=1)
    sums = [int(next(stream).labels.sum()) for _ in range(20)]
    half = batch_size // 2
    # The extra sequence is class 0 in even-numbered batches, class 1 in odd ones.
    assert sums == [half + (k % 2) for k in range(20)]
    if batch_size == 1:
        assert sums == [0, 1] * 10


def test_dense_matches_the_definition():
    stream = SyntheticBatches(33, 6, seed=7)
    for _ in range(3):
        batch = next(stream)
        x = batch.dense(torch.float64)
        assert x.shape == (33, 6, NUM_SYMBOLS) and x.dtype == torch.float64
        np.testing.assert_array_equal(x.numpy(), expected_dense(batch))


def test_dense_rows_are_one_hot_and_the_first_step_carries_the_label():
    batch = next(SyntheticBatches(200, 8, seed=11))
    x = batch.dense(torch.float32)
    later = x[1:]
    assert torch.equal((later != 0).sum(-1), torch.ones(199, 8, dtype=torch.int64))
    assert torch.equal(later.sum(-1), torch.ones(199, 8))
    assert set(later.unique().tolist()) == {0.0, 1.0}
    first = x[0]
    assert torch.equal((first != 0).sum(-1), torch.ones(8, dtype=torch.int64))
    for b in range(8):
        assert first[b, 0].item() == (1.0 if batch.labels[b].item() == 0 else -1.0)


def test_symbols_are_uniform_and_include_the_marker_symbol():
    # 65,536 draws over 128 symbols, 512 expected per symbol; chi-square has 127 degrees of
    # freedom (mean 127, sd ~16): a bound 8 sd above the mean flags a biased draw, not noise.
    batch = next(SyntheticBatches(4097, 16, seed=5))
    counts = torch.bincount(batch.indices[1:].flatten(), minlength=NUM_SYMBOLS).double()
    assert counts.numel() == NUM_SYMBOLS
    expected = counts.sum() / NUM_SYMBOLS
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 127 + 8 * (2 * 127) ** 0.5, chi2
    assert counts[0] > 0, "symbol 0 (+e0) is a valid later input, as in the paper's task"
    assert counts.min() > 0.8 * expected and counts.max() < 1.2 * expected


def test_sequences_differ_across_batch_and_batches():
    stream = SyntheticBatches(64, 4, seed=0)
    a, b = next(stream), next(stream)
    assert not torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices[:, 0], a.indices[:, 1])


def test_same_seed_same_stream_other_seed_other_stream():
    def draw(seed):
        stream = SyntheticBatches(50, 4, seed=seed)
        return [next(stream) for _ in range(3)]

    for x, y in zip(draw(42), draw(42)):
        assert torch.equal(x.indices, y.indices) and torch.equal(x.labels, y.labels)
    assert not torch.equal(draw(42)[0].indices, draw(43)[0].indices)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dense_dtype_and_device(dtype):
    batch = next(SyntheticBatches(9, 2, seed=0))
    x = batch.dense(dtype)
    assert x.dtype == dtype and x.device == batch.device
    np.testing.assert_array_equal(x.double().numpy(), expected_dense(batch))


def test_index_form_size_and_dense_size():
    T, B = 1000, 3
    batch = next(SyntheticBatches(T, B))
    assert batch.indices.shape == (T, B) and batch.indices.dtype == torch.int64
    assert batch.labels.shape == (B,)
    assert batch.seq_len == T and batch.batch_size == B
    nbytes = batch.indices.nbytes + batch.labels.nbytes
    assert nbytes == index_nbytes(T, B) == 8 * (T * B + B)
    assert dense_nbytes(T, B, torch.float32) == batch.dense(torch.float32).nbytes == T * B * 128 * 4
    assert dense_nbytes(T, B, torch.bfloat16) == T * B * 128 * 2


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0) and return it. Freed
    heap pages go back to the system first: a test earlier in the process may have made glibc
    keep them (plrnn.bench.timing.reuse_freed_pages), and an allocation that reuses resident
    pages raises no peak."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as err:
        pytest.skip(f"cannot reset the peak RSS here: {err}")
    return _peak_rss_mib()


def test_a_million_step_batch_stays_in_index_form():
    """Peak RSS while drawing a T = 2**20 batch: the index form is 8 MiB; a dense float32 batch
    would be 512 MiB. The second measurement shows the probe can see a dense batch."""
    stream = SyntheticBatches(2**20, 1, seed=0)
    next(SyntheticBatches(64, 1))  # warm the generator and allocator
    before = _reset_peak_rss()
    batch = next(stream)
    drawn = _peak_rss_mib() - before
    before = _reset_peak_rss()
    dense = batch.dense(torch.float32)
    dense_peak = _peak_rss_mib() - before
    del dense
    assert drawn < 48, f"drawing a T=2**20 batch raised peak RSS by {drawn:.0f} MiB"
    assert dense_peak > 400, f"the probe missed a 512 MiB dense batch ({dense_peak:.0f} MiB)"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"seq_len": 0}, "seq_len"), ({"batch_size": 0}, "batch_size"),
     ({"seq_len": 2.0}, "seq_len"), ({"batch_size": True}, "batch_size"),
     ({"num_symbols": 0}, "num_symbols")],
)
def test_bad_sizes_name_the_argument(kwargs, name):
    args = {"seq_len": 4, "batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        SyntheticBatches(**args)


def test_dense_rejects_integer_dtype():
    with pytest.raises(TypeError, match="dtype"):
        next(SyntheticBatches(4, 2)).dense(torch.int64)


@CUDA
def test_batches_are_built_on_the_gpu():
    stream = SyntheticBatches(4096, 8, device="cuda", seed=0)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    batch = next(stream)
    assert batch.indices.is_cuda and batch.labels.is_cuda
    assert torch.cuda.max_memory_allocated() - base < 4 * index_nbytes(4096, 8)
    x = batch.dense(torch.float16)
    assert x.is_cuda and x.dtype == torch.float16
    np.testing.assert_array_equal(x.double().cpu().numpy(), expected_dense(batch))
    assert sorted(batch.labels.tolist()) == [0] * 4 + [1] * 4
    again = next(SyntheticBatches(4096, 8, device="cuda", seed=0))
    assert torch.equal(again.indices, batch.indices)
