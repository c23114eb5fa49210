"""The CUDA backends on a GPU (marker `cuda`; skipped without one), against the float64 truth.

Every call runs with the caching allocator's free memory filled with NaN (`poisoned`), so an
output element or workspace flag that a kernel forgets to write shows up as a NaN or a hang.
The truth is `reference.serial` in float64 on the CPU, except at T = 2^20 + 3, where the Python
loop would take minutes and `cpu_serial` in float64 stands in for it (the CPU suite checks it
against the reference). Lower precisions follow helpers.py's 2x rule.

cuda_serial and cuda_paper are float32-only (the paper's kernels); cuda_parallel is checked in
float64, float32, float16, bfloat16, complex64 and complex128.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import plrnn
from plrnn.recurrence import cuda, reference
from plrnn.recurrence.registry import choose_auto

from .helpers import (
    DECAY_KINDS,
    F64_RTOL,
    FLOOR_ULPS,
    autograd_fwd_bwd,
    cast,
    check_zero_state_through_overflow,
    complex_inputs,
    gradient_allowed,
    grads_of,
    make_inputs,
    max_err,
    ref64,
    scale_of,
    seed_for,
    shape_id,
)
from .test_broadcast import HALF_SHARED_CASES, check_half_shared_decays
from .test_forward import SHAPES, T_GRID
from .test_gradients import GRAD_CASES, GRAD_NAMES

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (torch.cuda.is_available() is False)",
    ),
]

CUDA_BACKENDS = ("cuda_serial", "cuda_paper", "cuda_parallel")
FP32_ONLY = ("cuda_serial", "cuda_paper")
NAN = float("nan")


@pytest.fixture(scope="module", autouse=True)
def cuda_kernels_built():
    reason = cuda.load()
    assert reason is None, f"the CUDA kernels did not build: {reason}"


def poison(nbytes: int = 2**28) -> None:
    """Hands NaN-filled blocks to the caching allocator, so the outputs and workspace of the next
    call come from memory full of NaN (and their flags start nonzero). `nbytes`: at least what
    the next call allocates at once."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # drop free blocks that still hold finite values
    small = [torch.full((2**18,), NAN, device="cuda") for _ in range(8)]  # 1 MB: small pool
    large = torch.full((max(nbytes, 2**28) // 4,), NAN, device="cuda")  # large pool
    del small, large


def _poison_before_backward(grad):
    poison(4 * grad.numel() * grad.element_size())
    return grad


def on_gpu(tensors):
    return tuple(None if t is None else t.cuda() for t in tensors)


def run_gpu(name, a, x, h0=None, reverse=False):
    """The backend on GPU copies of CPU inputs, from poisoned memory; the result on the CPU."""
    a, x, h0 = on_gpu((a, x, h0))
    poison(4 * x.numel() * x.element_size())
    out = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=name)
    return out.cpu()


def allowed_error(a, x, h0, reverse, truth, ulps=FLOOR_ULPS):
    """The 2x rule: twice the float64 truth's distance to the reference's own math at the
    inputs' dtype, plus a few ulps of the output's scale."""
    baseline = reference.serial(a, x, h0, reverse)
    return 2 * max_err(baseline, truth) + ulps * torch.finfo(x.dtype).eps * scale_of(truth)


def backends_for(dtype):
    return CUDA_BACKENDS if dtype == torch.float32 else ("cuda_parallel",)


# ------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("T", T_GRID, ids=lambda T: f"T={T}")
def test_forward_matches_reference(T, shape):
    """The awkward-shape grid of test_forward.py: every decay kind, with and without h0, both
    directions; float32 for every CUDA backend and float64 for cuda_parallel."""
    failures = []
    for kind, with_h0, reverse in itertools.product(DECAY_KINDS, (False, True), (False, True)):
        seed = seed_for("cuda_forward", T, shape, kind, with_h0, reverse)
        a32, x32, h32 = make_inputs(T, shape, kind, with_h0, seed, dtype=torch.float32)
        a64, x64, h64 = cast((a32, x32, h32), torch.float64)
        truth = ref64(a64, x64, h64, reverse)
        case = f"{kind} h0={with_h0} reverse={reverse}"

        got = run_gpu("cuda_parallel", a64, x64, h64, reverse)
        tol = F64_RTOL * max(1.0, scale_of(truth))
        if got.dtype != torch.float64 or not max_err(got, truth) <= tol:
            failures.append(f"cuda_parallel float64 {case}: {max_err(got, truth):.3e} > {tol:.3e}")

        allowed = allowed_error(a32, x32, h32, reverse, truth)
        for name in CUDA_BACKENDS:
            got = run_gpu(name, a32, x32, h32, reverse)
            err = max_err(got, truth)
            if got.dtype != torch.float32 or got.shape != x32.shape or not err <= allowed:
                failures.append(f"{name} float32 {case}: {err:.3e} > {allowed:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", [(3,), (33,), (2, 4, 16), (8, 64)], ids=shape_id)
@pytest.mark.parametrize("T", [1, 33, 1000, 4097], ids=lambda T: f"T={T}")
def test_forward_half_precision(T, shape, dtype):
    failures = []
    for kind, with_h0, reverse in itertools.product(
        ["uniform", "near_one"], (False, True), (False, True)
    ):
        seed = seed_for("cuda_half", T, shape, kind, with_h0, reverse, str(dtype))
        a, x, h0 = make_inputs(T, shape, kind, with_h0, seed, dtype=dtype)
        truth = ref64(a, x, h0, reverse)
        allowed = allowed_error(a, x, h0, reverse, truth)
        got = run_gpu("cuda_parallel", a, x, h0, reverse)
        err = max_err(got, truth)
        if got.dtype != dtype or not err <= allowed:
            failures.append(f"{kind} h0={with_h0} reverse={reverse}: {err:.3e} > {allowed:.3e}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- gradients


def _reference_grads(inputs, upstream, reverse):
    return grads_of(lambda a, x, h0: reference.serial(a, x, h0, reverse), inputs, upstream)


def _gpu_grads(name, inputs, upstream, reverse):
    inputs = on_gpu(inputs)
    upstream = upstream.cuda()

    def fn(a, x, h0):
        poison(4 * x.numel() * x.element_size())
        out = plrnn.linear_recurrence(a, x, h0, reverse=reverse, backend=name)
        out.register_hook(_poison_before_backward)  # runs just before the backward kernel
        return out

    out, grads = grads_of(fn, inputs, upstream)
    return out.cpu(), [g.cpu() for g in grads]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["no_h0", "h0"])
@pytest.mark.parametrize("decay_kind", ["uniform", "near_one"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: f"T={c[0]}-{shape_id(c[1])}")
def test_gradients_match_reference(case, decay_kind, with_h0, reverse):
    T, shape = case
    seed = seed_for("cuda_grad", T, shape, decay_kind, with_h0, reverse)
    inputs32 = make_inputs(T, shape, decay_kind, with_h0, seed, dtype=torch.float32)
    inputs64 = cast(inputs32, torch.float64)
    upstream = torch.randn((T, *shape), generator=torch.Generator().manual_seed(seed + 1))
    _, truth = _reference_grads(inputs64, upstream.double(), reverse)
    _, baseline = _reference_grads(inputs32, upstream, reverse)
    names = GRAD_NAMES if with_h0 else GRAD_NAMES[:2]

    failures = []
    _, got = _gpu_grads("cuda_parallel", inputs64, upstream.double(), reverse)
    for what, g, w in zip(names, got, truth, strict=True):
        tol = F64_RTOL * max(1.0, scale_of(w))
        if g.dtype != torch.float64 or not max_err(g, w) <= tol:
            failures.append(f"cuda_parallel float64 d{what}: {max_err(g, w):.3e} > {tol:.3e}")
    for name in CUDA_BACKENDS:
        _, got = _gpu_grads(name, inputs32, upstream, reverse)
        for what, g, b, w in zip(names, got, baseline, truth, strict=True):
            allowed = gradient_allowed(b, w, T)
            if g.dtype != torch.float32 or not max_err(g, w) <= allowed:
                failures.append(f"{name} float32 d{what}: {max_err(g, w):.3e} > {allowed:.3e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("T", [33, 1000], ids=lambda T: f"T={T}")
def test_half_precision_gradients(T, reverse, dtype):
    shape = (3, 16)
    seed = seed_for("cuda_grad_lp", T, reverse, str(dtype))
    inputs = make_inputs(T, shape, "uniform", True, seed, dtype=dtype)
    upstream = torch.randn((T, *shape), generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    _, truth = _reference_grads(cast(inputs, torch.float64), upstream.double(), reverse)
    _, baseline = _reference_grads(inputs, upstream, reverse)
    _, got = _gpu_grads("cuda_parallel", inputs, upstream, reverse)
    for what, g, b, w in zip(GRAD_NAMES, got, baseline, truth, strict=True):
        assert g.dtype == dtype, what
        allowed = gradient_allowed(b, w, T)
        assert max_err(g, w) <= allowed, f"d{what}: {max_err(g, w):.3e} > {allowed:.3e}"


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("T", [1, 2, 5, 17], ids=lambda T: f"T={T}")
def test_gradcheck_cuda_parallel(T, reverse):
    a, x, h0 = make_inputs(T, (3,), "uniform", True, seed_for("cuda_gradcheck", T))
    inputs = tuple(t.cuda().requires_grad_(True) for t in (a, x, h0))
    assert torch.autograd.gradcheck(
        lambda a, x, h0: plrnn.linear_recurrence(
            a, x, h0, reverse=reverse, backend="cuda_parallel"
        ),
        inputs,
        eps=1e-6,
        atol=1e-8,
        rtol=1e-6,
    )


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize(
    ("T", "C"), [(1, 1), (33, 3), (1000, 8), (4099, 130), (16387, 2)], ids=lambda v: str(v)
)
def test_complex_forward_and_gradients(T, C, dtype):
    """cuda_parallel on complex inputs against the complex128 loop's values and autograd
    (torch's conjugate convention); complex64 by the 2x rule against the complex64 loop."""
    a, x, h0 = complex_inputs(T, C, seed_for("cuda_cplx", T, C, str(dtype)), dtype)
    upstream = torch.randn(T, C, generator=torch.Generator().manual_seed(T), dtype=dtype)
    for reverse in (False, True):
        wide = [t.to(torch.complex128).requires_grad_(True) for t in (a, x, h0)]
        h = reference.serial(*wide, reverse)
        want = (h.detach(), *torch.autograd.grad(h, wide, upstream.to(torch.complex128)))
        low = [t.clone().requires_grad_(True) for t in (a, x, h0)]
        hl = reference.serial(*low, reverse)
        base = (hl.detach(), *torch.autograd.grad(hl, low, upstream))
        dev = [t.cuda().requires_grad_(True) for t in (a, x, h0)]
        poison()
        hd = plrnn.linear_recurrence(*dev, reverse=reverse, backend="cuda_parallel")
        got = (hd.detach(), *torch.autograd.grad(hd, dev, upstream.cuda()))
        for name, g, b, w in zip(("h", "da", "dx", "dh0"), got, base, want, strict=True):
            g = g.cpu()
            assert g.dtype == dtype, name
            if dtype == torch.complex128:
                allowed = F64_RTOL * max(1.0, scale_of(w))
            else:
                allowed = 2 * max_err(b, w) + FLOOR_ULPS * torch.finfo(torch.float32).eps * (
                    scale_of(w))
            err = max_err(g, w)
            assert err <= allowed, f"{name} reverse={reverse}: {err:.3e} > {allowed:.3e}"


def test_complex_gradcheck_cuda_parallel():
    a, x, h0 = complex_inputs(6, 3, seed_for("cuda_cplx_gradcheck"), torch.complex128)
    inputs = tuple(t.cuda().requires_grad_(True) for t in (a, x, h0))
    for reverse in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, x, h0: plrnn.linear_recurrence(
                a, x, h0, reverse=reverse, backend="cuda_parallel"
            ),
            inputs,
        )


@pytest.mark.parametrize("packed", [False, True], ids=["batch", "packed"])
@pytest.mark.parametrize("spec", [(40,), ("T", 1, 40), ("T", 1, 1, 5), (1, 3, 1, 5)],
                         ids=lambda s: "a=" + "x".join(map(str, s)))
def test_broadcast_decays_read_in_place(spec, packed):
    """Time-invariant and batch-shared decays for (T, 3, 40) or (T, 3, 8, 5) impulses:
    cuda_parallel reads them unexpanded (periods 40, a multiple of the fp64 vector, and 5, which
    takes the scalar path), and the decays' gradient comes back in their shape, summed over the
    steps and batch entries that share each decay."""
    T = 5000
    trailing = (3, 40) if spec[-1] == 40 else (3, 8, 5)
    g = torch.Generator().manual_seed(seed_for("cuda_bcast", spec, packed))
    a_shape = tuple(T if d == "T" else d for d in spec)
    a = 0.9 + 0.1 * torch.rand(a_shape, generator=g, dtype=torch.float64)
    x = torch.randn(T, *trailing, generator=g, dtype=torch.float64)
    cu = torch.tensor([0, 1, 1, 2000, T]) if packed else None
    h0 = torch.randn(4 if packed else 1, *trailing, generator=g, dtype=torch.float64)
    h0 = h0 if packed else h0[0]
    upstream = torch.randn(T, *trailing, generator=g, dtype=torch.float64)
    want_leaves = [t.clone().requires_grad_() for t in (a, x, h0)]
    want_h = plrnn.linear_recurrence(want_leaves[0].expand(x.shape), *want_leaves[1:],
                                     cu_seqlens=cu, backend="reference")
    want = (want_h.detach(), *torch.autograd.grad(want_h, want_leaves, upstream))
    leaves = [t.cuda().requires_grad_() for t in (a, x, h0)]
    h = plrnn.linear_recurrence(*leaves, cu_seqlens=None if cu is None else cu.cuda(),
                                backend="cuda_parallel")
    got = (h.detach(), *torch.autograd.grad(h, leaves, upstream.cuda()))
    for name, g_, w_ in zip(("h", "da", "dx", "dh0"), got, want, strict=True):
        assert g_.shape == w_.shape, name
        assert max_err(g_.cpu(), w_) <= F64_RTOL * max(1.0, scale_of(w_)), name


# (decays and impulses as they lie in memory, the (T, ...) views of both that the op gets)
LAYOUTS = {
    # Batch-first sequences, as a layer with batch_first=True or (B, T, H, D) attention code
    # holds them: the views x.transpose(0, 1), decays alike.
    "batch_first": ((3, 700, 40), (3, 700, 40), lambda t: t.transpose(0, 1)),
    # One decay per head (Mamba-2): (T, B, H, 1) beside (T, B, H, P) impulses.
    "per_head": ((700, 3, 4, 1), (700, 3, 4, 10), lambda t: t),
}


@pytest.mark.parametrize("name", ["cuda_parallel", "triton"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_input_layouts_of_todays_linear_rnns(layout, name):
    """The layouts the CPU tests cover in test_batch_first.py and test_broadcast.py, on the GPU
    backends: forward and every gradient against the float64 loop on contiguous copies, h in
    the impulses' shape."""
    status = {s.name: s for s in plrnn.backends("cuda")}[name]
    if not status.available:
        pytest.skip(f"{name}: {status.reason}")
    a_memory, x_memory, view = LAYOUTS[layout]
    g = torch.Generator().manual_seed(seed_for("cuda-layouts", layout, name))
    x = view(torch.randn(x_memory, generator=g, dtype=torch.float64))
    a = view(0.9 + 0.1 * torch.rand(a_memory, generator=g, dtype=torch.float64))
    h0 = torch.randn(x.shape[1:], generator=g, dtype=torch.float64)
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    want_leaves = [t.contiguous().requires_grad_() for t in (a, x, h0)]
    want_h = reference.serial(want_leaves[0].expand(x.shape), *want_leaves[1:])
    want = (want_h.detach(), *torch.autograd.grad(want_h, want_leaves, upstream))
    leaves = [t.cuda().requires_grad_() for t in (a, x, h0)]  # .cuda() keeps the strides
    assert leaves[1].stride() == x.stride()
    h = plrnn.linear_recurrence(*leaves, backend=name)
    got = (h.detach(), *torch.autograd.grad(h, leaves, upstream.cuda()))
    for what, g_, w_ in zip(("h", "da", "dx", "dh0"), got, want, strict=True):
        assert g_.shape == w_.shape, what
        assert max_err(g_.cpu(), w_) <= F64_RTOL * max(1.0, scale_of(w_)), what


@pytest.mark.parametrize("case", HALF_SHARED_CASES, ids=lambda c: "a=" + "x".join(map(str, c[0])))
def test_float16_gradient_of_time_invariant_decays(case):
    """As on the CPU (test_broadcast.py): float16 decays shared over time and a batch whose
    gradient cancels in their own shape, read in place as (1, P) rows, P = 1 included."""
    spec, _, flip = case
    check_half_shared_decays("cuda_parallel", spec, flip, device="cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64], ids=str)
@pytest.mark.parametrize("T, C", [(65536, 4), (4096, 130)], ids=lambda v: str(v))
@pytest.mark.parametrize("name", ["cuda_parallel", "triton"])
def test_zero_state_through_overflowing_decays(name, T, C, dtype):
    """As on the CPU (test_edge_cases.py): a zero state is never multiplied by a product of
    decays that overflows, at every level of the kernels' maps."""
    status = {s.name: s for s in plrnn.backends("cuda")}[name]
    if not status.available or (dtype.is_complex and not status.complex):
        pytest.skip(f"{name} does not take {dtype} here")
    scan = autograd_fwd_bwd(lambda a, x, reverse: plrnn.linear_recurrence(
        a, x, reverse=reverse, backend=name), device="cuda")
    check_zero_state_through_overflow(scan, T, C, dtype, seed=seed_for("cuda-overflow", T, C))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.complex64], ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_packed_batch_of_short_sequences_in_one_launch(reverse, dtype):
    """3000 sequences of 0-200 steps with batch-shared decays: cuda_parallel's packed kernel in
    one launch (a thread per sequence and column), forward, final states and every gradient
    against cpu_serial (the CPU suite checks it against the loop)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    g = torch.Generator().manual_seed(seed_for("cuda_packed_short", reverse, dtype))
    lengths = torch.randint(0, 201, (3000,), generator=g).tolist()
    T, N = sum(lengths), len(lengths)
    cu = torch.tensor([0, *itertools.accumulate(lengths)])
    assert cuda.one_launch_for(cu.tolist())
    real = torch.float32 if dtype.is_complex else dtype
    a = torch.sigmoid(2 + torch.randn(T, 1, 24, generator=g, dtype=real))
    x = torch.randn(T, 3, 24, generator=g, dtype=real)
    h0 = torch.randn(N, 3, 24, generator=g, dtype=real)
    up = torch.randn(T, 3, 24, generator=g, dtype=real)
    if dtype.is_complex:
        a, x, h0, up = (torch.polar(t.abs(), t) if t is a else t.to(dtype) for t in (a, x, h0, up))
    ops = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    def grads(device, backend):
        leaves = [t.to(device).requires_grad_(True) for t in (a, x, h0)]
        h, final = plrnn.linear_recurrence(*leaves, cu_seqlens=cu.to(device), reverse=reverse,
                                           backend=backend, return_final_state=True)
        loss = (h * up.to(device)).sum().real + final.abs().sum()
        return [t.cpu() for t in (h.detach(), final.detach(), *torch.autograd.grad(loss, leaves))]

    with Record():
        got = grads("cuda", "cuda_parallel")
    assert ops.count("cuda_scan_packed") == 1 and "cuda_scan" not in ops, ops
    want = grads("cpu", "cpu_serial")
    tol = F64_RTOL if dtype == torch.float64 else 1e-4
    for name, g_, w_ in zip(("h", "final", "da", "dx", "dh0"), got, want, strict=True):
        assert g_.shape == w_.shape, name
        assert max_err(g_, w_) <= tol * max(1.0, scale_of(w_)), name


@pytest.mark.parametrize("name", CUDA_BACKENDS)
def test_double_backward_is_refused(name):
    a = torch.rand(6, 2, device="cuda", requires_grad=True)
    x = torch.randn(6, 2, device="cuda", requires_grad=True)
    h = plrnn.linear_recurrence(a, x, backend=name)
    (ga,) = torch.autograd.grad((h**2).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(ga.sum(), x)


# ------------------------------------------------------------------- long and wide inputs


T_LONG = 2**20 + 3


@pytest.fixture(scope="module", params=[False, True], ids=["fwd", "rev"])
def long_case(request):
    """4 channels, T = 2^20 + 3, decays near one; truth and float32 baseline from cpu_serial."""
    reverse = request.param
    inputs32 = make_inputs(
        T_LONG, (4,), "near_one", True, seed_for("cuda_long", reverse), torch.float32
    )
    inputs64 = cast(inputs32, torch.float64)
    truth = plrnn.linear_recurrence(*inputs64, reverse=reverse, backend="cpu_serial")
    baseline = plrnn.linear_recurrence(*inputs32, reverse=reverse, backend="cpu_serial")
    return reverse, inputs32, inputs64, truth, baseline


def test_long_forward(long_case):
    reverse, inputs32, inputs64, truth, baseline = long_case
    got = run_gpu("cuda_parallel", *inputs64, reverse)
    tol = F64_RTOL * max(1.0, scale_of(truth))
    assert max_err(got, truth) <= tol, f"float64: {max_err(got, truth):.3e} > {tol:.3e}"
    allowed = 2 * max_err(baseline, truth) + FLOOR_ULPS * torch.finfo(torch.float32).eps * scale_of(
        truth
    )
    for name in CUDA_BACKENDS:
        got = run_gpu(name, *inputs32, reverse)
        assert max_err(got, truth) <= allowed, f"{name}: {max_err(got, truth):.3e} > {allowed:.3e}"


def test_long_gradients(long_case):
    reverse, inputs32, inputs64, _, _ = long_case
    upstream = torch.randn(inputs64[1].shape, generator=torch.Generator().manual_seed(7))

    def cpu_grads(inputs, up):
        return grads_of(
            lambda a, x, h0: plrnn.linear_recurrence(
                a, x, h0, reverse=reverse, backend="cpu_serial"
            ),
            inputs,
            up,
        )[1]

    truth = cpu_grads(inputs64, upstream.double())
    baseline = cpu_grads(inputs32, upstream)
    _, got = _gpu_grads("cuda_parallel", inputs64, upstream.double(), reverse)
    for what, g, w in zip(GRAD_NAMES, got, truth, strict=True):
        tol = F64_RTOL * max(1.0, scale_of(w))
        assert max_err(g, w) <= tol, (
            f"cuda_parallel float64 d{what}: {max_err(g, w):.3e} > {tol:.3e}"
        )
    for name in CUDA_BACKENDS:
        _, got = _gpu_grads(name, inputs32, upstream, reverse)
        for what, g, b, w in zip(GRAD_NAMES, got, baseline, truth, strict=True):
            allowed = gradient_allowed(b, w, inputs64[1].shape[0])
            assert max_err(g, w) <= allowed, f"{name} d{what}: {max_err(g, w):.3e} > {allowed:.3e}"


@pytest.mark.parametrize(
    "T,C",
    [(2**17 + 5, 128), (301, 40001), (70000, 3), (5, 100003)],
    ids=["three_levels_of_maps", "many_channel_groups", "scalar_columns", "short_and_wide"],
)
def test_tilings(T, C):
    """Other corners of cuda_parallel's plan, float64 against cpu_serial, forward and backward:
    2^17 steps of 128 channels are ~4000 tiles along time (maps folded at three levels); 40001
    channels (odd: scalar columns) are ~1250 channel groups; 3 channels are 4 lanes of 512-step
    tiles; 5 steps of 100003 channels are one tile along time and no published maps."""
    a, x, h0 = make_inputs(T, (C,), "near_one", True, seed_for("cuda_tilings", T, C))
    upstream = torch.randn(T, C, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    for reverse in (False, True):
        want_out, want = grads_of(
            lambda a, x, h0: plrnn.linear_recurrence(
                a, x, h0, reverse=reverse, backend="cpu_serial"
            ),
            (a, x, h0),
            upstream,
        )
        got_out, got = _gpu_grads("cuda_parallel", (a, x, h0), upstream, reverse)
        for what, g, w in zip(("h", *GRAD_NAMES), (got_out, *got), (want_out, *want), strict=True):
            tol = F64_RTOL * max(1.0, scale_of(w))
            assert max_err(g, w) <= tol, (
                f"reverse={reverse} {what}: {max_err(g, w):.3e} > {tol:.3e}"
            )


def test_misaligned_buffers_take_the_scalar_path():
    """Contiguous views that start 4 bytes past a 16-byte boundary cannot be read 16 bytes at a
    time; the result must not change."""
    T, C = 3000, 64
    a, x, h0 = make_inputs(T, (C,), "uniform", True, seed_for("cuda_misaligned"), torch.float32)
    truth = ref64(a, x, h0)
    aligned = run_gpu("cuda_parallel", a, x, h0)
    store = torch.full((2, T * C + 1), NAN, device="cuda")
    a_off, x_off = store[0, 1:].view(T, C), store[1, 1:].view(T, C)
    a_off.copy_(a)
    x_off.copy_(x)
    assert a_off.data_ptr() % 16 != 0 and a_off.is_contiguous()
    poison()
    shifted = plrnn.linear_recurrence(a_off, x_off, h0.cuda(), backend="cuda_parallel").cpu()
    allowed = allowed_error(a, x, h0, False, truth)
    assert max_err(aligned, truth) <= allowed and max_err(shifted, truth) <= allowed


def test_cuda_parallel_is_deterministic():
    """Bitwise: every tile folds the same published maps in the same order, whatever the
    scheduling."""
    a, x, h0 = make_inputs(50000, (96,), "near_one", True, seed_for("cuda_det"), torch.float32)
    first = run_gpu("cuda_parallel", a, x, h0)
    for _ in range(3):
        assert torch.equal(run_gpu("cuda_parallel", a, x, h0), first)


@pytest.mark.parametrize("name", CUDA_BACKENDS)
def test_nan_propagates_like_reference(name):
    T, C = 4097, 33
    a, x, h0 = make_inputs(T, (C,), "uniform", True, seed_for("cuda_nan", name), torch.float32)
    a[T // 2, 1] = NAN
    x[7, 2] = NAN
    h0[5] = NAN
    for reverse in (False, True):
        want = ref64(a, x, h0, reverse)
        got = run_gpu(name, a, x, h0, reverse)
        assert torch.equal(torch.isnan(got), torch.isnan(want)), f"reverse={reverse}"


# ------------------------------------------------------------------ streams, graphs, compile


def test_runs_on_the_current_stream_and_under_graph_capture():
    """A CUDA graph captures only work issued on the capturing stream: launching anywhere else
    (or allocating with cudaMalloc) would fail the capture."""
    a, x, h0 = (
        t.cuda()
        for t in make_inputs(4097, (40,), "uniform", True, seed_for("graph"), torch.float32)
    )
    want = plrnn.linear_recurrence(a, x, h0, backend="cuda_parallel")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        on_side = plrnn.linear_recurrence(a, x, h0, backend="cuda_parallel")
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(on_side, want)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = plrnn.linear_recurrence(a, x, h0, backend="cuda_parallel")
    captured.fill_(NAN)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, want)


def test_torch_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    a, x, h0 = (
        t.cuda()
        for t in make_inputs(37, (5,), "uniform", True, seed_for("cuda_compile"), torch.float32)
    )
    upstream = torch.randn(37, 5, device="cuda")

    def f(a, x, h0):
        return plrnn.linear_recurrence(a, x, h0, backend="cuda_parallel")

    def fwd_bwd(fn):
        leaves = [t.clone().requires_grad_(True) for t in (a, x, h0)]
        h = fn(*leaves)
        return (h.detach(), *torch.autograd.grad(h, leaves, upstream))

    for got, want in zip(fwd_bwd(torch.compile(f, fullgraph=True)), fwd_bwd(f), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------- registry and errors


def test_backends_on_cuda_all_available():
    status = {s.name: s for s in plrnn.backends("cuda")}
    for name in CUDA_BACKENDS:
        assert status[name].available, status[name].reason
    for name in ("cpu_serial", "cpu_parallel"):
        assert not status[name].available


def test_auto_picks_cuda_parallel():
    assert choose_auto(torch.device("cuda"), 10, 3) == "cuda_parallel"
    assert choose_auto(torch.device("cuda"), 2**20, 4096) == "cuda_parallel"
    a, x, h0 = (
        t.cuda()
        for t in make_inputs(100, (3, 5), "uniform", True, seed_for("cuda_auto"), torch.float32)
    )
    assert torch.equal(
        plrnn.linear_recurrence(a, x, h0),
        plrnn.linear_recurrence(a, x, h0, backend="cuda_parallel"),
    )


@pytest.mark.parametrize("name", FP32_ONLY)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_paper_kernels_refuse_other_dtypes(name, dtype):
    a = torch.rand(8, 3, device="cuda", dtype=dtype)
    x = torch.randn(8, 3, device="cuda", dtype=dtype)
    with pytest.raises(TypeError, match=f"{name}.*float32-only.*cuda_parallel"):
        plrnn.linear_recurrence(a, x, backend=name)
    with pytest.raises(TypeError, match="float32-only"):  # the op itself checks too
        torch.ops.plrnn.cuda_scan(a, x, None, False, CUDA_BACKENDS.index(name))


def test_op_checks_its_arguments():
    a = torch.rand(8, 3, device="cuda")
    x = torch.randn(8, 3, device="cuda")
    op = torch.ops.plrnn.cuda_scan
    with pytest.raises(RuntimeError, match="kernel must be 0"):
        op(a, x, None, False, 7)
    with pytest.raises(RuntimeError, match="must be contiguous"):
        op(a.t().contiguous().t(), x, None, False, 2)
    with pytest.raises(RuntimeError, match=r"initial_state must have shape \(C,\)"):
        op(a, x, torch.zeros(4, device="cuda"), False, 2)
    with pytest.raises(RuntimeError, match="CPU"):  # no CPU kernel for this op
        op(a.cpu(), x.cpu(), None, False, 2)
    empty = op(a[:0], x[:0], None, False, 2)
    assert empty.shape == (0, 3)


# ---------------------------------------------------------------------------------- torch.func


@pytest.mark.parametrize("name", CUDA_BACKENDS)
def test_torch_func_transforms(name):
    """grad, vmap of grad and jvp run the CUDA kernels through transforms._Scan (test_transforms.py
    covers the rules on the CPU backends); float32 on the GPU against reference.serial in float64
    on the CPU, called directly (under a transform, backend="reference" takes _Scan too)."""
    B, T, C = 3, 37, 5
    a, x, h0 = make_inputs(T, (B, C), "near_one", True, seed_for("cuda func", name))

    def loss(run):
        return lambda a, x, h0: (run(a, x, h0) ** 2).sum()

    def ours(a, x, h0):
        return plrnn.linear_recurrence(a, x, h0, backend=name)

    def truth(a, x, h0):
        return reference.serial(a, x, h0, False)

    def close(got, want):
        tol = 1e-5 * max(1.0, want.abs().max().item())
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-4, atol=tol)

    gpu = on_gpu(cast((a, x, h0), torch.float32))
    got = torch.func.grad(loss(ours), argnums=(0, 1, 2))(*gpu)
    for g, w in zip(got, torch.func.grad(loss(truth), argnums=(0, 1, 2))(a, x, h0)):
        close(g, w)
    per_sample = torch.func.vmap(torch.func.grad(loss(ours), argnums=1), in_dims=(1, 1, 0))
    want = torch.stack([torch.func.grad(loss(truth), argnums=1)(a[:, b], x[:, b], h0[b])
                        for b in range(B)])
    close(per_sample(*gpu), want)
    tangents = make_inputs(T, (B, C), "uniform", True, seed_for("cuda func tangents"))
    _, got = torch.func.jvp(ours, gpu, on_gpu(cast(tangents, torch.float32)))
    close(got, torch.func.jvp(truth, (a, x, h0), tangents)[1])
