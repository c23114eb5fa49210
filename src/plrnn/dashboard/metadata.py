"""<name>.json metadata -> compact definition lists.

The files come from several scripts, so nothing here assumes more than the shared convention:
a "machine" dict from plrnn.bench.machine_info() and a "config" dict, both optional.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

# The hardware facts shown once per machine, in this order, with their labels.
MACHINE_FACTS = (
    ("cpu", "CPU"),
    ("logical_cores", "logical cores"),
    ("usable_cores", "usable cores"),
    ("torch_parallel_backend", "torch threading"),
    ("platform", "platform"),
)


class MetadataError(ValueError):
    pass


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"{path.name} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MetadataError(f"{path.name} holds a JSON {type(data).__name__}, not an object")
    return data


def _scalar(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def definition_list(data: dict, css_class: str = "meta") -> str:
    """Nested dicts become nested lists; lists of scalars one comma-separated line; anything
    else compact JSON."""
    parts = [f'<dl class="{css_class}">']
    for key, value in data.items():
        parts.append(f"<dt>{html.escape(str(key))}</dt>")
        if isinstance(value, dict) and value:
            parts.append(f"<dd>{definition_list(value, css_class)}</dd>")
        elif isinstance(value, list) and all(_is_scalar(v) for v in value):
            parts.append(f"<dd>{html.escape(', '.join(_scalar(v) for v in value)) or '[]'}</dd>")
        elif _is_scalar(value):
            parts.append(f"<dd>{html.escape(_scalar(value))}</dd>")
        else:
            text = json.dumps(value, separators=(",", ":"), sort_keys=True)
            parts.append(f"<dd><code>{html.escape(text)}</code></dd>")
    parts.append("</dl>")
    return "".join(parts)


def gpu_text(gpu) -> str:
    if not gpu:
        return "none"
    if isinstance(gpu, dict):
        bits = [str(gpu.get("name") or "unnamed GPU")]
        if gpu.get("count") and gpu["count"] != 1:
            bits.append(f"x{gpu['count']}")
        if gpu.get("driver"):
            bits.append(f"driver {gpu['driver']}")
        if gpu.get("cuda_runtime"):
            bits.append(f"CUDA {gpu['cuda_runtime']}")
        return ", ".join(bits)
    return str(gpu)


def machine_facts(data: dict) -> dict[str, str]:
    machine = data.get("machine")
    if not isinstance(machine, dict):
        return {}
    facts = {label: _scalar(machine[key]) for key, label in MACHINE_FACTS if key in machine}
    if "gpu" in machine:
        facts["GPU"] = gpu_text(machine["gpu"])
    return facts


def run_facts(data: dict) -> dict[str, str]:
    """What distinguishes one run from another on the same machine: commit, versions, device."""
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    facts = {}
    commit = machine.get("git_commit", data.get("git_commit"))
    if commit:
        dirty = machine.get("git_dirty", data.get("git_dirty"))
        facts["commit"] = str(commit)[:12] + (" (uncommitted changes)" if dirty else "")
    for key, label in (("torch_version", "torch"), ("python_version", "Python")):
        value = machine.get(key, data.get(key))
        if value:
            facts[label] = str(value)
    device = stated_device_text(data)  # a reproduction's config holds its request, not this
    if device:
        facts["device"] = device
    if config.get("dtype"):
        facts["dtype"] = str(config["dtype"])
    for key in ("date", "date_utc", "timestamp", "measurement_seconds"):
        if _is_scalar(data.get(key)) and data.get(key) is not None:
            facts[key.replace("_", " ")] = _scalar(data[key])
    return facts


def stated_device_text(data: dict) -> str | None:
    """The device string the metadata records, e.g. 'cpu' or 'cuda:0'.

    The benchmark scripts write it as config.device; the reproductions keep their device
    *request* there ({"name": "auto", ...}) and the device actually used at the top level.
    """
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    for device in (config.get("device"), data.get("device")):
        if isinstance(device, str):
            return device
    return None


def stated_device(data: dict) -> str | None:
    """'cpu' or 'gpu' when the metadata says which device the numbers came from."""
    device = stated_device_text(data)
    if device is None:
        return None
    if device.startswith("cuda"):
        return "gpu"
    if device.startswith("cpu"):
        return "cpu"
    return None
