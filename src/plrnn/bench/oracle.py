"""The float64 loops the benchmarks judge every backend by, before they time it: written with
NumPy, one step at a time, independent of every backend. benchmarks/_support.py loads this file
by path from the checkout (asv installs older commits that may predate it), so it imports
nothing from plrnn."""

from __future__ import annotations

import numpy as np


def truth64(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """h[t] = a[t] * h[t-1] + x[t] from h[-1] = 0 on (T, *) float64 (complex128) arrays (NumPy:
    a third of the per-step cost of torch ops, and no allocator growth)."""
    h = np.empty_like(x)
    prev = np.zeros_like(x[0])
    for t in range(x.shape[0]):
        prev = a[t] * prev + x[t]
        h[t] = prev
    return h


def recurrence_grads64(a, x, g, pieces=None):
    """(d decays, d impulses) of sum(real(conj(g) * h)) for h[t] = a[t] h[t-1] + x[t], restarted
    at each (lo, hi) of `pieces` (default: one sequence), on float64 (complex128) arrays with a
    expanded to x's shape. Paper section 3.3: G[t] = g[t] + conj(a[t+1]) G[t+1],
    d impulses = G, d decays[t] = conj(h[t-1]) G[t]."""
    da, dx = np.zeros_like(x), np.zeros_like(x)
    for lo, hi in pieces or [(0, x.shape[0])]:
        if hi == lo:
            continue
        a_next = np.concatenate([a[lo + 1:hi], np.zeros_like(a[:1])]).conj()
        G = truth64(a_next[::-1], g[lo:hi][::-1])[::-1]
        h = truth64(a[lo:hi], x[lo:hi])
        dx[lo:hi] = G
        da[lo + 1:hi] = h[:-1].conj() * G[1:]
    return da, dx
