"""The C++ kernels' fresh outputs of 4 MiB and more ask Linux for transparent huge pages (one
fault per 2 MiB instead of one per 4 KiB, cpu_scan.cpp advise_huge_pages), and still hold the
float64 reference's values."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

import pytest
import torch

from plrnn.recurrence import cpu, linear_recurrence

from .helpers import F64_RTOL, max_err, ref64, scale_of

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's"),
    pytest.mark.skipif(not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(),
                       reason="this kernel has no transparent huge pages"),
]

T, C = 5000, 1024  # 40 MiB of float64


def unmap_freed_memory() -> None:
    """Has glibc give back the pages of freed memory, so that the next large output is fresh
    memory (resident memory a freed tensor left is not advised, as it faults no more)."""
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is None:
        pytest.skip("no glibc malloc_trim")
    trim(0)


def vm_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds `address` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def middle(t: torch.Tensor) -> int:
    return t.data_ptr() + t.numel() * t.element_size() // 2


@pytest.fixture(scope="module")
def inputs():
    if cpu.load() is not None:
        pytest.skip("no C++ kernels")
    gen = torch.Generator().manual_seed(7)
    a = torch.sigmoid(torch.randn(T, C, generator=gen, dtype=torch.float64) + 2)
    x = torch.randn(T, C, generator=gen, dtype=torch.float64)
    return a, x


@pytest.mark.parametrize("backend", ["cpu_serial", "cpu_parallel"])
def test_a_fresh_output_is_advised_huge_and_exact(inputs, backend):
    a, x = inputs
    unmap_freed_memory()
    h = linear_recurrence(a, x, backend=backend)
    assert "hg" in vm_flags(middle(h))
    want = ref64(a, x)
    assert max_err(h, want) <= F64_RTOL * scale_of(want)


def test_fresh_gradients_are_advised_huge_and_exact(inputs):
    a, x = (t.clone().requires_grad_() for t in inputs)
    g = torch.randn(T, C, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    h = linear_recurrence(a, x, backend="cpu_serial")
    unmap_freed_memory()
    ga, gx = torch.autograd.grad(h, (a, x), g)
    for grad in (ga, gx):
        assert "hg" in vm_flags(middle(grad))
    a64, x64 = (t.detach().clone().requires_grad_() for t in (a, x))
    want_a, want_x = torch.autograd.grad(ref64(a64, x64), (a64, x64), g)
    assert max_err(gx, want_x) <= F64_RTOL * scale_of(want_x)
    assert max_err(ga, want_a) <= F64_RTOL * scale_of(want_a)

