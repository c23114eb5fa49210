"""plrnn.bench.recurrence: the command end to end at tiny sizes (--smoke, both allocators), and
its tables' ratios and goal lines on hand-made measurements. Nothing here asserts on speed."""

from __future__ import annotations

import json
import math
import mmap
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import plrnn
from plrnn.bench.decays import DISTRIBUTIONS, SIGMOID_MEANS, UNIFORM, make_decays
from plrnn.bench.oracle import truth64
from plrnn.bench.recurrence import runner
from plrnn.bench.recurrence.cli import main, parse_args, steady_child_argv
from plrnn.bench.recurrence.config import DTYPES, GRID_DISTRIBUTIONS, SIZES, make_config
from plrnn.bench.recurrence.goals import Goal, make_goal
from plrnn.bench.recurrence.inputs import (
    CHECK_CHANNELS,
    Inputs,
    WrongResult,
    check_output,
)
from plrnn.bench.recurrence.rows import _placement_levels
from plrnn.bench.recurrence.sections import (
    BANDWIDTH_ROWS,
    Section,
    bandwidth_section,
    distribution_section,
    dtype_section,
    fwd_bwd_section,
    grid_section,
    latency_section,
    layout_section,
)
from plrnn.bench.recurrence.tasks import (
    COMPARED,
    FWD,
    FWD_BWD,
    MUL,
    SEC_BANDWIDTH,
    SEC_DIST,
    SEC_DTYPES,
    SEC_FWD_BWD,
    SEC_GRID,
    SEC_LATENCY,
    SEC_LAYOUTS,
    Env,
    Task,
    distribution_tasks,
    latency_tasks,
    layout_tasks,
)
from plrnn.recurrence.registry import resolve

# ------------------------------------------------------------------------ the command, --smoke


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("recurrence_bench")
    proc = subprocess.run(
        [sys.executable, "-m", "plrnn.bench.recurrence", "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(out / "recurrence_bench.csv", dtype={"shape": str})
    meta = json.loads((out / "recurrence_bench.json").read_text())
    return {"out": out, "stdout": proc.stdout, "df": df, "meta": meta,
            "md": (out / "recurrence_bench.md").read_text()}


def test_writes_the_three_files_with_both_allocators(smoke):
    df, meta, md = smoke["df"], smoke["meta"], smoke["md"]
    assert {"allocator", "decays", "output", "threads", "median_s", "status"} <= set(df.columns)
    assert set(df["allocator"]) == {"default", "steady"}
    # Same measurements in both runs: the steady child repeats the parent's plan.
    key = ["section", "method", "pass", "decays", "output", "threads", "shape"]
    by = df.groupby("allocator")
    assert by.size()["default"] == by.size()["steady"]
    assert (df[df["allocator"] == "default"][key].reset_index(drop=True)
            .equals(df[df["allocator"] == "steady"][key].reset_index(drop=True)))
    assert "error" not in set(df["status"]), df[df["status"] == "error"][["method", "reason"]]
    assert meta["config"]["allocators"] == ["default", "steady"]
    assert meta["steady_child"]["returncode"] == 0
    assert "mallopt" in meta["allocators"]["steady"]
    assert "glibc malloc as the process starts" in meta["allocators"]["default"]
    # The header explains the allocator columns and the distributions.
    head = md.split("## 1.")[0]
    assert "allocator columns: `default`" in head and "`steady`" in head
    assert all(dist in head for dist in ("U[0,1)", "U[0.9,1)", "sigmoid(N(mu,1))"))
    assert "machine: `" in head
    # The kernels' measured settings the run used (the tests run the fixed ones).
    settings = meta["machine"]["kernel_settings"]
    assert settings == {"wide_rows": "sequential", "streaming_schedule": "pipelined",
                        "streamed_beyond": "last_level",
                        "stream_bytes": torch.ops.plrnn.cpu_stream_bytes(),
                        "ilp_channels": settings["ilp_channels"],
                        "output_cache_bytes": torch.ops.plrnn.cpu_output_cache(-1),
                        "calibrated": False}
    assert "CPU kernel settings (plrnn.recurrence.calibration" in head and '"sequential"' in head
    # Every comparison table has both allocator columns.
    for title in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7."):
        table = md.split(title)[1].split("\n## ")[0]
        assert "default" in table.splitlines()[2] and "steady" in table.splitlines()[2], title


def test_bandwidth_rows_cover_shapes_threads_outputs_and_limits(smoke):
    d = smoke["df"][smoke["df"]["section"] == SEC_BANDWIDTH]
    shapes = {"x".join(map(str, s)) for s in SIZES["smoke"]["bandwidth_shapes"]}
    want = set(BANDWIDTH_ROWS)
    for key, g in d.groupby(["shape", "threads", "allocator"]):
        assert set(zip(g["method"], g["output"], strict=True)) == want, key
    assert set(d["shape"]) == shapes
    assert set(d["threads"]) == {1, 2}


def test_every_distribution_is_timed_for_every_backend(smoke):
    df = smoke["df"]
    d = df[df["section"] == SEC_DIST]
    for (shape, method, allocator), g in d.groupby(["shape", "method", "allocator"]):
        assert sorted(g["decays"]) == sorted(DISTRIBUTIONS), (shape, method, allocator)
    assert set(d["method"]) == set(COMPARED)
    assert len(set(d["shape"])) == 2
    grid = df[df["section"] == SEC_GRID]
    assert set(grid["decays"]) == set(GRID_DISTRIBUTIONS)
    assert "sigmoid(N(5,1))" in smoke["md"].split("## 4.")[1].split("\n## ")[0]


def test_every_dtype_is_timed_against_torch_mul_on_the_same_dtype(smoke):
    d = smoke["df"][smoke["df"]["section"] == SEC_DTYPES]
    for key, g in d.groupby(["shape", "allocator"]):
        for method in (MUL, "auto"):
            assert sorted(g[g["method"] == method]["dtype"]) == sorted(DTYPES), (key, method)
    assert set(d["status"]) == {"ok"}
    assert set(d["shape"]) == {"x".join(map(str, s)) for s in SIZES["smoke"]["dtype_shapes"]}
    assert set(smoke["df"][smoke["df"]["section"] != SEC_DTYPES]["dtype"]) == {"float32"}
    table = smoke["md"].split("## 6.")[1].split("\n## ")[0]
    assert all(f"| {dtype}" in table for dtype in DTYPES)


def test_dtype_rows_compare_each_dtype_with_its_own_torch_mul():
    rows = []
    for dtype, mul_s, auto_s in (("float32", 1.0, 2.0), ("bfloat16", 0.5, 4.0)):
        for method, t in ((MUL, mul_s), ("auto", auto_s)):
            rows.append({"section": SEC_DTYPES, "method": method, "dtype": dtype,
                         "shape": "100x4", "numel": 400, "allocator": "default", "status": "ok",
                         "median_s": t, "auto_choice": "cpu_serial" if method == "auto" else "",
                         "reason": "", "round_medians_s": ""})
    table = dtype_section(pd.DataFrame(rows), ("default",)).tables[0]
    by = table.set_index("dtype")
    assert by.loc["float32", "default auto/torch.mul"] == "0.50"
    assert by.loc["bfloat16", "default auto/torch.mul"] == "0.12"
    assert by.loc["bfloat16", "B/elem"] == "6" and by.loc["float32", "B/elem"] == "12"
    assert by.loc["float32", "auto ->"] == "cpu_serial"


@pytest.mark.parametrize("dtype", ["complex64", "bfloat16", "float16", "float64"])
def test_check_output_judges_every_dtype(dtype):
    inputs = Inputs(0)
    a, x = inputs.get((300, 20), dtype=dtype)
    assert a.dtype == x.dtype == getattr(torch, dtype)
    if a.is_complex():  # the distribution's modulus, a phase of its own
        assert 0 <= a.abs().min() and a.abs().max() < 1 and a.angle().std() > 1
    truth = inputs.truth((300, 20), UNIFORM, a, x)
    check_output(plrnn.linear_recurrence(a, x, backend="cpu_serial"), truth, "ok")
    with pytest.raises(WrongResult, match="float64"):
        check_output(plrnn.linear_recurrence(a.flip(0), x, backend="cpu_serial"), truth, "no")


def test_forward_backward_has_the_practical_limit_and_baselines(smoke):
    d = smoke["df"][smoke["df"]["section"] == SEC_FWD_BWD]
    for allocator in ("default", "steady"):
        g = d[d["allocator"] == allocator]
        assert {MUL, "associative_scan", *COMPARED} <= set(g[g["pass"] == FWD_BWD]["method"])


def _goal_value_from_csv(df, allocator):
    """cpu_serial/torch.mul bandwidth goal recomputed here, independently of the module: the
    median over rounds of each round's ratio, the worst over the cells."""
    d = df[(df["section"] == SEC_BANDWIDTH) & (df["allocator"] == allocator)]
    ratios = []
    for _, g in d.groupby(["shape", "threads", "output"]):
        rounds = {m: np.array([float(t) for t in r.split(";")])
                  for m, r in zip(g["method"], g["round_medians_s"], strict=True)
                  if m in (MUL, "cpu_serial")}
        if "cpu_serial" in rounds:
            per_round = rounds[MUL] / rounds["cpu_serial"]
            ratios.append(float(np.median(per_round[np.isfinite(per_round)])))
    return min(ratios)


def test_goals_agree_with_the_numbers_and_the_markdown(smoke):
    df, meta, md = smoke["df"], smoke["meta"], smoke["md"]
    goals = meta["goals"]
    names = {g["name"] for g in goals}
    assert {"bandwidth_cpu_serial_vs_torch_mul", "latency_parallel_speedup",
            "latency_parallel_floor", "grid_auto_choice", "grid_auto_overhead",
            "distribution_slowdown", "fwd_bwd_cpu_serial_vs_mul",
            "fwd_bwd_auto_vs_mul", "fwd_bwd_cpu_serial_vs_associative_scan",
            "fwd_bwd_auto_vs_associative_scan"} <= names
    machine = meta["machine_name"]
    for g in goals:
        ok = g["value"] >= g["threshold"] if g["at_least"] else g["value"] <= g["threshold"]
        assert g["met"] == (ok and not g["missing"]), g
        state = "met" if g["met"] else "NOT met"
        assert f"Goal {state} [{machine}, {g['allocator']} allocator]: {g['text']}" in md
    for allocator in ("default", "steady"):
        bw = next(g for g in goals if g["name"] == "bandwidth_cpu_serial_vs_torch_mul"
                  and g["allocator"] == allocator)
        assert bw["value"] == pytest.approx(_goal_value_from_csv(df, allocator))
    met = sum(g["met"] for g in goals)
    assert f"{met} of {len(goals)} met" in md
    assert md.count("Goal NOT met") == 2 * (len(goals) - met)  # section lines + summary


# -------------------------------------------------------------- sections on hand-made numbers


def _row(section, method, median_s, allocator="default", **kw):
    T, C = kw.pop("T", 64), kw.pop("C", 8)
    rec = {"section": section, "method": method, "pass": FWD, "allocator": allocator,
           "decays": UNIFORM, "output": "fresh", "threads": 2, "T": T, "channels": C,
           "shape": f"{T}x{C}", "numel": T * C, "note": "", "auto_choice": "",
           "status": "ok", "reason": "", "timing": "autorange", "median_s": median_s}
    rec.update(kw)
    return rec


def _goal(section: Section, name: str, allocator: str) -> Goal:
    return next(g for g in section.goals if g.name == name and g.allocator == allocator)


def test_bandwidth_ratio_compares_like_with_like():
    rows = []
    for al, serial_out in (("default", 2.0), ("steady", 1.0)):
        rows += [
            _row(SEC_BANDWIDTH, "copy_", 0.5, al, output="preallocated"),
            _row(SEC_BANDWIDTH, MUL, 1.0, al, output="fresh"),
            _row(SEC_BANDWIDTH, "cpu_serial", 1.25, al, output="fresh"),
            _row(SEC_BANDWIDTH, MUL, 0.8, al, output="out="),
            _row(SEC_BANDWIDTH, "cpu_serial", serial_out, al, output="out="),
        ]
    section = bandwidth_section(pd.DataFrame(rows), ("default", "steady"))
    ratios = section.tables[1].set_index("output")
    assert ratios.loc["fresh", "default cpu_serial/torch.mul"] == "0.80"  # 1.0 / 1.25
    assert ratios.loc["out=", "default cpu_serial/torch.mul"] == "0.40"  # 0.8 / 2.0
    assert ratios.loc["out=", "steady cpu_serial/torch.mul"] == "0.80"  # 0.8 / 1.0
    default = _goal(section, "bandwidth_cpu_serial_vs_torch_mul", "default")
    steady = _goal(section, "bandwidth_cpu_serial_vs_torch_mul", "steady")
    assert default.value == pytest.approx(0.4) and "out=" in default.where and not default.met
    assert steady.value == pytest.approx(0.8) and steady.met  # the goal is >= 0.8
    # GB/s at 12 B/element (8 for the copy), per allocator.
    table = section.tables[0]
    serial = table[(table["measurement"] == "cpu_serial") & (table["output"] == "fresh")]
    assert serial["default GB/s"].iloc[0] == f"{12 * 64 * 8 / 1.25 / 1e9:.2f}"
    copy = table[table["measurement"] == "copy_"]
    assert copy["steady GB/s"].iloc[0] == f"{8 * 64 * 8 / 0.5 / 1e9:.2f}"


def test_distribution_ratios_are_per_backend_shape_and_allocator():
    rows = []
    for b, base in (("cpu_serial", 1.0), ("torch", 10.0)):
        for dist in DISTRIBUTIONS:
            slow = 1.3 if (b == "torch" and dist == "sigmoid(N(5,1))") else 1.1
            rows.append(_row(SEC_DIST, b, base * (1.0 if dist == UNIFORM else slow),
                             decays=dist))
            rows.append(_row(SEC_DIST, b, base, "steady", decays=dist))
    section = distribution_section(pd.DataFrame(rows), ("default", "steady"))
    table = section.tables[0]
    torch5 = table[(table["backend"] == "torch") & (table["decays"] == "sigmoid(N(5,1))")]
    assert torch5["default x U[0,1)"].iloc[0] == "1.30"
    assert torch5["steady x U[0,1)"].iloc[0] == "1.00"
    default = _goal(section, "distribution_slowdown", "default")
    assert default.value == pytest.approx(1.3) and not default.met
    assert default.where == "torch at 64x8 under sigmoid(N(5,1))"
    assert _goal(section, "distribution_slowdown", "steady").met
    assert "Goal NOT met" in default.line("m") and "1.30" in default.line("m")


def test_paired_ratio_is_the_median_of_round_ratios_over_rounds_both_timed():
    from plrnn.bench.timing import paired_ratio

    # medians 1.0 and 2.0 would say 0.5; round by round the ratios are 1.0, 0.5 and 2.0
    assert paired_ratio([1.0, 1.0, 4.0], [1.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert paired_ratio([2.0, math.nan, 3.0, 4.0], [1.0, 1.0, math.nan, 2.0]) == 2.0
    assert math.isnan(paired_ratio([math.nan, 1.0], [1.0, math.nan]))


def test_ratios_pair_rounds_within_a_cell_only():
    def rows(cell_of_u):
        # the host's two speeds, split unevenly between two rows of one unchanged kernel
        return [_row(SEC_DIST, "cpu_serial", 1.0, decays=UNIFORM, cell=cell_of_u,
                     round_medians_s="1.0;1.0;2.0;2.0;2.0"),
                _row(SEC_DIST, "cpu_serial", 2.0, decays="U[0.9,1)", cell=0,
                     round_medians_s="1.0;1.0;2.0;2.0;2.0")]

    paired = distribution_section(pd.DataFrame(rows(0)), ("default",))
    assert _goal(paired, "distribution_slowdown", "default").value == pytest.approx(1.0)
    # rounds of two cells are not simultaneous: the ratio of the medians (2.0 / 1.0) stands
    apart = distribution_section(pd.DataFrame(rows(1)), ("default",))
    assert _goal(apart, "distribution_slowdown", "default").value == pytest.approx(2.0)


def test_grid_auto_is_judged_by_its_choice_and_its_overhead():
    rows = []
    # (decays, cpu_serial's time, auto's time): auto runs cpu_serial in both cells
    for dist, serial, auto in ((UNIFORM, 1.0, 1.05), ("sigmoid(N(2,1))", 2.5, 2.6)):
        for b, t in (("cpu_serial", serial), ("cpu_parallel", 2.0), ("torch", 9.0), ("auto", auto)):
            rows.append(_row(SEC_GRID, b, t, decays=dist, T=256, C=4, shape="256x1x4",
                             auto_choice="cpu_serial" if b == "auto" else ""))
    section = grid_section(pd.DataFrame(rows), ("default",))
    table = section.tables[0]
    assert list(table["default auto/best"]) == ["1.05", "1.30"]
    assert list(table["default choice/best"]) == ["1.00", "1.25"]
    assert set(table["auto ->"]) == {"cpu_serial"}
    choice = _goal(section, "grid_auto_choice", "default")
    assert choice.value == pytest.approx(1.25) and not choice.met
    assert "sigmoid(N(2,1))" in choice.where
    overhead = _goal(section, "grid_auto_overhead", "default")  # median of 1.05 and 1.04
    assert overhead.value == pytest.approx(1.045) and overhead.met


def test_forward_backward_ratios_to_the_practical_limit_and_associative_scan():
    rows = [_row(SEC_FWD_BWD, b, t, **{"pass": FWD_BWD}) for b, t in (
        ("cpu_serial", 1.0), ("cpu_parallel", 1.2), ("torch", 20.0), ("auto", 1.25),
        (MUL, 0.9), ("associative_scan", 9.0))]
    rows.append(_row(SEC_FWD_BWD, "reference (Python loop)", 50.0, timing="single"))
    section = fwd_bwd_section(pd.DataFrame(rows), ("default",))
    ratios = section.tables[1].set_index("backend")
    assert ratios.loc["cpu_serial", "default of a*x"] == "0.90"
    assert ratios.loc["auto", "default of a*x"] == "0.72"
    assert ratios.loc["cpu_serial", "default x associative_scan"] == "9.0"
    assert ratios.loc["auto", "default x associative_scan"] == "7.2"
    met = {g.name: g.met for g in section.goals}
    assert met == {"fwd_bwd_cpu_serial_vs_mul": True, "fwd_bwd_auto_vs_mul": False,
                   "fwd_bwd_cpu_serial_vs_associative_scan": True,
                   "fwd_bwd_auto_vs_associative_scan": False}
    speed = section.tables[0].set_index("method")["default x auto"]
    assert speed["associative_scan"] == "7.2" and speed["auto"] == "1.0"
    forward_only = section.tables[0].set_index(["method", "pass"])["default x auto"]
    assert forward_only[("reference (Python loop)", FWD)] == "n/a"  # not forward / fwd+bwd



def test_forward_backward_ratios_are_split_by_the_rounds_page_faults():
    """Rounds where a fresh output faulted cost several times the others: the section says what
    the ratio to associative_scan was in each kind of round."""
    timed = {  # method: (round medians, page faults of the probe call in each round)
        "auto": ("1;6;1;6", "0;24579;0;24579"),
        "cpu_serial": ("1;1;1;1", "0;0;0;0"),
        "associative_scan": ("20;30;20;20", "0;52230;52230;0"),
    }
    rows = [_row(SEC_FWD_BWD, b, 1.0, **{"pass": FWD_BWD}, cell=0, round_medians_s=m,
                 round_faults=f) for b, (m, f) in timed.items()]
    rows += [_row(SEC_FWD_BWD, MUL, 1.0, **{"pass": FWD_BWD}, cell=0)]
    section = fwd_bwd_section(pd.DataFrame(rows), ("default",))
    lines = [line for line in section.lines if "by the rounds' page faults" in line]
    assert lines == [
        "default allocator, cpu_serial x associative_scan, by the rounds' page faults: 20.0 in 2 "
        "rounds where cpu_serial's call did not and associative_scan's did not fault; 25.0 in 2 "
        "rounds where cpu_serial's call did not and associative_scan's did fault",
        "default allocator, auto x associative_scan, by the rounds' page faults: 20.0 in 1 round "
        "where auto's call did not and associative_scan's did not fault; 20.0 in 1 round where "
        "auto's call did not and associative_scan's did fault; 3.3 in 1 round where auto's call "
        "did and associative_scan's did not fault; 5.0 in 1 round where auto's call did and "
        "associative_scan's did fault",
    ]


def test_narrow_rows_judge_auto_against_torch_mul_on_forward_rows_only():
    rows = []
    for C, auto in ((4, 2.0), (32, 1.0)):
        for p in (FWD, FWD_BWD):
            rows += [_row(SEC_LATENCY, b, t, C=C, **{"pass": p})
                     for b, t in (("cpu_serial", 4.0), ("cpu_parallel", 1.5), ("torch", 9.0),
                                  ("auto", auto))]
        rows.append(_row(SEC_LATENCY, MUL, 0.7, C=C))
    section = latency_section(pd.DataFrame(rows), ("default",))
    assert section.title == "2. Latency-bound regime (4 and 32 channels)"
    table = section.tables[0]
    fwd = table[table["pass"] == FWD].set_index("C")
    assert fwd.loc["4", "default auto of torch.mul"] == "0.35"  # 0.7 / 2.0
    assert fwd.loc["32", "default auto of torch.mul"] == "0.70"
    assert (table[table["pass"] == FWD_BWD]["default auto of torch.mul"] == "").all()
    goal = _goal(section, "latency_auto_vs_torch_mul", "default")
    assert goal.value == pytest.approx(0.35) and goal.where == "C=4, T=64" and not goal.met
    speedup = _goal(section, "latency_parallel_speedup", "default")
    assert speedup.value == pytest.approx(4.0 / 1.5) and speedup.met


def test_round_trips_fall_into_levels_of_placement():
    def levels(*texts, cells=None):
        df = pd.DataFrame({"round_trip_ns": list(texts), "allocator": "default",
                           "cell": cells if cells is not None else range(len(texts))})
        return [(lv[0], lv[-1]) for lv in _placement_levels(df)]

    # one core's two hardware threads, two cores of one die, two dies
    assert levels("28;30;60;62;64", "90;310;330;nan") == [(28, 30), (60, 90), (310, 330)]
    assert levels("60;61;65;70", "75") == [(60, 75)]
    # a rare outlier joins the nearest level; a cell's rows repeat its trips only once
    assert levels(*["60;62;310;330"] * 10 + ["1600"]) == [(60, 62), (310, 1600)]
    assert levels("27", *["60;62;310;330"] * 10) == [(27, 62), (310, 330)]
    assert levels(*["60;62;310;330"] * 10, "150") == [(60, 62), (150, 330)]
    assert levels(*["60;62;310;330"] * 10, cells=[0] * 10) == [(60, 62), (310, 330)]
    assert levels("nan;nan", "") == []


def test_the_slowest_latency_row_is_split_by_where_the_threads_were():
    trips = "60;320;61;330;62;300"  # rounds 2 and 4 and 6 on two dies
    rows = [_row(SEC_LATENCY, b, 1.0, **{"pass": FWD_BWD}, cell=0, round_trip_ns=trips,
                 round_medians_s=medians)
            for b, medians in (("cpu_serial", "1;1;1;1;1;1"), ("cpu_parallel", "0.8;2;0.8;2;0.8;2"),
                               ("torch", "9;9;9;9;9;9"), ("auto", "1;1;1;1;1;1"))]
    section = latency_section(pd.DataFrame(rows), ("default",))
    assert _goal(section, "latency_parallel_floor", "default").value == pytest.approx(0.875)
    line = next(line for line in section.lines if line.startswith("default parallel speedup"))
    assert line.endswith("by the threads' round trip: 1.25 in 3 rounds at 61 ns; "
                         "0.50 in 3 rounds at 320 ns")


def test_the_grid_shows_auto_s_worst_choice_by_placement():
    trips = "28;30;64;66"
    rows = [_row(SEC_GRID, b, 1.0, cell=0, round_trip_ns=trips, round_medians_s=medians,
                 auto_choice="cpu_parallel" if b == "auto" else "")
            for b, medians in (("cpu_serial", "1;1;1;1"), ("cpu_parallel", "1.25;1.25;0.8;0.8"),
                               ("torch", "9;9;9;9"), ("auto", "1.25;1.25;0.8;0.8"))]
    section = grid_section(pd.DataFrame(rows), ("default",))
    line = next(line for line in section.lines if line.startswith("default cpu_parallel time"))
    assert line.endswith("by the threads' round trip: 1.25 in 2 rounds at 29 ns; "
                         "0.80 in 2 rounds at 65 ns")


def test_a_goal_without_numbers_is_not_met_and_says_so():
    rows = [_row(SEC_LATENCY, b, 1.0) for b in COMPARED]
    rows[1].update(status="unavailable", reason="no compiler", median_s=math.nan)
    section = latency_section(pd.DataFrame(rows), ("default", "steady"))
    for al in ("default", "steady"):
        goal = _goal(section, "latency_parallel_speedup", al)
        assert not goal.met
        assert goal.line("m").startswith(f"Goal NOT met [m, {al} allocator]")
        assert "not measured" in goal.line("m")
    assert any("no compiler" in line for line in section.lines)
    partial = make_goal("g", "default", "text", [(3.0, "a"), (math.nan, "b")], 2.0)
    assert partial.value == 3.0 and partial.missing == 1 and not partial.met



def test_a_failed_steady_child_leaves_its_columns_and_goals_visible(tmp_path, monkeypatch):
    real_run = subprocess.run

    def run(cmd, *args, **kwargs):
        if "plrnn.bench.recurrence" in cmd:  # the child: fails without writing anything
            return subprocess.CompletedProcess(cmd, 3, stdout="child went wrong\n")
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    assert main(["--smoke", "--sections", "latency", "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "recurrence_bench.json").read_text())
    assert meta["steady_child"]["returncode"] == 3
    assert "child went wrong" in meta["steady_child"]["stdout_tail"]
    assert "FAILED" in meta["allocators"]["steady"]
    md = (tmp_path / "recurrence_bench.md").read_text()
    assert "steady cpu_serial ms" in md and "child FAILED (exit 3)" in md
    steady = [g for g in meta["goals"] if g["allocator"] == "steady"]
    assert steady and not any(g["met"] for g in steady)
    assert "Goal NOT met [" in md and "steady allocator]" in md
    df = pd.read_csv(tmp_path / "recurrence_bench.csv")
    assert set(df["allocator"]) == {"default"}


# ------------------------------------------------------------------------- inputs and checks


def test_decay_distributions():
    gen = torch.Generator().manual_seed(0)
    shape = (20000,)
    for dist in DISTRIBUTIONS:
        a = make_decays(dist, shape, gen)
        assert a.dtype == torch.float32 and bool(((a >= 0) & (a < 1)).all()), dist
    assert float(make_decays("U[0.9,1)", shape, gen).min()) >= 0.9
    means = {d: float(make_decays(d, shape, gen).mean()) for d in SIGMOID_MEANS}
    assert means["sigmoid(N(0,1))"] == pytest.approx(0.5, abs=0.02)
    assert means["sigmoid(N(2,1))"] == pytest.approx(0.84, abs=0.02)
    assert means["sigmoid(N(5,1))"] == pytest.approx(0.99, abs=0.01)
    with pytest.raises(ValueError, match="distribution"):
        make_decays("N(0,1)", shape, gen)


def test_inputs_are_reproducible_across_instances():
    # The steady-allocator child draws its inputs in another process: same seed, same numbers.
    one, two = Inputs(3), Inputs(3)
    a1, x1 = one.get((32, 4), dist="sigmoid(N(2,1))")
    a2, x2 = two.get((32, 4), dist="sigmoid(N(2,1))")
    assert torch.equal(a1, a2) and torch.equal(x1, x2)
    assert not torch.equal(a1, one.get((32, 4))[0])  # another distribution, other numbers
    code = ("from plrnn.bench.recurrence.inputs import Inputs; "
            "print(float(Inputs(3).get((32, 4), dist='sigmoid(N(2,1))')[0].sum()))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, check=True)
    assert float(other.stdout) == float(a1.sum())


def test_check_output_accepts_the_recurrence_and_rejects_a_wrong_one():
    inputs = Inputs(0)
    a, x = inputs.get((300, 20), dist="sigmoid(N(5,1))")
    truth = inputs.truth((300, 20), "sigmoid(N(5,1))", a, x)
    assert truth.shape == (300, 20) and CHECK_CHANNELS > 20  # a narrow row: every channel
    check_output(plrnn.linear_recurrence(a, x, backend="cpu_serial"), truth, "ok")
    wrong = plrnn.linear_recurrence(a.flip(0), x, backend="cpu_serial")
    with pytest.raises(WrongResult, match="float64"):
        check_output(wrong, truth, "wrong")
    # The benchmark's float64 loop is the reference backend's recurrence, ~10x faster at long T.
    a64, x64 = a.double()[:, :4], x.double()[:, :4]
    want = plrnn.linear_recurrence(a64, x64, backend="reference").numpy()
    np.testing.assert_allclose(truth64(a64.numpy(), x64.numpy()), want, rtol=1e-12)


@pytest.mark.parametrize("wrong", [slice(999, 1000), slice(500, 532)], ids=["last", "a head"])
def test_check_output_reads_the_whole_row(wrong):
    """Only the first 16 channels were checked: one thread's share of a split row, one head of
    per-head decays, one sequence of a batch. A wrong last channel or a wrong head of 32 in the
    middle of the row passed."""
    inputs = Inputs(0)
    a, x = inputs.get((50, 1000))
    truth = inputs.truth((50, 1000), UNIFORM, a, x)
    h = plrnn.linear_recurrence(a, x, backend="cpu_serial")
    check_output(h, truth, "ok")
    h[:, wrong] += 1
    with pytest.raises(WrongResult, match="float64"):
        check_output(h, truth, "wrong")


def test_a_wrong_backend_is_an_error_row_not_a_time(monkeypatch):
    args = parse_args(["--smoke", "--allocator", "default"])
    env = Env(make_config(args), Inputs(0), {})
    real = plrnn.linear_recurrence

    def broken(a, x, *rest, backend="auto", **kw):
        h = real(a, x, *rest, backend=backend, **kw)
        return h + 1 if backend == "cpu_parallel" else h

    monkeypatch.setattr(plrnn, "linear_recurrence", broken)
    tasks = [t for t in latency_tasks(env) if t.pass_ == FWD][:4]
    recs = {r["method"]: r for r in runner.run_tasks(env, tasks)}
    assert recs["cpu_parallel"]["status"] == "error"
    assert "WrongResult" in recs["cpu_parallel"]["reason"]
    assert math.isnan(recs["cpu_parallel"]["median_s"])
    assert recs["cpu_serial"]["status"] == "ok" and recs["cpu_serial"]["median_s"] > 0


def test_every_layout_is_timed_as_given_copied_and_in_the_kernels_layout(smoke):
    d = smoke["df"][smoke["df"]["section"] == SEC_LAYOUTS]
    assert set(d["status"]) == {"ok"}, d[d["status"] != "ok"][["method", "reason"]]
    for key, g in d.groupby(["note", "pass", "allocator"]):
        assert sorted(g["method"]) == sorted(["as given", "copied by the caller", "kernel layout",
                                              MUL]), key
    T = SIZES["smoke"]["layout_T"]
    assert set(zip(d["note"], d["shape"])) == {("one decay per head", f"{T}x1x32x64"),
                                               ("batch-first sequences", f"{T}x8x256")}
    table = smoke["md"].split("## 7.")[1].split("\n## ")[0]
    assert "x kernel layout" in table and "copied by the caller" in table


def test_layout_rows_compare_with_the_kernel_layout_of_their_own_cell():
    rows = [{"section": SEC_LAYOUTS, "note": case, "shape": shape, "pass": FWD, "method": m,
             "allocator": "default", "status": "ok", "median_s": t, "cell": cell}
            for cell, (case, shape, times) in enumerate((("per head", "8x1x32x64", (3, 6, 2, 1)),
                                                          ("batch-first", "8x8x256", (4, 4, 2, 1))))
            for m, t in zip(("as given", "copied by the caller", "kernel layout", MUL), times)]
    table = layout_section(pd.DataFrame(rows), ("default",)).tables[0]
    ratio = dict(zip(zip(table["inputs"], table["method"]), table["default x kernel layout"]))
    assert ratio[("per head", "as given")] == "1.50" and ratio[("per head", MUL)] == "0.50"
    assert ratio[("batch-first", "copied by the caller")] == "2.00"


@pytest.mark.parametrize("method", ["as given", "copied by the caller"])
def test_a_layout_the_op_gets_wrong_is_an_error_row(monkeypatch, method):
    """Each layout row checks its own output: an op wrong only on strided or per-head inputs
    (what the rows exist for) is not timed."""
    args = parse_args(["--smoke", "--allocator", "default"])
    env = Env(make_config(args), Inputs(0), {})
    real = plrnn.linear_recurrence

    def broken(a, x, *rest, **kw):
        h = real(a, x, *rest, **kw)
        return h + 1 if (a.shape != x.shape) == (method == "as given") else h

    monkeypatch.setattr(plrnn, "linear_recurrence", broken)
    tasks = [t for t in layout_tasks(env) if t.pass_ == FWD and t.note == "one decay per head"]
    recs = {r["method"]: r for r in runner.run_tasks(env, tasks)}
    assert recs[method]["status"] == "error" and "WrongResult" in recs[method]["reason"]
    assert recs[MUL]["status"] == "ok"


def test_slow_methods_skip_rounds_unless_compared_every_round(monkeypatch):
    """A method slower than its share of a round is timed in one round of SLOW_STRIDE, with that
    many shares; one marked every_round is timed in all of them."""
    args = parse_args(["--smoke", "--allocator", "default"])
    env = Env(make_config(args), Inputs(0), {})
    calls = {}

    class Fake:
        def __init__(self, fn, t):
            self.median, self.raw_times, self.number_per_run = t, [t], 1
            calls[fn] = calls.get(fn, 0) + 1

    share = env.cfg.min_run_time / runner.ROUNDS
    monkeypatch.setattr(runner, "measure", lambda fn, t, **kw: Fake(fn, 2 * share))
    fns = {name: (lambda: None) for name in ("strided", "every")}
    cell = [Task(SEC_DIST, "torch", FWD, (8, 2), lambda f=fns[name]: (f, ()),
                    every_round=name == "every") for name in fns]
    recs = runner._run_cell(env, cell, 1)
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert calls[fns["every"]] == runner.ROUNDS
    assert calls[fns["strided"]] == 1 + (runner.ROUNDS - 1) // runner.SLOW_STRIDE
    assert [r["blocks"] for r in recs] == [calls[fns["strided"]], runner.ROUNDS]
    # each round's steal time, the same for every method of the cell
    assert recs[0]["round_steal_s"] == recs[1]["round_steal_s"]
    assert len(recs[0]["round_steal_s"].split(";")) == runner.ROUNDS
    # and where the host had put the pool's threads (nan on one thread)
    assert recs[0]["round_trip_ns"] == recs[1]["round_trip_ns"]
    trips = [float(t) for t in recs[0]["round_trip_ns"].split(";")]
    assert len(trips) == runner.ROUNDS
    assert all(t > 0 for t in trips) if torch.get_num_threads() > 1 else all(map(math.isnan, trips))
    # the rounds a method sat out are nan in its round medians, so no ratio pairs them
    strided, every = ([float(t) for t in r["round_medians_s"].split(";")] for r in recs)
    assert len(strided) == len(every) == runner.ROUNDS
    assert sum(map(math.isfinite, strided)) == calls[fns["strided"]]
    assert all(t == pytest.approx(2 * share) for t in every)


def test_each_round_starts_one_method_later(monkeypatch):
    args = parse_args(["--smoke", "--allocator", "default"])
    env = Env(make_config(args), Inputs(0), {})
    seen = []

    class Fake:
        median, raw_times, number_per_run = 1e-6, [1e-6], 1

    def fake_measure(fn, t, **kw):
        seen.append(fn())
        return Fake()

    monkeypatch.setattr(runner, "measure", fake_measure)
    monkeypatch.setattr(runner, "calls_per_block", lambda t: None)  # one measurement per round
    cell = [Task(SEC_GRID, str(k), FWD, (8, 2), lambda k=k: ((lambda: k), ()))
            for k in range(3)]
    runner._run_cell(env, cell, 1)
    rounds = [seen[i:i + 3] for i in range(0, len(seen), 3)]
    assert len(rounds) == runner.ROUNDS
    assert rounds[:4] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


def test_short_calls_take_turns_in_blocks_after_their_first_round(monkeypatch):
    """After one measurement each, methods with calls far under BLOCK_S alternate block by block
    within each round until each has had its share; a row that refills shared buffers (load)
    keeps one measurement per round."""
    from plrnn.bench import timing

    args = parse_args(["--smoke", "--allocator", "default"])
    env = Env(make_config(args), Inputs(0), {})
    share = env.cfg.min_run_time / runner.ROUNDS
    measured, blocks, loads = [], [], []

    class Fake:
        median, raw_times, number_per_run = 1e-6, [3e-5], 10

    def fake_measure(fn, t, **kw):
        measured.append(fn())
        return Fake()

    def fake_block(fn, number):
        blocks.append((fn(), number))
        return share / 2 / number  # two blocks fill a round's share

    monkeypatch.setattr(runner, "measure", fake_measure)
    monkeypatch.setattr(timing, "block_time", fake_block)
    cell = [Task(SEC_GRID, str(k), FWD, (8, 2), lambda k=k: ((lambda: k), ()))
            for k in range(2)]
    cell.append(Task(SEC_GRID, "loaded", FWD, (8, 2),
                        lambda: ((lambda: "L"), (), lambda: loads.append(1))))
    recs = runner._run_cell(env, cell, 1)
    calls = timing.calls_per_block(Fake.median)
    assert measured[:3] == [0, 1, "L"]  # the first round: one measurement each
    assert measured[3:] == ["L"] * (runner.ROUNDS - 1) and len(loads) == runner.ROUNDS
    # Round 1 starts with method 1, round 2 with the loaded one; each short method twice a round.
    assert blocks[:6] == [(1, calls), (0, calls), (1, calls), (0, calls), (0, calls), (1, calls)]
    assert len(blocks) == 2 * 2 * (runner.ROUNDS - 1)
    assert [r["blocks"] for r in recs] == [1 + 2 * (runner.ROUNDS - 1)] * 2 + [runner.ROUNDS]
    assert all(math.isfinite(r["faults_per_call"]) for r in recs)  # probed in every round
    per_call = [float(t) for t in recs[0]["block_times_s"].split(";")]
    assert per_call[0] == pytest.approx(3e-6) and per_call[1] == pytest.approx(share / 2 / calls)
    # a round's median: the first round's measurement, then the median of that round's blocks
    by_round = [float(t) for t in recs[0]["round_medians_s"].split(";")]
    assert by_round == pytest.approx([1e-6] + [share / 2 / calls] * (runner.ROUNDS - 1))


def test_distribution_rows_refill_one_buffer_pair_before_each_round(monkeypatch):
    args = parse_args(["--smoke", "--allocator", "default"])
    env = Env(make_config(args), Inputs(0), {})
    shape = env.cfg.dist_shapes[0]
    dists = env.cfg.distributions[:3]
    cell = [t for t in distribution_tasks(env)
            if t.shape == shape and t.decays in dists and t.method == "cpu_serial"]
    assert [t.decays for t in cell] == list(dists)
    shared_a, _ = env.inputs.shared(shape)
    seen = []

    class Fake:
        median, raw_times, number_per_run = 1e-6, [1e-6], 1

    def fake_measure(fn, t, inputs=(), **kw):
        assert inputs[0] is shared_a
        seen.append([d for d in dists if torch.equal(shared_a, env.inputs.get(shape, dist=d)[0])])
        return Fake()

    monkeypatch.setattr(runner, "measure", fake_measure)
    recs = runner._run_cell(env, cell, 1)
    assert [r["status"] for r in recs] == ["ok"] * 3
    order = [dists[(r + k) % 3] for r in range(runner.ROUNDS) for k in range(3)]
    assert seen == [[d] for d in order]


def test_thread_count_is_set_per_cell_and_restored():
    before = torch.get_num_threads()
    with runner._num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_steady_child_repeats_the_run():
    args = parse_args(["--quick", "--all-distributions", "--seed", "7", "--sections", "grid",
                          "--min-run-time", "0.3"])
    assert args.allocator == "both"
    child = steady_child_argv(args, Path("/tmp/x"))
    again = parse_args(child)
    assert again.allocator == "steady" and str(again.out) == "/tmp/x"
    for name in ("quick", "smoke", "all_distributions", "seed", "sections", "min_run_time",
                 "sweep_auto"):
        assert getattr(again, name) == getattr(args, name), name


def test_help_runs_nothing(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--smoke", "--quick", "--allocator", "--sweep-auto",
                                         "--all-distributions"))
    assert re.search(r"steady", text)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_minflt as Linux counts it")
def test_faults_per_call_counts_the_pages_a_fresh_mapping_writes():
    from plrnn.bench import timing

    pages = 4096

    def fresh():  # a mapping of its own, whatever malloc's settings (other tests set mallopt)
        with mmap.mmap(-1, pages * 4096) as m:
            for p in range(pages):
                m[p * 4096] = 1

    assert timing.faults_per_call(fresh) >= pages / 512  # 2 MiB pages where the OS gives them
    assert timing.faults_per_call(lambda: None) <= 2


@pytest.mark.parametrize("argv, message", [
    (["--min-run-time", "-1"], "--min-run-time: expected a positive finite number, got '-1'"),
    (["--min-run-time", "0"], "--min-run-time: expected a positive finite number, got '0'"),
    (["--out", __file__], "--out must be a directory"),
])
def test_bad_arguments_are_refused_before_any_measuring(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_auto_column_names_the_backend_the_op_runs_for_complex_inputs():
    """The "auto ->" column came from the float32 rule alone, where complex inputs go from
    cpu_serial to cpu_parallel: section 6 said cpu_serial for complex64 rows that ran the other."""
    env = Env(make_config(parse_args(["--smoke", "--allocator", "default"])), Inputs(0), {})
    for dtype in ("complex64", "float32", "float64", "bfloat16"):
        task = Task(SEC_DTYPES, "auto", FWD, (256, 4), None, dtype=dtype)
        t = getattr(torch, dtype)
        want = resolve("auto", torch.device("cpu"), 256, 4, t.is_complex, t.itemsize).name
        assert runner._new_record(env, task, 2)["auto_choice"] == want, dtype
    complex_task = Task(SEC_DTYPES, "auto", FWD, (256, 4), None, dtype="complex64")
    assert runner._new_record(env, complex_task, 2)["auto_choice"] == "cpu_parallel"
