"""Shared pieces of the layer tests: the layer types with their loop oracles, seeded models with
parameters far from the small initialisation, and the comparison rules."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from plrnn.layers import GILR, GILRLSTM, QRNN, SRU

from . import loops

F64_RTOL = 1e-10  # float64 against float64: only summation orders differ


@dataclass(frozen=True)
class Kind:
    name: str
    cls: type
    kwargs: dict
    loop: object

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.name}({opts})" if opts else self.name


# One representative of each layer type, for tests that are not about the options.
GILR_K = Kind("GILR", GILR, {}, loops.gilr_loop)
LSTM_K = Kind("GILRLSTM", GILRLSTM, {}, loops.gilr_lstm_loop)
QRNN_K = Kind("QRNN", QRNN, {"window": 3}, loops.qrnn_loop)
SRU_K = Kind("SRU", SRU, {}, loops.sru_loop)
EVERY_TYPE = [GILR_K, LSTM_K, QRNN_K, SRU_K]

# Every option that changes the math.
ALL_VARIANTS = [
    GILR_K,
    Kind("GILR", GILR, {"activation": "elu"}, loops.gilr_loop),
    LSTM_K,
    Kind("GILRLSTM", GILRLSTM, {"surrogate": "same_step"}, loops.gilr_lstm_loop),
    Kind("GILRLSTM", GILRLSTM, {"surrogate_activation": "elu"}, loops.gilr_lstm_loop),
    *(Kind("QRNN", QRNN, {"window": k}, loops.qrnn_loop) for k in (1, 2, 3, 10)),
    *(Kind("QRNN", QRNN, {"window": k, "taps": "authors"}, loops.qrnn_loop) for k in (2, 3)),
    SRU_K,
]


def seed_for(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def make_model(
    kind: Kind, input_size, hidden_size, num_layers=1, seed=0, dtype=torch.float64, **kw
):
    """The layer with every parameter redrawn from N(0, 0.5^2): with the paper's
    U(-0.05, 0.05) the layer is nearly linear and a wrong gate would hide in the noise."""
    model = kind.cls(input_size, hidden_size, num_layers, **{**kind.kwargs, **kw}).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


def random_state(model, batch, seed, dtype=torch.float64):
    """A random initial state in the model's public structure."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)

    stacked = (model.num_layers, batch, model.hidden_size)
    if isinstance(model, GILRLSTM):
        return rnd(*stacked), rnd(*stacked)
    if isinstance(model, QRNN):
        windows = tuple(
            rnd(model.num_taps - 1, batch, model.layer_input_size(i))
            for i in range(model.num_layers)
        )
        return rnd(*stacked), windows
    return rnd(*stacked)


def flat(state) -> list[torch.Tensor]:
    """The tensors of a state in a fixed order (nested tuples flattened)."""
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for part in state for t in flat(part)]


def unflat(like, tensors):
    """Inverse of flat for a state shaped like `like`."""
    it = iter(tensors)

    def build(node):
        if isinstance(node, torch.Tensor):
            return next(it)
        return tuple(build(part) for part in node)

    return build(like)


def fwd_bwd(fn, model, x, state, seed):
    """Output, final state and the gradients of a random projection of both with respect to x,
    the initial state's tensors and every parameter (in named_parameters order)."""
    x = x.detach().clone().requires_grad_(True)
    state_leaves = None
    if state is not None:
        state_leaves = [t.detach().clone().requires_grad_(True) for t in flat(state)]
        state = unflat(state, state_leaves)
    out, final = fn(model, x, state)
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for t in flat(final):
        loss = loss + (t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
    names = ["x", *(f"state[{i}]" for i in range(len(state_leaves or [])))]
    names += [f"param {n}" for n, _ in model.named_parameters()]
    wrt = [x, *(state_leaves or []), *model.parameters()]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = [torch.zeros_like(w) if gr is None else gr for w, gr in zip(wrt, grads)]
    return out.detach(), [t.detach() for t in flat(final)], dict(zip(names, grads))


def run_layer(model, x, state):
    return model(x, state)


def mismatches(got, want, rtol=F64_RTOL, what="") -> list[str]:
    """Lines describing where got differs from want by more than rtol * max(1, |want|_max)."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return [
            f"{what}: got {got.dtype} {tuple(got.shape)}, want {want.dtype} {tuple(want.shape)}"
        ]
    if got.numel() == 0:
        return []
    tol = rtol * max(1.0, want.abs().max().item())
    err = (got - want).abs().max().item()
    return [] if err <= tol else [f"{what}: max error {err:.3e} > {tol:.3e}"]


def compare_runs(got, want, rtol=F64_RTOL) -> list[str]:
    """Compares two fwd_bwd results: output, final state, every gradient."""
    (out_g, fin_g, grad_g), (out_w, fin_w, grad_w) = got, want
    failures = mismatches(out_g, out_w, rtol, "output")
    if len(fin_g) != len(fin_w):
        failures.append(f"final state: {len(fin_g)} tensors, want {len(fin_w)}")
    for i, (a, b) in enumerate(zip(fin_g, fin_w)):
        failures += mismatches(a, b, rtol, f"final state[{i}]")
    for name in grad_w:
        failures += mismatches(grad_g[name], grad_w[name], rtol, f"d/d {name}")
    return failures
