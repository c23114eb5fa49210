"""compile_gates: the gate math under torch.compile gives the eager layer's outputs and
gradients.

Every layer type is traced with the "aot_eager" backend (dynamo + AOTAutograd's forward and
backward graphs: what our gate functions must survive, seconds in all). The fusing inductor
backend is run on one model only and marked slow: generating and compiling its C++ kernels
takes about 30-100 s on a cold cache on a 2-core machine.
"""

from __future__ import annotations

import pytest
import torch

from .common import ALL_VARIANTS, LSTM_K, compare_runs, fwd_bwd, make_model, random_state, seed_for

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # torch.jit, inside inductor
]

# Every gate function once; GILR(elu) and GILR-LSTM (tanh) call gilr_gates both ways.
KINDS = [
    k for k in ALL_VARIANTS if k.id in {"GILR(activation=elu)", "GILRLSTM", "QRNN(window=3)", "SRU"}
]


def _compare(kind, compile_gates, input_size=3, dtype=torch.float64):
    seed = seed_for("compile", kind.id, input_size)
    model = make_model(kind, input_size, 4, 2, seed, dtype=dtype)
    x = torch.randn(11, 2, input_size, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    state = random_state(model, 2, seed + 1, dtype=dtype)
    want = fwd_bwd(lambda m, x, s: m(x, s), model, x, state, seed + 2)
    model.compile_gates = compile_gates
    got = fwd_bwd(lambda m, x, s: m(x, s), model, x, state, seed + 2)
    return compare_runs(got, want, rtol=1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.id)
def test_traced_gates_match_eager(kind):
    failures = _compare(kind, "aot_eager")
    if kind.name == "SRU":  # the other block layout: a projected highway
        failures += _compare(kind, "aot_eager", input_size=4)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_inductor_fused_gates_match_eager():
    failures = _compare(LSTM_K, True, dtype=torch.float32)
    assert not failures, "\n".join(failures)
