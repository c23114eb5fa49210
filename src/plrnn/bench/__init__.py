"""Benchmarks for plrnn.

`python -m plrnn.bench.recurrence` times the linear-recurrence backends as users call them
(bandwidth against torch.mul and copy_, latency-bound regime, the paper's Table-1 grid, decay
distributions, forward+backward against baselines), with the default and the steady-state
allocator, and writes results/<machine>/recurrence_bench.{csv,md,json}.
`python -m plrnn.bench.layer_fusion` times each layer with its gate math eager and fused by
torch.compile (does `compile_gates=True` pay?).

The small helpers here are meant to be shared with the asv and pytest-benchmark suites:
`machine` (what machine the numbers come from), `timing` (median time of a callable, with
torch.utils.benchmark) and `bandwidth` (the copy_ probe and the bytes-moved model of the op).
"""
