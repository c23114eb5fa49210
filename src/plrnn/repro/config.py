"""Hydra config pieces shared by every reproduction: the `device` group and the common keys.

Each script's own schema (a dataclass) embeds `Common` and a `scale` section; the `device` group
lives in the ConfigStore here, so every script offers `device=auto|cpu|cuda` without a YAML copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from hydra.core.config_store import ConfigStore


@dataclass
class DeviceConfig:
    # "auto": CUDA when a GPU is visible, else the CPU.
    name: str = "auto"
    # CPU threads for torch; null keeps torch's default (one per core).
    threads: int | None = None


@dataclass
class Common:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    # Where results/<machine>/ goes; relative paths are taken from the directory the command ran in.
    results_dir: str = "results"
    # Appended to the artifact name (table1<tag>.csv); multirun jobs get their overrides by default.
    tag: str = ""
    seed: int = 0
    progress: bool = True


def register_common(cs: ConfigStore | None = None) -> None:
    cs = cs or ConfigStore.instance()
    for name in ("auto", "cpu", "cuda"):
        cs.store(group="device", name=name, node=DeviceConfig(name=name))


def resolve_device(cfg: DeviceConfig) -> torch.device:
    """The torch.device for cfg.name; a clear error when CUDA is asked for and absent."""
    name = cfg.name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device.name must be auto, cpu or cuda, got {cfg.name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device=cuda was requested but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use device=cpu"
        )
    if name == "cpu" and cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    return torch.device(name)
