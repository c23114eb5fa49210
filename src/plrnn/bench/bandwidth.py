"""Memory-bandwidth yardsticks: the copy_ probe and how many bytes the recurrence must move.

Convention: count the bytes a kernel must read plus write, once each (fp32 = 4 bytes). Write-
allocate traffic (a store reading its cache line first) is not counted, for the probe and the
kernels alike, so "fraction of copy bandwidth" compares like with like.
"""

from __future__ import annotations

import torch
from torch.utils.benchmark import Measurement

from .timing import measure

# fp32 bytes per (time step, channel) element that one pass must move at least:
#   forward:  reads a[t], x[t], writes h[t]                             -> 3 x 4 = 12
#   backward: reads a[t], h[t] (saved, h[t-1] for dL/da), dL/dh[t],
#             writes dL/da[t], dL/dx[t]  (dL/dh0 is one row, ignored)    -> 5 x 4 = 20
#   forward+backward                                                     -> 32
BYTES_PER_ELEMENT = {"forward": 12, "backward": 20, "forward+backward": 32}
COPY_BYTES_PER_ELEMENT = 8  # dst.copy_(src): read src, write dst


def bytes_moved(numel: int, pass_: str = "forward") -> int:
    """Minimum bytes one pass of the fp32 recurrence moves over `numel` (T*C) elements."""
    try:
        return BYTES_PER_ELEMENT[pass_] * numel
    except KeyError:
        known = sorted(BYTES_PER_ELEMENT)
        raise ValueError(f"pass_ must be one of {known}, got {pass_!r}") from None


def copy_measurement(
    numel: int,
    device: str | torch.device = "cpu",
    min_run_time: float = 0.2,
    *,
    num_threads: int | None = None,
) -> Measurement:
    """Timing of dst.copy_(src) on preallocated, already-touched fp32 buffers of `numel`."""
    src = torch.rand(numel, device=device)  # random: zero pages would not be read at all
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault every page in before timing
    return measure(lambda: dst.copy_(src), min_run_time, num_threads=num_threads, inputs=(src,))


def copy_bandwidth(
    numel: int,
    device: str | torch.device = "cpu",
    min_run_time: float = 0.2,
    *,
    num_threads: int | None = None,
) -> float:
    """Bytes/s of dst.copy_(src) (8 bytes per fp32 element: one read, one write)."""
    m = copy_measurement(numel, device, min_run_time, num_threads=num_threads)
    return COPY_BYTES_PER_ELEMENT * numel / m.median
