"""The kernel sources: what setup.py compiles, and the digest that ties a compiled library to the
sources it was built from. Imports nothing from plrnn or torch, because setup.py loads this file
before plrnn is installed."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

CSRC = Path(__file__).parent / "csrc"
CPU_COMPILED = [
    "cpu_scan.cpp",
    "cpu_kernels_f32.cpp",
    "cpu_kernels_f64.cpp",
    "cpu_kernels_f16.cpp",
    "cpu_kernels_bf16.cpp",
    "cpu_kernels_complex.cpp",
    "cpu_decay_grad.cpp",
    "cpu_threads_probe.cpp",
    "cpu_output_cache.cpp",
]
CPU_ALL = CPU_COMPILED + ["cpu_kernels.h", "cpu_kernels_impl.h", "cpu_output_cache.h",
                          "scan_autograd.h"]
CUDA_COMPILED = ["cuda_binding.cpp", "scan_serial.cu", "scan_paper.cu", "scan_parallel.cu"]
CUDA_ALL = CUDA_COMPILED + ["cuda_compat.h", "cuda_scan.h", "scan_autograd.h"]

CPU_FLAGS = ["-O3", "-ffp-contract=fast", "-fopenmp"]  # plus the ISA level's (or -march=native)
# No --use_fast_math: it flushes denormals and approximates division, and the scan's error is
# judged against a float64 reference.
CUDA_FLAGS = ["-O3", "-lineinfo"]
# Where the compiler links a libstdc++ of its own into the library (the lent H200 machine's g++
# did), its symbols must stay private: exported, the process's other libstdc++ answered some of
# them, so number formatting and parsing in the kernels used facets of a foreign layout (numbers
# missing from error messages, a segfault reading sysfs). No effect where libstdc++ is shared.
# An option of the GNU-style linkers (ld, gold, lld) of Linux.
LINK_FLAGS = ["-Wl,--exclude-libs,ALL"] if sys.platform.startswith("linux") else []


def digest(names: list[str]) -> str:
    """sha256 over the named files of csrc/ (names and contents)."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode() + b"\0" + (CSRC / name).read_bytes() + b"\0")
    return h.hexdigest()
