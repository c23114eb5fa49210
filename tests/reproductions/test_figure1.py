"""reproductions/figure1.py: every config composes, the smoke scale writes its four files, and the
sizes it lists (and draws) are those of an independently built model."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from plrnn.tasks import NUM_CLASSES, NUM_SYMBOLS, make_model, paper_config

from .helpers import compose_config, load_script, scales

SMOKE = ["scale=smoke", "device=cpu", "progress=false"]


def _shape(p) -> str:
    return "x".join(str(n) for n in p.shape)


def _independent_model(cfg):
    """The model the config describes, built here on the CPU without the script's helpers."""
    s = cfg.scale
    if s.paper_settings:
        m = paper_config("gilr_lstm", s.seq_len).model
        return make_model("gilr_lstm", m.hidden, m.num_layers, forget_bias=m.forget_bias)
    return make_model("gilr_lstm", s.hidden, s.num_layers, forget_bias=s.forget_bias,
                      surrogate=s.surrogate)


def _check_sizes(comps: pd.DataFrame, model, T: int) -> None:
    params = comps[comps["kind"] == "parameter"]
    named = {n: p for n, p in model.named_parameters()}
    # Every parameter of the model is listed exactly once, with its shape and size.
    assert sorted(params["name"]) == sorted(named)
    for _, row in params.iterrows():
        p = named[row["name"]]
        assert row["shape"] == _shape(p), row["name"]
        assert int(row["parameters"]) == p.numel(), row["name"]
    assert comps["parameters"].astype(int).sum() == sum(p.numel() for p in model.parameters())
    # The activations and the two scans per layer: T steps of the layer's width.
    H, L = model.body.hidden_size, model.body.num_layers
    scans = comps[comps["kind"] == "parallel scan"]
    assert len(scans) == 2 * L and (scans["shape"] == f"{T}x{H}").all()
    assert (scans["parameters"].astype(int) == 0).all()
    assert comps.loc[comps["block"] == "input", "shape"].tolist() == [f"{T}x{NUM_SYMBOLS}"]
    assert comps["shape"].iloc[-1] == str(NUM_CLASSES)
    assert sorted(set(comps["block"])) == sorted(
        {"input", "read-out", *(f"layer {i + 1}" for i in range(L))})


@pytest.mark.parametrize("scale", scales("figure1"))
@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_config_composes(scale, device):
    cfg = compose_config("figure1", [f"scale={scale}", f"device={device}"])
    assert cfg.device.name == device
    assert cfg.results_dir == "results" and cfg.tag == ""
    assert cfg.scale.seq_len >= 2 and cfg.scale.steps_shown >= 1


def test_has_smoke_small_and_paper_scales():
    assert {"smoke", "small", "paper"} <= set(scales("figure1"))


def test_paper_scale_draws_the_papers_model():
    cfg = compose_config("figure1", ["scale=paper"])
    assert cfg.scale.paper_settings and cfg.scale.seq_len == 1024
    mc, source = load_script("figure1").model_config(cfg)
    assert mc == paper_config("gilr_lstm", 1024).model and "paper_config" in source
    assert mc.hidden == 512 and mc.num_layers == 2


def test_paper_settings_need_a_paper_length(tmp_path):
    cfg = compose_config("figure1", [*SMOKE, "scale.paper_settings=true",
                                     f"results_dir={tmp_path}"])
    with pytest.raises(ValueError, match="paper's lengths"):
        load_script("figure1").run(cfg)


def test_smoke_run_writes_every_file(tmp_path):
    cfg = compose_config("figure1", [*SMOKE, f"results_dir={tmp_path}"])
    md = load_script("figure1").run(cfg)
    out = md.parent
    assert sorted(p.name for p in out.iterdir()) == [
        "figure1.csv", "figure1.json", "figure1.md", "figure1.png"]
    assert (out / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The CSV's sizes are those of a model built independently from the same config.
    comps = pd.read_csv(out / "figure1.csv", keep_default_na=False, dtype={"shape": str})
    assert {"block", "component", "kind", "name", "shape", "parameters"} <= set(comps.columns)
    model = _independent_model(cfg)
    assert model.body.hidden_size == cfg.scale.hidden == 8
    _check_sizes(comps, model, cfg.scale.seq_len)

    text = md.read_text()
    assert "## What is drawn" in text and "make_model(" in text and "hidden=8" in text
    assert "(CPU results)" in text and "commit:" in text
    meta = json.loads((out / "figure1.json").read_text())
    assert meta["figure"] == "figure1.png"
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())
    assert meta["model"]["hidden"] == 8 and meta["model"]["surrogate"] == "previous_step"
    # The examples come from the task's stream: one per class, x[0] is the marker symbol.
    assert sorted(e["label"] for e in meta["examples"]) == [0, 1]
    assert all(e["steps"][0] == 0 and e["symbols"][0] == 0 for e in meta["examples"])
    assert all(e["steps"][-1] == cfg.scale.seq_len - 1 for e in meta["examples"])


@pytest.mark.parametrize("overrides", [["scale=small"], ["scale=paper"],
                                       ["scale=paper", "scale.seq_len=1048576"],
                                       ["scale=small", "scale.num_layers=3",
                                        "scale.surrogate=same_step"]],
                         ids=lambda o: ",".join(o))
def test_listed_sizes_match_the_configured_model(overrides):
    """What each scale would draw, without drawing: the meta-device model's components."""
    script = load_script("figure1")
    cfg = compose_config("figure1", overrides)
    mc, _ = script.model_config(cfg)
    drawn = script.build_model(mc)
    assert all(p.is_meta for p in drawn.parameters())
    comps = script.components(drawn, cfg.scale.seq_len)
    model = _independent_model(cfg)
    _check_sizes(comps, model, cfg.scale.seq_len)
    assert drawn.body.surrogate == model.body.surrogate
    assert drawn.body.forget_bias == model.body.forget_bias
