"""Reading the run's records: a row's time and page faults, the ratio of two rows (paired
round by round where they are methods of one cell), and that ratio split by where the host had
put the threads or by which calls faulted."""

from __future__ import annotations

import math
import statistics

import pandas as pd

from ..tables import fmt_x
from ..timing import paired_ratio


def _time(df: pd.DataFrame, **where) -> float:
    row = _ok_row(df, where)
    return float(row["median_s"]) if row is not None else math.nan


def _faults(df: pd.DataFrame, **where) -> str:
    """The row's minor page faults per call (faults_per_call), "" where not counted."""
    row = _ok_row(df, where)
    value = math.nan if row is None else row.get("faults_per_call", math.nan)
    return f"{value:.0f}" if isinstance(value, (int, float)) and math.isfinite(value) else ""


def _ok_row(df: pd.DataFrame, where: dict):
    sel = df
    for key, value in where.items():
        sel = sel[sel[key] == value]
    ok = sel[sel["status"] == "ok"]
    return ok.iloc[0] if len(ok) else None


def _per_round(row, column: str) -> list[float]:
    """A ";"-joined per-round column of a record (round_medians_s, round_trip_ns, round_faults)
    as numbers; [] where the row has none."""
    text = row.get(column, "")
    return [float(t) for t in text.split(";")] if isinstance(text, str) and text else []


def _ratio(df: pd.DataFrame, num: dict, den: dict) -> float:
    """num's time / den's (rows picked by column values): the median of per-round ratios
    (paired_ratio) where both rows are methods of one cell, else the ratio of their medians."""
    n, d = _ok_row(df, num), _ok_row(df, den)
    if n is None or d is None:
        return math.nan
    rn, rd = _per_round(n, "round_medians_s"), _per_round(d, "round_medians_s")
    if (rn and len(rn) == len(rd) and n["allocator"] == d["allocator"]
            and n.get("cell") == d.get("cell")):
        paired = paired_ratio(rn, rd)
        if math.isfinite(paired):
            return paired
    return float(n["median_s"]) / float(d["median_s"])


# The run's round trips fall into levels, one per kind of place the host gave the two threads
# (Zen 4 VM: 27-32 ns, two hardware threads of one core; 54-108 ns, two cores of one die;
# 256-430 ns, two dies): sorted, a value more than PLACEMENT_GAP times the one before starts a
# level, and levels with under PLACEMENT_MIN_SHARE of the rounds join their nearest neighbour.
PLACEMENT_GAP = 1.5
PLACEMENT_MIN_SHARE = 0.03


def _placement_levels(df: pd.DataFrame) -> list[list[float]]:
    """The run's round trips (every cell's, once per process) grouped in levels, in order."""
    per_cell = df.drop_duplicates(["allocator", "cell"]) if "cell" in df else df
    trips = sorted(t for text in per_cell.get("round_trip_ns", pd.Series(dtype=object))
                   if isinstance(text, str) and text for t in map(float, text.split(";"))
                   if math.isfinite(t) and t > 0)
    levels: list[list[float]] = []
    for t in trips:
        if levels and t <= PLACEMENT_GAP * levels[-1][-1]:
            levels[-1].append(t)
        else:
            levels.append([t])
    while len(levels) > 1:
        small = [i for i, lv in enumerate(levels) if len(lv) < PLACEMENT_MIN_SHARE * len(trips)]
        if not small:
            break
        i = small[0]
        if i == 0 or (i < len(levels) - 1 and levels[i + 1][0] / levels[i][-1]
                      < levels[i][0] / levels[i - 1][-1]):
            joining = levels.pop(i)
            levels[i][:0] = joining
        else:
            levels[i - 1].extend(levels.pop(i))
    return levels


def _placement_line(df: pd.DataFrame, num: dict, den: dict, label: str,
                    levels: list[list[float]]) -> str:
    """num's time / den's, paired over the rounds of each placement level: the goals take every
    round, users get every level; this says which level a shortfall came from."""
    n, d = _ok_row(df, num), _ok_row(df, den)
    trips = _per_round(n, "round_trip_ns") if n is not None else []
    if d is None or len(levels) < 2 or len(trips) != len(_per_round(n, "round_medians_s")):
        return ""
    rn, rd = _per_round(n, "round_medians_s"), _per_round(d, "round_medians_s")
    parts = []
    for lv in levels:
        sel = [i for i, t in enumerate(trips) if lv[0] <= t <= lv[-1]]
        if sel:
            ratio = paired_ratio([rn[i] for i in sel], [rd[i] for i in sel])
            parts.append(f"{fmt_x(ratio)} in {len(sel)} rounds at {statistics.median(lv):.0f} ns")
    return f"{label}, by the threads' round trip: " + "; ".join(parts)


# A call that faults this many pages or more (1 MiB) paid for fresh memory in that round.
FAULTED_PAGES = 256


def _faults_line(df: pd.DataFrame, num: dict, den: dict, label: str) -> str:
    """num's time / den's, paired over the rounds grouped by which of the two rows' probe calls
    faulted in (FAULTED_PAGES or more): says how much of a ratio is the allocator's; "" where
    the rounds all fall in one group."""
    n, d = _ok_row(df, num), _ok_row(df, den)
    if n is None or d is None:
        return ""
    fn, fd = _per_round(n, "round_faults"), _per_round(d, "round_faults")
    rn, rd = _per_round(n, "round_medians_s"), _per_round(d, "round_medians_s")
    if not (len(fn) == len(fd) == len(rn) == len(rd)) or not fn:
        return ""
    groups: dict[tuple[bool, bool], list[int]] = {}
    for i, (a, b) in enumerate(zip(fn, fd, strict=True)):
        if math.isfinite(a) and math.isfinite(b):
            groups.setdefault((b >= FAULTED_PAGES, a >= FAULTED_PAGES), []).append(i)
    if len(groups) < 2:
        return ""
    names = {False: "did not", True: "did"}
    parts = [f"{fmt_x(paired_ratio([rn[i] for i in sel], [rd[i] for i in sel]), 1)} in "
             f"{len(sel)} round{'s' * (len(sel) != 1)} where {den['method']}'s call "
             f"{names[ours]} and {num['method']}'s {names[theirs]} fault"
             for (ours, theirs), sel in sorted(groups.items())]
    return f"{label}, by the rounds' page faults: " + "; ".join(parts)


def _reasons(df: pd.DataFrame) -> list[str]:
    bad = df[df["status"] != "ok"].drop_duplicates(["method", "allocator", "status", "reason"])
    return [f"n/a  {r.method} ({r.allocator} allocator): {r.status}: {r.reason}"
            for _, r in bad.iterrows()]


def _auto_choice(g: pd.DataFrame) -> str:
    choices = [c for c in g.loc[g["method"] == "auto", "auto_choice"] if isinstance(c, str) and c]
    return choices[0] if choices else ""
