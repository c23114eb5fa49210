"""Where a benchmark ran: machine_info() for the result files, machine_name() for results/<name>/.

Nothing here records the hostname or user; only hardware, software versions and the commit.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

from plrnn.recurrence.contention import usable_cpus

_REPO_DIR = Path(__file__).resolve().parent


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(
            cmd, cwd=_REPO_DIR, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        brand = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if brand:
            return brand
    return platform.processor() or platform.machine() or "unknown-cpu"


def git_commit() -> dict:
    """{'commit': sha or None, 'dirty': bool or None} of the checkout this package runs from.

    Dirty means changed code: results/ is left out, since earlier benchmark outputs land there.
    PLRNN_GIT_COMMIT, where set, names the commit instead (dirty then unknown): a copy of the tree
    sent to another machine can carry older git metadata than its files (the lent GPU machine's
    did).
    """
    given = os.environ.get("PLRNN_GIT_COMMIT", "").strip()
    if given:
        return {"commit": given, "dirty": None}
    sha = _run(["git", "rev-parse", "HEAD"])
    if sha is None:
        return {"commit": None, "dirty": None}
    # Pathspecs from the top of the work tree: git runs in this package's folder, where "."
    # would cover src/plrnn/bench alone.
    status = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                   ":(top,exclude)results"])
    return {"commit": sha, "dirty": bool(status)}


def gpu_info() -> dict | None:
    if not torch.cuda.is_available():
        return None
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return {
        "name": torch.cuda.get_device_name(0),
        "count": torch.cuda.device_count(),
        "driver": driver.splitlines()[0] if driver else None,
        "cuda_runtime": torch.version.cuda,
    }


def steal_seconds(stat: str = "/proc/stat") -> float:
    """CPU seconds the hypervisor has taken from this VM's CPUs since boot, all CPUs summed
    (/proc/stat's steal column); nan where the system does not say."""
    try:
        with open(stat) as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def _parallel_backend() -> str | None:
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend"):
            return line.partition(":")[2].strip()
    return None


def machine_info() -> dict:
    usable = usable_cpus()
    git = git_commit()
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_parallel_backend": _parallel_backend(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "gpu": gpu_info(),
    }


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    text = text.split("@")[0]  # "... CPU @ 2.40GHz"
    text = re.sub(r"\b(processor|cpu|\d+-core|with radeon graphics)\b", " ", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:40].rstrip("-") or "unknown"


def _cpuid() -> tuple[str, int, int, int] | None:
    """(vendor, family, model, stepping) from /proc/cpuinfo (x86 Linux), or None."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        return (fields["vendor_id"], int(fields["cpu family"]), int(fields["model"]),
                int(fields.get("stepping", "0")))
    except (OSError, KeyError, ValueError):
        return None


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return set(value.split())
    except OSError:
        pass
    return set()


def microarchitecture() -> str | None:
    """The core's generation ('skylake-sp', 'sapphirerapids', 'zen3', ...), from CPUID family
    and model: cloud VMs report model names like 'Intel Xeon Processor' or 'AMD EPYC' that are
    the same across generations whose kernels' speed differs by 2x. Some hypervisors also
    report a model number of another generation (a Sapphire Rapids VM seen as model 167, a
    client Rocket Lake that has no AMX), so an Intel model missing from the table is told by
    the instructions that only one generation added. 'f<family>m<model>' otherwise; None off
    x86 Linux."""
    ident = _cpuid()
    if ident is None:
        return None
    vendor, family, model, stepping = ident
    if vendor == "GenuineIntel" and family == 6:
        if model == 85:
            return "skylake-sp" if stepping <= 4 else "cascadelake" if stepping <= 7 else "cooperlake"
        intel = {63: "haswell", 79: "broadwell", 106: "icelake-sp", 108: "icelake-sp",
                 143: "sapphirerapids", 207: "emeraldrapids", 173: "graniterapids"}
        if model in intel:
            return intel[model]
        flags = _cpu_flags()
        if "amx_fp16" in flags:
            return "graniterapids"
        if "amx_tile" in flags:  # Sapphire and Emerald Rapids share the core
            return "sapphirerapids"
    if vendor == "AuthenticAMD":
        if family == 23:
            return "zen2" if model >= 0x30 else "zen1"
        if family == 25:
            return "zen4" if 0x10 <= model < 0x20 or model >= 0x60 else "zen3"
        if family == 26:
            return "zen5"
    return f"f{family}m{model}"


def machine_name(device: str | torch.device = "cpu") -> str:
    """Slug for results/<name>/ and asv's machine name: 'cpu-<model>-<microarchitecture>-<n>c'
    (e.g. 'cpu-intel-xeon-skylake-sp-2c'), or 'cuda-<gpu>' (e.g. 'cuda-nvidia-h200') when
    `device` is a CUDA device. (results/cpu-amd-epyc-2c/ predates the microarchitecture part.)"""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return "cuda-" + _slug(torch.cuda.get_device_name(device))
    uarch = microarchitecture()
    model = _slug(cpu_model())
    if uarch and uarch not in model:
        model = f"{model}-{uarch}"
    return f"cpu-{model}-{os.cpu_count()}c"


def register_asv(name: str) -> None:
    """Describes this machine to asv under `name` (~/.asv-machine.json), with asv's own reading
    of its OS, architecture, CPU, cores and memory. `asv machine --yes --machine NAME` records
    the name alone in asv 0.6 (it keeps only the fields that differ from its defaults), so the
    results' machine.json had none of them and asv's graphs filed every run under "null"."""
    from asv.machine import Machine, MachineCollection

    MachineCollection.save(name, {**Machine.get_defaults(), "machine": name})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m plrnn.bench.machine",
        description="Print this machine's name: the folder results/<name>/ and asv's machine "
                    "name.")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: the GPU's name (cuda-<gpu>), as the GPU results are filed")
    parser.add_argument("--register-asv", action="store_true",
                        help="also describe this machine to asv under that name, with its OS, "
                             "architecture, CPU, cores and memory (register_asv)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible here")
    name = machine_name(args.device)
    if args.register_asv:
        register_asv(name)
    print(name)


if __name__ == "__main__":
    main()
