"""The run configs: usable as OmegaConf structured configs, the paper's Table 3 settings."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from plrnn.tasks import ModelConfig, RunConfig, paper_config, resolve_device, resolve_dtype


def test_configs_are_structured_configs():
    base = OmegaConf.structured(RunConfig)
    merged = OmegaConf.merge(base, OmegaConf.from_dotlist(
        ["seq_len=256", "model.kind=lstm", "model.forget_bias=null", "train.max_wall_time_s=60",
         "log_path=runs/x.csv"]))
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, RunConfig)
    assert cfg.seq_len == 256 and cfg.model.kind == "lstm" and cfg.train.max_wall_time_s == 60.0
    assert cfg.log_path == "runs/x.csv"


# Table 3 as printed in the paper (section 4), per length: units, batch, cuDNN LSTM clip.
PAPER = {1024: (512, 8, 100.0), 8192: (512, 4, 10.0), 1_048_576: (64, 1, 2.0)}


@pytest.mark.parametrize("seq_len", sorted(PAPER))
def test_paper_settings(seq_len):
    hidden, batch, lstm_clip = PAPER[seq_len]
    gilr = paper_config("gilr_lstm", seq_len)
    lstm = paper_config("lstm", seq_len, seed=3, device="cpu")
    for cfg in (gilr, lstm):
        assert (cfg.seq_len, cfg.batch_size, cfg.model.hidden, cfg.model.num_layers) == (
            seq_len, batch, hidden, 2)
        assert cfg.train.lr == 1e-4
        assert (cfg.train.window, cfg.train.check_every) == (5, 1)
    assert gilr.train.clip == 20.0 and lstm.train.clip == lstm_clip
    assert lstm.seed == 3 and lstm.device == "cpu"
    driver = paper_config("gilr_lstm", seq_len, window="driver")
    assert driver.train.check_every == 10
    assert driver.train.window == {1024: 20, 8192: 50, 1_048_576: 75}[seq_len]


def test_paper_config_overrides_any_run_field():
    small = ModelConfig("lstm", hidden=8)
    config = paper_config("lstm", 1024, batch_size=2, model=small, device="cpu")
    assert (config.batch_size, config.model, config.device) == (2, small, "cpu")
    assert config.seq_len == 1024


@pytest.mark.parametrize(
    ("args", "name"),
    [(("gru", 1024), "kind"), (("lstm", 1000), "seq_len")],
)
def test_paper_config_rejects_unknown_settings(args, name):
    with pytest.raises(ValueError, match=name):
        paper_config(*args)
    with pytest.raises(ValueError, match="window"):
        paper_config("lstm", 1024, window="longest")


def test_resolve_helpers():
    assert resolve_dtype("float64") is torch.float64 and resolve_dtype(torch.bfloat16) is torch.bfloat16
    for bad in ("int32", "nonsense", "Tensor"):
        with pytest.raises(ValueError, match="dtype"):
            resolve_dtype(bad)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu0", None, 3.5):
        with pytest.raises(ValueError, match="device must be 'auto' or a torch device string"):
            resolve_device(bad)
    for bad in ("meta", torch.device("meta")):  # a device without data: nothing to train
        with pytest.raises(ValueError, match="a CPU or a CUDA device; got"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")
