"""Number formats and Markdown tables shared by the benchmark and reproduction outputs."""

from __future__ import annotations

import math

import pandas as pd


def fmt_ms(seconds: float) -> str:
    """Seconds shown as milliseconds with 3-4 significant digits; 'n/a' for a missing value."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    ms = seconds * 1e3
    for limit, digits in ((1000, 0), (100, 1), (10, 2), (1, 3)):
        if ms >= limit:
            return f"{ms:.{digits}f}"
    return f"{ms:.4f}"


def fmt_x(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "n/a"


def _numeric(text) -> bool:
    try:
        float(text)
    except ValueError:
        return text == "n/a"
    return True


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub pipe table of df's (already formatted) cells; numbers right-aligned."""
    align = ["right" if df[c].astype(str).map(_numeric).all() else "left" for c in df.columns]
    return df.to_markdown(index=False, disable_numparse=True, colalign=align)
