"""The report's sections 1-7: each a Section of tables, footnotes and goals built from the
records of both allocators."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..bandwidth import BYTES_PER_ELEMENT, COPY_BYTES_PER_ELEMENT
from ..decays import UNIFORM
from ..tables import fmt_ms, fmt_x
from .goals import (
    GOAL_AUTO_OVERHEAD,
    GOAL_AUTO_RATIO,
    GOAL_BANDWIDTH_VS_MUL,
    GOAL_DIST_SLOWDOWN,
    GOAL_FWD_BWD_VS_MUL,
    GOAL_LATENCY_SPEEDUP,
    GOAL_NARROW_VS_MUL,
    GOAL_PARALLEL_FLOOR,
    GOAL_VS_ASSOC,
    Goal,
    make_goal,
)
from .rows import (
    _auto_choice,
    _faults,
    _faults_line,
    _placement_levels,
    _placement_line,
    _ratio,
    _reasons,
    _time,
)
from .tasks import (
    COMPARED,
    FWD,
    FWD_BWD,
    KERNEL_LAYOUT,
    LAYOUT_DECAYS,
    LAYOUT_METHODS,
    MUL,
    SEC_BANDWIDTH,
    SEC_DIST,
    SEC_DTYPES,
    SEC_FWD_BWD,
    SEC_GRID,
    SEC_LATENCY,
    SEC_LAYOUTS,
)


@dataclass
class Section:
    title: str
    tables: list[pd.DataFrame]
    lines: list[str]  # footnotes
    goals: list[Goal] = field(default_factory=list)


def _section_rows(df: pd.DataFrame, section: str) -> pd.DataFrame:
    return df[df["section"] == section]


BANDWIDTH_ROWS = (("copy_", "preallocated"), (MUL, "fresh"), ("cpu_serial", "fresh"),
                  (MUL, "out="), ("cpu_serial", "out="))


def _bytes_per_element(method: str) -> int:
    return COPY_BYTES_PER_ELEMENT if method == "copy_" else BYTES_PER_ELEMENT[FWD]


FAULTS_LINE = ("faults: minor page faults of a call made right after the row's timed calls of "
               "each round, median over the rounds; "
               "a fresh output that the allocator maps anew faults once per 4 KiB page it "
               "writes, at a cost that can exceed the scan's own")


def bandwidth_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_BANDWIDTH)
    rows, ratio_rows = [], []
    ratios: dict[str, list] = {al: [] for al in allocators}
    for (shape, threads), g in d.groupby(["shape", "threads"], sort=False):
        numel = int(g["numel"].iloc[0])
        for method, output in BANDWIDTH_ROWS:
            per = _bytes_per_element(method)
            row = {"T x C": shape, "threads": str(threads), "measurement": method,
                   "output": output, "B/elem": str(per)}
            for al in allocators:
                t = _time(g, method=method, output=output, allocator=al)
                row[f"{al} ms"] = fmt_ms(t)
                row[f"{al} GB/s"] = fmt_x(per * numel / t / 1e9)
                row[f"{al} faults"] = _faults(g, method=method, output=output, allocator=al)
            rows.append(row)
        for output in ("fresh", "out="):
            row = {"T x C": shape, "threads": str(threads), "output": output}
            for al in allocators:
                of_mul = _ratio(g, dict(method=MUL, output=output, allocator=al),
                                dict(method="cpu_serial", output=output, allocator=al))
                row[f"{al} cpu_serial/torch.mul"] = fmt_x(of_mul)
                ratios[al].append((of_mul, f"{shape}, {threads} thread(s), {output}"))
            ratio_rows.append(row)
    goals = [make_goal("bandwidth_cpu_serial_vs_torch_mul", al,
                       f"cpu_serial forward >= {GOAL_BANDWIDTH_VS_MUL:.2f} of torch.mul's "
                       "bandwidth (fresh vs fresh, out= vs out=), every shape and thread count",
                       ratios[al], GOAL_BANDWIDTH_VS_MUL) for al in allocators]
    lines = ["GB/s: the scan and torch.mul move 12 B/elem (read a, x; write h), copy_ 8 B/elem; "
             "fresh: a new output allocated by every call (what a plain loop pays), out=: into a "
             "preallocated, already faulted-in buffer",
             "cpu_serial/torch.mul: torch.mul's time / cpu_serial's time, same output kind and "
             "allocator (1.00 = cpu_serial moves memory as fast as the practical limit)",
             FAULTS_LINE,
             *_reasons(d)]
    return Section("1. Bandwidth (forward, fp32)", [pd.DataFrame(rows), pd.DataFrame(ratio_rows)],
                   lines, goals)


def _per_allocator_times(g: pd.DataFrame, allocators, **where) -> dict:
    return {al: {b: _time(g, method=b, allocator=al, **where) for b in COMPARED}
            for al in allocators}


def latency_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_LATENCY)
    rows, speedups = [], {al: [] for al in allocators}
    worst: dict[str, tuple] = {}  # allocator -> (speedup, label, cell rows) of its slowest row
    levels = _placement_levels(df)
    of_mul: dict[str, list] = {al: [] for al in allocators}
    for (T, C, pass_), g in d.groupby(["T", "channels", "pass"], sort=False):
        row = {"T": str(T), "C": str(C), "pass": pass_, "auto ->": _auto_choice(g)}
        for al, t in _per_allocator_times(g, allocators).items():
            row.update({f"{al} {b} ms": fmt_ms(t[b]) for b in COMPARED})
            speedup = _ratio(g, dict(method="cpu_serial", allocator=al),
                             dict(method="cpu_parallel", allocator=al))
            row[f"{al} parallel speedup"] = fmt_x(speedup)
            speedups[al].append((speedup, f"C={C}, T={T}, {pass_}"))
            if math.isfinite(speedup) and speedup < worst.get(al, (math.inf,))[0]:
                worst[al] = (speedup, f"C={C}, T={T}, {pass_}", g)
            if pass_ == FWD:
                auto = _ratio(g, dict(method=MUL, allocator=al), dict(method="auto", allocator=al))
                row[f"{al} auto of torch.mul"] = fmt_x(auto)
                of_mul[al].append((auto, f"C={C}, T={T}"))
            else:
                row[f"{al} auto of torch.mul"] = ""
        rows.append(row)
    goals = [make_goal(name, al,
                       f"cpu_parallel >= {goal:g}x cpu_serial in every row "
                       "(speedup = cpu_serial time / cpu_parallel time)", speedups[al], goal)
             for name, goal in (("latency_parallel_speedup", GOAL_LATENCY_SPEEDUP),
                                ("latency_parallel_floor", GOAL_PARALLEL_FLOOR))
             for al in allocators]
    goals += [make_goal("latency_auto_vs_torch_mul", al,
                        f"auto forward >= {GOAL_NARROW_VS_MUL:.2f} of torch.mul's bandwidth "
                        "(torch.mul time / auto time, both with a fresh output), every row",
                        of_mul[al], GOAL_NARROW_VS_MUL) for al in allocators]
    channels = " and ".join(str(c) for c in d["channels"].drop_duplicates())
    threads = int(d["threads"].max()) if len(d) else 1
    lines = ["decays U[0,1); auto of torch.mul: torch.mul(a, x)'s time / auto's, the same 12 "
             "B/elem and a fresh output each (forward rows): here one thread's dependency chain "
             "bounds the serial loop, not memory",
             f"on p threads cpu_parallel's two passes (p + 1 chunks: one scanned while p - 1 are "
             f"reduced, then p scanned), each pass as costly per step as the serial loop, take "
             f"2/(p + 1) of its time: a speedup of about {(threads + 1) / 2:g}x on the {threads} "
             f"thread(s) here, so the {GOAL_LATENCY_SPEEDUP:g}x goal needs "
             f"{math.ceil(2 * GOAL_LATENCY_SPEEDUP - 1)} threads or more; where the decays "
             "forget within an eighth of a chunk (U[0,1) does), p chunks are scanned once each "
             "from zero and only their first rows again, up to p times faster",
             "where the host had put the two threads in each round: a round trip of one cache "
             "line between them before and after it (round_trip_ns, the slower of the two); the "
             "run's round trips fall into levels (each level's median below): on the Zen 4 VM "
             "one core's two hardware threads, two cores of one die, two dies",
             *(line for al, (_, label, g) in worst.items()
               if (line := _placement_line(g, dict(method="cpu_serial", allocator=al),
                                           dict(method="cpu_parallel", allocator=al),
                                           f"{al} parallel speedup of the slowest row ({label})",
                                           levels)) != ""),
             *_reasons(d)]
    return Section(f"2. Latency-bound regime ({channels} channels)", [pd.DataFrame(rows)],
                   lines, goals)


CANDIDATES = ("cpu_serial", "cpu_parallel", "torch")  # what auto chooses from on the CPU


def _over_best(g: pd.DataFrame, allocator: str, method: str) -> float:
    """method's time / the fastest candidate's (the largest of its ratios to each candidate)."""
    if not method or not math.isfinite(_time(g, method=method, allocator=allocator)):
        return math.nan
    ours = dict(method=method, allocator=allocator)
    ratios = [_ratio(g, ours, dict(method=b, allocator=allocator))
              for b in CANDIDATES if b != method]
    finite = [r for r in ratios if math.isfinite(r)] + ([1.0] if method in CANDIDATES else [])
    return max(finite) if finite else math.nan


def _choice_placement_lines(worst: dict, levels: list[list[float]]) -> list[str]:
    """Where auto's choice between the two C++ kernels was furthest from the best: their ratio
    in each placement level of the threads (which one leads can change with it)."""
    pair = ("cpu_serial", "cpu_parallel")
    return [line for al, (_, where, g, choice) in worst.items() if choice in pair
            if (line := _placement_line(
                g, dict(method=choice, allocator=al),
                dict(method=pair[1 - pair.index(choice)], allocator=al),
                f"{al} {choice} time / {pair[1 - pair.index(choice)]}'s at {where}",
                levels)) != ""]


def grid_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_GRID)
    rows = []
    choice_ratios, overheads = {al: [] for al in allocators}, {al: [] for al in allocators}
    worst: dict[str, tuple] = {}  # allocator -> (choice/best, where, cell rows, choice)
    for (m, T, dist), g in d.groupby(["channels", "T", "decays"], sort=False):
        choice = _auto_choice(g)
        row = {"m": str(m), "T": str(T), "decays": dist, "auto ->": choice}
        where = f"(m={m}, T={T}, {dist})"
        for al, t in _per_allocator_times(g, allocators).items():
            row.update({f"{al} {b} ms": fmt_ms(t[b]) for b in COMPARED})
            row[f"{al} auto/best"] = fmt_x(_over_best(g, al, "auto"))
            over = _over_best(g, al, choice)
            row[f"{al} choice/best"] = fmt_x(over)
            choice_ratios[al].append((over, where))
            if over > worst.get(al, (1.0,))[0]:
                worst[al] = (over, where, g, choice)
            overheads[al].append(_ratio(g, dict(method="auto", allocator=al),
                                        dict(method=choice, allocator=al)) if choice else math.nan)
        rows.append(row)
    goals = []
    for al in allocators:
        over = [f"{w}: {v:.2f}" for v, w in choice_ratios[al] if v > GOAL_AUTO_RATIO]
        goals.append(make_goal(
            "grid_auto_choice", al,
            f"the backend auto runs is within {GOAL_AUTO_RATIO - 1:.0%} of the best backend (min "
            "of cpu_serial, cpu_parallel, torch; each backend's own row) in every cell and "
            "distribution" + (f" (over: {', '.join(over)})" if over else ""),
            choice_ratios[al], GOAL_AUTO_RATIO, at_least=False))
        finite = [v for v in overheads[al] if math.isfinite(v)]
        goals.append(make_goal(
            "grid_auto_overhead", al,
            f"auto costs at most {GOAL_AUTO_OVERHEAD - 1:.0%} over the backend it runs (auto's "
            "row / that backend's row, median over the cells)",
            [(statistics.median(finite) if finite else math.nan, "median")],
            GOAL_AUTO_OVERHEAD, at_least=False))
    lines = ["inputs (T, 1, m), forward; auto/best = auto's time / the fastest other backend's; "
             "choice/best = the time of the backend auto runs (its own row) / the fastest's. "
             "auto's row times that same kernel once more, through auto's dispatch, so auto/best "
             "differs from choice/best by that dispatch (a few microseconds) and by the host's "
             "noise between two measurements of one kernel",
             *_choice_placement_lines(worst, _placement_levels(df)),
             *_reasons(d)]
    return Section("3. Table-1 grid (batch 1, forward)", [pd.DataFrame(rows)], lines, goals)


def distribution_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_DIST)
    rows, ratios = [], {al: [] for al in allocators}
    for (shape, b), g in d.groupby(["shape", "method"], sort=False):
        for dist in g["decays"].drop_duplicates():
            row = {"T x C": shape, "backend": b, "decays": dist,
                   "auto ->": _auto_choice(g) if b == "auto" else ""}
            for al in allocators:
                row[f"{al} ms"] = fmt_ms(_time(g, decays=dist, allocator=al))
                slowdown = _ratio(g, dict(decays=dist, allocator=al),
                                  dict(decays=UNIFORM, allocator=al))
                row[f"{al} x U[0,1)"] = fmt_x(slowdown)
                if dist != UNIFORM:
                    ratios[al].append((slowdown, f"{b} at {shape} under {dist}"))
            rows.append(row)
    goals = [make_goal("distribution_slowdown", al,
                       f"no decay distribution makes a backend more than "
                       f"{GOAL_DIST_SLOWDOWN:.2f}x slower than under U[0,1) (same backend, "
                       "shape and allocator)", ratios[al], GOAL_DIST_SLOWDOWN, at_least=False)
             for al in allocators]
    lines = ["forward; x U[0,1) = the row's time / the same backend's time at the same shape "
             "under U[0,1); impulses N(0,1); every row of a shape runs on one pair of input "
             "buffers, refilled with its own values before each round", *_reasons(d)]
    return Section("4. Decay distributions (forward)", [pd.DataFrame(rows)], lines, goals)


def dtype_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_DTYPES)
    rows = []
    for (shape, dtype), g in d.groupby(["shape", "dtype"], sort=False):
        per = 3 * torch.empty((), dtype=getattr(torch, dtype)).element_size()
        numel = int(g["numel"].iloc[0])
        row = {"T x C": shape, "dtype": dtype, "B/elem": str(per), "auto ->": _auto_choice(g)}
        for al in allocators:
            t = _time(g, method="auto", allocator=al)
            row[f"{al} torch.mul ms"] = fmt_ms(_time(g, method=MUL, allocator=al))
            row[f"{al} auto ms"] = fmt_ms(t)
            row[f"{al} auto GB/s"] = fmt_x(per * numel / t / 1e9)
            row[f"{al} auto/torch.mul"] = fmt_x(_ratio(g, dict(method=MUL, allocator=al),
                                                       dict(method="auto", allocator=al)))
        rows.append(row)
    lines = ["forward, a fresh output per call, decays U[0,1) (complex: that modulus, a uniform "
             "phase); auto/torch.mul = torch.mul's time / auto's on the same dtype and shape (1.00 "
             "= the scan moves memory as fast as the practical limit); B/elem: read a and x, "
             "write h. No goal: the rows show what each dtype costs, 16-bit storage (converted "
             "to float in registers and back) and complex arithmetic among them", *_reasons(d)]
    return Section("6. Dtypes (forward)", [pd.DataFrame(rows)], lines)


def _fwd_bwd_ratio_rows(d: pd.DataFrame, allocators, goals_in: dict) -> list[dict]:
    rows = []
    for b in ("cpu_serial", "auto"):
        row = {"backend": b}
        for al in allocators:
            ours = {"method": b, "allocator": al, "pass": FWD_BWD}
            of_mul = _ratio(d, {"method": MUL, "allocator": al, "pass": FWD_BWD}, ours)
            of_assoc = _ratio(d, {"method": "associative_scan", "allocator": al}, ours)
            row[f"{al} of a*x"] = fmt_x(of_mul)
            row[f"{al} x associative_scan"] = fmt_x(of_assoc, 1)
            goals_in[(b, "mul", al)] = of_mul
            goals_in[(b, "assoc", al)] = of_assoc
        rows.append(row)
    return rows


def fwd_bwd_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_FWD_BWD)
    rows = []
    for (method, pass_), g in d.groupby(["method", "pass"], sort=False):
        row = {"method": method, "pass": pass_,
               "auto ->": _auto_choice(g), "timing": g["timing"].iloc[0]}
        for al in allocators:
            row[f"{al} ms"] = fmt_ms(_time(g, allocator=al))
            row[f"{al} faults"] = _faults(g, allocator=al)
            # auto runs forward+backward only here: a forward row has nothing like to compare
            of_auto = _ratio(d, {"method": method, "pass": pass_, "allocator": al},
                             {"method": "auto", "pass": FWD_BWD, "allocator": al}
                             ) if pass_ == FWD_BWD else None
            row[f"{al} x auto"] = fmt_x(of_auto, 1)
        rows.append(row)
    values: dict = {}
    ratio_rows = _fwd_bwd_ratio_rows(d, allocators, values)
    goals = []
    for al in allocators:
        for b in ("cpu_serial", "auto"):
            goals += [
                make_goal(f"fwd_bwd_{b}_vs_mul", al,
                          f"{b} forward+backward >= {GOAL_FWD_BWD_VS_MUL:.2f} of the practical "
                          "limit y = a * x with its backward (torch.mul time / its time)",
                          [(values[(b, "mul", al)], "")], GOAL_FWD_BWD_VS_MUL),
                make_goal(f"fwd_bwd_{b}_vs_associative_scan", al,
                          f"{b} forward+backward >= {GOAL_VS_ASSOC:.0f}x faster than torch's "
                          "associative_scan", [(values[(b, "assoc", al)], "")], GOAL_VS_ASSOC),
            ]
    by_faults = [line for al in allocators for b in ("cpu_serial", "auto")
                 if (line := _faults_line(
                     d, {"method": "associative_scan", "allocator": al},
                     {"method": b, "pass": FWD_BWD, "allocator": al},
                     f"{al} allocator, {b} x associative_scan"))]
    T, C = (int(d["T"].iloc[0]), int(d["channels"].iloc[0])) if len(d) else (0, 0)
    lines = ["x auto = that row's forward+backward time / auto's (same allocator; n/a for a "
             "forward-only row); "
             "torch.mul: y = a * x and autograd.grad(y, (a, x), g), 36 B/elem (its backward is two "
             "torch.mul, each reading g; the scan moves 32)",
             FAULTS_LINE,
             "second table: of a*x = torch.mul's time / the backend's (goal >= "
             f"{GOAL_FWD_BWD_VS_MUL:.2f}); x associative_scan = associative_scan's time / the "
             f"backend's (goal >= {GOAL_VS_ASSOC:.0f})", *by_faults, *_reasons(d)]
    return Section(f"5. Forward+backward, T={T}, {C} channels, decays U[0,1)",
                   [pd.DataFrame(rows), pd.DataFrame(ratio_rows)], lines, goals)


def layout_section(df: pd.DataFrame, allocators) -> Section:
    d = _section_rows(df, SEC_LAYOUTS)
    rows = []
    for (case, shape, pass_), g in d.groupby(["note", "shape", "pass"], sort=False):
        for method in LAYOUT_METHODS:
            row = {"inputs": case, "T x ...": shape, "pass": pass_, "method": method}
            for al in allocators:
                row[f"{al} ms"] = fmt_ms(_time(g, method=method, allocator=al))
                row[f"{al} faults"] = _faults(g, method=method, allocator=al)
                row[f"{al} x kernel layout"] = fmt_x(_ratio(
                    g, dict(method=method, allocator=al), dict(method=KERNEL_LAYOUT, allocator=al)))
            rows.append(row)
    lines = [f"auto, fp32, decays {LAYOUT_DECAYS}. One decay per head: (T, 1, 32, 64) impulses "
             "with (T, 1, 32, 1) decays (Mamba-2's); batch-first sequences: the (T, 8, 256) views "
             "x.transpose(0, 1) of (8, T, 256) tensors, decays alike, the upstream gradient in "
             "that layout too",
             "as given: the op takes them as they are; copied by the caller: the caller makes "
             "them contiguous time-major (decays expanded) inside the timed call, as a scan "
             "without those layouts needs; kernel layout: the same values contiguous "
             "time-major from the start (decays of the impulses' shape); torch.mul: a * x (and "
             "its backward) on those, the practical limit",
             "x kernel layout = the row's time / the kernel layout's (same cell and allocator)",
             FAULTS_LINE, *_reasons(d)]
    return Section("7. Input layouts (auto)", [pd.DataFrame(rows)], lines)
