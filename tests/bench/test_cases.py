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

from .support import ROOT, benchmarks_module

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
