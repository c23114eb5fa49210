"""benchmarks/_support.py: the cases both suites time compute what they claim, skip cleanly,
and refuse to time a wrong result. Ground truth: float64 loops written here."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import torch

from plrnn.bench import grid

from .support import (
    ROOT,
    benchmarks_module,
    off_in_the_last_channel,
    off_in_the_last_channels_gradient,
    swap_op,
)

S = benchmarks_module("_support")
TINY = grid.GRIDS["tiny"]


def loop64(a, x):
    a, x = a.detach().double(), x.detach().double()
    h, prev = torch.empty_like(x), torch.zeros_like(x[0])
    for t in range(a.shape[0]):
        prev = a[t] * prev + x[t]
        h[t] = prev
    return h


def grads64(a, x, g):
    """Paper section 3.3: G[t] = a[t+1] G[t+1] + g[t]; dx = G; da[t] = h[t-1] G[t]."""
    a, g = a.detach().double(), g.detach().double()
    h = loop64(a, x)
    G = torch.empty_like(g)
    carry = torch.zeros_like(g[0])
    for t in reversed(range(a.shape[0])):
        carry = g[t] + (a[t + 1] * carry if t + 1 < a.shape[0] else 0)
        G[t] = carry
    h_prev = torch.cat([torch.zeros_like(h[:1]), h[:-1]])
    return h_prev * G, G


@pytest.mark.parametrize("backend", ["reference", "torch", "cpu_serial", "cpu_parallel", "auto",
                                     "associative_scan"])
def test_kernel_case_forward_computes_the_recurrence(backend):
    case = S.kernel_case(64, 2, 3, backend, grid.FORWARD, kernel_grid=TINY.kernels, device="cpu")
    a, x = case.inputs
    assert a.shape == (64, 2, 3) and bool(x.any())
    torch.testing.assert_close(case.run().double(), loop64(a, x), rtol=1e-5, atol=1e-5)
    assert case.info == {"suite": "kernels", "op": "linear_recurrence", "backend": backend,
                         "pass": grid.FORWARD, "seq_len": 64, "batch": 2, "hidden": 3,
                         "device": "cpu"}


@pytest.mark.parametrize("backend", ["cpu_serial", "associative_scan"])
def test_kernel_case_forward_backward_returns_the_gradients(backend):
    case = S.kernel_case(64, 2, 3, backend, grid.FORWARD_BACKWARD, kernel_grid=TINY.kernels,
                         device="cpu")
    a, x, g = case.inputs
    da, dx = case.run()
    want_da, want_dx = grads64(a, x, g)
    torch.testing.assert_close(dx.double(), want_dx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(da.double(), want_da, rtol=1e-5, atol=1e-5)


def test_same_size_gets_the_same_inputs_for_every_backend():
    one = S.kernel_case(64, 2, 3, "torch", grid.FORWARD, kernel_grid=TINY.kernels, device="cpu")
    two = S.kernel_case(64, 2, 3, "cpu_serial", grid.FORWARD, kernel_grid=TINY.kernels,
                        device="cpu")
    for p, q in zip(one.inputs, two.inputs):
        assert torch.equal(p, q)


def test_check_recurrence_refuses_a_wrong_result():
    gen = torch.Generator().manual_seed(0)
    a, x = torch.rand(50, 4, generator=gen), torch.randn(50, 4, generator=gen)
    good = loop64(a, x).float()
    S.check_recurrence(good, a, x, "good")
    bad = good.clone()
    bad[37, 2] += 1e-2
    with pytest.raises(AssertionError, match="bad: output differs"):
        S.check_recurrence(bad, a, x, "bad")


@pytest.mark.parametrize("wrong", ["decays", "impulses"])
def test_kernel_case_refuses_a_wrong_backward(monkeypatch, wrong):
    # The forward is right, the gradient of one input is off by half: forward+backward cases
    # must not time it.
    import plrnn

    real = plrnn.linear_recurrence

    def op(a, x, **kwargs):
        t = a if wrong == "decays" else x
        return real(a, x, **kwargs) + 0.5 * (t - t.detach())

    monkeypatch.setattr(plrnn, "linear_recurrence", op)
    S.kernel_case(64, 2, 3, "cpu_serial", grid.FORWARD, kernel_grid=TINY.kernels, device="cpu")
    with pytest.raises(AssertionError, match=f"gradient of the {wrong} differs"):
        S.kernel_case(64, 2, 3, "cpu_serial", grid.FORWARD_BACKWARD, kernel_grid=TINY.kernels,
                      device="cpu")


def test_grid_skips_raise_not_implemented():
    kg = grid.KernelGrid(seq_len=(8,), batch=(1,), hidden=(1,), backends=("reference",),
                         max_seq_len={"reference": 4})
    with pytest.raises(NotImplementedError, match="capped"):
        S.kernel_case(8, 1, 1, "reference", grid.FORWARD, kernel_grid=kg, device="cpu")
    with pytest.raises(NotImplementedError, match="does not exist"):
        S.kernel_case(8, 1, 1, "no_such_backend", grid.FORWARD, kernel_grid=TINY.kernels,
                      device="cpu")
    with pytest.raises(NotImplementedError, match="CUDA only"):
        S.kernel_case(64, 1, 1, "accelerated_scan.warp", grid.FORWARD,
                      kernel_grid=TINY.kernels, device="cpu")
    lg = grid.LayerGrid(seq_len=(16,), batch=(4,), max_tokens=8)
    with pytest.raises(NotImplementedError, match="tokens"):
        S.layer_case("GILR", "serial", 16, 4, grid.FORWARD, layer_grid=lg, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_cuda_cases_skip_without_a_gpu():
    with pytest.raises(NotImplementedError, match="no CUDA device"):
        S.kernel_case(64, 2, 3, "torch", grid.FORWARD, kernel_grid=TINY.kernels, device="cuda")
    with pytest.raises(NotImplementedError, match="no CUDA device"):
        S.copy_case(16, device="cuda")


def test_grid_skip_costs_no_torch_import():
    code = ("import sys; from benchmarks import _support as s; from plrnn.bench import grid\n"
            "kg = grid.KernelGrid(seq_len=(8,), batch=(1,), hidden=(1,), backends=('torch',), "
            "max_elements=1)\n"
            "try:\n    s.kernel_case(8, 1, 1, 'torch', 'forward', kernel_grid=kg)\n"
            "except NotImplementedError:\n    pass\n"
            "else:\n    raise SystemExit('not skipped')\n"
            "assert 'torch' not in sys.modules, 'torch imported for a skipped case'\n"
            "s.sync_timer()\nassert 'torch' not in sys.modules")
    # plrnn.bench.grid is imported through the package here, which imports plrnn (and torch):
    # load the grid by path instead.
    code = code.replace("from plrnn.bench import grid", "grid = s.grid")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT)


def test_copy_case_copies():
    case = S.copy_case(1000, device="cpu")
    (src,) = case.inputs
    dst = case.run()
    assert torch.equal(dst, src) and dst.data_ptr() != src.data_ptr()


def test_layer_cases_serial_and_parallel_agree():
    outs = {}
    for recurrence in ("serial", "parallel"):
        case = S.layer_case("GILR-LSTM", recurrence, 16, 2, grid.FORWARD, layer_grid=TINY.layers,
                            device="cpu")
        assert case.info["backend"] == grid.RECURRENCE_BACKEND["cpu"][recurrence]
        outs[recurrence] = case.run()
    assert outs["serial"].shape == (16, 2, TINY.layers.hidden)
    torch.testing.assert_close(outs["serial"], outs["parallel"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", grid.LAYERS)
def test_layer_case_forward_backward_gives_every_parameter_a_gradient(layer):
    case = S.layer_case(layer, "parallel", 16, 2, grid.FORWARD_BACKWARD, layer_grid=TINY.layers,
                        device="cpu")
    grads = case.run()
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.any()) for g in grads)


def test_lstm_case_is_torch_lstm_at_the_layer_size():
    case = S.lstm_case(16, 2, grid.FORWARD, layer_grid=TINY.layers, device="cpu")
    assert case.run().shape == (16, 2, TINY.layers.hidden)
    assert case.info["layer"] == grid.CUDNN_BASELINE


def test_train_case_takes_optimiser_steps():
    case = S.train_case("GILR-LSTM", 16, 2, train_grid=TINY.train, device="cpu")
    first, second = case.run(), case.run()
    assert bool(torch.isfinite(first.loss)) and bool(torch.isfinite(second.loss))
    assert first.loss.item() != second.loss.item()  # same batch, updated weights
    with pytest.raises(ValueError, match="model must be one of"):
        S.train_case("Transformer", 16, 2, train_grid=TINY.train, device="cpu")


def test_cuda_only_params_on_a_cpu_grid_start_one_process():
    params = [[1, 2], ["a", "b"], [True]]
    if S.GRID.device == "cpu":
        assert S.cuda_only_params(params) == [[1], ["a"], [True]]
    else:
        assert S.cuda_only_params(params) == params


@pytest.mark.parametrize("module", ["kernels", "layers", "train", "op_inputs"])
def test_asv_classes_are_consistent(module):
    mod = benchmarks_module(module)
    classes = [c for name, c in vars(mod).items()
               if inspect.isclass(c) and not name.startswith("_") and hasattr(c, "params")]
    assert classes
    for cls in classes:
        assert len(cls.params) == len(cls.param_names), cls
        arity = len(inspect.signature(cls.setup).parameters) - 1
        assert arity == len(cls.param_names), cls
        methods = [m for m in dir(cls) if m.startswith(("time_", "peakmem_", "track_"))]
        assert methods, cls
        for m in methods:
            if m.startswith("track_"):
                assert getattr(cls, m).unit in ("seconds", "bytes")


def test_older_commits_without_layers_or_tasks_skip(monkeypatch):
    # An asv history installs commits that predate plrnn.layers / plrnn.tasks.
    monkeypatch.setitem(sys.modules, "plrnn.layers", None)
    monkeypatch.setitem(sys.modules, "plrnn.tasks", None)
    with pytest.raises(NotImplementedError, match=r"plrnn\.layers is not in this version"):
        S.layer_case("SRU", "serial", 16, 2, grid.FORWARD, layer_grid=TINY.layers, device="cpu")
    with pytest.raises(NotImplementedError, match=r"plrnn\.tasks is not in this version"):
        S.train_case("LSTM", 16, 2, train_grid=TINY.train, device="cpu")


@pytest.mark.parametrize("module", ["kernels", "layers", "train", "op_inputs"])
def test_every_asv_method_reaches_the_report(module):
    # bench.report keeps the asv methods it knows; one it does not know is dropped silently.
    from plrnn.bench.report_sources import _ASV_METRICS

    mod = benchmarks_module(module)
    for cls in (c for c in vars(mod).values() if inspect.isclass(c) and hasattr(c, "params")):
        for m in dir(cls):
            if m.startswith(("time_", "peakmem_", "track_")):
                assert m in _ASV_METRICS, f"{cls.__name__}.{m}"


def test_setup_builds_its_case_once_and_sizes_the_samples(monkeypatch):
    # asv_runner 0.3.2 runs setup before every timed call (asv#966): rebuilding the case there
    # timed one cold call after the build instead of a user's warm loop.
    kernels = benchmarks_module("kernels")
    monkeypatch.setattr(S, "_built", {})
    builds = []

    def copy_case(numel):
        builds.append(numel)
        return S.copy_case(numel, device="cpu")

    monkeypatch.setattr(kernels, "copy_case", copy_case)
    bench = kernels.Copy()
    bench.setup(4096)
    first = bench.case
    for _ in range(3):
        bench.setup(4096)
    assert builds == [4096] and bench.case is first
    assert bench.number >= 10  # microseconds a call: many calls in a 50 ms sample
    bench.setup(8192)
    assert builds == [4096, 8192] and bench.case is not first


def test_untimed_benchmarks_take_one_call(monkeypatch):
    kernels = benchmarks_module("kernels")
    monkeypatch.setattr(S, "_built", {})
    bench = kernels.LinearRecurrenceMemory()
    monkeypatch.setattr(kernels, "kernel_case", lambda *a, **k: S.copy_case(64, device="cpu"))
    bench.setup(16, 1, 4, "cpu_serial", grid.FORWARD)
    assert bench.number == 1


# ------------------------------------------------------------------ checks read the whole row
KERNEL = dict(kernel_grid=TINY.kernels, device="cpu")


@pytest.mark.parametrize("args", [(64, 2, 40, "cpu_serial", grid.FORWARD),
                                  (64, 3, 40, "cpu_parallel", grid.FORWARD)])
def test_kernel_checks_refuse_a_kernel_wrong_only_in_the_last_channel(monkeypatch, args):
    S.kernel_case(*args, **KERNEL)  # the real op passes
    swap_op(monkeypatch, off_in_the_last_channel)
    with pytest.raises(AssertionError, match="differs from the float64"):
        S.kernel_case(*args, **KERNEL)


def test_kernel_checks_refuse_a_gradient_wrong_only_in_the_last_channel(monkeypatch):
    args = (64, 2, 40, "cpu_serial", grid.FORWARD_BACKWARD)
    S.kernel_case(*args, **KERNEL)
    swap_op(monkeypatch, off_in_the_last_channels_gradient)
    with pytest.raises(AssertionError, match="gradient of the impulses differs"):
        S.kernel_case(*args, **KERNEL)


def test_check_cols_reads_evenly_spaced_channels_up_to_the_last():
    t = torch.arange(3 * 2 * 300, dtype=torch.float32).reshape(3, 2, 300)
    cols = S.check_cols(t)
    picked = cols[0].astype(int)
    assert cols.dtype == "float64" and cols.shape == (3, 64)
    assert picked[0] == 0 and picked[-1] == 599  # the first and the last channel of the row
    assert set(picked // 300) == {0, 1}  # both sequences
    assert (cols[2] - cols[0] == 2 * 600).all()  # every step of the same channels
    narrow = torch.randn(5, 7, dtype=torch.complex64)
    assert S.check_cols(narrow).shape == (5, 7) and S.check_cols(narrow).dtype == "complex128"


def test_decay_distribution_labels_are_the_shapes_of_the_grid():
    # Under the tiny grid the arrays are 16x shorter; their labels must say so.
    code = ("from benchmarks import _op_inputs as o\n"
            "assert o.GRID.name == 'tiny', o.GRID.name\n"
            "for label, (T, C) in o.DISTRIBUTION_SHAPES.items():\n"
            "    assert label == f'{T}x{C}', (label, T, C)\n"
            "print(sorted(o.DISTRIBUTION_SHAPES))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), grid.ENV_VAR: "tiny"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT,
                         capture_output=True, text=True).stdout
    assert out.strip() == "['16384x4', '4096x128']"


# ---------------------------------------------------------------------------------- layers
def _wrong_parallel_recurrence(monkeypatch, wrong):
    from plrnn.layers import base

    real = base.linear_recurrence

    def op(a, x, *args, backend=None, **kwargs):
        h = real(a, x, *args, backend=backend, **kwargs)
        return wrong(h, x) if backend == grid.RECURRENCE_BACKEND["cpu"]["parallel"] else h

    monkeypatch.setattr(base, "linear_recurrence", op)


@pytest.mark.parametrize("layer", ["GILR", "QRNN(2)"])
def test_layer_case_refuses_a_wrong_output(monkeypatch, layer):
    _wrong_parallel_recurrence(monkeypatch, lambda h, x: h * 1.1)
    for pass_ in grid.PASSES:
        S.layer_case(layer, "serial", 16, 2, pass_, layer_grid=TINY.layers, device="cpu")
        with pytest.raises(AssertionError, match="output differs from the float64 model"):
            S.layer_case(layer, "parallel", 16, 2, pass_, layer_grid=TINY.layers, device="cpu")


def test_layer_case_refuses_a_wrong_gradient(monkeypatch):
    # The forward is right, the gradient through the parallel recurrence's impulses is off by
    # half: forward+backward must not time it.
    _wrong_parallel_recurrence(monkeypatch, lambda h, x: h + 0.5 * (x - x.detach()))
    S.layer_case("SRU", "parallel", 16, 2, grid.FORWARD, layer_grid=TINY.layers, device="cpu")
    with pytest.raises(AssertionError, match="gradient of .* differs from the float64 model"):
        S.layer_case("SRU", "parallel", 16, 2, grid.FORWARD_BACKWARD, layer_grid=TINY.layers,
                     device="cpu")


def test_layer_case_refuses_non_finite_gradients(monkeypatch):
    _wrong_parallel_recurrence(monkeypatch, lambda h, x: h + (x - x.detach()) * float("nan"))
    with pytest.raises(AssertionError, match="is not finite"):
        S.layer_case("GILR", "parallel", 16, 2, grid.FORWARD_BACKWARD, layer_grid=TINY.layers,
                     device="cpu")


def test_lstm_case_is_checked_against_float64(monkeypatch):
    real = torch.nn.LSTM.forward

    def forward(self, x, *args):
        out, state = real(self, x, *args)
        return (out * 1.1 if x.dtype == torch.float32 else out), state

    S.lstm_case(16, 2, grid.FORWARD_BACKWARD, layer_grid=TINY.layers, device="cpu")
    monkeypatch.setattr(torch.nn.LSTM, "forward", forward)
    with pytest.raises(AssertionError, match="output differs"):
        S.lstm_case(16, 2, grid.FORWARD, layer_grid=TINY.layers, device="cpu")


# ------------------------------------------------------------------------------- allocator
def test_allocator_is_the_default_unless_asked():
    assert S.selected_allocator({}) == "default"
    assert S.selected_allocator({S.ALLOCATOR_ENV: " steady "}) == "steady"
    with pytest.raises(ValueError, match="choose one of"):
        S.selected_allocator({S.ALLOCATOR_ENV: "tuned"})


def test_only_the_steady_allocator_changes_malloc(monkeypatch):
    timing = S._checkout_module("timing")
    calls = []
    monkeypatch.setattr(timing, "reuse_freed_pages", lambda: calls.append(1) or "glibc mallopt")
    monkeypatch.setattr(S, "_steady_detail", None)
    monkeypatch.setattr(S, "ALLOCATOR", "default")
    S.copy_case(16, device="cpu")
    assert calls == []
    monkeypatch.setattr(S, "ALLOCATOR", "steady")
    S.copy_case(16, device="cpu")
    S.copy_case(16, device="cpu")
    assert calls == [1]  # once per process
    monkeypatch.setattr(S, "_steady_detail", "default (not glibc)")
    with pytest.raises(NotImplementedError, match="freed pages cannot be reused"):
        S.copy_case(16, device="cpu")


@pytest.mark.parametrize("allocator", ["default", "steady"])
def test_asv_versions_record_the_allocator(allocator):
    # asv keeps one history per version: switching the allocator must start another series,
    # and each result must say which allocator it ran with.
    code = ("import inspect\n"
            "from benchmarks import kernels, layers, op_inputs, train\n"
            "for mod in (kernels, layers, op_inputs, train):\n"
            "    for c in vars(mod).values():\n"
            "        if inspect.isclass(c) and hasattr(c, 'params'):\n"
            "            print(c.__name__, c.version)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), S.ALLOCATOR_ENV: allocator}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT,
                         capture_output=True, text=True).stdout.splitlines()
    versions = dict(line.split(" ", 1) for line in out)
    assert len(versions) >= 15
    assert all(v.startswith(f"allocator={allocator} code=") for v in versions.values())
    assert len(set(versions.values())) == len(versions)  # each class's own code
