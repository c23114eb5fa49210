"""asv: the op's newer inputs beside what a user would otherwise run (benchmarks/_op_inputs.py):
a packed batch (cu_seqlens) against padding it to the longest sequence (plrnn, or torch's
associative_scan), time-invariant decays against the same decays materialized over time, decays
shared over the batch against the same decays materialized over the batch, one decay per head
(Mamba-2's) against the same decays materialized over each head's channels, sequences lying
batch-first in memory against the same values time-major, a complex diagonal
recurrence against associative_scan, float32, bfloat16 and float16 storage each beside
torch.mul in the same dtype, and the forward of each CPU kernel under every decay distribution
(U[0,1), U[0.9,1), forget gates sigmoid(N(b, 1))): the kernel cases draw U[0,1) only."""

from ._op_inputs import (
    COMPLEX_METHODS,
    DECAY_LAYOUTS,
    DISTRIBUTION_SHAPES,
    HEAD_LAYOUTS,
    PACKED_LAYOUTS,
    PASSES,
    SEQUENCE_LAYOUTS,
    SHARED_LAYOUTS,
    STORAGE_DTYPES,
    STORAGE_METHODS,
    batch_first_case,
    batch_shared_case,
    broadcast_case,
    complex_case,
    decay_distribution_case,
    decays,
    head_shared_case,
    packed_case,
    storage_case,
)
from ._support import AsvDefaults

CPU_KERNELS = ["cpu_serial", "cpu_parallel"]


class PackedBatch(AsvDefaults):
    params = [list(PACKED_LAYOUTS), CPU_KERNELS, list(PASSES)]
    param_names = ["layout", "backend", "pass_"]

    def setup(self, layout, backend, pass_):
        if layout == "padded_associative_scan" and backend != CPU_KERNELS[0]:
            raise NotImplementedError("associative_scan has no backend; timed once")
        self.prepare(packed_case, layout, backend, pass_)

    def time_packed_batch(self, layout, backend, pass_):
        self.case.run()


class TimeInvariantDecays(AsvDefaults):
    params = [list(DECAY_LAYOUTS), CPU_KERNELS, list(PASSES)]
    param_names = ["decays", "backend", "pass_"]

    def setup(self, decays, backend, pass_):
        self.prepare(broadcast_case, decays, backend, pass_)

    def time_time_invariant_decays(self, decays, backend, pass_):
        self.case.run()


class BatchSharedDecays(AsvDefaults):
    params = [list(SHARED_LAYOUTS), CPU_KERNELS, list(PASSES)]
    param_names = ["decays", "backend", "pass_"]

    def setup(self, decays, backend, pass_):
        self.prepare(batch_shared_case, decays, backend, pass_)

    def time_batch_shared_decays(self, decays, backend, pass_):
        self.case.run()


class HeadSharedDecays(AsvDefaults):
    params = [list(HEAD_LAYOUTS), CPU_KERNELS, list(PASSES)]
    param_names = ["decays", "backend", "pass_"]

    def setup(self, decays, backend, pass_):
        self.prepare(head_shared_case, decays, backend, pass_)

    def time_head_shared_decays(self, decays, backend, pass_):
        self.case.run()


class BatchFirstSequences(AsvDefaults):
    params = [list(SEQUENCE_LAYOUTS), CPU_KERNELS, list(PASSES)]
    param_names = ["layout", "backend", "pass_"]

    def setup(self, layout, backend, pass_):
        self.prepare(batch_first_case, layout, backend, pass_)

    def time_batch_first_sequences(self, layout, backend, pass_):
        self.case.run()


class ComplexRecurrence(AsvDefaults):
    params = [list(COMPLEX_METHODS), list(PASSES)]
    param_names = ["method", "pass_"]

    def setup(self, method, pass_):
        self.prepare(complex_case, method, pass_)

    def time_complex_recurrence(self, method, pass_):
        self.case.run()


class StorageDtype(AsvDefaults):
    params = [list(STORAGE_DTYPES), list(STORAGE_METHODS), list(PASSES)]
    param_names = ["dtype", "method", "pass_"]

    def setup(self, dtype, method, pass_):
        self.prepare(storage_case, dtype, method, pass_)

    def time_storage_dtype(self, dtype, method, pass_):
        self.case.run()


class DecayDistribution(AsvDefaults):
    # Forward only: 20 cases, about 2 minutes of `asv run --quick` on 2 cores.
    params = [list(decays.DISTRIBUTIONS), list(DISTRIBUTION_SHAPES), CPU_KERNELS, ["forward"]]
    param_names = ["decays", "shape", "backend", "pass_"]

    def setup(self, distribution, shape, backend, pass_):
        self.prepare(decay_distribution_case, distribution, shape, backend, pass_)

    def time_decay_distribution(self, distribution, shape, backend, pass_):
        self.case.run()
