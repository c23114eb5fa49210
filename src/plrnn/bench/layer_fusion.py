"""Does compile_gates pay? Forward+backward time of each layer type with the gate math eager
and fused by torch.compile (inductor), at the paper's Table 2 sizes.

    python -m plrnn.bench.layer_fusion [--shapes 4096x16 256x256] [--layers GILRLSTM QRNN2]

Two stacked layers, 256 hidden, input size 4, T x B = 65,536 by default. Each cell: the compiled
model is checked against the eager one first, then both are timed in interleaved rounds (a slow
spell on a shared machine hits both alike), each round the median of torch.utils.benchmark
blocks; the table shows the median over rounds. Time on a quiet machine only; on a busy one,
`--threads 1 --clock cpu` times the process's CPU seconds instead of wall seconds, which other
processes taking the core do not inflate (sharing memory bandwidth and caches still does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from ..layers import GILR, GILRLSTM, QRNN, SRU
from ..layers import gates as G
from .arguments import positive_float, positive_int
from .machine import machine_info
from .timing import check_not_all_zero, median_time, reuse_freed_pages

LAYERS = {
    "GILR": (GILR, {}),
    "GILRLSTM": (GILRLSTM, {}),
    "QRNN2": (QRNN, {"window": 2}),
    "QRNN10": (QRNN, {"window": 10}),
    "SRU": (SRU, {}),
}


def _step(model, x, upstream):
    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        out, _ = model(x)
        out.backward(upstream)

    return fwd_bwd


def _check(model, x, upstream) -> float:
    """Largest difference of output and parameter gradients, compiled against eager."""
    results = []
    for flag in (False, True):
        model.compile_gates = flag
        model.zero_grad(set_to_none=True)
        out, _ = model(x)
        out.backward(upstream)
        results.append([out.detach()] + [p.grad.clone() for p in model.parameters()])
    return max(
        ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in zip(*results)
    )


# The gate math alone: (function, blocks of H in its input, extra arguments). The output
# functions take one activated gate.
GATE_FUNCTIONS = {
    "gilr_gates": (G.gilr_gates, 2, ("tanh",)),
    "lstm_gates": (G.lstm_gates, 4, ()),
    "lstm_output": (G.lstm_output, 1, ("c",)),
    "fo_gates": (G.fo_gates, 3, ()),
    "fo_output": (G.fo_output, 1, ("c",)),
    "sru_gates": (G.sru_gates, 3, (False,)),
    "sru_output": (G.sru_output, 1, ("c", "x")),
}


def _timer(clock: str):
    if clock == "wall":
        return median_time

    def cpu_median(fn, min_run_time, *, inputs=()):
        check_not_all_zero(inputs)
        timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=1, timer=time.process_time)
        return timer.blocked_autorange(min_run_time=min_run_time).median

    return cpu_median


def run_gates(name: str, T: int, B: int, args) -> dict:
    """One gate function's forward+backward on [T, B, blocks*H] pre-activations, eager and
    compiled: the part of a layer's time that fusion can change."""
    fn, blocks, extra = GATE_FUNCTIONS[name]
    H = args.hidden_size
    pre = torch.randn(T, B, blocks * H, requires_grad=True)
    tensors = {"c": torch.randn(T, B, H, requires_grad=True), "x": torch.randn(T, B, H)}
    call_args = [pre] + [tensors.get(a, a) if isinstance(a, str) else a for a in extra]
    times: dict[bool, list[float]] = {False: [], True: []}
    for flag in (False, True):  # compile outside the timed region
        out = _as_tuple(G.fused(fn, flag)(*call_args))
        torch.autograd.backward(out, [torch.ones_like(o) for o in out])

    def step(flag):
        def fwd_bwd():
            out = _as_tuple(G.fused(fn, flag)(*call_args))
            torch.autograd.backward(out, [torch.ones_like(o) for o in out])

        return fwd_bwd

    for _ in range(args.rounds):
        for flag in (False, True):
            times[flag].append(_timer(args.clock)(step(flag), args.min_run_time, inputs=[pre]))
    eager, fused = (statistics.median(times[f]) for f in (False, True))
    return {"function": name, "T": T, "B": B, "eager_ms": 1e3 * eager, "compiled_ms": 1e3 * fused}


def _as_tuple(out):
    """The tensors a gate function returned (sru_gates returns None for an absent p)."""
    return tuple(o for o in out if o is not None) if isinstance(out, tuple) else (out,)


def run(layer: str, T: int, B: int, args) -> dict:
    cls, kwargs = LAYERS[layer]
    torch.manual_seed(0)
    model = cls(args.input_size, args.hidden_size, args.num_layers, backend=args.backend, **kwargs)
    x = torch.randn(T, B, args.input_size)
    upstream = torch.randn(T, B, args.hidden_size)
    rel_err = _check(model, x, upstream)  # also compiles, outside the timed region
    step = _step(model, x, upstream)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for flag in (False, True):
            model.compile_gates = flag
            times[flag].append(_timer(args.clock)(step, args.min_run_time, inputs=[x, upstream]))
    eager, fused = (statistics.median(times[f]) for f in (False, True))
    return {
        "layer": layer,
        "T": T,
        "B": B,
        "eager_ms": 1e3 * eager,
        "compiled_ms": 1e3 * fused,
        "speedup": eager / fused,
        "rounds_eager_ms": [round(1e3 * t, 2) for t in times[False]],
        "rounds_compiled_ms": [round(1e3 * t, 2) for t in times[True]],
        "max_rel_diff": rel_err,
    }


def _load() -> str | None:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def _shape(text: str) -> tuple[int, int]:
    """'4096x16' -> (4096, 16): T and B, positive integers."""
    try:
        T, B = (positive_int(n) for n in text.split("x"))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected TxB with positive integers T and B (e.g. 4096x16), got {text!r}"
        ) from None
    return T, B


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="*", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument(
        "--shapes", nargs="+", type=_shape, default=[(4096, 16), (256, 256)], help="TxB"
    )
    parser.add_argument("--gates", action="store_true", help="time the gate functions alone")
    parser.add_argument("--input-size", type=positive_int, default=4)
    parser.add_argument("--hidden-size", type=positive_int, default=256)
    parser.add_argument("--num-layers", type=positive_int, default=2)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--min-run-time", type=positive_float, default=2.0)
    parser.add_argument("--threads", type=positive_int, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--json", type=Path, help="also write the records here")
    args = parser.parse_args(argv)
    if not args.layers and not args.gates:
        parser.error(f"--layers needs at least one of: {', '.join(LAYERS)} (or add --gates)")
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (CPU seconds of all threads are summed)")
    if args.json:
        try:  # before measuring, so that a bad path does not lose the measurements
            args.json.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            parser.error(f"--json: cannot create the directory {args.json.parent}: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = reuse_freed_pages()
    info = {
        **machine_info(),
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "allocator": allocator,
        "load_average": _load(),
    }
    print(json.dumps(info))
    records = []
    if args.gates:
        print("| gate function | T | B | eager ms | compiled ms | speedup |")
        print("|---|---|---|---|---|---|")
        for name in GATE_FUNCTIONS:
            for T, B in args.shapes:
                rec = run_gates(name, T, B, args)
                records.append(rec)
                print(
                    f"| {name} | {T} | {B} | {rec['eager_ms']:.1f} | {rec['compiled_ms']:.1f} "
                    f"| {rec['eager_ms'] / rec['compiled_ms']:.2f}x |",
                    flush=True,
                )
    if args.layers:
        print("| layer | T | B | eager ms | compiled ms | speedup | max rel diff |")
        print("|---|---|---|---|---|---|---|")
    for layer in args.layers:
        for T, B in args.shapes:
            rec = run(layer, T, B, args)
            records.append(rec)
            print(
                f"| {layer} | {T} | {B} | {rec['eager_ms']:.1f} | {rec['compiled_ms']:.1f} "
                f"| {rec['speedup']:.2f}x | {rec['max_rel_diff']:.1e} |",
                flush=True,
            )
    print(f"load average before/after: {info['load_average']} / {_load()}")
    if args.json:
        shapes = [f"{T}x{B}" for T, B in args.shapes]  # as given, not as parsed
        config = {**vars(args), "shapes": shapes, "json": str(args.json)}
        with open(args.json, "w") as f:
            json.dump({"machine": info, "config": config, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
