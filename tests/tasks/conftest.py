"""The task tests train models of a few thousand parameters on a few hundred values per step:
torch's intra-op threads only add synchronisation there (on a loaded 2-core machine, 10-50x per
step), so every test here runs single-threaded."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    pass
