"""plrnn.repro.artifacts: the four files, atomically, with their header and metadata."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from plrnn.repro import Artifact, write_artifact
from plrnn.repro import artifacts as artifacts_module
from plrnn.repro.config import Common


def _cfg(tmp_path, tag=""):
    return OmegaConf.merge(OmegaConf.structured(Common), {"results_dir": str(tmp_path), "tag": tag})


def _artifact(value: float, figure=None) -> Artifact:
    return Artifact(name="demo", title="Demo table", raw=pd.DataFrame({"x": [value]}),
                    body="## Part\n\n| a |\n|---|\n| 1 |", figure=figure, meta={"extra": value})


def test_files_header_and_metadata(tmp_path):
    md = write_artifact(_artifact(1.5), _cfg(tmp_path), torch.device("cpu"), elapsed_s=2.0)
    out = md.parent
    assert sorted(p.name for p in out.iterdir()) == ["demo.csv", "demo.json", "demo.md"]
    text = md.read_text()
    assert text.startswith("# Demo table\n")
    for needle in ("- machine: `cpu-", "(CPU results)", "- torch ", "- commit: ", "- config: ",
                   "## Part"):
        assert needle in text
    meta = json.loads((out / "demo.json").read_text())
    assert meta["extra"] == 1.5 and meta["device"] == "cpu" and meta["figure"] is None
    assert meta["machine"]["torch_version"] == torch.__version__
    assert pd.read_csv(out / "demo.csv")["x"].tolist() == [1.5]


def test_tag_names_the_files(tmp_path):
    md = write_artifact(_artifact(1.0), _cfg(tmp_path, tag="-x"), torch.device("cpu"), 0.0)
    assert md.name == "demo-x.md"


def test_interrupted_write_keeps_the_previous_result(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    md = write_artifact(_artifact(1.0), cfg, torch.device("cpu"), 0.0)
    before = {p.name: p.read_bytes() for p in md.parent.iterdir()}

    def boom(figure):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts_module, "_png_bytes", boom)
    with pytest.raises(KeyboardInterrupt):
        write_artifact(_artifact(2.0, figure=object()), cfg, torch.device("cpu"), 0.0)
    after = {p.name: p.read_bytes() for p in md.parent.iterdir()}
    assert after == before  # nothing replaced, no temporary file left behind


def test_a_failed_rename_leaves_no_temporary_files(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    real_replace = artifacts_module.os.replace

    def fail_on_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(artifacts_module.os, "replace", fail_on_json)
    with pytest.raises(OSError, match="disk full"):
        write_artifact(_artifact(1.0), cfg, torch.device("cpu"), 0.0)
    leftovers = [p.name for p in tmp_path.rglob("*.tmp")]
    assert leftovers == []
