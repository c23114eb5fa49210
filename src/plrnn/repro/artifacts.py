"""Result files of a reproduction: results/<machine>/<name>.{csv,md,png,json}, written atomically.

All four files are first written to temporary names in the target directory and then moved over
the old ones with os.replace, so an interrupted run leaves the previous result intact (and never a
CSV from one run beside the Markdown of another, unless the process dies between the renames).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from plrnn.bench.machine import machine_info, machine_name


@dataclass
class Artifact:
    name: str  # "table1": the file stem before the tag
    title: str  # first heading of the Markdown
    raw: pd.DataFrame  # every measurement, one row each -> <name>.csv
    body: str  # Markdown after the header: our table beside the paper's, notes
    figure: object | None = None  # a matplotlib Figure -> <name>.png
    meta: dict = field(default_factory=dict)  # extra metadata -> <name>.json


def _hydra():
    return HydraConfig.get() if HydraConfig.initialized() else None


def file_tag(cfg: DictConfig) -> str:
    """What follows the name in this run's file names: cfg.tag, then in a job of a multirun (-m)
    its overrides ("-seed=1", or "x-seed=1" for `-m tag=x seed=0,1`), so that the jobs of one
    sweep do not overwrite each other's files."""
    tag = cfg.tag
    hc = _hydra()
    if hc is not None and hc.mode == RunMode.MULTIRUN and hc.job.override_dirname:
        # The config's exclude_keys leave tag, results_dir and the like out of override_dirname.
        job = "-" + re.sub(r"[^A-Za-z0-9=,._-]+", "_", hc.job.override_dirname)
        # Once only: table3 hands its finished tag on to the Figure 2 it draws in this job.
        if not tag.endswith(job):
            tag += job
    return tag


def command_line() -> str:
    hc = _hydra()
    if hc is None:
        return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return " ".join(["python", str(script), *hc.overrides.task])


def results_dir(cfg: DictConfig, device) -> Path:
    return Path(to_absolute_path(cfg.results_dir)) / machine_name(device)


def header(title: str, info: dict, cfg: DictConfig, device, elapsed_s: float) -> str:
    commit = info["git_commit"] or "unknown"
    if info["git_dirty"]:
        commit += " (with uncommitted changes)"
    gpu = info.get("gpu")
    hardware = (f"GPU {gpu['name']} (driver {gpu['driver']}, CUDA {gpu['cuda_runtime']}); "
                if gpu and str(device).startswith("cuda") else "")
    hardware += (f"CPU {info['cpu']}, {info['logical_cores']} logical cores, "
                 f"{info['torch_threads']} torch threads")
    lines = [
        f"# {title}",
        "",
        f"- machine: `{machine_name(device)}` ({'GPU' if device.type == 'cuda' else 'CPU'} "
        f"results): {hardware}",
        f"- torch {info['torch_version']}, Python {info['python_version']}, {info['platform']}",
        f"- commit: {commit}",
        f"- date (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}; run time "
        f"{elapsed_s:.0f} s; load average at the end (1/5/15 min): "
        + "/".join(f"{v:.1f}" for v in _loadavg())
        + f" on {info['logical_cores']} cores (other processes on the cores make timings noisy)",
        f"- command: `{command_line()}`",
        f"- config: `{json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True)}`",
    ]
    return "\n".join(lines)


_UMASK = os.umask(0)
os.umask(_UMASK)


def _loadavg() -> tuple[float, ...]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def _atomic_texts(files: dict[Path, bytes]) -> None:
    staged = []
    try:
        for path, data in files.items():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for everyone
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            staged.append((tmp, path))
        for tmp, path in staged:
            os.replace(tmp, path)
        staged = []
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def _png_bytes(figure) -> bytes:
    import io

    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def _close(figure) -> None:
    """Frees a written figure: pyplot keeps every figure until closed, so the jobs of a multirun
    in one process (the basic launcher) would pile them up."""
    from matplotlib.figure import Figure

    if isinstance(figure, Figure):
        import matplotlib.pyplot as plt

        plt.close(figure)


def write_artifact(artifact: Artifact, cfg: DictConfig, device, elapsed_s: float) -> Path:
    """Writes the artifact's files under results/<machine>/ and returns the .md path."""
    out = results_dir(cfg, device)
    out.mkdir(parents=True, exist_ok=True)
    stem = artifact.name + file_tag(cfg)
    info = machine_info()
    meta = {
        "name": artifact.name,
        "title": artifact.title,
        "machine_name": machine_name(device),
        "device": str(device),
        "machine": info,
        "command": command_line(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "elapsed_s": elapsed_s,
        "loadavg_at_end": _loadavg(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "figure": f"{stem}.png" if artifact.figure is not None else None,
        **artifact.meta,
    }
    text = header(artifact.title, info, cfg, device, elapsed_s) + "\n\n" + artifact.body.strip()
    files = {
        out / f"{stem}.csv": artifact.raw.to_csv(index=False).encode(),
        out / f"{stem}.md": (text + "\n").encode(),
        out / f"{stem}.json": (json.dumps(meta, indent=2, default=str) + "\n").encode(),
    }
    if artifact.figure is not None:
        files[out / f"{stem}.png"] = _png_bytes(artifact.figure)
    _atomic_texts(files)
    _close(artifact.figure)
    print(f"wrote {out / stem}.{{{','.join(p.suffix[1:] for p in files)}}}")
    return out / f"{stem}.md"
