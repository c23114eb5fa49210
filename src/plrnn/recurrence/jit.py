"""Building the C++ and CUDA kernels at first use (torch.utils.cpp_extension), once a process.

`pip install` then needs no compiler; a machine without one gets a reason, never a crash.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import torch

_UNSET = object()


def missing_toolchain() -> str | None:
    """Why torch.utils.cpp_extension cannot build here (no C++ compiler, no ninja), or None."""
    from torch.utils.cpp_extension import is_ninja_available

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler found (looked for {cxx!r} on PATH; set CXX to choose one)"
    if not is_ninja_available():
        return "the ninja build tool is missing (pip install ninja)"
    return None


def build_once(build: Callable[[], str | None]) -> Callable[[], str | None]:
    """A backend module's `load()`: runs `build` at the first call and returns its answer (why
    the kernels are unavailable, or None) ever after."""
    status: object = _UNSET

    @torch._dynamo.assume_constant_result  # run once at trace time; torch.compile sees the answer
    def load() -> str | None:
        nonlocal status
        if status is _UNSET:
            status = build()
        return status

    load.__doc__ = build.__doc__
    return load


def build_extension(what: str, **kwargs) -> str | None:
    """torch.utils.cpp_extension.load(**kwargs) of an extension that registers torch ops;
    returns why it failed ("building the <what> failed: <last line of the error>"), or None."""
    from torch.utils.cpp_extension import load

    try:
        load(is_python_module=False, verbose=os.environ.get("PLRNN_VERBOSE_BUILD") == "1", **kwargs)
    except Exception as err:  # noqa: BLE001 - any build failure means "unavailable, here is why"
        lines = str(err).strip().splitlines() or [type(err).__name__]
        return f"building the {what} failed: {lines[-1]}"
    return None
