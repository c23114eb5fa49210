"""Builds plrnn's kernels at install time (`pip install --no-build-isolation .` or `-e .`).

* C++ CPU kernels: one library per x86 ISA level, named as torch.backends.cpu.get_cpu_capability()
  names them (default = the x86-64 baseline, avx2, avx512), never -march=native, so a wheel built
  on one machine runs on any other; plrnn loads the best one the CPU supports. Each level is a
  separate shared object, so the linker can never pick an inline function compiled for AVX2 for
  a baseline code path. By default: default, avx2 and avx512_bf16 (avx2 with the bfloat16
  kernels for AVX-512 BF16, loaded where torch.cpu._is_avx512_bf16_supported()). The kernels keep
  at most 32 bytes in a vector, so avx512 measured the same as avx2 (Xeon, AVX-512);
  PLRNN_CPU_ISAS=default,avx2,avx512_bf16,avx512 adds it. Other architectures get one library
  (default).
* CUDA kernels: only where torch is a CUDA build and nvcc is found (TORCH_CUDA_ARCH_LIST, default
  "8.0;9.0+PTX"); a CPU-only install never needs nvcc. PLRNN_BUILD_CUDA=0 skips them.
* PLRNN_NO_EXTENSIONS=1, or a build that cannot import torch (an isolated build: pip without
  --no-build-isolation), gives a pure-Python package whose kernels compile at first use instead.

Next to the libraries, _build_info.json records the torch they were built against and a digest
of their sources; a different torch at run time, or sources edited since (an editable install
after a `git pull`), gets the first-use build rather than a mismatched library.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from setuptools import setup

_spec = importlib.util.spec_from_file_location("plrnn_sources", "src/plrnn/recurrence/sources.py")
sources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sources)
CSRC = Path("src/plrnn/recurrence/csrc")  # relative: setuptools wants relative source paths
# The flags of torch's own CPU capability levels (aten/src/ATen/cpu/vec), so the level torch
# reports for this CPU is exactly the one whose library can run here.
X86_ISAS = {
    "default": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
    # avx2's flags; cpu_kernels_bf16.cpp alone compiles for AVX-512 BF16 there (its pragma).
    "avx512_bf16": ["-mavx2", "-mfma", "-mf16c", "-DPLRNN_AVX512_BF16"],
}
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def _say(msg: str) -> None:
    print(f"plrnn setup: {msg}", file=sys.stderr, flush=True)


def _cpu_isas() -> list[str]:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ["default"]
    wanted = os.environ.get("PLRNN_CPU_ISAS", "default,avx2,avx512_bf16").split(",")
    unknown = [w for w in wanted if w not in X86_ISAS]
    if unknown:
        raise SystemExit(f"PLRNN_CPU_ISAS: unknown level(s) {unknown}; choose from {list(X86_ISAS)}")
    return wanted


def _extensions():
    if os.environ.get("PLRNN_NO_EXTENSIONS") == "1":
        _say("PLRNN_NO_EXTENSIONS=1: no kernels built; they compile at first use")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension
    except ImportError:
        _say(
            "torch is not importable in this build environment, so no kernels are built now; "
            "they compile at first use. Install torch first and build with "
            "`pip install --no-build-isolation` to build them here."
        )
        return [], {}

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:  # else a 200-line compiler trace that names no way out
        raise SystemExit(
            f"plrnn setup: no C++ compiler ({cxx!r} is not on PATH; set CXX to choose one). "
            "Install one (Debian: apt install g++), or set PLRNN_NO_EXTENSIONS=1 to install "
            "without kernels (the op runs its torch backend until a compiler is there to build "
            "them at first use)."
        )
    cpu_isas = _cpu_isas()
    exts = [
        CppExtension(
            f"plrnn.recurrence._cpu_{isa}",
            [str(CSRC / s) for s in sources.CPU_COMPILED],
            extra_compile_args=sources.CPU_FLAGS + X86_ISAS[isa],
            extra_link_args=["-fopenmp", *sources.LINK_FLAGS],
        )
        for isa in cpu_isas
    ]
    info = {
        "torch": torch.__version__,
        "cpu_isas": cpu_isas,
        "cpu_sources": sources.digest(sources.CPU_ALL),
        "cuda_archs": None,
        "cuda_sources": None,
    }

    want_cuda = os.environ.get("PLRNN_BUILD_CUDA", "auto")
    if want_cuda != "0" and torch.version.cuda and CUDA_HOME:
        from torch.utils.cpp_extension import CUDAExtension

        archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        exts.append(
            CUDAExtension(
                "plrnn.recurrence._cuda",
                [str(CSRC / s) for s in sources.CUDA_COMPILED],
                extra_compile_args={"cxx": ["-O3"], "nvcc": sources.CUDA_FLAGS},
                extra_link_args=sources.LINK_FLAGS,
            )
        )
        info["cuda_archs"] = archs
        info["cuda_sources"] = sources.digest(sources.CUDA_ALL)
    elif want_cuda == "1":
        raise SystemExit("PLRNN_BUILD_CUDA=1 but torch is not a CUDA build or nvcc was not found")

    class Build(BuildExtension):
        """BuildExtension that also writes _build_info.json beside the libraries."""

        def run(self):
            _say(f"building kernels for torch {info['torch']}: CPU {cpu_isas}"
                 + (f", CUDA {info['cuda_archs']}" if info["cuda_archs"] else ""))
            super().run()
            out = Path(self.get_ext_fullpath(exts[0].name)).parent / "_build_info.json"
            out.write_text(json.dumps(info, indent=1) + "\n")

        def get_outputs(self):
            return super().get_outputs() + [
                str(Path(self.get_ext_fullpath(exts[0].name)).parent / "_build_info.json")
            ]

    return exts, {"build_ext": Build.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
