"""Figure 1 of the paper: (a) the synthetic long-dependency task, (b) the two-layer GILR-LSTM.

    python reproductions/figure1.py                 # scale=small: table3.py's CPU model, T = 1,024
    python reproductions/figure1.py scale=paper     # the paper's setting (512 units at T = 1,024)
    python reproductions/figure1.py scale=paper scale.seq_len=1048576   # 64 units at 1M steps

A diagram, no measurement. The model is built (on the meta device: shapes without memory) with
plrnn.tasks.make_model from the scale's configuration, or from plrnn.tasks.paper_config when
scale.paper_settings is true, and every size on the drawing is read from that instance: hidden
size, input width, classes, parameter counts, the surrogate the gates read. The example
sequences of panel (a) come from the task's own generator (plrnn.tasks.SyntheticBatches).
Writes results/<machine>/figure1.{csv,md,png,json}; the CSV lists the drawn components.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pandas as pd
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from plrnn.bench.tables import markdown_table
from plrnn.layers.gilr_lstm import SURROGATES
from plrnn.repro import Artifact, register_common, resolve_device, write_artifact
from plrnn.repro.config import Common, ConfigError, one_line_errors, require
from plrnn.tasks import (
    NUM_CLASSES,
    NUM_SYMBOLS,
    PAPER_LENGTHS,
    ModelConfig,
    SyntheticBatches,
    make_model,
    paper_config,
)

ELLIPSIS = None  # a gap in a list of drawn time steps

# Colours: per-step (time-parallel) dense work, the two linear recurrences (parallel scans),
# the input and the read-out.
STEP = ("#dbe9f6", "#3b6ea5")
SCAN = ("#fde3c8", "#d9781a")
INPUT = ("#eeeeee", "#777777")
HEAD = ("#d9f0d3", "#3a8a3a")
PLUS, MINUS = "#c0392b", "#2e6fb7"


@dataclass
class Figure1Scale:
    seq_len: int = 1024  # T of the drawn task (and of paper_config when paper_settings)
    # True: the model of plrnn.tasks.paper_config("gilr_lstm", seq_len) (seq_len must be one of
    # the paper's lengths); the four model fields below are then unused.
    paper_settings: bool = False
    hidden: int = 64
    num_layers: int = 2
    forget_bias: float | None = 10.0  # None: the layer's default
    surrogate: str | None = None  # None: the layer's default (the paper's s[t-1])
    steps_shown: int = 5  # leading steps of each example sequence drawn before the gap


@dataclass
class Figure1Config(Common):
    scale: Figure1Scale = field(default_factory=Figure1Scale)


def register() -> None:
    register_common()
    ConfigStore.instance().store(name="figure1_schema", node=Figure1Config)


def model_config(cfg: DictConfig) -> tuple[ModelConfig, str]:
    """The drawn model's configuration, and where it comes from (for the Markdown)."""
    s = cfg.scale
    if s.paper_settings:
        return (paper_config("gilr_lstm", s.seq_len).model,
                f'plrnn.tasks.paper_config("gilr_lstm", {s.seq_len}).model')
    return (ModelConfig(kind="gilr_lstm", hidden=s.hidden, num_layers=s.num_layers,
                        forget_bias=s.forget_bias, surrogate=s.surrogate),
            "the scale's model fields")


def build_model(mc: ModelConfig, device: torch.device | str = "meta"):
    """plrnn.tasks.make_model for mc; on the meta device nothing is allocated."""
    with torch.device(device):
        return make_model(mc.kind, mc.hidden, mc.num_layers, backend=mc.backend,
                          forget_bias=mc.forget_bias, surrogate=mc.surrogate, device=device)


def _shape(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def components(model, seq_len: int) -> pd.DataFrame:
    """One row per drawn component, sizes read from the model.

    Parameters are the rows with a `name` (model.named_parameters()); the other rows are the
    per-sequence activations the diagram shows (T x width; a batch adds a B axis).
    """
    rows = []

    def add(block, component, kind, shape, name="", parameters=0):
        rows.append({"block": block, "component": component, "kind": kind, "name": name,
                     "shape": _shape(shape), "parameters": parameters})

    def params(block, component, module, prefix):
        for pname, p in module.named_parameters():
            add(block, f"{component} ({pname})", "parameter", p.shape, f"{prefix}.{pname}",
                p.numel())

    body, head = model.body, model.head
    T = seq_len
    add("input", "x[t]: one-hot symbols", "activation", (T, body.input_size))
    for i, layer in enumerate(body.layers):
        block, prefix = f"layer {i + 1}", f"body.layers.{i}"
        H = layer.gates.out_features // 4
        params(block, "GILR input map V: x -> [g, j]", layer.gilr, f"{prefix}.gilr")
        add(block, "linear recurrence 1: s[t] = g*s[t-1] + (1-g)*j", "parallel scan", (T, H))
        params(block, "gates W: [s, x] -> [f, i, o, z]", layer.gates, f"{prefix}.gates")
        add(block, "linear recurrence 2: c[t] = f*c[t-1] + i*z", "parallel scan", (T, H))
        add(block, "output h[t] = o*c[t]", "activation", (T, H))
    params("read-out", "head: h[T-1] -> logits", head, "head")
    add("read-out", "logits at the last step", "activation", (head.out_features,))
    return pd.DataFrame(rows)


def examples(seq_len: int, seed: int) -> list[dict]:
    """Two sequences of the task's own stream (one of each class): symbol per step, label."""
    batch = SyntheticBatches(seq_len, 2, seed=seed).next_batch()
    out = []
    for b in sorted(range(2), key=lambda b: int(batch.labels[b])):
        out.append({"label": int(batch.labels[b]), "sign": 1 - 2 * int(batch.labels[b]),
                    "indices": batch.indices[:, b]})
    return out


def shown_steps(T: int, lead: int) -> list[int | None]:
    """The time steps drawn: the first `lead`, a gap, the last; all of them if that is short."""
    if T <= lead + 2:
        return list(range(T))
    return [*range(lead), ELLIPSIS, T - 1]


# ---------------------------------------------------------------------------------- drawing


def _box(ax, x, y, w, h, text, colors, fontsize=9, weight="normal", lw=1.2, z=2, **kw):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                                boxstyle="round,pad=0,rounding_size=0.25", fc=colors[0],
                                ec=colors[1], lw=lw, zorder=z))
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, weight=weight,
                zorder=z + 1, **kw)


def _arrow(ax, start, end, color="#444444", lw=1.1, z=1, style="-|>", rad=0.0, ms=9):
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=ms, color=color,
                                 lw=lw, zorder=z, shrinkA=0, shrinkB=0,
                                 connectionstyle=f"arc3,rad={rad}"))


def _sub(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def _step_label(t: int | None) -> str:
    return "⋯" if t is None else f"t = {t:,}"


def draw_task(ax, seqs: list[dict], T: int, lead: int, num_symbols: int, num_classes: int):
    """Panel (a): each example as a row of one-hot columns, x[0] marked, the label at the end."""
    ax.set_xlim(0, 100)
    ax.set_ylim(-1.9, 12.4)
    ax.axis("off")
    steps = shown_steps(T, lead)
    x0, dx, colw, colh = 14.0, 6.4, 2.0, 3.4
    xs, x = [], x0
    for t in steps:
        xs.append(x)
        x += dx * (2.6 if t is None else 1.0)
    for r, seq in enumerate(seqs):
        yc = 8.6 - 5.2 * r
        top = yc + colh / 2
        ax.text(1.0, yc + 0.5, f"sequence {r + 1}", fontsize=10, weight="bold", va="center")
        ax.text(1.0, yc - 0.6, "[T, 128] one-hot" if num_symbols == 128
                else f"[T, {num_symbols}] one-hot", fontsize=8.5, color="#555555", va="center")
        for t, cx in zip(steps, xs):
            if t is None:
                gap = T - 1 - lead
                ax.text(cx, yc + 0.35, "⋯", ha="center", va="center", fontsize=16)
                ax.text(cx, yc - 0.75, f"{gap:,} more\nrandom steps", ha="center", va="center",
                        fontsize=8, color="#555555")
                continue
            _box(ax, cx, yc, colw, colh, "", INPUT, lw=0.9)
            k = int(seq["indices"][t])
            ky = top - (k + 0.5) / num_symbols * colh
            if t == 0:
                color = PLUS if seq["sign"] > 0 else MINUS
                ax.plot([cx - colw / 2, cx + colw / 2], [ky, ky], color=color, lw=4.5,
                        solid_capstyle="butt", zorder=4)
                ax.text(cx, yc - colh / 2 - 0.55, ("+" if seq["sign"] > 0 else "−") + "e₀",
                        ha="center", va="top", fontsize=10.5, weight="bold", color=color)
            else:
                ax.plot([cx - colw / 2, cx + colw / 2], [ky, ky], color="#222222", lw=3,
                        solid_capstyle="butt", zorder=4)
                ax.text(cx, yc - colh / 2 - 0.55, f"e{k}", ha="center", va="top", fontsize=9)
            if r == 0:
                ax.text(cx, top + 0.35, _step_label(t), ha="center", va="bottom", fontsize=8.5)
        end = xs[-1] + colw / 2 + 0.8
        mx = end + 7.5
        _arrow(ax, (end, yc), (mx - 4.6, yc))
        _box(ax, mx, yc, 9.2, 1.8, "GILR-LSTM\n(panel b)", STEP, fontsize=8.5)
        _arrow(ax, (mx + 4.6, yc), (mx + 8.2, yc))
        color = PLUS if seq["sign"] > 0 else MINUS
        ax.text(mx + 8.8, yc, f"class {seq['label']}", fontsize=11, weight="bold", color=color,
                va="center")
        ax.text(mx + 8.8, yc - 1.1, f"(x[0] = {'+' if seq['sign'] > 0 else '−'}e₀)",
                fontsize=8.5, color=color, va="center")
    note = (f"Every x[t] is one of {num_symbols} one-hot symbols; x[0] = +e₀ or −e₀ (its sign is "
            f"the label, {num_classes} classes), x[1 … T−1] are uniform over all {num_symbols} "
            f"symbols (e₀ included).\nThe model must carry one bit across T − 1 = {T - 1:,} "
            "steps of noise. Example sequences drawn by plrnn.tasks.SyntheticBatches.")
    ax.text(1.0, -1.8, note, fontsize=8.5, color="#333333", va="bottom")


def draw_model(ax, model, T: int, lead_cols: int = 3):
    """Panel (b): the stacked GILR-LSTM unrolled over a few steps, its scans as bands."""
    body, head = model.body, model.head
    layers = list(body.layers)
    steps = shown_steps(T, lead_cols)
    n_rows = 1 + 5 * len(layers) + 2
    pitch = 1.55
    top = n_rows * pitch + 0.6
    ax.set_xlim(0, 100)
    ax.set_ylim(-0.9, top)
    ax.axis("off")
    xs, x = [], 50.0
    for t in steps:
        xs.append(x)
        x += 11.5 if t is not None else 7.0
    band_l, band_r = xs[0] - 5.2, xs[-1] + 5.2
    colw, boxh = 7.8, 0.95
    label_x = 4.2
    same_step = body.surrogate == "same_step"

    def y_of(row):
        return 0.4 + row * pitch

    def left(row, text, sub="", color="#222222"):
        ax.text(label_x, y_of(row) + (0.2 if sub else 0), text, fontsize=8.8, va="center",
                color=color)
        if sub:
            ax.text(label_x, y_of(row) - 0.42, sub, fontsize=7.8, va="center", color="#555555")

    def cols(row, text, colors, fontsize=8.5):
        for t, cx in zip(steps, xs):
            if t is None:
                ax.text(cx, y_of(row), "⋯", ha="center", va="center", fontsize=14)
            else:
                _box(ax, cx, y_of(row), colw, boxh, text(t), colors, fontsize=fontsize)

    def ups(row_from, row_to, dx=0.0):
        for t, cx in zip(steps, xs):
            if t is not None:
                _arrow(ax, (cx + dx, y_of(row_from) + boxh / 2),
                       (cx + dx, y_of(row_to) - boxh / 2), ms=7, lw=0.9)

    def band(row, var):
        y = y_of(row)
        _box(ax, (band_l + band_r) / 2, y, band_r - band_l, boxh + 0.35, "", SCAN, lw=1.6, z=1)
        prev = None
        for t, cx in zip(steps, xs):
            if t is None:
                ax.text(cx, y, "⋯", ha="center", va="center", fontsize=14, zorder=3)
                prev = cx + 1.6
                continue
            ax.text(cx, y, f"{var}[{'T−1' if t == T - 1 and t > 2 else t}]", ha="center",
                    va="center", fontsize=8.5, zorder=3)
            if prev is not None:
                _arrow(ax, (prev, y), (cx - 2.0, y), color=SCAN[1], lw=1.3, ms=8, z=3)
            prev = cx + 2.0

    def tlabel(t):
        return "T−1" if t == T - 1 and t > 2 else str(t)

    # Input row.
    row = 0
    left(row, f"input x[t]: one-hot, {body.input_size}",
         f"[T, {body.input_size}] per sequence, T = {T:,}")
    cols(row, lambda t: f"x[{tlabel(t)}]", INPUT)
    below = row
    for i, layer in enumerate(layers):
        H = layer.gates.out_features // 4
        d_in = layer.gilr.in_features
        base = 1 + 5 * i
        src = "x[t]" if i == 0 else f"h{_sub(i)}[t]"
        # Layer bracket.
        y_lo, y_hi = y_of(base) - 0.75, y_of(base + 4) + 0.75
        ax.plot([label_x - 1.3] * 2, [y_lo, y_hi], color="#666666", lw=1.2)
        ax.text(label_x - 1.9, (y_lo + y_hi) / 2, f"layer {i + 1}  ·  {_count(layer):,} params",
                rotation=90, ha="center", va="center", fontsize=9, weight="bold")
        # GILR input map.
        left(base, f"GILR input map V: {d_in} → 2×{H}  [g, j]",
             f"g = σ(·), j = tanh(·) of {src}; {_count(layer.gilr):,} params")
        cols(base, lambda t: "V", STEP)
        ups(below, base)
        # Linear recurrence 1.
        band(base + 1, "s")
        left(base + 1, "linear recurrence 1:  s[t] = g ⊙ s[t−1] + (1−g) ⊙ j",
             f"the GILR surrogate; one parallel scan over T, [T, {H}]", color=SCAN[1])
        ups(base, base + 1)
        # Gates.
        s_read = "s[t]" if same_step else "s[t−1]"
        left(base + 2, f"gates W: [{s_read}, {src}] ({H}+{d_in}) → 4×{H}",
             f"f, i, o = σ(·), z = tanh(·); {_count(layer.gates):,} params, "
             f"b_f = {body.forget_bias:g}")
        cols(base + 2, lambda t: "W", STEP)
        y_s, y_w = y_of(base + 1), y_of(base + 2)
        for j, (t, cx) in enumerate(zip(steps, xs)):
            if t is None:
                continue
            if same_step:
                _arrow(ax, (cx, y_s + 0.45), (cx, y_w - boxh / 2), ms=7, lw=0.9)
            elif j + 1 < len(steps) and steps[j + 1] is not None:
                # s[t-1] feeds the gates of step t.
                _arrow(ax, (cx + 1.2, y_s + 0.45), (xs[j + 1] - colw / 2 + 0.6, y_w - boxh / 2),
                       ms=7, lw=0.9)
        # The layer input also feeds the gates: a bypass around the scan band.
        for t, cx in zip(steps, xs):
            if t is not None:
                _arrow(ax, (cx + colw / 2 - 0.4, y_of(below) + boxh / 2),
                       (cx + colw / 2 - 0.4, y_w - boxh / 2), color="#9a9a9a", lw=0.8, ms=6,
                       z=0)
        # Linear recurrence 2.
        band(base + 3, "c")
        left(base + 3, "linear recurrence 2:  c[t] = f ⊙ c[t−1] + i ⊙ z",
             f"the LSTM cell; one parallel scan over T, [T, {H}]", color=SCAN[1])
        ups(base + 2, base + 3)
        # Output.
        left(base + 4, f"output h{_sub(i + 1)}[t] = o ⊙ c[t]",
             f"[T, {H}] (no tanh on c)")
        cols(base + 4, lambda t: f"h[{tlabel(t)}]", STEP, fontsize=8)
        ups(base + 3, base + 4)
        below = base + 4
    # Read-out at the last step only.
    r_head = 1 + 5 * len(layers)
    cx = xs[-1]
    _box(ax, cx, y_of(r_head), colw + 3.4, boxh, f"Linear {head.in_features} → {head.out_features}",
         HEAD, fontsize=8.5)
    _arrow(ax, (cx, y_of(below) + boxh / 2), (cx, y_of(r_head) - boxh / 2), ms=8, lw=1.1)
    _box(ax, cx, y_of(r_head + 1), colw + 3.4, boxh, f"{head.out_features} logits → class",
         HEAD, fontsize=8.5)
    _arrow(ax, (cx, y_of(r_head) + boxh / 2), (cx, y_of(r_head + 1) - boxh / 2), ms=8, lw=1.1)
    left(r_head, f"read-out (head) at the last step only: {head.in_features} → "
         f"{head.out_features}", f"{_count(head):,} params; the outputs at t < T−1 are unused")
    left(r_head + 1, "logits → softmax / cross-entropy with the label")
    for t, x in zip(steps[:-1], xs[:-1]):
        if t is not None:
            ax.text(x, y_of(r_head), "unused", ha="center", va="center", fontsize=7.5,
                    color="#999999")

    from matplotlib.patches import Patch

    handles = [Patch(fc=STEP[0], ec=STEP[1], label="dense per-step map (parallel over t)"),
               Patch(fc=SCAN[0], ec=SCAN[1], label="linear recurrence: one parallel scan "
                     "over all T steps"),
               Patch(fc=HEAD[0], ec=HEAD[1], label="read-out, last step only")]
    ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, -0.04), fontsize=8,
              frameon=False, ncol=3, handlelength=1.4, columnspacing=1.2)
    return top


def figure(model, seqs: list[dict], T: int, lead: int, caption: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layers = len(model.body.layers)
    h_b = 0.55 * (1 + 5 * n_layers + 2) + 0.6
    fig = plt.figure(figsize=(13.5, 3.9 + h_b))
    grid = fig.add_gridspec(2, 1, height_ratios=[3.5, h_b], hspace=0.06, top=0.97,
                            bottom=0.05, left=0.03, right=0.99)
    ax_a, ax_b = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    draw_task(ax_a, seqs, T, lead, model.body.input_size, model.head.out_features)
    draw_model(ax_b, model, T)
    ax_a.set_title(f"(a) the synthetic task, T = {T:,}", loc="left", fontsize=12,
                   weight="bold")
    ax_b.set_title(f"(b) the {n_layers}-layer GILR-LSTM ({model.body.hidden_size} units, "
                   f"{_count(model):,} parameters)", loc="left", fontsize=12, weight="bold")
    fig.text(0.03, 0.005, caption, ha="left", va="bottom", fontsize=8.5, color="#444444")
    return fig


# ---------------------------------------------------------------------------------- the run


def paper_sizes(drawn: int | None) -> pd.DataFrame:
    """The paper's three GILR-LSTM settings (Table 3), sizes from meta-device instances."""
    rows = []
    for T in PAPER_LENGTHS:
        mc = paper_config("gilr_lstm", T).model
        rows.append({"T": f"{T:,}", "hidden": str(mc.hidden), "layers": str(mc.num_layers),
                     "parameters": f"{_count(build_model(mc)):,}",
                     "drawn": "yes" if T == drawn else ""})
    return pd.DataFrame(rows)


def run(cfg: DictConfig) -> Path:
    require(cfg, "scale.seq_len", minimum=2)
    require(cfg, "scale.hidden", "scale.num_layers", "scale.steps_shown", "device.threads")
    require(cfg, "scale.surrogate", choices=SURROGATES)
    if cfg.scale.paper_settings and cfg.scale.seq_len not in PAPER_LENGTHS:
        raise ConfigError(f"scale.seq_len must be one of the paper's lengths {PAPER_LENGTHS} "
                          f"with scale.paper_settings=true; got {cfg.scale.seq_len}")
    device = resolve_device(cfg.device)  # names results/<machine>/; nothing runs on it
    started = time.perf_counter()
    T = int(cfg.scale.seq_len)
    mc, source = model_config(cfg)
    model = build_model(mc)
    if model.body.input_size != NUM_SYMBOLS or model.head.out_features != NUM_CLASSES:
        raise AssertionError("the task's model reads 128 symbols and predicts 2 classes")
    comps = components(model, T)
    seqs = examples(T, cfg.seed)
    call = (f"make_model(\"gilr_lstm\", hidden={mc.hidden}, num_layers={mc.num_layers}, "
            f"forget_bias={mc.forget_bias}, surrogate={mc.surrogate!r})")
    caption = (f"Drawn from the instantiated model: plrnn.tasks.{call}  ({source}); "
               f"the gates read the surrogate {model.body.surrogate!r}.")
    fig = figure(model, seqs, T, cfg.scale.steps_shown, caption)

    shown = comps.assign(parameters=comps["parameters"].map(lambda n: f"{n:,}" if n else "-"))
    paper = paper_sizes(T if cfg.scale.paper_settings else None)
    body = [
        "## What is drawn", "",
        f"- (a) The synthetic task at T = {T:,}: two example sequences from "
        f"`plrnn.tasks.SyntheticBatches(seq_len={T}, batch_size=2, seed={cfg.seed})` (one per "
        f"class), their first {cfg.scale.steps_shown} steps and the last, each x[t] a one-hot "
        f"over {NUM_SYMBOLS} symbols; x[0] = +e0 (class 0) or -e0 (class 1) carries the label.",
        f"- (b) The model, `plrnn.tasks.{call}` ({source}), built on the meta device; every "
        "size on the drawing is read from that instance. Per layer: the GILR input map V, "
        "linear recurrence 1 (the surrogate s), the gates W reading "
        f"[{'s[t]' if model.body.surrogate == 'same_step' else 's[t-1]'}, x[t]], linear "
        "recurrence 2 (the cell c), h = o * c; the two linear recurrences (orange) are the "
        "parallel scans (`plrnn.linear_recurrence`), everything else is a dense map applied "
        "to every step at once. The read-out `head` reads the top layer's last output only.",
        f"- {_count(model):,} parameters in all; the components, with their shapes read from "
        "the model, are in the CSV and below (activation shapes per sequence: a batch adds a "
        "B axis).", "",
        markdown_table(shown), "",
        "## The paper's GILR-LSTM settings (Table 3, `plrnn.tasks.paper_config`)", "",
        markdown_table(paper), "",
        "- The paper's Figure 1 is a diagram with no data; this one is drawn by the script from the "
        "configuration above, so it changes with the scale (`scale=paper` draws the paper's "
        "512-unit model at T = 1,024; `scale.seq_len=8192` / `1048576` its other settings).",
    ]
    artifact = Artifact(
        name="figure1",
        title="Figure 1: the synthetic task and the two-layer GILR-LSTM",
        raw=comps, body="\n".join(body), figure=fig,
        meta={"model": {"kind": mc.kind, "hidden": mc.hidden, "num_layers": mc.num_layers,
                        "forget_bias": mc.forget_bias, "surrogate": model.body.surrogate,
                        "source": source},
              "parameters": _count(model),
              "examples": [{"label": s["label"],
                            "steps": [t for t in shown_steps(T, cfg.scale.steps_shown)
                                      if t is not None],
                            "symbols": [int(s["indices"][t])
                                        for t in shown_steps(T, cfg.scale.steps_shown)
                                        if t is not None]} for s in seqs]},
    )
    path = write_artifact(artifact, cfg, device, time.perf_counter() - started)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


register()


@hydra.main(config_path="conf/figure1", config_name="figure1", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
