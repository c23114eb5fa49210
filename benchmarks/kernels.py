"""asv: plrnn.linear_recurrence per backend (and torch's associative_scan, accelerated-scan),
over seq_len x batch x hidden x backend x pass from the grid (plrnn.bench.grid), plus the copy_
probe that the report divides by for "fraction of copy bandwidth".

Values asv records: seconds per call (time_*), the process's peak host memory (peakmem_*, torch
and the inputs included: compare backends at one size), and on CUDA grids the peak GPU memory a
call allocates and its device time between CUDA events (track_*). Effective bandwidths and
speedups are computed by `python -m plrnn.bench.report`, since asv reads smaller as better.
"""

from ._support import (
    GRID,
    AsvDefaults,
    copy_case,
    cuda_only_params,
    grid,
    kernel_case,
    require_cuda_grid,
)


class LinearRecurrence(AsvDefaults):
    params = GRID.kernels.params()
    param_names = list(grid.KERNEL_PARAM_NAMES)

    def setup(self, seq_len, batch, hidden, backend, pass_):
        self.prepare(kernel_case, seq_len, batch, hidden, backend, pass_)

    def time_linear_recurrence(self, seq_len, batch, hidden, backend, pass_):
        self.case.run()


class LinearRecurrenceMemory(AsvDefaults):
    params = GRID.memory.params()
    param_names = list(grid.KERNEL_PARAM_NAMES)

    def setup(self, seq_len, batch, hidden, backend, pass_):
        self.prepare(kernel_case, seq_len, batch, hidden, backend, pass_, kernel_grid=GRID.memory)

    def peakmem_linear_recurrence(self, seq_len, batch, hidden, backend, pass_):
        self.case.run()


class LinearRecurrenceCUDA(AsvDefaults):
    """Device metrics on the grid's memory sizes (time_* above already waits for the GPU)."""

    params = cuda_only_params(GRID.memory.params())
    param_names = list(grid.KERNEL_PARAM_NAMES)

    def setup(self, seq_len, batch, hidden, backend, pass_):
        require_cuda_grid()
        self.prepare(kernel_case, seq_len, batch, hidden, backend, pass_, kernel_grid=GRID.memory)

    def track_cuda_event_time(self, seq_len, batch, hidden, backend, pass_):
        return self.case.cuda_event_seconds()

    track_cuda_event_time.unit = "seconds"

    def track_cuda_peak_memory(self, seq_len, batch, hidden, backend, pass_):
        return self.case.cuda_peak_bytes()

    track_cuda_peak_memory.unit = "bytes"


class Copy(AsvDefaults):
    """dst.copy_(src) of numel fp32 elements (8 bytes each moved): the bandwidth yardstick."""

    params = [[GRID.copy_numel]]
    param_names = list(grid.COPY_PARAM_NAMES)

    def setup(self, numel):
        self.prepare(copy_case, numel)

    def time_copy(self, numel):
        self.case.run()
