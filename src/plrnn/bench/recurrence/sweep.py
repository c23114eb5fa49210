"""`--sweep-auto`: cpu_serial against cpu_parallel over channels x T, the measurements behind
`auto`'s rule (plrnn.recurrence.registry.choose_auto): its tasks and its tables."""

from __future__ import annotations

import math

import pandas as pd
import torch

from plrnn.recurrence import registry as backend_registry

from ..tables import fmt_ms, fmt_x
from .rows import _reasons, _time
from .sections import Section, _section_rows
from .tasks import FWD, SEC_SWEEP, Env, Task, _op

KERNELS = ("cpu_serial", "cpu_parallel")
SWEEP_TIE = 0.05  # sweep cells where the kernels are within 5% of each other are ties


def sweep_tasks(env: Env) -> list[Task]:
    c = env.cfg
    return [
        Task(SEC_SWEEP, b, FWD, (T, C), _op(env, b, (T, C), FWD),
             min_run_time=c.sweep_min_run_time)
        for C in c.sweep_channels for T in c.sweep_T for b in KERNELS
    ]


def _sweep_winner(s: float, p: float) -> str:
    if not (math.isfinite(s) and math.isfinite(p)):
        return "n/a"
    if abs(s / p - 1) <= SWEEP_TIE:
        return "tie"
    return "cpu_parallel" if p < s else "cpu_serial"


def _sweep_tables(d: pd.DataFrame, threads: int, allocator: str) -> list[Section]:
    rows = []
    for (C, T), g in d.groupby(["channels", "T"], sort=False):
        s = _time(g, method="cpu_serial", allocator=allocator)
        p = _time(g, method="cpu_parallel", allocator=allocator)
        auto = backend_registry.choose_auto(torch.device("cpu"), int(T), int(C))
        rows.append({"C": int(C), "T": int(T), "C/thread": C / threads, "serial": s,
                     "parallel": p, "winner": _sweep_winner(s, p), "auto": auto})
    long = pd.DataFrame([{
        "C": str(r["C"]), "T": str(r["T"]), "C/thread": f"{r['C/thread']:g}",
        "cpu_serial ms": fmt_ms(r["serial"]), "cpu_parallel ms": fmt_ms(r["parallel"]),
        "serial/parallel": fmt_x(r["serial"] / r["parallel"]), "winner": r["winner"],
        "auto picks": r["auto"],
        "auto agrees": "yes" if r["auto"] == r["winner"] else ("tie" if r["winner"] == "tie"
                                                                else "NO"),
    } for r in rows])
    letter = {"cpu_serial": "S", "cpu_parallel": "P", "tie": "=", "n/a": "-"}
    grid = pd.DataFrame(rows).pivot(index="C", columns="T", values="winner").map(letter.get)
    agree = pd.DataFrame(rows).pivot(index="C", columns="T", values="auto")
    marked = grid.copy()
    for C in grid.index:
        for T in grid.columns:
            if letter.get(agree.loc[C, T]) != grid.loc[C, T] and grid.loc[C, T] in "SP":
                marked.loc[C, T] = grid.loc[C, T] + "*"
    marked = marked.reset_index().rename(columns={"C": "C \\ T"}).astype(str)
    marked.columns = [str(c) for c in marked.columns]
    return [
        Section(f"auto sweep ({allocator} allocator): cpu_serial vs cpu_parallel, forward (T, C)",
                [long], [f"{threads} torch threads; auto picks what "
                         "plrnn.recurrence.registry.choose_auto says (see its comment)"]),
        Section(f"auto sweep ({allocator} allocator): winner per cell (S serial, P parallel, = "
                f"within {SWEEP_TIE:.0%}, * = auto picks the other)", [marked], []),
    ]


def sweep_section(df: pd.DataFrame, threads: int, allocators) -> list[Section]:
    d = _section_rows(df, SEC_SWEEP)
    sections = []
    for al in allocators:
        sections += _sweep_tables(d, threads, al)
    if sections:
        sections[-1].lines += _reasons(d)
    return sections
