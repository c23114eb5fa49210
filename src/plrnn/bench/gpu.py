"""GPU benchmark of the recurrence: every CUDA-capable backend and accelerated-scan, in one run.

    python -m plrnn.bench.gpu --out DIR             # the run scripts/gpu_check.sh makes (~2 min)
    python -m plrnn.bench.gpu --dry-run             # print the plan; needs no GPU

Sections, in this order (each case validated against the float64 truth before it is timed: the
output, and with forward+backward dL/da and dL/dx, on 64 channels spread from the first to the
last):
1. copy:     dst.copy_(src) on 1 GiB of fp32, the bandwidth yardstick of this run.
2. headline: T = 65536 steps x batch 8 x 1536 features, fp32 and bf16, forward and
             forward+backward, every backend (cuda_serial and cuda_paper are fp32 only).
3. accelerated_scan: accelerated_scan.warp.scan and .scalar.scan (if installed) in their (B, C, T)
             layout at (8, 1536, 65536), and with B*C <= 128 at T = 65536 (warp: T <= 65536)
             and 2^20 (scalar), next to cuda_parallel at the same sizes in its (T, B, C) layout.
4. table1:   the paper's Table 1 grid (batch 1, m in {4, 32, 128}, T in {16 ... 65536}), fp32,
             forward and forward+backward, every backend and auto.

Timing: CUDA events around `reps` back-to-back calls after a warm-up, `rounds` times; the
median per call is reported (calls whose host overhead exceeds the kernel time measure the
host). Bytes moved per element: 3 tensors forward, 8 forward+backward (bench/bandwidth.py), at
the storage dtype's size; GB/s and the fraction of the copy bandwidth measured here.

Writes DIR/gpu_bench.csv (every case), gpu_bench.md (the tables under a header naming the GPU,
driver, torch and commit) and gpu_bench.json (machine_info and config), and prints the tables.
The Markdown and JSON are written however the run ends (a spent budget, SIGINT), with the cases
finished so far. A CUDA error that leaves the context unusable (sticky: every later CUDA call
fails) ends the run at the case that raised it, with status 1. Without a GPU (and without
--dry-run) it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .bandwidth import BYTES_PER_ELEMENT, COPY_BYTES_PER_ELEMENT
from .machine import machine_info
from .recurrence.inputs import CHECK_CHANNELS, checked_channels

FWD, FWD_BWD = "forward", "forward+backward"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PLRNN_BACKENDS = ("torch", "cuda_serial", "cuda_paper", "cuda_parallel", "triton")
FP32_ONLY = ("cuda_serial", "cuda_paper")
ACCELERATED_SCAN = ("accelerated_scan.warp", "accelerated_scan.scalar")
SECTIONS = ("headline", "table1", "accelerated_scan")  # the sections plan() makes cases in
WARP_MAX_T = 65536  # accelerated_scan.warp: T a power of two in [32, 65536]
# Relative error (max |got - truth| / max |truth|, of the output and, forward+backward, of each
# gradient) above which a case is flagged, not timed.
VALIDATION_LIMIT = {"fp32": 1e-4, "bf16": 5e-2}
VALIDATION_CHANNELS = CHECK_CHANNELS  # checked against the float64 CPU loop (all T steps)
GRADIENTS = ("dL/da", "dL/dx")  # of L = sum(upstream * h), after "h" in validate's errors
# A row's status once the CUDA context is unusable; main runs no case after it.
STICKY = "error (sticky CUDA error: "
# Where the cases run. Only "cuda" is meaningful for the numbers; the test suite sets "cpu" (and
# a small COPY_NUMEL) to run the whole harness on a machine without a GPU, so a slip in it shows
# in CI rather than on a lent GPU machine's clock.
DEVICE = "cuda"
COPY_NUMEL = 2**28  # 1 GiB of fp32


@dataclass(frozen=True)
class Case:
    section: str
    backend: str
    dtype: str
    pass_: str
    T: int
    batch: int
    hidden: int

    @property
    def channels(self) -> int:
        return self.batch * self.hidden

    @property
    def layout(self) -> str:
        return "(B, C, T)" if self.backend.startswith("accelerated_scan") else "(T, B, C)"

    def bytes_moved(self) -> int:
        per_element = BYTES_PER_ELEMENT[self.pass_] // 4 * DTYPES[self.dtype].itemsize
        return per_element * self.T * self.channels


def plan(quick: bool = False) -> list[Case]:
    """Every case of a run, in order. --quick: smaller headline and grid, for a smoke run."""
    T_head, B_head, D_head = (4096, 8, 1536) if quick else (65536, 8, 1536)
    cases = []
    for dtype in DTYPES:
        for pass_ in (FWD, FWD_BWD):
            for backend in PLRNN_BACKENDS:
                if dtype != "fp32" and backend in FP32_ONLY:
                    continue
                cases.append(Case("headline", backend, dtype, pass_, T_head, B_head, D_head))
    # accelerated-scan's 16-bit cases go last: a fault inside one ends the run (a CUDA error is
    # sticky) and loses only the cases after it. Seen on an H200 with accelerated-scan 0.3.1:
    # an illegal memory access surfaced at the first bfloat16 case (warp, T=65536, 8x1536), after
    # every float32 one had run.
    def accelerated_scan_headline(dtypes):
        for dtype in dtypes:
            for pass_ in (FWD, FWD_BWD):
                for backend in ACCELERATED_SCAN:
                    cases.append(
                        Case("accelerated_scan", backend, dtype, pass_, T_head, B_head, D_head)
                    )

    accelerated_scan_headline(["fp32"])
    long_T = (T_head, 2**20) if not quick else (T_head,)
    for T in long_T:
        for m in (4, 32, 128):
            for backend in (*ACCELERATED_SCAN, "cuda_parallel"):
                if backend == "accelerated_scan.warp" and T > WARP_MAX_T:
                    continue
                cases.append(Case("accelerated_scan", backend, "fp32", FWD, T, 1, m))
    grid_T = (16, 256, 4096) if quick else (16, 256, 4096, 65536)
    for m in (4, 32, 128):
        for T in grid_T:
            for pass_ in (FWD, FWD_BWD):
                for backend in (*PLRNN_BACKENDS, "auto"):
                    cases.append(Case("table1", backend, "fp32", pass_, T, 1, m))
    accelerated_scan_headline([d for d in DTYPES if d != "fp32"])
    return cases


# ------------------------------------------------------------------------------- running


class Skip(Exception):
    """A case that cannot run here (backend unavailable, package missing); the text says why."""


def _accelerated_scan(backend: str) -> Callable:
    try:
        module = importlib.import_module(backend)  # .warp compiles its CUDA code on import
    except Exception as err:  # noqa: BLE001 - missing or broken package: report and go on
        raise Skip(f"{backend} unavailable: {type(err).__name__}: {err}") from None
    return module.scan


def _inputs(case: Case, generator: torch.Generator, requires_grad: bool):
    """Decays in [0.999, 1) and normal impulses (never all-zero inputs), on the GPU. In 16-bit
    storage, which rounded every decay of [0.999, 1) to 1.0 (bfloat16), so that the rows timed
    and checked a plain cumulative sum, decays in [0.9, 1); in every dtype below 1 once rounded."""
    shape = (case.T, case.batch, case.hidden)
    if case.layout == "(B, C, T)":
        shape = (case.batch, case.hidden, case.T)
    dtype = DTYPES[case.dtype]
    low = 0.9 if dtype.itemsize == 2 else 0.999
    a = (low + (1 - low) * torch.rand(shape, generator=generator, device=DEVICE)).to(dtype)
    a = a.clamp(max=1 - torch.finfo(dtype).eps / 2)  # the largest value below 1
    x = torch.randn(shape, generator=generator, device=DEVICE).to(dtype)
    return a.requires_grad_(requires_grad), x.requires_grad_(requires_grad)


def make_call(case: Case, generator: torch.Generator):
    """(call, inputs, time-major view function) for one case. Forward, call() returns h and the
    inputs are (a, x); forward+backward, call() returns (h, dL/da, dL/dx) for L = sum(upstream *
    h) and the inputs are (a, x, upstream)."""
    import plrnn

    needs_grad = case.pass_ == FWD_BWD
    if case.backend.startswith("accelerated_scan"):
        scan = _accelerated_scan(case.backend)
        if case.backend.endswith("warp") and (case.T > WARP_MAX_T or case.T & (case.T - 1)):
            raise Skip("accelerated_scan.warp takes T a power of two <= 65536")

        def forward(a, x):
            return scan(a, x)

        def time_major(out):  # (B, C, T) -> (T, B, C)
            return out.permute(2, 0, 1)
    else:
        if case.backend != "auto":
            status = {s.name: s for s in plrnn.backends(DEVICE)}
            if not status[case.backend].available:
                raise Skip(f"{case.backend} unavailable: {status[case.backend].reason}")

        def forward(a, x):
            return plrnn.linear_recurrence(a, x, backend=case.backend)

        def time_major(out):
            return out

    a, x = _inputs(case, generator, needs_grad)
    if not needs_grad:
        return (lambda: forward(a, x)), (a, x), time_major
    upstream = torch.randn(x.shape, generator=generator, device=DEVICE).to(x.dtype)

    def forward_backward():
        out = forward(a, x)
        return (out, *torch.autograd.grad(out, (a, x), upstream))

    return forward_backward, (a, x, upstream), time_major


def validate(call, inputs, time_major, case: Case) -> dict[str, float]:
    """max |got - truth| / max |truth| on the checked_channels, all steps, of the output ("h")
    and, forward+backward, of each of GRADIENTS; the truth is cpu_serial in float64 (checked
    against the reference by the CPU suite) on the same inputs."""
    import plrnn

    with torch.no_grad() if case.pass_ == FWD else torch.enable_grad():
        got = call()
    got = got if isinstance(got, tuple) else (got,)
    picked = checked_channels(case.channels)  # every batch entry's, up to the last channel
    batch, channel = picked // case.hidden, picked % case.hidden

    def columns(t):  # (T, len(picked)) in float64 on the host, gathered without a full copy
        t = time_major(t.detach())
        return t[:, batch.to(t.device), channel.to(t.device)].double().cpu()

    a, x, *upstream = (columns(t) for t in inputs)
    with torch.enable_grad():
        a.requires_grad_(bool(upstream))
        x.requires_grad_(bool(upstream))
        h = plrnn.linear_recurrence(a, x, backend="cpu_serial")
        truths = [h, *torch.autograd.grad(h, (a, x), upstream[0])] if upstream else [h]
    errors = {}
    for name, value, truth in zip(("h", *GRADIENTS), got, truths):
        truth = truth.detach()
        scale = truth.abs().max().item() or 1.0
        errors[name] = (columns(value) - truth).abs().max().item() / scale
    return errors


def _seconds(call, reps: int) -> float:
    """Seconds for `reps` back-to-back calls: CUDA events on the GPU (no host sync inside the
    round), the host clock elsewhere."""
    if DEVICE != "cuda":
        start = time.perf_counter()
        for _ in range(reps):
            call()
        return time.perf_counter() - start
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        call()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def time_calls(call, round_ms: float = 25.0, rounds: int = 5, warmup: int = 2) -> list[float]:
    """Per-call seconds of `rounds` rounds of back-to-back calls, each round about round_ms."""
    for _ in range(warmup):
        call()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    one = max(_seconds(call, 1), 1e-6)
    reps = max(1, min(1000, math.ceil(round_ms / 1e3 / one)))
    if one > 0.2:
        rounds = 3
    return [_seconds(call, reps) / reps for _ in range(rounds)]


def copy_bandwidth(numel: int | None = None) -> dict:
    numel = numel or COPY_NUMEL
    src = torch.rand(numel, device=DEVICE)
    dst = torch.empty_like(src)
    times = time_calls(lambda: dst.copy_(src))
    median = sorted(times)[len(times) // 2]
    return {
        "numel": numel,
        "median_s": median,
        "bytes_per_s": COPY_BYTES_PER_ELEMENT * numel / median,
    }


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


def run_case(case: Case, copy_bps: float, seed: int) -> dict:
    row = {**asdict(case), "pass": case.pass_, "channels": case.channels, "layout": case.layout}
    row.pop("pass_")
    row.update(status="ok", median_ms=None, min_ms=None, gb_per_s=None, frac_copy=None)
    row.update(rel_err=None, rounds=None)
    try:
        _measure(case, row, copy_bps, seed)
    finally:
        try:
            if DEVICE == "cuda":
                torch.cuda.synchronize()  # a fault of this case's kernels lands in its own row
            torch.cuda.empty_cache()  # a no-op where CUDA was never initialized
        except Exception as err:  # noqa: BLE001 - reported in the row; main stops the run
            # A faulted context fails every CUDA call after it, these included: the numbers
            # above may predate the fault and are not kept.
            row.update(median_ms=None, min_ms=None, gb_per_s=None, frac_copy=None, rounds=None)
            row["status"] = f"{STICKY}{type(err).__name__}: {_first_line(err)})"
    return row


def _measure(case: Case, row: dict, copy_bps: float, seed: int) -> None:
    """Validate, then time, one case into its row (status, and the numbers when ok)."""
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    try:
        call, inputs, time_major = make_call(case, generator)
        errors = validate(call, inputs, time_major, case)
        wrong = [name for name, err in errors.items() if not err <= VALIDATION_LIMIT[case.dtype]]
        row["rel_err"] = errors[wrong[0]] if wrong else max(errors.values())
        if wrong:
            row["status"] = f"wrong: relative error {row['rel_err']:.2e} in {wrong[0]}"
            return
        times = time_calls(call)
    except Skip as err:
        row["status"] = f"skipped: {err}"
        return
    except torch.cuda.OutOfMemoryError:
        row["status"] = "out of memory"
        return
    except Exception as err:  # noqa: BLE001 - one failing case must not end the run
        row["status"] = f"error: {type(err).__name__}: {_first_line(err)}"
        return
    median = sorted(times)[len(times) // 2]
    row.update(median_ms=median * 1e3, min_ms=min(times) * 1e3, rounds=len(times))
    row["gb_per_s"] = case.bytes_moved() / median / 1e9
    row["frac_copy"] = case.bytes_moved() / median / copy_bps


# ------------------------------------------------------------------------------ reporting


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def markdown(rows: list[dict], info: dict, copy: dict, config: dict) -> str:
    gpu = info.get("gpu") or {}
    lines = [
        "# GPU benchmark of plrnn.linear_recurrence",
        "",
        f"- GPU: {gpu.get('name')} (driver {gpu.get('driver')}, CUDA runtime "
        f"{gpu.get('cuda_runtime')}); torch {info.get('torch_version')}; "
        f"commit {info.get('git_commit')}{' (dirty)' if info.get('git_dirty') else ''}",
        f"- copy bandwidth (dst.copy_(src), 1 GiB fp32, read + write): "
        f"{copy['bytes_per_s'] / 1e9:.0f} GB/s",
        f"- config: {json.dumps(config)}",
        "- ms: median per call (CUDA events, back-to-back calls after warm-up); GB/s at 3 "
        "(forward) or 8 (forward+backward) tensors per element; % copy: of the bandwidth above; "
        "rel err: the largest of h's and (forward+backward) dL/da's and dL/dx's, against "
        f"float64 cpu_serial on {VALIDATION_CHANNELS} channels spread from the first to the last",
        "",
    ]
    sections = []
    for row in rows:
        if row["section"] not in sections:
            sections.append(row["section"])
    for section in sections:
        lines += [f"## {section}", ""]
        lines.append(
            "| backend | dtype | pass | T | batch x hidden | layout | ms | GB/s | % copy | rel err | status |"
        )
        lines.append("|---|---|---|---:|---:|---|---:|---:|---:|---:|---|")
        for r in (r for r in rows if r["section"] == section):
            pct = None if r["frac_copy"] is None else 100 * r["frac_copy"]
            lines.append(
                f"| {r['backend']} | {r['dtype']} | {r['pass']} | {r['T']} | "
                f"{r['batch']} x {r['hidden']} | {r['layout']} | {_fmt(r['median_ms'])} | "
                f"{_fmt(r['gb_per_s'])} | {_fmt(pct)} | {_fmt(r['rel_err'], 2)} | {r['status']} |"
            )
        lines.append("")
    return "\n".join(lines)


class RowLog:
    """gpu_bench.csv written a row at a time, flushed, so a benchmark killed by its deadline
    still leaves every case it finished."""

    def __init__(self, path: Path) -> None:
        self.path, self.writer, self.file = path, None, None

    def add(self, row: dict) -> None:
        import csv

        if self.writer is None:
            self.file = self.path.open("w", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=list(row))
            self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m plrnn.bench.gpu", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, default=Path("gpu_bench_out"), help="output directory")
    p.add_argument("--quick", action="store_true", help="smaller shapes (smoke run)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit (no GPU needed)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=float("inf"),
        help="stop starting new cases after this many seconds (partial results kept)",
    )
    p.add_argument(
        "--sections",
        default="headline,accelerated_scan,table1",
        help=f"comma-separated subset of: {', '.join(SECTIONS)}",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown or not wanted:
        p.error(
            f"--sections: {'unknown section ' + ', '.join(unknown) if unknown else 'none given'};"
            f" give a comma-separated subset of: {', '.join(SECTIONS)}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    wanted = {s.strip() for s in args.sections.split(",") if s.strip()}
    cases = [c for c in plan(args.quick) if c.section in wanted]
    if args.dry_run:
        print(f"plrnn.bench.gpu plan: {len(cases)} cases")
        for c in cases:
            print(
                f"  {c.section:17} {c.backend:24} {c.dtype} {c.pass_:16} T={c.T:<8} "
                f"{c.batch}x{c.hidden} {c.layout}  {c.bytes_moved() / 1e9:.3g} GB"
            )
        return 0
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print(
            "plrnn.bench.gpu: no CUDA GPU (torch.cuda.is_available() is False); nothing to "
            "measure here. Use --dry-run to see the plan.",
            file=sys.stderr,
        )
        return 2

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    copy = copy_bandwidth()
    print(f"copy bandwidth: {copy['bytes_per_s'] / 1e9:.0f} GB/s", flush=True)
    config = {
        "quick": args.quick,
        "sections": sorted(wanted),
        "seed": args.seed,
        "budget_s": args.budget_s,
    }
    meta = args.out / "gpu_bench.json"

    def write_meta() -> None:
        meta.write_text(
            json.dumps({"machine": info, "copy": copy, "config": config}, indent=2, default=str)
        )

    write_meta()  # first, so that a killed run still says what machine its rows come from
    rows, log, status = [], RowLog(args.out / "gpu_bench.csv"), 0
    try:
        for i, case in enumerate(cases):
            if time.monotonic() - started > args.budget_s:
                print(f"budget of {args.budget_s:.0f} s spent: {len(cases) - i} cases not run")
                config["cases_not_run"] = len(cases) - i
                break
            row = run_case(case, copy["bytes_per_s"], args.seed + i)
            rows.append(row)
            log.add(row)
            print(
                f"[{time.monotonic() - started:6.1f}s] {case.section:16} {case.backend:24} "
                f"{case.dtype} {case.pass_:16} T={case.T:<8} {case.batch}x{case.hidden}: "
                f"{_fmt(row['median_ms'])} ms  {row['status']}",
                flush=True,
            )
            if row["status"].startswith(STICKY):
                config["cases_not_run"] = len(cases) - i - 1
                print(f"the CUDA context is unusable: {len(cases) - i - 1} cases not run")
                status = 1
                break
    finally:
        # here, so that a run ended early (SIGINT from the script's deadline, an error of the
        # harness) still leaves the tables of what it finished
        log.close()
        text = markdown(rows, info, copy, config)
        (args.out / "gpu_bench.md").write_text(text + "\n")
        write_meta()
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
