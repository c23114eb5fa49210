"""Runs a function on N gloo ranks (spawned processes on this CPU) with a hard deadline, so a
hang fails the test instead of the CI job."""

from __future__ import annotations

import datetime
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

DEADLINE_S = 180  # whole run, start-up included
COLLECTIVE_TIMEOUT_S = 60  # any one collective


def _entry(rank, world, store, fn, args):
    os.environ.setdefault("PLRNN_AUTO_CALIBRATION", "0")
    torch.set_num_threads(1)  # N ranks share the machine's cores
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, fn, *args, tmp_path, deadline_s: float = DEADLINE_S) -> None:
    """fn(rank, world, *args) on `world` ranks; a rank's exception fails the test with its
    traceback, and so does a run past the deadline (every rank is then killed)."""
    store = tmp_path / f"store-{world}-{time.monotonic_ns()}"
    ctx = mp.start_processes(
        _entry, args=(world, str(store), fn, args), nprocs=world, join=False, start_method="spawn"
    )
    end = time.monotonic() + deadline_s
    try:
        while not ctx.join(timeout=max(0.1, min(5.0, end - time.monotonic()))):
            if time.monotonic() > end:
                pytest.fail(f"{world} ranks still running after {deadline_s} s: a hang")
    except ProcessException as e:
        pytest.fail(f"a rank failed:\n{e}", pytrace=False)
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join()
