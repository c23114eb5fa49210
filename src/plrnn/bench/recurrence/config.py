"""What a run measures: the shapes and timing of each mode (full, --quick, --smoke) and the
Config built from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ..decays import DISTRIBUTIONS, UNIFORM
from ..timing import reuse_freed_pages

ALLOCATORS = ("default", "steady")
GRID_DISTRIBUTIONS = (UNIFORM, "sigmoid(N(2,1))")

# Every dtype the op takes on CPU, each against torch.mul on the same dtype: the kernels load
# 16-bit values into float registers and round each stored one back, and complex products mix
# real and imaginary lanes, so each dtype has a speed of its own.
DTYPES = ("float32", "float64", "bfloat16", "float16", "complex64")


SIZES = {
    "full": {
        "min_run_time": 0.5,
        "bandwidth_shapes": ((65536, 128), (65536, 1024), (4096, 16384)),
        "latency_T": (65536, 262144),
        "grid_m": (4, 32, 128),
        "grid_T": (16, 256, 4096, 65536),
        "dist_shapes": ((262144, 4), (65536, 128)),
        "fb_T": 65536,
        "dtype_shapes": ((65536, 4), (65536, 128)),
        "layout_T": 16384,
        "sweep_channels": (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
        "sweep_T": (16, 64, 256, 1024, 4096, 16384, 65536),
    },
    "quick": {
        "min_run_time": 0.1,
        "bandwidth_shapes": ((16384, 128), (16384, 1024), (1024, 16384)),
        "latency_T": (16384, 65536),
        "grid_m": (4, 32, 128),
        "grid_T": (16, 256, 4096),
        "dist_shapes": ((65536, 4), (16384, 128)),
        "fb_T": 16384,
        "dtype_shapes": ((16384, 4), (16384, 128)),
        "layout_T": 4096,
        "sweep_channels": (1, 4, 16, 64, 256, 1024),
        "sweep_T": (16, 256, 4096, 65536),
    },
    # Tiny shapes and timing: runs every code path in seconds (the tests use it); no numbers.
    "smoke": {
        "min_run_time": 0.002,
        "bandwidth_shapes": ((256, 16), (256, 64), (16, 512)),
        "latency_T": (256, 1024),
        "grid_m": (4, 32),
        "grid_T": (16, 256),
        "dist_shapes": ((1024, 4), (256, 32)),
        "fb_T": 256,
        "dtype_shapes": ((256, 4), (64, 32)),
        "layout_T": 16,
        "sweep_channels": (1, 32),
        "sweep_T": (16, 256),
    },
}

@dataclass
class Config:
    mode: str  # "full" | "quick" | "smoke"
    min_run_time: float
    slow_min_run_time: float  # for methods that take about a second per call
    threads: int
    seed: int
    bandwidth_shapes: tuple[tuple[int, int], ...]
    bandwidth_threads: tuple[int, ...]
    latency_channels: tuple[int, ...]
    latency_T: tuple[int, ...]
    grid_m: tuple[int, ...]
    grid_T: tuple[int, ...]
    grid_distributions: tuple[str, ...]
    dist_shapes: tuple[tuple[int, int], ...]
    distributions: tuple[str, ...]
    fb_T: int
    fb_channels: int
    dtype_shapes: tuple[tuple[int, int], ...]
    dtypes: tuple[str, ...]
    layout_T: int  # section 7: (T, 1, 32, 64) impulses with per-head decays, (8, T, 256) batch-first
    sweep_channels: tuple[int, ...]
    sweep_T: tuple[int, ...]
    sweep_min_run_time: float
    allocator: str  # "default" | "steady": how this process allocates (its rows' `allocator`)
    allocator_detail: str
    allocators: tuple[str, ...]  # the allocator columns of the tables
    sections: tuple[str, ...]
    device: str = "cpu"
    dtype: str = "float32"  # of sections 1-5 and 7; section 6 times each of `dtypes`
    inputs: str = ("decays ~ the row's distribution, impulses ~ N(0,1), grad_h ~ N(0,1); fp32 "
                   "(section 6: each dtype), contiguous, time-major (section 7: the layouts "
                   "it names)")


def make_config(args: argparse.Namespace) -> Config:
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[mode]
    mrt = args.min_run_time if args.min_run_time is not None else size["min_run_time"]
    # mallopt first, before anything large is allocated; the default state is left untouched.
    steady = args.allocator == "steady"
    detail = reuse_freed_pages() if steady else "default: glibc malloc as the process starts"
    return Config(
        mode=mode,
        min_run_time=mrt,
        slow_min_run_time=min(mrt, 0.2),
        threads=torch.get_num_threads(),
        seed=args.seed,
        bandwidth_shapes=size["bandwidth_shapes"],
        bandwidth_threads=(1, 2),
        latency_channels=(4, 32),
        latency_T=size["latency_T"],
        grid_m=size["grid_m"],
        grid_T=size["grid_T"],
        grid_distributions=DISTRIBUTIONS if args.all_distributions else GRID_DISTRIBUTIONS,
        dist_shapes=size["dist_shapes"],
        distributions=DISTRIBUTIONS,
        fb_T=size["fb_T"],
        fb_channels=128,
        dtype_shapes=size["dtype_shapes"],
        dtypes=DTYPES,
        layout_T=size["layout_T"],
        sweep_channels=size["sweep_channels"],
        sweep_T=size["sweep_T"],
        sweep_min_run_time=min(mrt, 0.2),
        allocator="steady" if steady else "default",
        allocator_detail=detail,
        allocators=ALLOCATORS if args.allocator == "both" else (args.allocator,),
        sections=tuple(args.sections),
    )
