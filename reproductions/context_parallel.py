"""Context parallelism: one long sequence split in time across 1, 2 and 4 processes.

    python reproductions/context_parallel.py                  # ranks 1, 2, 4; scale=small
    python reproductions/context_parallel.py scale=paper      # T = 2^24, the 1M-step GILR-LSTM
    python reproductions/context_parallel.py scale=smoke      # seconds, for tests
    python reproductions/context_parallel.py ranks=[1,2]      # other rank counts
    python reproductions/context_parallel.py launcher=env hydra/launcher=submitit_slurm \
        hydra.launcher.tasks_per_node=4 hydra.launcher.nodes=1 --multirun   # on SLURM

Beyond the paper: Algorithm 1 across processes (plrnn.distributed, torch.distributed with gloo on
CPU, nccl on CUDA). The script launches `torchrun --standalone --nproc-per-node=N` once per rank
count; every rank times the forward + backward of plrnn.distributed.linear_recurrence over
T x C steps (decays sigmoid(N(2, 1)), like forget gates) and a GILR-LSTM train step (2 layers,
64 units, batch 1; the paper's 1M-step task length at scale=paper, about 12 GB in one
process), and reports its peak memory,
its time, the bytes it exchanged and, up to `check_max_T`, how far its slice of the outputs and
gradients is from one process running the whole sequence. The 1-rank run is the single-process
baseline. On a machine with fewer cores than ranks, time cannot scale; the point is the memory
per rank and the bytes exchanged. Writes results/<machine>/context_parallel.{csv,md,png,json}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pandas as pd
import torch
import torch.distributed as dist
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import plrnn
import plrnn.distributed as cp
from plrnn.bench.tables import markdown_table
from plrnn.repro import Artifact, register_common, resolve_device, write_artifact
from plrnn.repro.config import (
    Common,
    ConfigError,
    one_line_errors,
    require,
    require_backend,
)

CHUNK = 1 << 16  # rows per generator seed: any rank regenerates any part of the sequence


@dataclass
class ContextParallelScale:
    op_lengths: list[int] = field(default_factory=lambda: [1 << 16, 1 << 20, 1 << 24])
    channels: int = 4
    model_T: int = 1 << 20  # 0: no GILR-LSTM step
    model_hidden: int = 64
    check_max_T: int = 1 << 20  # one process runs the whole sequence to check, up to here
    model_check_max_T: int = 1 << 18  # the same for the GILR-LSTM (about 12 KiB per step)
    repeats: int = 3


@dataclass
class ContextParallelConfig(Common):
    scale: ContextParallelScale = field(default_factory=ContextParallelScale)
    ranks: list[int] = field(default_factory=lambda: [1, 2, 4])
    backend: str = "auto"  # the local kernel
    # torchrun: launch `torchrun --standalone` per entry of `ranks` on this machine. env: this
    # process is one rank of a job someone else launched (srun, hydra/launcher=submitit_slurm
    # with hydra.launcher.tasks_per_node=N, an outer torchrun); `ranks` is then ignored.
    launcher: str = "torchrun"
    timeout_s: int = 1800  # per torchrun launch
    worker_out: str | None = None  # set by the driver: this process is a rank


def register() -> None:
    register_common()
    ConfigStore.instance().store(name="context_parallel_schema", node=ContextParallelConfig)


# -- data: the same sequence on every rank count ---------------------------------------------
def sequence(start: int, stop: int, channels: int, seed: int, device, extra: int = 0):
    """Rows [start, stop) of (decays, impulses, grad_h) of the whole sequence, whoever asks."""
    parts = []
    for c in range(start // CHUNK, -(-stop // CHUNK)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + c + extra)
        rows = torch.randn(3, CHUNK, channels, generator=g)
        lo, hi = max(start, c * CHUNK) - c * CHUNK, min(stop, (c + 1) * CHUNK) - c * CHUNK
        parts.append(rows[:, lo:hi])
    rows = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, channels)
    rows[0] = torch.sigmoid(rows[0] + 2.0)
    return [r.contiguous().to(device) for r in rows]


def shard(T: int, rank: int, world: int) -> tuple[int, int]:
    base, extra = divmod(T, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


# -- memory -----------------------------------------------------------------------------------
def reset_peak(device) -> str:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "torch.cuda.max_memory_allocated"
    try:  # Linux: writing 5 resets the peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
        return "peak resident set size (VmHWM, reset per case)"
    except OSError:
        return "peak resident set size of the process so far (VmHWM could not be reset)"


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _proc_status_bytes("VmHWM")


def resident_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _proc_status_bytes("VmRSS")


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


# -- the two cases, on one rank ---------------------------------------------------------------
def op_case(cfg, T: int, device, rank: int, world: int) -> dict:
    C, backend = cfg.scale.channels, cfg.backend
    start, stop = shard(T, rank, world)
    base = resident_bytes(device)
    how = reset_peak(device)
    a, x, w = sequence(start, stop, C, cfg.seed, device)
    a.requires_grad_()
    x.requires_grad_()
    times = []
    for i in range(cfg.scale.repeats + 1):  # round 0 warms up (and calibrates auto) untimed
        if i == 1:
            cp.comm_stats(reset=True)
        a.grad = x.grad = None
        dist.barrier()
        t0 = time.perf_counter()
        h = cp.linear_recurrence(a, x, backend=backend)
        h.backward(w)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    times = times[1:]
    stats = cp.comm_stats()
    row = dict(
        case="op",
        T=T,
        channels=C,
        shard_T=stop - start,
        time_s=sorted(times)[len(times) // 2],
        peak_bytes=peak_bytes(device),
        base_bytes=base,
        memory=how,
        comm_bytes=stats.sent // cfg.scale.repeats,
        comm_calls=stats.calls // cfg.scale.repeats,
        sequence_bytes=3 * T * C * 4,
    )
    if T <= cfg.scale.check_max_T:
        A, X, W = sequence(0, T, C, cfg.seed, device)
        A.requires_grad_()
        X.requires_grad_()
        H = plrnn.linear_recurrence(A, X, backend=backend)
        H.backward(W)
        row["err_h"] = rel_err(h.detach(), H.detach()[start:stop])
        row["err_grad"] = max(
            rel_err(a.grad, A.grad[start:stop]), rel_err(x.grad, X.grad[start:stop])
        )
    return row


def model_case(cfg, device, rank: int, world: int) -> dict:
    T, H, backend = cfg.scale.model_T, cfg.scale.model_hidden, cfg.backend
    start, stop = shard(T, rank, world)
    torch.manual_seed(cfg.seed)
    model = plrnn.GILRLSTM(1, H, num_layers=2, backend=backend).to(device)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    sharded = cp.shard_sequence(model)
    optimizer = torch.optim.SGD(sharded.parameters(), lr=1e-3)
    base = resident_bytes(device)
    how = reset_peak(device)
    x = sequence(start, stop, 1, cfg.seed, device, extra=7)[1].unsqueeze(1)  # (T_r, 1, 1)
    cp.comm_stats(reset=True)
    dist.barrier()
    t0 = time.perf_counter()
    out, _ = sharded(x)
    loss = out.square().mean() * (stop - start) / T  # the ranks' losses sum to the whole one
    loss.backward()
    cp.sync_gradients(sharded)
    grads = {n: p.grad.clone() for n, p in sharded.named_parameters()}
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    stats = cp.comm_stats()
    row = dict(
        case="GILR-LSTM train step",
        T=T,
        channels=H,
        shard_T=stop - start,
        time_s=elapsed,
        peak_bytes=peak_bytes(device),
        base_bytes=base,
        memory=how,
        comm_bytes=stats.sent,
        comm_calls=stats.calls,
        sequence_bytes=T * 4,
    )
    del out, loss, x
    if T <= cfg.scale.model_check_max_T and rank == 0:  # the same parameter gradients everywhere
        one = plrnn.GILRLSTM(1, H, num_layers=2, backend=backend).to(device)
        one.load_state_dict(reference)
        X = sequence(0, T, 1, cfg.seed, device, extra=7)[1].unsqueeze(1)
        one(X)[0].square().mean().backward()
        row["err_grad"] = max(rel_err(grads[n], p.grad) for n, p in one.named_parameters())
    return row


def rank_environment() -> None:
    """Sets the variables init_process_group reads where the launcher did not: under SLURM (srun,
    or Hydra's submitit launcher with tasks_per_node) through submitit, which finds the master
    node; a process started alone is a world of one."""
    if "RANK" in os.environ:  # torchrun, or a launcher that already set them
        return
    if "SLURM_PROCID" in os.environ:
        import submitit  # the `launchers` extra

        submitit.helpers.TorchDistributedEnvironment().export()
        return
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29511")


def check(cfg: DictConfig, world: int) -> None:
    """Refuses, before anything is timed, what would fail inside a rank (the driver checks for
    its largest rank count, so that no launch fails after others were measured)."""
    require(cfg, "scale.op_lengths", "scale.channels", "scale.model_hidden", "scale.repeats",
            "timeout_s", "device.threads")
    require(cfg, "scale.model_T", "scale.check_max_T", "scale.model_check_max_T", minimum=0)
    lengths = [*cfg.scale.op_lengths, *([cfg.scale.model_T] if cfg.scale.model_T else [])]
    if min(lengths) < world:  # a rank with no step of its own
        raise ConfigError(f"scale.op_lengths and scale.model_T must be at least the number of "
                          f"ranks, {world}; got {lengths}")
    require(cfg, "launcher", choices=("torchrun", "env"))
    require_backend(cfg, "backend", resolve_device(cfg.device))


def measure(cfg: DictConfig) -> list[dict]:
    """Every case on this rank of the process group the environment describes."""
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    check(cfg, world)
    if device.type == "cpu" and cfg.device.threads is None:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # ranks share the cores
    rows = [op_case(cfg, T, device, rank, world) for T in cfg.scale.op_lengths]
    if cfg.scale.model_T:
        rows.append(model_case(cfg, device, rank, world))
    return [dict(r, rank=rank, ranks=world, threads=torch.get_num_threads()) for r in rows]


def worker(cfg: DictConfig) -> None:
    """One rank under the driver's torchrun: its rows go to a file the driver reads."""
    rows = measure(cfg)
    out = Path(cfg.worker_out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(rows))
    dist.destroy_process_group()


def run_in_place(cfg: DictConfig) -> Path | None:
    """launcher=env: this process is already one rank of a job (srun, Hydra's submitit launcher,
    an outer torchrun); rank 0 gathers every rank's rows and writes the artifact for this one
    rank count."""
    started = time.perf_counter()
    rank_environment()
    rows = measure(cfg)
    everyone = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(rows, everyone, dst=0)
    written = None
    if dist.get_rank() == 0:
        written = write_results(cfg, [r for part in everyone for r in part], started)
    dist.destroy_process_group()
    return written


# -- the driver: one torchrun per rank count, then the artifact --------------------------------
def launch(cfg: DictConfig, ranks: int, out: Path) -> list[dict]:
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("ranks=")]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={ranks}",
        str(Path(__file__).resolve()),
        *overrides,
        f"worker_out={out}",
        f"hydra.run.dir={out}",
        "hydra.output_subdir=null",
    ]
    print(f"context_parallel: {ranks} rank(s): {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=True, timeout=cfg.timeout_s)
    return [row for f in sorted(out.glob("rank*.json")) for row in json.loads(f.read_text())]


def summarize(raw: pd.DataFrame) -> pd.DataFrame:
    for col in ("err_h", "err_grad"):
        if col not in raw:
            raw[col] = float("nan")
    one = raw[raw.ranks == 1].set_index("case_T")["peak_bytes"]
    columns = [
        "shard_T",
        "time_s",
        "peak_bytes",
        "case_bytes",
        "comm_bytes",
        "sequence_bytes",
        "err_h",
        "err_grad",
    ]
    agg = (
        raw.assign(case_bytes=raw.peak_bytes - raw.base_bytes)
        .groupby(["case", "T", "ranks"], sort=False)[columns]
        .max()
        .reset_index()
    )
    agg["case_T"] = agg["case"] + " " + agg["T"].astype(str)
    agg["peak vs 1 rank"] = agg["peak_bytes"] / agg["case_T"].map(one)
    agg["comm / sequence"] = agg["comm_bytes"] / agg["sequence_bytes"]
    return agg


def render(summary: pd.DataFrame) -> pd.DataFrame:
    mib = 1 << 20
    return pd.DataFrame(
        {
            "case": summary["case"],
            "T": summary["T"].map(
                lambda t: f"2^{t.bit_length() - 1}" if t & (t - 1) == 0 else str(t)
            ),
            "ranks": summary["ranks"],
            "steps per rank": summary["shard_T"],
            "peak MiB per rank": (summary["peak_bytes"] / mib).map("{:.0f}".format),
            "above start MiB": (summary["case_bytes"] / mib).map("{:.0f}".format),
            "of 1 rank's": summary["peak vs 1 rank"].map("{:.2f}".format),
            "time s (slowest rank)": summary["time_s"].map("{:.3f}".format),
            "bytes sent per rank": summary["comm_bytes"].map("{:,.0f}".format),
            "sent / sequence bytes": summary["comm / sequence"].map("{:.1e}".format),
            "max rel. error h": summary["err_h"].map(lambda v: "-" if pd.isna(v) else f"{v:.1e}"),
            "max rel. error grads": summary["err_grad"].map(
                lambda v: "-" if pd.isna(v) else f"{v:.1e}"
            ),
        }
    )


def figure(summary: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    data = summary.assign(
        **{"peak MiB per rank": summary["peak_bytes"] / (1 << 20), "case and T": summary["case_T"]}
    )
    grid = sns.catplot(
        data=data,
        x="case and T",
        y="peak MiB per rank",
        hue="ranks",
        kind="bar",
        height=3.2,
        aspect=2.2,
    )
    grid.set_xticklabels(rotation=20, ha="right")
    grid.figure.suptitle("Peak memory per rank, one sequence split across ranks", y=1.03)
    return grid.figure


def run(cfg: DictConfig) -> Path:
    require(cfg, "ranks")
    check(cfg, max(cfg.ranks))
    started = time.perf_counter()
    scratch = Path(HydraConfig.get().runtime.output_dir) / "ranks"
    rows = []
    for n in cfg.ranks:
        rows += launch(cfg, n, scratch / f"n{n}")
    return write_results(cfg, rows, started)


def write_results(cfg: DictConfig, rows: list[dict], started: float) -> Path:
    device = resolve_device(cfg.device)
    raw = pd.DataFrame(rows)
    raw["case_T"] = raw["case"] + " " + raw["T"].astype(str)
    summary = summarize(raw)
    body = "\n".join(
        [
            markdown_table(render(summary)),
            "",
            f"Ranks are processes on this machine (gloo on CPU, nccl on GPU); per row the largest "
            f"value over ranks. Peak memory: {raw['memory'].iloc[0]}, whole process (torch itself "
            f"included); above start: that peak minus the process's size before the case's tensors "
            f"were made. Bytes sent: tensor payload this rank contributes times the ranks receiving "
            f"it, per forward + backward (plrnn.distributed.comm_stats), against the sequence's "
            f"own bytes (decays, impulses, grad_h). Errors: this rank's slice against one process on "
            f"the whole sequence (float32, same backend), up to T = {cfg.scale.check_max_T}. Time is "
            f"the slowest rank's forward + backward; ranks share {os.cpu_count()} cores here, so it "
            f"cannot scale.",
        ]
    )
    artifact = Artifact(
        name="context_parallel",
        title="Context parallelism: one sequence across processes",
        raw=raw,
        body=body,
        figure=figure(summary),
        meta={"ranks": list(cfg.ranks)},
    )
    return write_artifact(artifact, cfg, device, time.perf_counter() - started)


register()


@hydra.main(config_path="conf/context_parallel", config_name="context_parallel", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    if cfg.worker_out:
        worker(cfg)
    elif cfg.launcher == "env":
        written = run_in_place(cfg)
        if written is not None:
            print(written)
    elif cfg.launcher == "torchrun":
        print(run(cfg))
    else:
        raise ConfigError(f"launcher must be one of 'torchrun', 'env'; got {cfg.launcher!r}")


if __name__ == "__main__":
    main()
