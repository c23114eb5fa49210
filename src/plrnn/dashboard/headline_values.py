"""What a headline cell holds (a number with the cell it came from, or why there is none), and
the small readers and formats both sides of the headline share."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar


@dataclass(frozen=True)
class Number:
    text: str  # as shown: "41.8×", "≥ 52.5×"
    where: str  # the cell it came from: "m=32, T=65536"
    value: float


@dataclass(frozen=True)
class Missing:
    """No number, and why (shown in the cell instead)."""

    reason: str


Headline = Number | Missing

Item = TypeVar("Item")


class SourceError(ValueError):
    """A results or paper file that does not hold what its artifact's headline needs."""


def finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def sig(value: float) -> str:
    """About three significant digits, as the artifacts' own tables print them: 527, 52.5, 1.10,
    0.948; never an exponent."""
    for bound, digits in ((100, 0), (10, 1), (1, 2)):
        if abs(value) >= bound:
            return f"{value:.{digits}f}"
    return f"{value:.3g}"


def times(value: float) -> str:
    return f"{sig(value)}×"


def csv_rows(path: Path) -> list[dict[str, str]]:
    """A CSV's rows as dicts; lines starting with '#' are the file's notes."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path.name} is not readable: {exc}") from exc
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def best(candidates: list[tuple[float | None, Item]], empty: str) -> tuple[float, Item]:
    """The largest finite value and what came with it (its row)."""
    known = [(v, item) for v, item in candidates if v is not None]
    if not known:
        raise SourceError(empty)
    # max() keeps the first of equal values: the earlier row in the file, so reruns are stable.
    return max(known, key=lambda c: c[0])
