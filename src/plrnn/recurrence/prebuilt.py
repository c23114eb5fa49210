"""The kernels compiled at install time (setup.py), and whether this process can use them.

setup.py writes the libraries into this package with `_build_info.json` beside them (the torch
they were built against, the CPU ISA levels, the CUDA architectures, a digest of the sources). A
library is only loaded when that torch is this torch (extensions have no stable ABI across torch
releases, and a mismatch can crash at load instead of failing cleanly) and its sources are the
ones beside it (an editable install keeps its libraries when a `git pull` changes the sources). PLRNN_PREBUILT=0 ignores them all (the
first-use build then runs, as in a checkout that was never built).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

from . import sources

INFO_FILE = Path(__file__).with_name("_build_info.json")
# torch.backends.cpu.get_cpu_capability() -> the ISA levels whose libraries can run, best first.
_RUNNABLE = {
    "AVX512": ["avx512", "avx2", "default"],
    "AVX2": ["avx2", "default"],
}


def build_info() -> dict | None:
    try:
        return json.loads(INFO_FILE.read_text())
    except (OSError, ValueError):
        return None


def unusable(kind: str = "cpu") -> str | None:
    """Why no prebuilt `kind` ("cpu" or "cuda") library may be loaded in this process, or None."""
    if os.environ.get("PLRNN_PREBUILT", "1") == "0":
        return "PLRNN_PREBUILT=0"
    info = build_info()
    if info is None:
        return "this installation has no prebuilt kernels (built without torch, or not built)"
    if info.get("torch") != torch.__version__:
        return (
            f"the prebuilt kernels were built for torch {info.get('torch')}, this is torch "
            f"{torch.__version__} (rebuild them against this torch: pip install "
            "--no-build-isolation -e . in a checkout; without --no-build-isolation pip builds "
            "against a torch of its own)"
        )
    built = info.get(f"{kind}_sources")
    if built is None:
        return (f"this installation has no prebuilt {kind.upper()} kernels (built without "
                + ("nvcc or a CUDA build of torch)" if kind == "cuda" else "them)"))
    if built != sources.digest(sources.CPU_ALL if kind == "cpu" else sources.CUDA_ALL):
        return (
            f"the prebuilt {kind.upper()} kernels are older than their sources (rebuild: pip "
            "install --no-build-isolation -e .)"
        )
    return None


def library(module: str) -> Path | None:
    """Path of the compiled module `plrnn.recurrence.<module>`, or None if it was not built."""
    spec = importlib.util.find_spec(f"{__package__}.{module}")
    return Path(spec.origin) if spec is not None and spec.origin else None


def cpu_levels() -> list[str]:
    """The ISA levels of the CPU libraries this CPU can run, best first (torch's own reading of
    the CPU; ATEN_CPU_CAPABILITY=avx2 or =default lowers it, as it does for torch's kernels)."""
    capability = torch.backends.cpu.get_cpu_capability()
    levels = _RUNNABLE.get(capability, ["default"])
    bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return ["avx512_bf16", *levels] if capability == "AVX512" and bf16() else levels
