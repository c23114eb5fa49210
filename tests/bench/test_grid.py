"""plrnn.bench.grid: the sizes both benchmark suites share."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plrnn.bench import grid
from plrnn.recurrence.registry import REGISTRY

GRID_FILE = Path(grid.__file__)


def test_every_registered_backend_is_benchmarked():
    # A new backend must join a device's list, or the suites would silently never time it.
    listed = set(grid.CPU_BACKENDS) | set(grid.CUDA_BACKENDS)
    missing = [name for name in REGISTRY if name not in listed]
    assert not missing, f"backends missing from plrnn.bench.grid: {missing}"


@pytest.mark.parametrize("name", sorted(grid.GRIDS))
def test_grid_backends_match_its_device(name):
    g = grid.GRIDS[name]
    allowed = {"cpu": set(grid.CPU_BACKENDS) | set(grid.CPU_BASELINES),
               "cuda": set(grid.CUDA_BACKENDS) | set(grid.CUDA_BASELINES)}[g.device]
    for kernel_grid in (g.kernels, g.memory):
        assert set(kernel_grid.backends) <= allowed, (name, set(kernel_grid.backends) - allowed)
    assert g.device in grid.SERIAL_BASELINE
    for backend in grid.RECURRENCE_BACKEND[g.device].values():
        assert backend in allowed


def test_selected_reads_the_environment_variable():
    assert grid.selected({}).name == grid.DEFAULT_GRID == "cpu"
    assert grid.selected({grid.ENV_VAR: ""}).name == "cpu"
    assert grid.selected({grid.ENV_VAR: " gpu "}).device == "cuda"
    assert grid.selected({grid.ENV_VAR: "tiny"}) is grid.GRIDS["tiny"]


def test_unknown_grid_names_the_variable_and_the_choices():
    with pytest.raises(grid.GridError, match=r"PLRNN_BENCH_GRID.*'cpu'.*'gpu'"):
        grid.selected({grid.ENV_VAR: "huge"})


def test_kernel_skip_rules():
    kg = grid.KernelGrid(seq_len=(16, 4096), batch=(1, 4), hidden=(8,),
                         backends=("reference", "cpu_serial"), max_elements=16 * 4 * 8,
                         max_seq_len={"reference": 16})
    assert kg.skip_reason(16, 4, 8, "cpu_serial", grid.FORWARD) is None
    assert "elements" in kg.skip_reason(4096, 1, 8, "cpu_serial", grid.FORWARD)
    assert "capped" in kg.skip_reason(32, 1, 1, "reference", grid.FORWARD)
    assert kg.skip_reason(32, 1, 1, "cpu_serial", grid.FORWARD) is None
    capped = grid.KernelGrid(seq_len=(16,), batch=(1,), hidden=(8,), backends=("torch",),
                             backend_max_elements={"torch": 64})
    assert "64 elements" in capped.skip_reason(16, 1, 8, "torch", grid.FORWARD)
    assert capped.skip_reason(8, 1, 8, "torch", grid.FORWARD) is None
    assert capped.skip_reason(16, 1, 8, "cpu_serial", grid.FORWARD) is None
    kept = set(kg.cases())
    # Written out by hand: T=4096 exceeds 512 elements at every batch, so only T=16 remains.
    assert kept == {(16, b, 8, be, p) for b in (1, 4) for be in ("reference", "cpu_serial")
                    for p in grid.PASSES}


def test_params_are_the_cross_product_in_param_name_order():
    g = grid.GRIDS["cpu"]
    params = g.kernels.params()
    assert len(params) == len(grid.KERNEL_PARAM_NAMES)
    assert params[0] == list(g.kernels.seq_len) and params[3] == list(g.kernels.backends)
    assert len(g.layers.params()) == len(grid.LAYER_PARAM_NAMES)
    assert len(g.layers.lstm_params()) == len(grid.LSTM_PARAM_NAMES)
    assert len(g.train.params()) == len(grid.TRAIN_PARAM_NAMES)


def test_layer_grid_token_cap():
    lg = grid.LayerGrid(seq_len=(256, 65536), batch=(1, 16), max_tokens=65536)
    assert {(T, B) for _, _, T, B, _ in lg.cases()} == {(256, 1), (256, 16), (65536, 1)}
    assert {(T, B) for T, B, _ in lg.lstm_cases()} == {(256, 1), (256, 16), (65536, 1)}


def test_bad_grid_definitions_are_refused():
    g = grid.GRIDS["tiny"]
    with pytest.raises(grid.GridError, match="device"):
        grid.Grid("x", "tpu", "", g.kernels, g.memory, g.layers, g.train, 16)
    bad = grid.KernelGrid(seq_len=(1,), batch=(1,), hidden=(1,), backends=("torch",),
                          passes=("backward",))
    with pytest.raises(grid.GridError, match="passes"):
        grid.Grid("x", "cpu", "", bad, g.memory, g.layers, g.train, 16)
    with pytest.raises(grid.GridError, match="recurrence"):
        g.recurrence_backend("chunked")


def asv_processes(g: grid.Grid) -> int:
    """Benchmark processes that import torch in `asv run --quick` (one per measured combination
    and benchmark method; skips decided by the grid cost no torch import)."""
    kernels = sum(1 for _ in g.kernels.cases())
    memory = sum(1 for _ in g.memory.cases())
    layers = sum(1 for _ in g.layers.cases()) + sum(1 for _ in g.layers.lstm_cases())
    cuda = 0 if g.device == "cpu" else 2 * (memory + layers)
    train = sum(1 for _ in g.train.cases())
    return kernels + memory + layers + cuda + train + 1  # + the copy probe


def test_default_grid_fits_the_quick_run_budget():
    # About 7 s per process on the 2-core machine (torch import + kernel load + setup checks):
    # 60 processes keep `asv run --quick` under 10 minutes there.
    assert asv_processes(grid.GRIDS["cpu"]) <= 60


def test_default_grid_covers_both_regimes_and_every_cpu_kernel():
    g = grid.GRIDS["cpu"]
    cases = list(g.kernels.cases())
    channels = {b * h for _, b, h, _, _ in cases}
    assert min(channels) <= 8 and max(channels) >= 256  # latency- and bandwidth-bound
    assert {"cpu_serial", "cpu_parallel", "auto"} <= {c[3] for c in cases}
    assert set(grid.PASSES) == {c[4] for c in cases}


def test_seed_is_stable_across_processes():
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('g', {str(GRID_FILE)!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules['g'] = m; "
            "spec.loader.exec_module(m); print(m.seed_for(0, 'kernels', 64, 2, 3))")
    seeds = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        seeds.add(out.stdout.strip())
    assert len(seeds) == 1
    assert seeds == {str(grid.seed_for(0, "kernels", 64, 2, 3))}


def test_grid_module_loads_by_path_without_torch():
    # The asv suite loads the checkout's grid.py by path, before (and without) importing torch.
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('g', {str(GRID_FILE)!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules['g'] = m; "
            "spec.loader.exec_module(m); assert m.selected().name == 'cpu'; "
            "assert 'torch' not in sys.modules, 'grid.py imported torch'; "
            "assert not [k for k in sys.modules if k.startswith('plrnn')]")
    env = {k: v for k, v in os.environ.items() if k != grid.ENV_VAR}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_every_grid_has_a_copy_probe_and_cases():
    for g in grid.GRIDS.values():
        assert g.copy_numel > 0
        assert next(iter(g.kernels.cases()), None) is not None, g.name
        assert next(iter(g.layers.cases()), None) is not None, g.name
        assert list(itertools.islice(g.train.cases(), 1)), g.name


def test_committed_asv_history_matches_the_default_grid():
    # `asv publish` matches results to benchmarks.json's parameters: a run on another grid
    # rewrites that file and empties the committed history's graphs (CI runs use
    # benchmarks/asv.smoke.conf.json, with its own results directory, for that reason).
    path = Path(__file__).resolve().parents[2] / "results" / "asv" / "benchmarks.json"
    if not path.is_file():
        pytest.skip("no committed asv results")
    import json

    saved = json.loads(path.read_text())["kernels.LinearRecurrence.time_linear_recurrence"]
    want = [[repr(v) for v in axis] for axis in grid.GRIDS[grid.DEFAULT_GRID].kernels.params()]
    assert saved["params"] == want, "results/asv/benchmarks.json is not the default grid's"
