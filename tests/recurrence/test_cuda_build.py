"""The CUDA kernels on a machine without a GPU.

* scripts/nvcc_check.sh: every .cu file compiles with nvcc for sm_80 and sm_90, cuda_parallel's
  kernels do not spill, and the torch binding passes the host compiler against torch's headers.
* The host emulator (csrc/cuda_compat.h, PLRNN_EMULATE): the same kernel sources built with
  g++ and run block by block, one OS thread per CUDA thread, through the C interface the torch
  binding calls (cuda_scan.h). Outputs start as NaN and the workspace as garbage, so every
  element must be written and every flag cleared; results are compared with the float64
  reference. What this cannot check (the memory model, real warp scheduling, speed) is left to
  tests/recurrence/test_cuda.py on a GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import plrnn
from plrnn.recurrence import cuda, reference, registry
from plrnn.recurrence.cuda import SOURCES

from .helpers import (
    F64_RTOL,
    FLOOR_ULPS,
    check_zero_state_through_overflow,
    complex_inputs,
    gradient_allowed,
    max_err,
    ref64,
    scale_of,
    seed_for,
)

ROOT = Path(__file__).resolve().parents[2]
CSRC = SOURCES[0].parent
KERNEL_SOURCES = [s for s in SOURCES if s.suffix == ".cu"]

DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3,
              torch.complex64: 4, torch.complex128: 5}
CUDA_BACKENDS = ("cuda_serial", "cuda_paper", "cuda_parallel")
NO_DEVICE = "no CUDA device (torch.cuda.is_available() is False)"
without_gpu = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the machine-without-a-GPU path"
)


# ------------------------------------------------------------------ availability and errors


@without_gpu
def test_backends_cuda_says_why_not():
    status = {s.name: s for s in plrnn.backends("cuda")}
    for name in CUDA_BACKENDS:
        assert status[name] == plrnn.BackendStatus(
            name, False, NO_DEVICE, complex=name == "cuda_parallel"
        )
    assert status["reference"].available and status["torch"].available


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_cuda_backends_refuse_other_devices(device):
    status = {s.name: s for s in plrnn.backends(device)}
    for name in CUDA_BACKENDS:
        assert status[name] == plrnn.BackendStatus(
            name, False, f"CUDA kernel; inputs are on {device}", complex=name == "cuda_parallel"
        )


@pytest.mark.parametrize("name", CUDA_BACKENDS)
def test_cpu_tensors_with_a_cuda_backend_raise_a_clear_error(name):
    a, x = torch.rand(5, 3), torch.randn(5, 3)
    want = f"backend '{name}' is not available for inputs on cpu: CUDA kernel; inputs are on cpu"
    with pytest.raises(RuntimeError, match=want):
        plrnn.linear_recurrence(a, x, backend=name)


@pytest.mark.parametrize("name", ["serial", "paper"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_paper_kernels_refuse_other_dtypes_before_any_kernel(name, dtype):
    a, x = torch.rand(5, 3, dtype=dtype), torch.randn(5, 3, dtype=dtype)
    with pytest.raises(TypeError, match=rf"'cuda_{name}' is .*float32-only.*cuda_parallel"):
        getattr(cuda, name)(a, x, None, False)


def test_missing_toolchain_reasons(monkeypatch, tmp_path):
    """What backends() says on a GPU machine without nvcc, or without ninja."""
    import torch.utils.cpp_extension as cpp_extension

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda cmd, *a, **k: None if cmd == "nvcc" else real_which(cmd, *a, **k)
    )
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    assert cuda.missing_prerequisite().startswith("nvcc not found")

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").write_text("#!/bin/sh\n")
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: False)
    assert "ninja" in cuda.missing_prerequisite()
    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    assert cuda.missing_prerequisite() is None


@without_gpu
def test_auto_on_a_cuda_device_without_the_kernels_warns_once(monkeypatch):
    monkeypatch.setattr(registry, "_warned_fallback", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert registry.choose_auto(torch.device("cuda"), 100, 4) == "torch"
        assert registry.choose_auto(torch.device("cuda"), 100, 4) == "torch"
    assert len(caught) == 1 and issubclass(caught[0].category, RuntimeWarning)
    assert "CUDA kernels are unavailable" in str(caught[0].message)
    assert NO_DEVICE in str(caught[0].message)


@without_gpu
def test_asking_builds_nothing_without_a_gpu(tmp_path):
    """backends('cuda') in a fresh interpreter with an empty extension cache: the reason comes
    back and nothing is compiled."""
    ext_dir = tmp_path / "torch_extensions"
    ext_dir.mkdir()
    script = textwrap.dedent(
        """
        import json, plrnn
        print("RESULT " + json.dumps({s.name: s.reason for s in plrnn.backends("cuda")}))
        """
    )
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(ext_dir))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    reasons = json.loads(line.removeprefix("RESULT "))
    assert all(reasons[name] == NO_DEVICE for name in CUDA_BACKENDS)
    assert list(ext_dir.iterdir()) == []


# ------------------------------------------------------------------------------------ nvcc


def test_nvcc_check_script_compiles_every_kernel_for_sm80_and_sm90():
    if shutil.which(os.environ.get("NVCC", "nvcc")) is None:
        pytest.skip("nvcc is not installed: the CUDA compile check needs the CUDA toolkit")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "nvcc_check.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, PLRNN_CUDA_ARCHS="80 90"),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    for arch in ("sm_80", "sm_90"):
        for src in KERNEL_SOURCES:
            assert f"ok      {arch}  {src.name}" in out, out[-3000:]
        # the summary really parsed ptxas' report: one line per kernel and target
        for kernel in ("serial_scan", "paper_reduce", "paper_carry_scan", "paper_rescan"):
            assert any(line.startswith(arch) and line.endswith(kernel) for line in out.splitlines())
        for dtype in ("float", "double", "__half", "__nv_bfloat16"):
            for backward in ("false", "true"):
                assert f"parallel_scan<{dtype}, 1, {backward}>" in out
    if "skipped host" not in out:
        assert "ok      host    cuda_binding.cpp" in out


def test_nvcc_check_script_fails_on_a_compile_error(tmp_path):
    """The check must be able to fail: a copy of the sources with a syntax error."""
    if shutil.which(os.environ.get("NVCC", "nvcc")) is None:
        pytest.skip("nvcc is not installed: the CUDA compile check needs the CUDA toolkit")
    tree = tmp_path / "repo"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "nvcc_check.sh", tree / "scripts")
    csrc = tree / "src" / "plrnn" / "recurrence" / "csrc"
    csrc.mkdir(parents=True)
    (csrc / "broken.cu").write_text("__global__ void k(float* p) { p[0] = ; }\n")
    (csrc / "cuda_binding.cpp").write_text("int main() { return 0; }\n")
    proc = subprocess.run(
        ["bash", str(tree / "scripts" / "nvcc_check.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PLRNN_CUDA_ARCHS="90"),
    )
    assert proc.returncode == 1
    assert "FAILED  sm_90  broken.cu" in proc.stdout


# ------------------------------------------------------------------------------ emulator


def _cuda_include_dirs() -> list[str]:
    """Where cuda_fp16.h lives: the CUDA toolkit that nvcc or CUDA_HOME points to."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        out = subprocess.run(
            [nvcc, "--dryrun", "-c", "-x", "cu", "/dev/null", "-o", "/dev/null"],
            capture_output=True,
            text=True,
        )
        for line in (out.stdout + out.stderr).splitlines():
            if "INCLUDES=" in line:
                candidates += [Path(p) for p in line.split('"')[1].replace("-I", " ").split()]
    candidates.append(Path("/usr/local/cuda/include"))
    return [str(p) for p in candidates if (p / "cuda_fp16.h").is_file()][:1]


class Emulated:
    """ctypes access to the emulator build of the kernels' C interface (cuda_scan.h)."""

    def __init__(self, path: Path):
        lib = ctypes.CDLL(str(path))
        vp, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        for name in ("plrnn_serial_forward", "plrnn_paper_forward"):
            getattr(lib, name).argtypes = [vp, vp, vp, vp, i64, i64, i32, vp]
        lib.plrnn_parallel_can_vectorize.argtypes = [ctypes.POINTER(vp), i32, i64, i64, i32]
        lib.plrnn_parallel_workspace_bytes.argtypes = [i64, i64, i32, i32, i32, i32]
        lib.plrnn_parallel_workspace_bytes.restype = ctypes.c_size_t
        layout = [i64, i32, i32, i32, vp, vp]  # period, per_step, vectorized, sms, work, stream
        lib.plrnn_parallel_forward.argtypes = [vp] * 4 + [i64, i64, i32, i32] + layout
        lib.plrnn_parallel_backward.argtypes = [vp] * 7 + [i64, i64, i32, i32] + layout
        packed = [vp, i64, i64, i32, i32, i64, i32, i32, vp]  # offsets, N, C, ..., stream
        lib.plrnn_packed_forward.argtypes = [vp] * 4 + packed
        lib.plrnn_packed_backward.argtypes = [vp] * 7 + packed
        self.lib = lib

    @staticmethod
    def _ptr(t):
        return None if t is None else t.data_ptr()

    def paper_style(self, name, a, x, h0=None, reverse=False):
        """cuda_serial (name='serial') or cuda_paper (name='paper'); float32 only."""
        out = torch.full_like(x, float("nan"))
        T, C = x.shape
        fn = getattr(self.lib, f"plrnn_{name}_forward")
        rc = fn(self._ptr(a), self._ptr(x), self._ptr(h0), self._ptr(out), T, C, reverse, None)
        assert rc == 0, f"plrnn_{name}_forward returned {rc}"
        return out

    def can_vectorize(self, tensors, C, dtype, period=None):
        arr = (ctypes.c_void_p * len(tensors))(*[self._ptr(t) for t in tensors])
        return self.lib.plrnn_parallel_can_vectorize(
            arr, len(tensors), C, C if period is None else period, DTYPE_CODE[dtype]
        )

    @staticmethod
    def _layout(a, T, C):
        """(period, per_step) of decays `a`: (T, C), one (P,) row for every step, or (T, P)."""
        if a.dim() == 1:
            return a.shape[0], 0
        return a.shape[1], 1

    def _workspace(self, T, C, dtype, vec, backward, sms):
        n = self.lib.plrnn_parallel_workspace_bytes(T, C, DTYPE_CODE[dtype], vec, backward, sms)
        # garbage everywhere: the kernel must clear its flags itself
        return torch.full((max(n, 1) + 256,), 0xA5, dtype=torch.uint8), n

    @staticmethod
    def _aligned(buf):
        """A view of `buf` that starts on a 256-byte boundary, as the caching allocator gives."""
        skip = (-buf.data_ptr()) % 256
        return buf[skip:]

    def forward(self, a, x, h0=None, reverse=False, sms=4, out=None):
        """a: (T, C); one (P,) row for every step; or (T, P); P dividing C."""
        T, C = x.shape
        period, per_step = self._layout(a, T, C)
        out = torch.full_like(x, float("nan")) if out is None else out
        vec = self.can_vectorize((a, x, out), C, x.dtype, period)
        buf, _ = self._workspace(T, C, x.dtype, vec, 0, sms)
        work = self._aligned(buf)
        rc = self.lib.plrnn_parallel_forward(
            self._ptr(a), self._ptr(x), self._ptr(h0), self._ptr(out), T, C, reverse,
            DTYPE_CODE[x.dtype], period, per_step, vec, sms, self._ptr(work), None,
        )  # fmt: skip
        assert rc == 0, f"plrnn_parallel_forward returned {rc}"
        return out

    def backward(self, a, h, grad_h, h0=None, reverse=False, sms=4):
        T, C = grad_h.shape
        gx = torch.full_like(grad_h, float("nan"))
        ga = torch.full_like(grad_h, float("nan"))
        gh0 = torch.full((C,), float("nan"), dtype=grad_h.dtype)
        period, per_step = self._layout(a, T, C)
        vec = self.can_vectorize((a, h, grad_h, gx, ga), C, grad_h.dtype, period)
        buf, _ = self._workspace(T, C, grad_h.dtype, vec, 1, sms)
        work = self._aligned(buf)
        rc = self.lib.plrnn_parallel_backward(
            self._ptr(a), self._ptr(h), self._ptr(grad_h), self._ptr(h0), self._ptr(gx),
            self._ptr(ga), self._ptr(gh0), T, C, reverse, DTYPE_CODE[grad_h.dtype], period,
            per_step, vec, sms, self._ptr(work), None,
        )  # fmt: skip
        assert rc == 0, f"plrnn_parallel_backward returned {rc}"
        return gx, ga, gh0

    def packed_forward(self, a, x, h0, cu, reverse=False):
        """The packed kernel: a as in forward(), h0 (N, C) or None, cu int64 offsets."""
        T, C = x.shape
        period, per_step = self._layout(a, T, C)
        out = torch.full_like(x, float("nan"))
        vec = self.can_vectorize((a, x, out, h0), C, x.dtype, period)
        rc = self.lib.plrnn_packed_forward(
            self._ptr(a), self._ptr(x), self._ptr(h0), self._ptr(out), self._ptr(cu),
            cu.numel() - 1, C, reverse, DTYPE_CODE[x.dtype], period, per_step, vec, None,
        )  # fmt: skip
        assert rc == 0, f"plrnn_packed_forward returned {rc}"
        return out

    def packed_backward(self, a, h, grad_h, h0, cu, reverse=False):
        T, C = grad_h.shape
        N = cu.numel() - 1
        period, per_step = self._layout(a, T, C)
        gx, ga = torch.full_like(grad_h, float("nan")), torch.full_like(grad_h, float("nan"))
        gh0 = torch.full((N, C), float("nan"), dtype=grad_h.dtype)
        vec = self.can_vectorize((a, h, grad_h, gx, ga, gh0, h0), C, grad_h.dtype, period)
        rc = self.lib.plrnn_packed_backward(
            self._ptr(a), self._ptr(h), self._ptr(grad_h), self._ptr(h0), self._ptr(gx),
            self._ptr(ga), self._ptr(gh0), self._ptr(cu), N, C, reverse,
            DTYPE_CODE[grad_h.dtype], period, per_step, vec, None,
        )  # fmt: skip
        assert rc == 0, f"plrnn_packed_backward returned {rc}"
        return gx, ga, gh0


@pytest.fixture(scope="session")
def emulated(tmp_path_factory) -> Emulated:
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        pytest.skip(f"no C++ compiler ({cxx!r}) to build the kernel emulator")
    includes = _cuda_include_dirs()
    if not includes:
        pytest.skip("the CUDA toolkit's headers (cuda_fp16.h) are not installed")
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(CSRC.iterdir()))).hexdigest()
    lib = tmp_path_factory.mktemp("emulator") / f"plrnn_emulated_{digest[:10]}.so"
    cmd = [cxx, "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-DPLRNN_EMULATE"]
    cmd += ["-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", f"-I{includes[0]}"]
    cmd += ["-x", "c++", *map(str, KERNEL_SOURCES), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, "the kernel emulator did not build:\n" + proc.stderr[-4000:]
    return Emulated(lib)


def _inputs(T, C, seed, dtype=torch.float64, decay_kind="uniform"):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(T, C, generator=g, dtype=torch.float64)
    if decay_kind == "near_one":
        a = 0.999 + 0.001 * a
    x = torch.randn(T, C, generator=g, dtype=torch.float64)
    h0 = torch.randn(C, generator=g, dtype=torch.float64)
    return a.to(dtype), x.to(dtype), h0.to(dtype)


def _assert_f64(got, want, what):
    assert got.shape == want.shape, what
    tol = F64_RTOL * max(1.0, scale_of(want))
    err = max_err(got, want)
    assert err <= tol, f"{what}: max error {err:.3e} > {tol:.3e}"


# (T, C): one tile and many, every lane width CL (1..32 lanes of a slice, one or more channel
# groups), vector (C % 2 == 0 for float64) and scalar columns, partial last tiles and groups.
FORWARD_CASES = [(1, 1), (2, 3), (33, 4), (257, 12), (1000, 5), (300, 33), (130, 70), (64, 128)]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=lambda c: f"T={c[0]}-C={c[1]}")
def test_emulated_parallel_forward_float64(emulated, case):
    T, C = case
    a, x, h0 = _inputs(T, C, seed_for("emu_fwd", T, C))
    for reverse in (False, True):
        for init in (None, h0):
            got = emulated.forward(a, x, init, reverse)
            _assert_f64(got, ref64(a, x, init, reverse), f"reverse={reverse} h0={init is not None}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "case", [(300, 8), (129, 24), (200, 3)], ids=lambda c: f"T={c[0]}-C={c[1]}"
)
def test_emulated_parallel_forward_low_precision(emulated, case, dtype):
    """Vector (C a multiple of 16 bytes) and scalar columns; the 2x rule of helpers.py."""
    T, C = case
    a, x, h0 = _inputs(T, C, seed_for("emu_lp", T, C, str(dtype)), dtype, "near_one")
    for reverse, init in ((False, h0), (True, None)):
        truth = ref64(a, x, init, reverse)
        baseline = reference.serial(a, x, init, reverse)
        allowed = 2 * max_err(baseline, truth) + FLOOR_ULPS * torch.finfo(dtype).eps * scale_of(
            truth
        )
        got = emulated.forward(a, x, init, reverse)
        assert got.dtype == dtype
        err = max_err(got, truth)
        assert err <= allowed, f"{dtype} reverse={reverse}: {err:.3e} > {allowed:.3e}"


def test_emulated_vector_and_scalar_columns(emulated):
    """A (T, C) buffer that starts off a 16-byte boundary cannot use 16-byte accesses: the
    kernel then takes the scalar path and must give the same result."""
    T, C = 150, 8
    a, x, h0 = _inputs(T, C, seed_for("emu_align"), torch.float32)
    base = torch.full((3, T * C + 1), float("nan"))
    a_off, x_off = base[0, 1:].view(T, C), base[1, 1:].view(T, C)
    a_off.copy_(a)
    x_off.copy_(x)
    assert emulated.can_vectorize((a, x), C, torch.float32) == 1
    assert emulated.can_vectorize((a_off, x_off), C, torch.float32) == 0
    assert emulated.can_vectorize((a, x), 6, torch.float32) == 0  # rows not 16-byte multiples
    want = emulated.forward(a, x, h0)
    got = emulated.forward(a_off, x_off, h0, out=base[2, 1:].view(T, C))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_emulated_parallel_two_levels_of_published_maps(emulated):
    """Shortest tiles (a huge SM count asks for the most tiles): 8 steps x 128 channels per tile,
    so T = 300 gives 38 tiles per channel group, folded through maps of groups of 16 tiles."""
    T, C = 300, 128
    a, x, h0 = _inputs(T, C, seed_for("emu_levels"))
    for reverse in (False, True):
        got = emulated.forward(a, x, h0, reverse, sms=10**6)
        _assert_f64(got, ref64(a, x, h0, reverse), f"forward reverse={reverse}")
    upstream = torch.randn(T, C, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _check_backward(emulated, a, x, h0, upstream, reverse=False, sms=10**6)


def _check_backward(emulated, a, x, h0, upstream, reverse, sms=4):
    leaves = [t.clone().requires_grad_(True) for t in (a, x, h0)]
    h = reference.serial(*leaves, reverse)
    want_ga, want_gx, want_gh0 = torch.autograd.grad(h, leaves, upstream)
    gx, ga, gh0 = emulated.backward(a, h.detach(), upstream, h0, reverse, sms)
    what = f"reverse={reverse}"
    _assert_f64(gx, want_gx, f"d impulses {what}")
    _assert_f64(ga, want_ga, f"d decays {what}")
    _assert_f64(gh0, want_gh0, f"d initial_state {what}")
    # without an initial state, the edge of dL/da sees zeros
    h = reference.serial(*leaves[:2], None, reverse)
    want_ga, want_gx = torch.autograd.grad(h, leaves[:2], upstream)
    gx, ga, _ = emulated.backward(a, h.detach(), upstream, None, reverse, sms)
    _assert_f64(gx, want_gx, f"d impulses {what}, no h0")
    _assert_f64(ga, want_ga, f"d decays {what}, no h0")


@pytest.mark.parametrize(
    "case",
    [(1, 1), (2, 3), (300, 4), (77, 8), (1000, 12), (65, 70)],
    ids=lambda c: f"T={c[0]}-C={c[1]}",
)
def test_emulated_parallel_backward_float64(emulated, case):
    T, C = case
    a, x, h0 = _inputs(T, C, seed_for("emu_bwd", T, C))
    upstream = torch.randn(
        T, C, generator=torch.Generator().manual_seed(T * C), dtype=torch.float64
    )
    for reverse in (False, True):
        _check_backward(emulated, a, x, h0, upstream, reverse)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128], ids=str)
@pytest.mark.parametrize("C", [4, 70])
def test_emulated_zero_state_through_overflowing_decays(emulated, C, dtype):
    """helpers.check_zero_state_through_overflow on the kernels' every level of maps: threads,
    warps, the block's warps, tiles and groups of tiles (sms=4 chains many tiles)."""
    def fwd_bwd(a, x, up, reverse):
        h = emulated.forward(a, x, None, reverse)
        dx, da, _ = emulated.backward(a, h, up, None, reverse)
        return h, da, dx

    check_zero_state_through_overflow(fwd_bwd, 2000, C, dtype, seed=seed_for("emu-overflow", C))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_emulated_parallel_backward_low_precision(emulated, dtype):
    T, C = 200, 16
    a, x, h0 = _inputs(T, C, seed_for("emu_bwd_lp", str(dtype)), dtype)
    upstream = torch.randn(T, C, generator=torch.Generator().manual_seed(5)).to(dtype)
    for reverse in (False, True):
        inputs64 = [t.double().requires_grad_(True) for t in (a, x, h0)]
        h64 = reference.serial(*inputs64, reverse)
        truth = torch.autograd.grad(h64, inputs64, upstream.double())
        low = [t.clone().requires_grad_(True) for t in (a, x, h0)]
        h = reference.serial(*low, reverse)
        baseline = torch.autograd.grad(h, low, upstream)
        gx, ga, gh0 = emulated.backward(a, h.detach(), upstream, h0, reverse)
        for name, got, b, w in zip(("decays", "impulses", "h0"), (ga, gx, gh0), baseline, truth):
            assert got.dtype == dtype
            allowed = gradient_allowed(b, w, T)
            err = max_err(got, w)
            assert err <= allowed, f"d{name} reverse={reverse}: {err:.3e} > {allowed:.3e}"


def test_emulated_parallel_propagates_nan_like_the_reference(emulated):
    T, C = 700, 3
    a, x, h0 = _inputs(T, C, seed_for("emu_nan"))
    a[350, 1] = float("nan")
    x[10, 2] = float("nan")
    for reverse in (False, True):
        want = ref64(a, x, h0, reverse)
        got = emulated.forward(a, x, h0, reverse)
        assert torch.equal(torch.isnan(got), torch.isnan(want))
        finite = ~torch.isnan(want)
        _assert_f64(got[finite], want[finite], f"finite part, reverse={reverse}")


def _complex_allowed(got_dtype, baseline, truth):
    """complex128: the float64 tolerance; complex64: the 2x rule against the complex64 loop."""
    if got_dtype == torch.complex128:
        return F64_RTOL * max(1.0, scale_of(truth))
    eps = torch.finfo(torch.float32).eps
    return 2 * max_err(baseline, truth) + FLOOR_ULPS * eps * scale_of(truth)


# Vector (C even: two complex64 per 16 bytes) and scalar columns, one tile and many, two levels of
# published maps (sms = 10**6 asks for the shortest tiles).
COMPLEX_CASES = [(1, 1, 4), (33, 4, 4), (300, 3, 4), (130, 70, 4), (300, 128, 10**6)]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
@pytest.mark.parametrize("case", COMPLEX_CASES, ids=lambda c: f"T={c[0]}-C={c[1]}-sms={c[2]}")
def test_emulated_parallel_complex(emulated, case, dtype):
    T, C, sms = case
    a, x, h0 = complex_inputs(T, C, seed_for("emu_cplx", T, C, str(dtype)), dtype)
    wide = [t.to(torch.complex128) for t in (a, x, h0)]
    upstream = torch.randn(T, C, generator=torch.Generator().manual_seed(T + C), dtype=dtype)
    for reverse in (False, True):
        for init, init128 in ((None, None), (h0, wide[2])):
            what = f"reverse={reverse} h0={init is not None}"
            truth = reference.serial(wide[0], wide[1], init128, reverse)
            got = emulated.forward(a, x, init, reverse, sms=sms)
            baseline = reference.serial(a, x, init, reverse)
            assert got.dtype == dtype
            assert max_err(got, truth) <= _complex_allowed(dtype, baseline, truth), what
            # gradients in torch's convention: the complex128 loop's autograd
            leaves = [t.clone().requires_grad_(True) for t in (wide[0], wide[1], init128)
                      if t is not None]
            h = reference.serial(*leaves[:2], leaves[2] if init is not None else None, reverse)
            want = torch.autograd.grad(h, leaves, upstream.to(torch.complex128))
            low = [t.clone().requires_grad_(True) for t in (a, x, init) if t is not None]
            base = torch.autograd.grad(
                reference.serial(*low[:2], low[2] if init is not None else None, reverse),
                low, upstream)
            gx, ga, gh0 = emulated.backward(a, h.detach().to(dtype), upstream, init, reverse, sms)
            got_grads = (ga, gx, gh0)[: len(want)]
            for name, g_, b_, w_ in zip(("decays", "impulses", "h0"), got_grads, base, want):
                assert g_.dtype == dtype
                err, allowed = max_err(g_, w_), _complex_allowed(dtype, b_, w_)
                assert err <= allowed, f"d{name} {what}: {err:.3e} > {allowed:.3e}"


def test_emulated_complex64_scalar_columns(emulated):
    """complex64 rows that start off a 16-byte boundary take the one-value-per-access path."""
    T, C = 150, 4
    a, x, h0 = complex_inputs(T, C, seed_for("emu_cplx_align"), torch.complex64)
    base = torch.full((3, T * C + 1), complex("nan+nanj"), dtype=torch.complex64)
    a_off, x_off = base[0, 1:].view(T, C), base[1, 1:].view(T, C)
    a_off.copy_(a)
    x_off.copy_(x)
    assert emulated.can_vectorize((a, x), C, torch.complex64) == 1
    assert emulated.can_vectorize((a_off, x_off), C, torch.complex64) == 0
    want = emulated.forward(a, x, h0)
    got = emulated.forward(a_off, x_off, h0, out=base[2, 1:].view(T, C))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "case", [(1, 3, 4), (2, 1, 4), (300, 8, 4), (257, 5, 4), (300, 128, 10**6)],
    ids=lambda c: f"T={c[0]}-C={c[1]}-sms={c[2]}",
)
def test_emulated_parallel_time_invariant_decays(emulated, case):
    """One (C,) row of decays for every step, never expanded: forward and every gradient (dL/da
    per step, which the binding sums over time) against the expanded inputs' float64 truth."""
    T, C, sms = case
    a, x, h0 = _inputs(T, C, seed_for("emu_shared", T, C), torch.float64, "near_one")
    row = a[0].clone()
    expanded = row.expand(T, C).contiguous()
    upstream = torch.randn(T, C, generator=torch.Generator().manual_seed(T * 7), dtype=torch.float64)
    for reverse in (False, True):
        for init in (None, h0):
            what = f"reverse={reverse} h0={init is not None}"
            got = emulated.forward(row, x, init, reverse, sms=sms)
            _assert_f64(got, ref64(expanded, x, init, reverse), what)
            want = emulated.backward(expanded, got, upstream, init, reverse, sms)
            have = emulated.backward(row, got, upstream, init, reverse, sms)
            for name, g_, w_ in zip(("dx", "da", "dh0"), have, want):
                if init is None and name == "dh0":
                    continue
                _assert_f64(g_, w_, f"{name} {what}")


@pytest.mark.parametrize(
    "case",
    [(1, 6, 3, 4), (2, 4, 1, 4), (33, 12, 4, 4), (300, 130, 10, 4), (257, 64, 16, 10**6),
     (100, 66, 33, 4)],
    ids=lambda c: f"T={c[0]}-C={c[1]}-P={c[2]}-sms={c[3]}",
)  # fmt: skip
@pytest.mark.parametrize("per_step", [True, False], ids=["per-step", "time-invariant"])
def test_emulated_parallel_decays_shared_by_channel_blocks(emulated, case, per_step):
    """Decays of period P (channel c reads column c % P), per step (T, P) or one (P,) row, read
    in place: forward and every gradient against the expanded decays' float64 truth. Periods that
    hold whole vectors (P % 2 == 0 in float64) and periods that do not, one tile and two levels
    of published maps."""
    T, C, P, sms = case
    g = torch.Generator().manual_seed(seed_for("emu_period", T, C, P))
    small = 0.9 + 0.1 * torch.rand(T if per_step else 1, P, generator=g, dtype=torch.float64)
    a = small if per_step else small[0]
    expanded = small.expand(T, P).repeat(1, C // P)
    _, x, h0 = _inputs(T, C, seed_for("emu_period_x", T, C, P))
    upstream = torch.randn(T, C, generator=g, dtype=torch.float64)
    assert emulated.can_vectorize((a, x), C, torch.float64, P) == (P % 2 == 0)
    for reverse in (False, True):
        for init in (None, h0):
            what = f"reverse={reverse} h0={init is not None}"
            got = emulated.forward(a, x, init, reverse, sms=sms)
            _assert_f64(got, ref64(expanded, x, init, reverse), what)
            want = emulated.backward(expanded, got, upstream, init, reverse, sms)
            have = emulated.backward(a, got, upstream, init, reverse, sms)
            for name, g_, w_ in zip(("dx", "da", "dh0"), have, want):
                if init is None and name == "dh0":
                    continue
                _assert_f64(g_, w_, f"{name} {what}")


PACKED_LENGTHS = [[1], [0, 3, 0, 5], [2, 1, 3, 1, 2], [300, 1, 0, 45], [1] * 9, [0, 2, 0]]


@pytest.mark.parametrize("decays", ["full", "per-step-P", "row-P"])
@pytest.mark.parametrize("C", [1, 3, 8])
@pytest.mark.parametrize("lengths", PACKED_LENGTHS, ids=lambda v: "L=" + "-".join(map(str, v)))
def test_emulated_packed_kernel(emulated, lengths, C, decays):
    """The packed kernel (a thread per sequence and column) against the loop that restarts at
    every sequence: h, and every gradient (dL/da per step, dL/dh0 per sequence, zero for an
    empty one) from the saved h; vector (C = 8, float64) and scalar columns, decays of the
    impulses' shape, per step of period P, one row of period P."""
    from .test_packed import oracle

    T, N = sum(lengths), len(lengths)
    seed = seed_for("emu_packed", lengths, C, decays)
    g = torch.Generator().manual_seed(seed)
    P = C if decays == "full" or C == 1 else (C // 2 if C % 2 == 0 else 1)
    small = 0.5 + 0.5 * torch.rand(T if decays != "row-P" else 1, P, generator=g,
                                   dtype=torch.float64)
    a = small if decays != "row-P" else small[0]
    expanded = small.expand(T, P).repeat(1, C // P)
    x = torch.randn(T, C, generator=g, dtype=torch.float64)
    h0 = torch.randn(N, C, generator=g, dtype=torch.float64)
    up = torch.randn(T, C, generator=g, dtype=torch.float64)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int64)
    for reverse in (False, True):
        for init in (None, h0):
            what = f"reverse={reverse} h0={init is not None}"
            got = emulated.packed_forward(a, x, init, cu, reverse)
            leaves = [t.clone().requires_grad_() for t in (expanded, x, h0)]
            want, _ = oracle(leaves[0], leaves[1], None if init is None else leaves[2], lengths,
                             reverse)
            _assert_f64(got, want.detach(), what)
            grads = torch.autograd.grad(want, leaves, up, allow_unused=True)
            have = emulated.packed_backward(a, got, up, init, cu, reverse)
            for name, g_, w_ in zip(("dx", "da", "dh0"), have, (grads[1], grads[0], grads[2])):
                if name == "dh0" and init is None:
                    continue
                _assert_f64(g_, w_, f"{name} {what}")


@pytest.mark.parametrize("name", ["serial", "paper"])
@pytest.mark.parametrize("case", [(1, 1), (1000, 5), (100, 40)], ids=lambda c: f"T={c[0]}-C={c[1]}")
def test_emulated_paper_kernels_float32(emulated, name, case):
    """cuda_serial and cuda_paper (960 chunks of time: T = 1000 leaves some empty, T = 1 all but
    one; 40 channels take a warp's lanes round twice), float32 against the float64 reference
    with the 2x rule."""
    T, C = case
    a, x, h0 = _inputs(T, C, seed_for("emu_paper", name, T, C), torch.float32)
    for reverse, init in ((False, h0), (True, None)):
        truth = ref64(a, x, init, reverse)
        baseline = reference.serial(a, x, init, reverse)
        allowed = 2 * max_err(baseline, truth) + FLOOR_ULPS * torch.finfo(
            torch.float32
        ).eps * scale_of(truth)
        got = emulated.paper_style(name, a, x, init, reverse)
        err = max_err(got, truth)
        assert err <= allowed, f"{name} reverse={reverse}: {err:.3e} > {allowed:.3e}"


def test_emulated_parallel_refuses_a_missing_workspace(emulated):
    """A plan with several tiles along time needs the workspace; without one the launcher
    returns an error instead of launching."""
    T, C = 600, 4  # one 4-channel column: 256 steps per tile at the shortest, so 3 tiles
    a, x, _ = _inputs(T, C, seed_for("emu_workspace"), torch.float32)
    out = torch.empty_like(x)
    lib = emulated.lib
    assert lib.plrnn_parallel_workspace_bytes(T, C, 0, 1, 0, 10**6) > 0
    rc = lib.plrnn_parallel_forward(
        a.data_ptr(), x.data_ptr(), None, out.data_ptr(), T, C, 0, 0, C, 1, 1, 10**6, None, None
    )
    assert rc != 0


@pytest.mark.parametrize("period, vectorized", [(0, 0), (3, 0), (8, 0), (2, 1)])
def test_emulated_parallel_refuses_a_bad_decay_layout(emulated, period, vectorized):
    """A period that does not divide C (or is zero), or one that splits a vector of the
    vectorized kernels (fp32: 4 channels), is an error before any launch."""
    T, C = 5, 4
    a, x, _ = _inputs(T, C, seed_for("emu_layout"), torch.float32)
    out = torch.empty_like(x)
    rc = emulated.lib.plrnn_parallel_forward(
        a.data_ptr(), x.data_ptr(), None, out.data_ptr(), T, C, 0, 0, period, 1, vectorized, 4,
        None, None,
    )  # fmt: skip
    assert rc != 0


# ------------------------------------------------- the torch binding over the emulated kernels


@pytest.fixture(scope="session")
def emulated_ops(tmp_path_factory):
    """cuda_binding.cpp built with -DPLRNN_EMULATE: torch.ops.plrnn_emulated.cuda_scan{,_backward}
    on CPU tensors, over the emulated kernels, with cuda.py's fake kernels and autograd. Checks
    the binding's argument checks, dtype dispatch, workspace, the paper kernels' backward (their
    forward kernel on shifted decays + a product) and the Python registration."""
    from torch.utils.cpp_extension import load

    includes = _cuda_include_dirs()
    if not includes:
        pytest.skip("the CUDA toolkit's headers (cuda_fp16.h) are not installed")
    if cuda.missing_prerequisite() not in (None, NO_DEVICE):
        pytest.skip(f"no toolchain for a torch extension: {cuda.missing_prerequisite()}")
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(CSRC.iterdir()))).hexdigest()
    wrappers = tmp_path_factory.mktemp("emulated_binding")
    sources = []
    for src in SOURCES:  # .cu files compile as C++ here: include each from a .cpp
        wrapper = wrappers / f"emulated_{src.stem}.cpp"
        wrapper.write_text(f'#include "{src}"\n')
        sources.append(str(wrapper))
    load(
        name=f"plrnn_emulated_{digest[:10]}",
        sources=sources,
        extra_cflags=["-DPLRNN_EMULATE", "-std=c++20", "-O1", "-pthread", f"-I{includes[0]}"],
        extra_ldflags=["-pthread"],
        is_python_module=False,
    )
    cuda.register_ops("plrnn_emulated")
    return torch.ops.plrnn_emulated


def _op_grads(op, kernel, inputs, upstream, reverse):
    leaves = [None if t is None else t.clone().requires_grad_(True) for t in inputs]
    out = op.cuda_scan(*leaves, reverse, kernel)
    wrt = [t for t in leaves if t is not None]
    return out.detach(), torch.autograd.grad(out, wrt, upstream)


@pytest.mark.parametrize("kernel", [0, 1, 2], ids=CUDA_BACKENDS)
def test_emulated_binding_forward_and_gradients(emulated_ops, kernel):
    dtype = torch.float64 if kernel == 2 else torch.float32
    # the paper kernels' backward is assembled in the binding: small shapes show it; the
    # parallel kernel's has its own kernel, checked at more tiles too
    for T, C in ((1, 3), (37, 5)) if kernel < 2 else ((1, 3), (37, 5), (700, 8)):
        a, x, h0 = _inputs(T, C, seed_for("emu_op", kernel, T, C), dtype)
        upstream = torch.randn(T, C, generator=torch.Generator().manual_seed(T), dtype=dtype)
        for reverse, init in ((False, h0), (True, h0), (False, None), (True, None)):
            inputs = (a, x, init)
            inputs64 = cast_all(inputs, torch.float64)
            want_h, want = _op_reference(inputs64, upstream.double(), reverse)
            got_h, got = _op_grads(emulated_ops, kernel, inputs, upstream, reverse)
            what = f"T={T} C={C} reverse={reverse} h0={init is not None}"
            if dtype == torch.float64:
                for g, w in zip((got_h, *got), (want_h, *want), strict=True):
                    _assert_f64(g, w, what)
            else:
                _, base = _op_reference(inputs, upstream, reverse)
                base_h = reference.serial(a, x, init, reverse)
                for g, b, w in zip((got_h, *got), (base_h, *base), (want_h, *want), strict=True):
                    assert g.dtype == dtype, what
                    allowed = gradient_allowed(b, w, T)
                    assert max_err(g, w) <= allowed, f"{what}: {max_err(g, w):.3e} > {allowed:.3e}"


def cast_all(tensors, dtype):
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def _op_reference(inputs, upstream, reverse):
    leaves = [None if t is None else t.clone().requires_grad_(True) for t in inputs]
    out = reference.serial(*leaves, reverse)
    wrt = [t for t in leaves if t is not None]
    return out.detach(), torch.autograd.grad(out, wrt, upstream)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_emulated_binding_parallel_low_precision(emulated_ops, dtype):
    T, C = 300, 16
    a, x, h0 = _inputs(T, C, seed_for("emu_op_lp", str(dtype)), dtype, "near_one")
    for reverse in (False, True):
        truth = ref64(a, x, h0, reverse)
        baseline = reference.serial(a, x, h0, reverse)
        allowed = 2 * max_err(baseline, truth) + FLOOR_ULPS * torch.finfo(dtype).eps * scale_of(
            truth
        )
        got = emulated_ops.cuda_scan(a, x, h0, reverse, 2)
        assert got.dtype == dtype and max_err(got, truth) <= allowed


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_emulated_binding_complex_gradcheck(emulated_ops, reverse):
    """cuda_parallel through the binding and cuda.py's autograd: torch's gradcheck on complex128
    (conjugate Wirtinger convention), with and without an initial state."""
    a, x, h0 = complex_inputs(7, 3, seed_for("emu_op_cplx", reverse), torch.complex128)
    leaves = tuple(t.requires_grad_() for t in (a, x, h0))
    assert torch.autograd.gradcheck(
        lambda a_, x_, h0_: emulated_ops.cuda_scan(a_, x_, h0_, reverse, 2), leaves)
    assert torch.autograd.gradcheck(
        lambda a_, x_: emulated_ops.cuda_scan(a_, x_, None, reverse, 2), leaves[:2])


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=str)
def test_emulated_binding_time_invariant_decays(emulated_ops, dtype):
    """(1, C) decays through the binding: gradcheck, and the gradient comes back (1, C); the
    paper's kernels refuse them."""
    T, C = 9, 3
    if dtype.is_complex:
        a, x, h0 = complex_inputs(T, C, seed_for("emu_op_shared_c"), dtype)
    else:
        a, x, h0 = _inputs(T, C, seed_for("emu_op_shared"), dtype)
    leaves = (a[:1].clone().requires_grad_(), x.requires_grad_(), h0.requires_grad_())
    for reverse in (False, True):
        assert torch.autograd.gradcheck(
            lambda a_, x_, h0_: emulated_ops.cuda_scan(a_, x_, h0_, reverse, 2), leaves)
    h = emulated_ops.cuda_scan(*leaves, False, 2)
    (ga,) = torch.autograd.grad(h.abs().sum(), leaves[0])
    assert ga.shape == (1, C)
    with pytest.raises(RuntimeError, match="time-invariant .* are for cuda_parallel"):
        emulated_ops.cuda_scan(a[:1].real.float(), x.real.float(), None, False, 0)


@pytest.mark.parametrize("rows", ["T", "1"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=str)
def test_emulated_binding_decays_shared_by_channel_blocks(emulated_ops, dtype, rows):
    """(T, P) and (1, P) decays with P dividing C through the binding: gradcheck, the gradient
    in the decays' shape (summed over the blocks and steps that share them), equal to the
    expanded decays' gradient summed the same way."""
    T, C, P = 7, 6, 2
    if dtype.is_complex:
        a, x, h0 = complex_inputs(T, C, seed_for("emu_op_period_c", rows), dtype)
    else:
        a, x, h0 = _inputs(T, C, seed_for("emu_op_period", rows), dtype)
    small = (a[:, :P] if rows == "T" else a[:1, :P]).clone()
    for reverse in (False, True):
        leaves = (small.clone().requires_grad_(), x.clone().requires_grad_(),
                  h0.clone().requires_grad_())
        assert torch.autograd.gradcheck(
            lambda a_, x_, h0_: emulated_ops.cuda_scan(a_, x_, h0_, reverse, 2), leaves)
        h = emulated_ops.cuda_scan(*leaves, reverse, 2)
        (ga,) = torch.autograd.grad(h.abs().sum(), leaves[0])
        full = small.expand(T, P).repeat(1, C // P).requires_grad_()
        h_full = emulated_ops.cuda_scan(full, x, h0, reverse, 2)
        torch.testing.assert_close(h, h_full, rtol=1e-12, atol=1e-12)
        (ga_full,) = torch.autograd.grad(h_full.abs().sum(), full)
        want = ga_full.view(T, C // P, P).sum(1)
        torch.testing.assert_close(ga, want if rows == "T" else want.sum(0, keepdim=True),
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="shared .* are for cuda_parallel"):
        emulated_ops.cuda_scan(small.real.float(), x.real.float(), None, False, 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=str)
def test_emulated_binding_packed(emulated_ops, dtype):
    """cuda_scan_packed through the binding and cuda.py's autograd: gradcheck with per-sequence
    initial states (an empty sequence among them), batch-shared decays, and the offsets checked
    on the host."""
    lengths = [3, 0, 1, 4]
    T, C, P = sum(lengths), 4, 2
    cu = torch.tensor([0, *itertools.accumulate(lengths)])
    if dtype.is_complex:
        a, x, _ = complex_inputs(T, C, seed_for("emu_op_packed_c"), dtype)
        h0 = complex_inputs(len(lengths), C, seed_for("emu_op_packed_c0"), dtype)[1]
    else:
        a, x, _ = _inputs(T, C, seed_for("emu_op_packed"), dtype)
        h0 = torch.randn(len(lengths), C, dtype=dtype)
    for decays in (a, a[:, :P].clone()):
        for reverse in (False, True):
            leaves = (decays.clone().requires_grad_(), x.clone().requires_grad_(),
                      h0.clone().requires_grad_())
            assert torch.autograd.gradcheck(
                lambda a_, x_, h0_: emulated_ops.cuda_scan_packed(a_, x_, h0_, reverse, cu), leaves)
    op = emulated_ops.cuda_scan_packed
    with pytest.raises(RuntimeError, match="cu_seqlens must be non-decreasing"):
        op(a, x, None, False, torch.tensor([0, 5, 3, T]))
    with pytest.raises(RuntimeError, match="cu_seqlens must run from 0 to impulses.size"):
        op(a, x, None, False, torch.tensor([0, T - 1]))
    with pytest.raises(RuntimeError, match="1-D int64 CPU tensor"):
        op(a, x, None, False, cu.int())
    with pytest.raises(RuntimeError, match=r"initial_state must have the shape \[4, 4\]"):
        op(a, x, h0[:3], False, cu)


def test_emulated_binding_refuses_double_backward(emulated_ops):
    a = torch.rand(6, 2, requires_grad=True)
    x = torch.randn(6, 2, requires_grad=True)
    h = emulated_ops.cuda_scan(a, x, None, False, 2)
    (ga,) = torch.autograd.grad((h**2).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(ga.sum(), x)


def test_emulated_binding_checks_arguments(emulated_ops):
    op = emulated_ops.cuda_scan
    a, x = torch.rand(8, 3), torch.randn(8, 3)
    with pytest.raises(RuntimeError, match="kernel must be 0"):
        op(a, x, None, False, 7)
    with pytest.raises(RuntimeError, match="decays must be contiguous"):
        op(a.t().contiguous().t(), x, None, False, 2)
    with pytest.raises(RuntimeError, match=r"initial_state must have shape \(C,\)"):
        op(a, x, torch.zeros(4), False, 2)
    with pytest.raises(RuntimeError, match="decays must have the"):
        op(a[:4], x, None, False, 2)
    with pytest.raises(TypeError, match="cuda_paper is the paper's float32-only kernel"):
        op(a.double(), x.double(), None, False, 1)
    with pytest.raises(TypeError, match="cuda_serial is the paper's float32-only kernel"):
        op(a.to(torch.complex64), x.to(torch.complex64), None, False, 0)
    with pytest.raises(TypeError, match="decays must have dtype"):
        op(a.double(), x, None, False, 2)
    assert op(a[:0], x[:0], None, False, 2).shape == (0, 3)
    assert op(a[:1], x[:0], None, False, 2).shape == (0, 3)  # one row of decays, no steps
    with pytest.raises(RuntimeError, match=r"decays must have the shape \[8, 3\], got \[1, 5\]"):
        op(torch.rand(1, 5), x, None, False, 2)  # 5 does not divide 3
    with pytest.raises(RuntimeError, match=r"decays must have the shape \[8, 3\], got \[4, 3\]"):
        op(torch.rand(4, 3), x, None, False, 2)  # neither one row nor one per step
    gx, ga, gh0 = emulated_ops.cuda_scan_backward(a[:0], x[:0], x[:0], None, False, 0)
    assert gx.shape == ga.shape == (0, 3) and gh0.shape == (3,)


def test_emulated_binding_under_torch_compile(emulated_ops):
    """The fake kernels and the autograd rule, through AOTAutograd (fullgraph)."""
    torch._dynamo.reset()
    a, x, h0 = _inputs(37, 5, seed_for("emu_compile"), torch.float32)
    upstream = torch.randn(37, 5, generator=torch.Generator().manual_seed(2))

    def f(a, x, h0):
        return emulated_ops.cuda_scan(a, x, h0, False, 2) * 2

    def fwd_bwd(fn):
        leaves = [t.clone().requires_grad_(True) for t in (a, x, h0)]
        h = fn(*leaves)
        return (h.detach(), *torch.autograd.grad(h, leaves, upstream))

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    for got, want in zip(fwd_bwd(compiled), fwd_bwd(f), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------- the lent-GPU session's tools


@without_gpu
def test_gpu_check_script_without_a_gpu_stops_with_a_clear_message(tmp_path):
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OUT=str(tmp_path)),
    )
    assert proc.returncode == 2
    assert "no CUDA GPU here" in proc.stdout
    assert (tmp_path / "gpu_check.log").read_text().count("no CUDA GPU here") == 1
