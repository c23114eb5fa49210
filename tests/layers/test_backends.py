"""The paper's one-line switch: every backend gives the same layer, outputs and gradients.

float64: each backend within F64_RTOL of the "reference" backend (the serial Python loop).
float32: each backend's error against the float64 model is at most twice the error of the
"reference" backend's float32 run (the same math in float32), plus a few ulps of the scale.
"""

from __future__ import annotations

import pytest
import torch

import plrnn
from plrnn.layers import GILR, QRNN, set_backend

from .common import (
    EVERY_TYPE,
    LSTM_K,
    compare_runs,
    fwd_bwd,
    make_model,
    random_state,
    run_layer,
    seed_for,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # see tests/conftest.py

# The backends that run on CPU tensors here (the CUDA ones, and triton outside its interpreter,
# are tested in their own files).
BACKENDS = [s.name for s in plrnn.backends("cpu") if s.available and s.name != "reference"]
BACKENDS.append("auto")
FLOOR_ULPS = 8


def _case(kind, T, seed, dtype=torch.float64):
    model = make_model(kind, 3, 6, 2, seed, dtype=dtype)
    x = torch.randn(T, 3, 3, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return model, x.to(dtype), random_state(model, 3, seed + 2, dtype=dtype)


@pytest.mark.parametrize("T", [1, 37, 1500], ids=lambda T: f"T={T}")
@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_backends_agree_float64(kind, T):
    seed = seed_for("backends64", kind.id, T)
    model, x, state = _case(kind, T, seed)
    model.backend = "reference"
    want = fwd_bwd(run_layer, model, x, state, seed + 3)
    failures = []
    for name in BACKENDS:
        model.backend = name
        failures += [
            f"{name}: {line}"
            for line in compare_runs(fwd_bwd(run_layer, model, x, state, seed + 3), want)
        ]
    assert not failures, "\n".join(failures)


def _max_errors(got, truth) -> dict[str, float]:
    (out, fin, grads), (out64, fin64, grads64) = got, truth
    errs = {"output": (out.double() - out64).abs().max().item()}
    for i, (a, b) in enumerate(zip(fin, fin64)):
        errs[f"final state[{i}]"] = (a.double() - b).abs().max().item()
    for name, g in grads.items():
        errs[f"d/d {name}"] = (g.double() - grads64[name]).abs().max().item()
    return errs


def _scales(truth) -> dict[str, float]:
    out, fin, grads = truth
    scales = {"output": out.abs().max().item()}
    scales.update({f"final state[{i}]": t.abs().max().item() for i, t in enumerate(fin)})
    scales.update({f"d/d {n}": g.abs().max().item() for n, g in grads.items()})
    return scales


@pytest.mark.parametrize("kind", EVERY_TYPE, ids=lambda k: k.id)
def test_backends_agree_float32_up_to_rounding(kind):
    T = 1500
    seed = seed_for("backends32", kind.id)
    model, x, state = _case(kind, T, seed, dtype=torch.float32)
    model64, x64 = make_model(kind, 3, 6, 2, seed), x.double()
    state64 = random_state(model64, 3, seed + 2)
    truth = fwd_bwd(run_layer, model64, x64, state64, seed + 3)
    model.backend = "reference"
    allowed = _max_errors(fwd_bwd(run_layer, model, x, state, seed + 3), truth)
    scales = _scales(truth)
    eps = torch.finfo(torch.float32).eps
    failures = []
    for name in BACKENDS:
        model.backend = name
        got = fwd_bwd(run_layer, model, x, state, seed + 3)
        assert got[0].dtype == torch.float32
        for what, err in _max_errors(got, truth).items():
            limit = 2 * allowed[what] + FLOOR_ULPS * eps * max(scales[what], 1.0)
            if not err <= limit:
                failures.append(f"{name} {what}: error {err:.3e} > allowed {limit:.3e}")
    assert not failures, "\n".join(failures)


def test_backend_is_passed_to_every_recurrence(monkeypatch):
    """Both recurrences of a GILR-LSTM layer, in every layer, use the model's backend."""
    import plrnn.layers.base as module

    seen = []
    real = module.linear_recurrence

    def spy(*args, backend, **kwargs):
        seen.append(backend)
        return real(*args, backend=backend, **kwargs)

    monkeypatch.setattr(module, "linear_recurrence", spy)
    model = make_model(LSTM_K, 3, 4, 2, 0)
    model.backend = "cpu_parallel"
    model(torch.randn(5, 2, 3, dtype=torch.float64))
    assert seen == ["cpu_parallel"] * 4


def test_set_backend_walks_submodules():
    inner = [GILR(3, 4), QRNN(4, 4, window=2)]
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 3), torch.nn.ModuleDict({"a": inner[0], "b": inner[1]})
    )
    assert all(m.backend == "auto" for m in inner)
    assert set_backend(model, "cpu_serial") is model
    assert [m.backend for m in inner] == ["cpu_serial", "cpu_serial"]
    set_backend(model, "torch")
    assert [m.backend for m in inner] == ["torch", "torch"]


def test_backend_is_checked_when_set():
    model = GILR(3, 4, backend="reference")
    assert model.backend == "reference"
    with pytest.raises(ValueError, match=r"^unknown backend 'serial'; choose one of 'auto', "):
        model.backend = "serial"
    with pytest.raises(TypeError, match=r"^backend must be a string, got int$"):
        GILR(3, 4, backend=1)
    with pytest.raises(ValueError, match=r"^unknown backend 'fast'"):
        set_backend(model, "fast")
    assert model.backend == "reference"
