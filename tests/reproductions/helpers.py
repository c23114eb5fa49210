"""Load a reproduction script as a module and compose its config with Hydra's compose API."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPRO = Path(__file__).resolve().parents[2] / "reproductions"


def load_script(name: str):
    """reproductions/<name>.py as a module (registering its schemas), loaded once per session."""
    key = f"reproductions_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPRO / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def compose_config(name: str, overrides: list[str] = ()) -> DictConfig:
    load_script(name)
    with initialize_config_dir(config_dir=str(REPRO / "conf" / name), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def scales(name: str) -> list[str]:
    return sorted(p.stem for p in (REPRO / "conf" / name / "scale").glob("*.yaml"))
