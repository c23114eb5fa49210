"""Command-line arguments of plrnn.bench.machine and plrnn.bench.layer_fusion: help and refusals
come before anything is measured."""

from __future__ import annotations

import pytest
import torch

from plrnn.bench import layer_fusion, machine


def test_machine_prints_its_name_and_has_help(capsys):
    machine.main([])
    assert capsys.readouterr().out.strip() == machine.machine_name()
    with pytest.raises(SystemExit) as exit_:
        machine.main(["--help"])
    assert exit_.value.code == 0 and "results/<name>/" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without one")
def test_machine_refuses_a_missing_gpu(capsys):
    with pytest.raises(SystemExit) as exit_:
        machine.main(["--device", "cuda"])
    assert exit_.value.code == 2 and "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon", "inf", "1e999"])
def test_layer_fusion_refuses_a_min_run_time_that_is_not_positive(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        layer_fusion.main(["--min-run-time", value])
    assert exit_.value.code == 2
    assert f"expected a positive finite number, got {value!r}" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inf", "1e999"])
def test_recurrence_refuses_an_infinite_min_run_time(value, capsys):
    # An infinite --min-run-time would time its first measurement forever.
    from plrnn.bench.recurrence.cli import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(["--min-run-time", value])
    assert exit_.value.code == 2
    assert f"expected a positive finite number, got {value!r}" in capsys.readouterr().err
