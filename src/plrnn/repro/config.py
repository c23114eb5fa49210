"""Hydra config pieces shared by every reproduction: the `device` group and the common keys.

Each script's own schema (a dataclass) embeds `Common` and a `scale` section; the `device` group
lives in the ConfigStore here, so every script offers `device=auto|cpu|cuda` without a YAML copy.
Also what every script shows on the command line: a refused value as one line (`ConfigError`,
`one_line_errors`) and progress bars only on a terminal (`progress`).
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config value (or a missing input) a script refuses before it measures anything.

    Run from the shell (`one_line_errors`), it is one line on stderr and exit status 2, like a
    usage error, instead of a traceback; called from Python it is an ordinary ValueError.
    """


class NoGPU(ConfigError, RuntimeError):
    """device=cuda where torch sees no GPU (a RuntimeError too, as it always was)."""


class MissingInput(ConfigError, FileNotFoundError):
    """A script that reads another's results found none (a FileNotFoundError too)."""


def one_line_errors(main: Callable) -> Callable:
    """Wraps a script's Hydra main: a ConfigError ends the command with one line on stderr,
    `<script>: error: <message>`, and exit status 2; every other exception keeps its traceback.

    In a job of a multirun (-m) the line is printed and the error raised on, so that Hydra runs
    the sweep's other jobs and reports the failure at the end, as it does for any failed job.
    """

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except ConfigError as err:
            print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr, flush=True)
            if _in_multirun():
                raise
            raise SystemExit(2) from None

    return wrapped


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def progress(iterable, cfg: DictConfig, **kwargs):
    """A tqdm bar over `iterable` when cfg.progress and stderr is a terminal; none otherwise
    (a log file or a pipe would get every redraw of the bar)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=None if cfg.progress else True, **kwargs)


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
    # Appended to the artifact name (table1<tag>.csv); a multirun job appends its overrides.
    tag: str = ""
    seed: int = 0
    progress: bool = True


def register_common(cs: ConfigStore | None = None) -> None:
    cs = cs or ConfigStore.instance()
    for name in ("auto", "cpu", "cuda"):
        cs.store(group="device", name=name, node=DeviceConfig(name=name))


def require(cfg: DictConfig, *keys: str, minimum: float | None = None,
            choices: Collection | None = None) -> None:
    """Raises a ValueError naming the first of `keys` (dotted, as on the command line) whose
    value is out of range: each must be > 0, or >= `minimum`, or one of `choices`; a list must be
    non-empty and hold only such values. None, an optional key left unset, passes.

    Hydra checks the types only: a zero round count or a negative length would otherwise fail deep
    in torch or pandas, or write an empty table, after the measuring has begun.
    """
    for key in keys:
        value = OmegaConf.select(cfg, key, default=KeyError)
        if value is KeyError:
            raise KeyError(f"no config key {key!r}")  # a typo in the script's own list
        if value is None:
            continue
        many = isinstance(value, ListConfig)
        values = list(value) if many else [value]
        whole = all(isinstance(v, int) for v in values)
        if choices is not None:
            fits = [v in choices for v in values]
            allowed = "one of " + ", ".join(map(repr, choices))
        elif minimum is None:
            fits = [v > 0 for v in values]
            allowed = "a positive " + ("integer" if whole else "number")
        else:
            fits = [v >= minimum for v in values]
            allowed = ("an integer" if whole else "a number") + f" >= {minimum}"
        if not values or not all(fits):
            shown = OmegaConf.to_container(value) if many else value
            what = f"a non-empty list, each item {allowed}" if many else allowed
            raise ConfigError(f"{key} must be {what}; got {shown!r}")


def resolve_device(cfg: DeviceConfig) -> torch.device:
    """The torch.device for cfg.name; a clear error when CUDA is asked for and absent."""
    name = cfg.name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device.name must be auto, cpu or cuda, got {cfg.name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise NoGPU(
            "device=cuda was requested but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use device=cpu"
        )
    if name == "cpu" and cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    return torch.device(name)


def require_backend(cfg: DictConfig, key: str, device: torch.device) -> None:
    """`key` names a recurrence backend ("auto" or one of plrnn.backends()) that runs on
    `device`; a ConfigError naming the key otherwise, before anything is built or timed."""
    import plrnn

    name = OmegaConf.select(cfg, key)
    if name == "auto":
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a backend's fallback; reported below
        status = {s.name: s for s in plrnn.backends(device)}
    if name not in status:
        known = ", ".join(repr(n) for n in ("auto", *status))
        raise ConfigError(f"{key} must be one of {known}; got {name!r}")
    if not status[name].available:
        raise ConfigError(f"{key}={name} does not run on {device.type}: {status[name].reason}")
