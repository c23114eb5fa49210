"""The goals each section judges from one allocator's medians: their thresholds and Goal."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..tables import fmt_x

GOAL_BANDWIDTH_VS_MUL = 0.80
GOAL_LATENCY_SPEEDUP = 2.0
GOAL_NARROW_VS_MUL = 0.40  # few channels: a dependency chain bounds the scan, not memory
GOAL_PARALLEL_FLOOR = 0.80  # cpu_parallel no slower than this fraction of cpu_serial, anywhere
GOAL_AUTO_RATIO = 1.10
GOAL_AUTO_OVERHEAD = 1.05  # median over the grid of auto / the backend it runs
GOAL_DIST_SLOWDOWN = 1.20
GOAL_FWD_BWD_VS_MUL = 0.80
GOAL_VS_ASSOC = 8.0


@dataclass
class Goal:
    """One goal, judged on one allocator's medians: `value` is the worst case over the rows the
    goal covers (`where` names that row); `missing` rows had no time, and then it is not met."""

    name: str
    allocator: str
    text: str
    value: float
    threshold: float
    at_least: bool  # met when value >= threshold (else when value <= threshold)
    where: str = ""
    missing: int = 0

    @property
    def met(self) -> bool:
        if self.missing or not math.isfinite(self.value):
            return False
        return self.value >= self.threshold if self.at_least else self.value <= self.threshold

    def line(self, machine: str) -> str:
        worst = (f"worst {fmt_x(self.value)}" + (f" at {self.where}" if self.where else "")
                 if math.isfinite(self.value) else "not measured")
        if self.missing:
            worst += f"; {self.missing} row(s) not measured"
        state = "met" if self.met else "NOT met"
        return f"Goal {state} [{machine}, {self.allocator} allocator]: {self.text}: {worst}"

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "met": self.met}


def make_goal(name: str, allocator: str, text: str, values: list[tuple[float, str]],
              threshold: float, at_least: bool = True) -> Goal:
    """The goal over (value, where) pairs, judged by the worst finite value."""
    finite = [(v, w) for v, w in values if math.isfinite(v)]
    pick = min if at_least else max
    value, where = pick(finite, key=lambda p: p[0]) if finite else (math.nan, "")
    return Goal(name, allocator, text, value, threshold, at_least, where,
                len(values) - len(finite))
