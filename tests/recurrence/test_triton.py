"""The `triton` backend: the kernel under Triton's interpreter on CPU against the float64
reference (forward, every gradient, Algorithm 1's chunked path, low precision), its compilation
for NVIDIA GPUs (which needs no GPU), availability, and large shapes on a real GPU.

The interpreter runs when TRITON_INTERPRET=1 is in the environment at call time (the backend
reads it per call; see plrnn/recurrence/triton.py), so the `interpreter` fixture sets it for one
test with monkeypatch: no subprocess is needed, and GPU tests in the same process still run the
compiled kernel. The interpreter executes a tile's scan element by element in Python, so every
CPU shape here is small; tiles are 16 steps x up to 8 channels under the interpreter, and the
shapes below cross those boundaries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import plrnn
from plrnn.recurrence import REGISTRY, reference
from plrnn.recurrence import triton as triton_backend
from plrnn.recurrence.registry import choose_auto

from .helpers import (
    F64_RTOL,
    FLOOR_ULPS,
    autograd_fwd_bwd,
    cast,
    check_low_precision,
    check_zero_state_through_overflow,
    grads_of,
    make_inputs,
    max_err,
    ref64,
    run,
    scale_of,
    seed_for,
    shape_id,
)

triton = pytest.importorskip("triton", reason="triton is not installed")

TILE_T = triton_backend._INTERPRETER_BLOCK_T
GRAD_NAMES = ("decays", "impulses", "initial_state")
LOW_PRECISION = [torch.float32, torch.float16, torch.bfloat16]

# (T, trailing shape): one step, one tile, exact tile multiples, odd lengths spanning several
# tiles, odd channel counts, and more channels than one program's block (8 under the interpreter).
SHAPES = [
    (1, (1,)),
    (1, (5,)),
    (2, (3,)),
    (TILE_T, (1,)),
    (2 * TILE_T, (2,)),
    (37, (3,)),
    (35, (9,)),
    (29, (2, 3)),
]


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


def case_id(case):
    T, shape = case
    return f"T={T}-{shape_id(shape)}"


@pytest.fixture
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def assert_close64(got, want, what):
    tol = F64_RTOL * max(1.0, scale_of(want))
    assert got.shape == want.shape and got.dtype == want.dtype, what
    err = max_err(got, want)
    assert err <= tol, f"{what}: max error {err:.3e} > {tol:.3e}"


def scan_fn(reverse, chunks=None):
    """(a, x, h0) -> h through the public op, or through the custom op with forced chunks."""
    if chunks is None:
        return lambda a, x, h0: run("triton", a, x, h0, reverse)
    return lambda a, x, h0: triton_backend.triton_scan(a, x, h0, reverse, chunks)


def upstream_for(T, shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((T, *shape), generator=g, dtype=torch.float64).to(dtype)


def check_grads64(inputs, upstream, reverse, fn, what):
    _, want = grads_of(lambda a, x, h0: reference.serial(a, x, h0, reverse), inputs, upstream)
    _, got = grads_of(fn, inputs, upstream)
    names = GRAD_NAMES if inputs[2] is not None else GRAD_NAMES[:2]
    assert len(got) == len(want) == len(names)
    for name, g, w in zip(names, got, want):
        assert_close64(g, w, f"{what} d{name}")


# ------------------------------------------------------------------------- forward, float64


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("decay_kind", ["uniform", "near_one", "near_zero"])
@pytest.mark.parametrize("case", SHAPES, ids=case_id)
def test_forward_float64_matches_reference(case, decay_kind, reverse):
    T, shape = case
    a, x, h0 = make_inputs(T, shape, decay_kind, True, seed_for("triton", T, shape, decay_kind))
    for init in (None, h0):
        got = run("triton", a, x, init, reverse)
        assert_close64(got, ref64(a, x, init, reverse), f"h0={init is not None}")


# ----------------------------------------------------------------------- gradients, float64


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("case", [(1, (3,)), (2 * TILE_T, (2,)), (37, (3,)), (29, (2, 5))], ids=case_id)
def test_gradients_float64_match_reference_autograd(case, with_h0, reverse):
    T, shape = case
    seed = seed_for("triton-grad", T, shape, with_h0, reverse)
    inputs = make_inputs(T, shape, "near_one", with_h0, seed)
    upstream = upstream_for(T, shape, seed + 1)
    check_grads64(inputs, upstream, reverse, scan_fn(reverse), "triton")


# ------------------------------------------------------------------- Algorithm 1 (time chunks)


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("chunks", [3, 5])
def test_chunked_forward_and_gradients(chunks, reverse):
    # 5 tiles, the last one partial: 3 chunks of 2 tiles (the last short), or 5 of 1.
    T, shape = 4 * TILE_T + 7, (2,)
    seed = seed_for("triton-chunks", chunks, reverse)
    a, x, h0 = make_inputs(T, shape, "uniform", True, seed)
    for init in (None, h0):
        got = triton_backend.triton_scan(a, x, init, reverse, chunks)
        assert_close64(got, ref64(a, x, init, reverse), f"{chunks} chunks, h0={init is not None}")
    check_grads64(
        (a, x, h0), upstream_for(T, shape, seed + 1), reverse, scan_fn(reverse, chunks), "chunked"
    )


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("rows", ["T", "1"])
@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("C, P", [(12, 3), (9, 9), (10, 1)], ids=lambda v: str(v))
def test_decays_shared_by_channel_blocks_are_read_in_place(C, P, chunks, rows):
    """(T, P) and (1, P) decays, P dividing C (channel c reads column c % P): forward and every
    gradient against the expanded decays' float64 truth, the decays' gradient in their own shape
    (summed over the steps and blocks that share each decay), one pass and Algorithm 1."""
    T = 2 * TILE_T + 5
    seed = seed_for("triton-period", C, P, chunks, rows)
    a, x, h0 = make_inputs(T, (C,), "near_one", True, seed)
    small = (a[:, :P] if rows == "T" else a[:1, :P]).clone()
    upstream = upstream_for(T, (C,), seed + 1)
    for reverse in (False, True):
        leaves = [t.clone().requires_grad_() for t in (small, x, h0)]
        h = triton_backend.triton_scan(*leaves, reverse, chunks)
        got = (h.detach(), *torch.autograd.grad(h, leaves, upstream))
        expanded = small.expand(T, P).repeat(1, C // P)
        truth = [t.clone().requires_grad_() for t in (expanded, x, h0)]
        h_ref = reference.serial(*truth, reverse)
        want = (h_ref.detach(), *torch.autograd.grad(h_ref, truth, upstream))
        da_full = want[1].view(T, C // P, P).sum(1)
        want = (want[0], da_full if rows == "T" else da_full.sum(0, keepdim=True), *want[2:])
        for name, g_, w_ in zip(("h", "da", "dx", "dh0"), got, want, strict=True):
            assert_close64(g_, w_, f"{name} reverse={reverse}")


@pytest.mark.usefixtures("interpreter")
# tl.where evaluates both sides: the interpreter's numpy warns of the inf * 0 it then discards
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("chunks", [None, 3], ids=["one_pass", "chunked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_zero_state_through_overflowing_decays(dtype, chunks):
    """helpers.check_zero_state_through_overflow: tiles' scans, the carry between tiles and the
    chunks' maps."""
    scan = autograd_fwd_bwd(lambda a, x, reverse: scan_fn(reverse, chunks)(a, x, None))
    check_zero_state_through_overflow(scan, 6 * TILE_T + 5, 3, dtype,
                                      seed=seed_for("triton-overflow", str(dtype)))


@pytest.mark.usefixtures("interpreter")
def test_chunks_are_rounded_to_whole_tiles():
    """Asking for more chunks than there are tiles, or one step per chunk, stays exact."""
    T, shape = 2 * TILE_T + 1, (2,)
    a, x, h0 = make_inputs(T, shape, "uniform", True, seed_for("triton-many-chunks"))
    for chunks in (T, 10 * T):
        for reverse in (False, True):
            got = triton_backend.triton_scan(a, x, h0, reverse, chunks)
            assert_close64(got, ref64(a, x, h0, reverse), f"{chunks} chunks requested")


# ------------------------------------------------------------------------------ low precision


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dtype_id)
@pytest.mark.parametrize("chunks", [None, 3], ids=["one_pass", "chunked"])
def test_low_precision_forward_within_twice_torch_error(chunks, dtype):
    T, shape = 3 * TILE_T + 5, (5,)
    a, x, h0 = make_inputs(T, shape, "near_one", True, seed_for("triton-lp", dtype), dtype=dtype)
    for reverse, init in ((False, None), (False, h0), (True, h0)):
        truth = ref64(a, x, init, reverse)
        if chunks is None:
            failures = check_low_precision(a, x, init, reverse, truth, backends=("triton",))
        else:
            failures = _low_precision_failures(
                triton_backend.triton_scan(a, x, init, reverse, chunks),
                reference.serial(a, x, init, reverse),
                truth,
            )
        assert not failures, "\n".join(failures)


def _low_precision_failures(out, baseline, truth, what="h"):
    """The helpers' 2x rule for one output: error at most twice that of reference.serial at the
    same dtype (float32 math, one rounding) plus a few ulps of the output's scale."""
    dtype = baseline.dtype
    if out.dtype != dtype or out.shape != truth.shape:
        return [f"{what}: got {out.dtype} {tuple(out.shape)}, want {dtype} {tuple(truth.shape)}"]
    ref_err = max_err(baseline, truth)
    allowed = 2 * ref_err + FLOOR_ULPS * torch.finfo(dtype).eps * scale_of(truth)
    err = max_err(out, truth)
    if err <= allowed:
        return []
    return [f"{what} {dtype}: max error {err:.3e} > allowed {allowed:.3e} (reference {ref_err:.3e})"]


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dtype_id)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_low_precision_gradients_within_twice_torch_error(reverse, dtype):
    T, shape = 2 * TILE_T + 3, (3,)
    seed = seed_for("triton-lp-grad", dtype, reverse)
    inputs = make_inputs(T, shape, "near_one", True, seed, dtype=dtype)
    upstream = upstream_for(T, shape, seed + 1, dtype)
    # Truth: float64 autograd through the reference on exactly these (rounded) inputs.
    _, truth = grads_of(
        lambda a, x, h0: reference.serial(a, x, h0, reverse),
        cast(inputs, torch.float64),
        upstream.double(),
    )
    _, baseline = grads_of(lambda a, x, h0: reference.serial(a, x, h0, reverse), inputs, upstream)
    failures = []
    for chunks in (None, 2):
        _, got = grads_of(scan_fn(reverse, chunks), inputs, upstream)
        for name, g, b, t in zip(GRAD_NAMES, got, baseline, truth):
            failures += _low_precision_failures(g, b, t, f"chunks={chunks} d{name}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------- special values


@pytest.mark.usefixtures("interpreter")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("chunks", [None, 3], ids=["one_pass", "chunked"])
def test_nan_propagates_like_reference(chunks, reverse):
    T, shape = 3 * TILE_T + 2, (3,)
    a, x, h0 = make_inputs(T, shape, "uniform", True, seed_for("triton-nan", reverse))
    a[T // 2 + 1, 1] = float("nan")  # mid-tile, mid-chunk
    x[5, 2] = float("nan")
    want = ref64(a, x, h0, reverse)
    got = scan_fn(reverse, chunks)(a, x, h0)
    assert torch.isnan(want).any()
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    finite = ~torch.isnan(want)
    assert_close64(got[finite], want[finite], "finite part")


@pytest.mark.usefixtures("interpreter")
def test_decays_zero_and_one_exactly():
    """a = 0 restarts the recurrence, a = 1 is a running sum: both exact in the identity padding."""
    T, C = 2 * TILE_T + 3, 4
    x = torch.arange(T * C, dtype=torch.float64).reshape(T, C) % 7
    for reverse in (False, True):
        ones = run("triton", torch.ones_like(x), x, None, reverse)
        want = (x.flip(0).cumsum(0).flip(0)) if reverse else x.cumsum(0)
        assert torch.equal(ones, want)
        assert torch.equal(run("triton", torch.zeros_like(x), x, torch.ones(C, dtype=x.dtype), reverse), x)


# ----------------------------------------------------------------------- the ops themselves


@pytest.mark.usefixtures("interpreter")
def test_custom_ops_pass_opcheck():
    """Schema, fake (meta) kernels and the registered autograd agree with the real kernels;
    AOT dispatch (the interpreter's slowest check) once, for the chunked forward."""
    a, x, h0 = make_inputs(TILE_T + 3, (2,), "uniform", True, seed_for("triton-opcheck"))
    a, x, h0 = (t.float().requires_grad_(True) for t in (a, x, h0))
    quick = ("test_schema", "test_autograd_registration", "test_faketensor")
    opcheck = torch.library.opcheck
    opcheck(triton_backend.triton_scan, (a, x, h0, True, 0), test_utils=quick)
    opcheck(triton_backend.triton_scan, (a, x, None, False, 2))
    h = triton_backend.triton_scan(a, x, h0, False, 0).detach()
    grad_args = (a.detach(), h, torch.randn_like(h), h0.detach(), False, 2)
    opcheck(triton_backend.triton_scan_backward, grad_args, test_utils=quick)


@pytest.mark.usefixtures("interpreter")
def test_double_backward_is_refused():
    a, x, h0 = (t.requires_grad_(True) for t in make_inputs(5, (2,), "uniform", True, 1))
    h = run("triton", a, x, h0)
    (ga,) = torch.autograd.grad(h.sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        ga.sum().backward()


@pytest.mark.usefixtures("interpreter")
def test_direct_op_checks_name_the_argument():
    a, x, _ = make_inputs(4, (3,), "uniform", False, 2)
    with pytest.raises(ValueError, match=r"impulses must be a \(T, C\) buffer"):
        triton_backend.triton_scan(a.reshape(4, 3, 1), x.reshape(4, 3, 1), None, False, 0)
    with pytest.raises(ValueError, match=r"decays must have shape \(T, C\) = \(4, 3\), or"):
        triton_backend.triton_scan(a[:3], x, None, False, 0)
    with pytest.raises(ValueError, match=r"or \(T or 1, P\) with P dividing C; got \(4, 2\)"):
        triton_backend.triton_scan(a[:, :2], x, None, False, 0)
    with pytest.raises(ValueError, match="decays must match impulses"):
        triton_backend.triton_scan(a.float(), x, None, False, 0)
    packed = triton_backend.triton_scan_packed
    with pytest.raises(ValueError, match="non-decreasing"):
        packed(a, x, None, False, torch.tensor([0, 3, 2, 4]))
    with pytest.raises(ValueError, match="end at T"):
        packed(a, x, None, False, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"initial_state must have shape \(N, C\) = \(2, 3\)"):
        packed(a, x, torch.zeros(3, 3, dtype=x.dtype), False, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="initial_state must have shape"):
        triton_backend.triton_scan(a, x, torch.zeros(4, dtype=x.dtype), False, 0)


# -------------------------------------------------------------------------------- availability


def _status(device="cpu"):
    return {s.name: s for s in plrnn.backends(device)}["triton"]


def test_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    status = _status()
    assert not status.available
    assert status.reason == triton_backend.INTERPRET_HINT
    assert "TRITON_INTERPRET=1" in status.reason and "interpreter" in status.reason
    a, x, _ = make_inputs(4, (3,), "uniform", False, 3)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        run("triton", a, x)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        triton_backend.triton_scan(a, x, None, False, 0)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not _status().available
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert _status().available
    assert _status().reason == REGISTRY["triton"].description


def test_missing_triton_is_reported(monkeypatch):
    # A None entry in sys.modules makes `import triton` fail like an absent package.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    for name in [m for m in sys.modules if m == "triton" or m.startswith("triton.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "triton", None)
    triton_backend._import_error.cache_clear()
    try:
        status = _status()
        assert not status.available
        assert status.reason.startswith("triton is not installed")
    finally:
        monkeypatch.undo()
        triton_backend._import_error.cache_clear()
    assert triton_backend._import_error() is None


def test_other_devices_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    status = _status("meta")
    assert not status.available and status.reason == "Triton kernel; inputs are on meta"


@pytest.mark.usefixtures("interpreter")
def test_auto_never_picks_triton_on_cpu(num_threads):
    cpu = torch.device("cpu")
    for threads in (1, 2):
        num_threads(threads)
        for T, C in [(1, 1), (16384, 24), (10**6, 4), (64, 10**5)]:
            assert choose_auto(cpu, T, C) != "triton"


# ------------------------------------------------------------- compiled for the GPU, no GPU


def _compile_for_gpu(flags, pointer_type, ones=()):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = triton_backend._kernel(False)
    signature = {name: pointer_type for name in kernel.arg_names[:8]}
    signature.update(cu_ptr="*i64", T="i32", C="i32", a_row="i32", a_period="i32", chunk_len="i32")
    constexprs = dict(flags, BLOCK_T=64, BLOCK_C=32)
    # Triton specialises integer arguments equal to 1 into constants; the interpreter does not,
    # so only compiling shows whether the kernel still type-checks then.
    constexprs.update({name: 1 for name in ones})
    signature.update({name: "constexpr" for name in constexprs})
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": True})


FORWARD = dict(DESCENDING=False, GRAD=False, TOTALS=False, HAS_INIT=True, HAS_H0=False,
               PACKED=False)
TOTALS = dict(DESCENDING=True, GRAD=False, TOTALS=True, HAS_INIT=False, HAS_H0=False,
              PACKED=False)
BACKWARD = dict(DESCENDING=True, GRAD=True, TOTALS=False, HAS_INIT=True, HAS_H0=True,
                PACKED=False)
BACKWARD_TOTALS = dict(DESCENDING=False, GRAD=True, TOTALS=True, HAS_INIT=False, HAS_H0=False,
                       PACKED=False)
BACKWARD_OF_REVERSE = dict(DESCENDING=False, GRAD=True, TOTALS=False, HAS_INIT=False, HAS_H0=True,
                           PACKED=False)
PACKED_FORWARD = dict(FORWARD, PACKED=True)
PACKED_BACKWARD = dict(BACKWARD, HAS_INIT=False, PACKED=True)


@pytest.mark.parametrize(
    "mode,pointer_type,fp64,ones",
    [
        (FORWARD, "*fp32", False, ()),
        (BACKWARD, "*fp32", False, ()),
        (FORWARD, "*bf16", False, ("T", "C")),
        (BACKWARD_TOTALS, "*fp16", False, ("T", "C")),
        (TOTALS, "*fp64", True, ("C",)),
        (BACKWARD, "*fp64", True, ("T",)),
        (BACKWARD_OF_REVERSE, "*fp32", False, ("T",)),
        (BACKWARD, "*fp32", False, ("a_row", "a_period")),  # (T, 1) decays: one per step
        (PACKED_FORWARD, "*fp32", False, ()),
        (PACKED_BACKWARD, "*bf16", False, ("C",)),
        (PACKED_BACKWARD, "*fp64", True, ()),
    ],
    ids=["forward", "backward", "forward-bf16-T1-C1", "backward_totals-fp16-T1-C1",
         "totals-fp64-C1", "backward-fp64-T1", "backward_of_reverse-T1", "backward-P1",
         "packed_forward", "packed_backward-bf16-C1", "packed_backward-fp64"],
)  # fmt: skip
def test_kernel_compiles_for_nvidia_gpus(mode, pointer_type, fp64, ones):
    """Triton lowers to PTX and cubin without a GPU (it ships ptxas), which catches what the
    interpreter cannot: code that only the compiler's type and constexpr rules reject."""
    try:
        compiled = _compile_for_gpu(dict(mode, FP64=fp64), pointer_type, ones)
    except (ImportError, FileNotFoundError) as err:  # a triton build without the NVIDIA backend
        pytest.skip(f"triton cannot target NVIDIA GPUs here: {err}")
    assert compiled.asm["cubin"]


IMPORTED_FOR_THE_INTERPRETER = """
import os
os.environ["TRITON_INTERPRET"] = "1"
import triton.language  # Triton's own library is now wrapped for the interpreter only
import torch
import plrnn
from plrnn.recurrence import reference
from tests.recurrence.test_triton import BACKWARD, _compile_for_gpu

a, x = torch.rand(40, 3, dtype=torch.float64), torch.randn(40, 3, dtype=torch.float64)
h = plrnn.linear_recurrence(a, x, reverse=True, backend="triton")
assert (h - reference.serial(a, x, None, True)).abs().max() < 1e-12
del os.environ["TRITON_INTERPRET"]
assert _compile_for_gpu(dict(BACKWARD, FP64=False), "*fp32").asm["cubin"]
print("both modes ran")
"""


def test_both_modes_after_triton_was_imported_for_the_interpreter():
    """The reverse import order of this module's tests (which import triton before setting
    TRITON_INTERPRET): triton imported under TRITON_INTERPRET=1, and still the kernel both
    interprets and compiles. Needs a fresh interpreter, hence the subprocess."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED_FOR_THE_INTERPRETER],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "both modes ran" in done.stdout


# ------------------------------------------------------------------------------- on a real GPU

cuda = pytest.mark.cuda
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _serial_cpu(a, x, h0, reverse, dtype, upstream=None):
    """h (or, given `upstream`, the gradients) from the C++ serial kernel on the CPU at `dtype`,
    on copies of the GPU inputs. In float64 it is the truth for large shapes (the Python loop is
    too slow at a million steps; cpu_serial is checked against reference.serial by the rest of
    the suite); at the inputs' own dtype it is the baseline of the 2x rule (float32 math, one
    step after the other, like reference.serial)."""
    a, x, h0 = (t.detach().cpu().to(dtype) for t in (a, x, h0))

    def fn(a_, x_, h0_):
        return plrnn.linear_recurrence(a_, x_, h0_, reverse=reverse, backend="cpu_serial")

    if upstream is None:
        return fn(a, x, h0)
    return grads_of(fn, (a, x, h0), upstream.detach().cpu().to(dtype))[1]


def _gpu_inputs(T, C, dtype, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = 0.999 + 0.001 * torch.rand(T, C, generator=g, device="cuda")  # long memory
    x = torch.randn(T, C, generator=g, device="cuda")
    h0 = torch.randn(C, generator=g, device="cuda")
    return a.to(dtype), x.to(dtype), h0.to(dtype)


def _gpu_check(got, truth, baseline, what):
    """float64: F64_RTOL; lower precisions: the helpers' 2x rule with cpu_serial as baseline."""
    got = got.detach().cpu()
    if got.dtype == torch.float64:
        assert_close64(got, truth, what)
        return
    failures = _low_precision_failures(got, baseline, truth, what)
    assert not failures, "\n".join(failures)


def _gpu_forward_and_gradients(a, x, h0, reverse, upstream):
    leaves = [t.clone().requires_grad_(True) for t in (a, x, h0)]
    h = run("triton", *leaves, reverse)
    return h, torch.autograd.grad(h, leaves, upstream)


def _check_against_cpu(a, x, h0, reverse, upstream, h, grads):
    dtype = x.dtype
    _gpu_check(
        h, _serial_cpu(a, x, h0, reverse, torch.float64), _serial_cpu(a, x, h0, reverse, dtype), "h"
    )
    truth = _serial_cpu(a, x, h0, reverse, torch.float64, upstream)
    baseline = _serial_cpu(a, x, h0, reverse, dtype, upstream)
    for name, g, t, b in zip(GRAD_NAMES, grads, truth, baseline):
        _gpu_check(g, t, b, f"d{name}")


@cuda
@needs_gpu
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gpu_long_sequence_few_channels(reverse):
    """T = 2^20 + 3 with 3 channels: the chunked (Algorithm 1) path, forward and gradients,
    and the one-pass path on the same inputs."""
    assert _status("cuda").available
    T, C = 2**20 + 3, 3
    a, x, h0 = _gpu_inputs(T, C, torch.float32, seed_for("triton-gpu-long", reverse))
    upstream = torch.randn(T, C, device="cuda")
    h, grads = _gpu_forward_and_gradients(a, x, h0, reverse, upstream)
    _check_against_cpu(a, x, h0, reverse, upstream, h, grads)
    one_pass = triton_backend.triton_scan(a, x, h0, reverse, 1)
    truth = _serial_cpu(a, x, h0, reverse, torch.float64)
    _gpu_check(one_pass, truth, _serial_cpu(a, x, h0, reverse, torch.float32), "one pass")


@cuda
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gpu_many_channels(reverse, dtype):
    """8 x 1536 channels over an odd number of steps: many channel blocks."""
    T, C = 4099, 8 * 1536
    a, x, h0 = _gpu_inputs(T, C, dtype, seed_for("triton-gpu-wide", reverse, dtype))
    upstream = torch.randn(T, C, device="cuda").to(dtype)
    h, grads = _gpu_forward_and_gradients(a, x, h0, reverse, upstream)
    _check_against_cpu(a, x, h0, reverse, upstream, h, grads)


@cuda
@needs_gpu
def test_gpu_offsets_beyond_int32():
    """More than 2^31 elements: row offsets need 64-bit arithmetic. Checked on a few channels,
    the last one included, whose truth is cheap to compute."""
    T, C = 2**18 + 3, 8192
    assert T * C > 2**31
    a, x, h0 = _gpu_inputs(T, C, torch.float32, seed_for("triton-gpu-int64"))
    h = run("triton", a, x, h0, False)
    cols = torch.tensor([0, 1, C // 2 + 5, C - 1], device="cuda")
    a, x, h0 = a[:, cols], x[:, cols], h0[cols]
    truth = _serial_cpu(a, x, h0, False, torch.float64)
    _gpu_check(h[:, cols], truth, _serial_cpu(a, x, h0, False, torch.float32), "h")


@cuda
@needs_gpu
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gpu_packed_batch_in_one_launch(reverse):
    """2000 sequences of 0-300 steps, 64 channels, batch-shared decays: one launch (a program per
    channel block and sequence), forward and every gradient against the float64 loop per
    sequence on the CPU."""
    g = torch.Generator().manual_seed(seed_for("triton-gpu-packed", reverse))
    lengths = torch.randint(0, 301, (2000,), generator=g).tolist()
    T, N = sum(lengths), len(lengths)
    bounds = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert triton_backend.one_launch_for(bounds, 64, torch.device("cuda"))
    a = torch.sigmoid(2 + torch.randn(T, 1, 16, generator=g, dtype=torch.float64))
    x = torch.randn(T, 4, 16, generator=g, dtype=torch.float64)
    h0 = torch.randn(N, 4, 16, generator=g, dtype=torch.float64)
    up = torch.randn(T, 4, 16, generator=g, dtype=torch.float64)
    cu = torch.tensor(bounds)

    def grads(device, backend):
        leaves = [t.to(device).requires_grad_(True) for t in (a, x, h0)]
        h = plrnn.linear_recurrence(*leaves, cu_seqlens=cu.to(device), reverse=reverse,
                                    backend=backend)
        return [t.cpu() for t in (h.detach(), *torch.autograd.grad(h, leaves, up.to(device)))]

    got, want = grads("cuda", "triton"), grads("cpu", "cpu_serial")
    for name, g_, w_ in zip(("h", "da", "dx", "dh0"), got, want, strict=True):
        assert g_.shape == w_.shape, name
        assert max_err(g_, w_) <= F64_RTOL * max(1.0, scale_of(w_)), name
