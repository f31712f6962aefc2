"""Tables and figures from metric and manifest files.

A metric file holds every sampling seed of one (guide, sampling setting) cell. A table row is
the mean over its sampling seeds and, where a guide set was trained several times independently
(replicates: other training seeds), over those trainings too. Two spreads are kept apart:
``<metric>_sd`` is the standard deviation over sampling seeds (pooled within trainings) and
``<metric>_sd_train`` the standard deviation of the per-training means (NaN for one training).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ppap.study import grammar

METRICS = ["fid", "is", "precision", "recall", "accuracy"]
EXTRA_METRICS = ["density", "coverage"]
TABLE1_COLUMNS = ["method", "n_experts", "adapter_rank", "supervision", "trainable_params", "stored_params",
                  "fid", "is", "precision", "recall", "accuracy", "samples"]
SD_COLUMNS = [f"{m}_sd" for m in METRICS] + ["seeds", "samples_per_seed"]
TRAINING_COLUMNS = ["trainings"] + [f"{m}_sd_train" for m in METRICS]
# per sample, from the sampling jobs' compute records (ppap.compute); wall-seconds on `machine`
COMPUTE_COLUMNS = ["denoiser_forward", "denoiser_backward", "guide_forward", "guide_backward", "wall_s",
                   "threads", "machine"]


def summarize_seeds(per_seed: Sequence[Mapping], metrics: Sequence[str] | None = None) -> dict:
    """Mean and sample standard deviation (ddof = 1; 0 for one seed) over the sampling seeds of every
    numeric metric of the first seed (``seed`` aside), or of those of ``metrics`` it holds, in that
    order; every seed must hold the same ones. Returns ``seeds``, ``per_seed``, ``mean`` and ``sd``."""
    if not per_seed:
        raise ValueError("no seeds to summarize")
    first = per_seed[0]
    keys = ([k for k, v in first.items() if isinstance(v, (int, float)) and k != "seed"] if metrics is None
            else [k for k in metrics if k in first])
    mean, sd = {}, {}
    for key in keys:
        missing = [run.get("seed") for run in per_seed if key not in run]
        if missing:
            raise ValueError(f"metric {key!r} is missing from seed(s) {missing}")
        values = np.array([run[key] for run in per_seed], dtype=float)
        mean[key] = float(values.mean())
        sd[key] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return dict(seeds=[run["seed"] for run in per_seed], per_seed=list(per_seed), mean=mean, sd=sd)


def seed_columns(summary: Mapping) -> dict:
    """A :func:`summarize_seeds` summary as flat columns: ``<metric>`` (the mean), then ``<metric>_sd``."""
    return {key: value for metric, mean in summary["mean"].items()
            for key, value in ((metric, mean), (f"{metric}_sd", summary["sd"][metric]))}


def guide_description(guide: str, base_params: int, manifest: Mapping | None) -> dict:
    """n_experts, adapter_rank, supervision and the parameter accounting of a guide."""
    kind = grammar.guide_kind(guide)
    if kind == "experts":
        if manifest is None:
            raise ValueError(f"guide set {guide!r} needs its manifest")
        spec = grammar.parse_guide_set(guide)
        return dict(n_experts=spec.n_experts, adapter_rank="full" if spec.rank is None else str(spec.rank),
                    supervision="data-free" if spec.supervision == "datafree" else "labeled",
                    trainable_params=int(manifest["trainable_params"]), stored_params=int(manifest["stored_params"]))
    if kind == "off_the_shelf":
        return dict(n_experts=1, adapter_rank="", supervision="none", trainable_params=0, stored_params=base_params)
    return dict(n_experts=0, adapter_rank="", supervision="none", trainable_params=0, stored_params=0)


def run_row(guides: str | Sequence[str], metrics: Mapping | Sequence[Mapping], base_params: int,
            manifest: Mapping | None, compute: Sequence[Mapping] | None = None) -> dict:
    """Description, means and spreads of one evaluated cell: one metric file per independent
    training of the guide (``guides`` and ``metrics`` in the same order); with ``compute`` (their
    sampling jobs' records, same order) the per-sample passes and wall-seconds, averaged."""
    if isinstance(guides, str):
        guides, metrics = [guides], [metrics]
    if len(guides) != len(metrics) or not guides:
        raise ValueError(f"{len(metrics)} metric files for {len(guides)} trainings")
    row = guide_description(guides[0], base_params, manifest)
    for metric in METRICS + EXTRA_METRICS:
        means = np.array([m["mean"].get(metric, math.nan) for m in metrics], dtype=float)
        sds = np.array([m["sd"].get(metric, math.nan) for m in metrics], dtype=float)
        row[metric] = float(means.mean())
        row[f"{metric}_sd"] = float(np.sqrt(np.mean(sds**2)))  # within trainings, pooled
        row[f"{metric}_sd_train"] = float(means.std(ddof=1)) if len(means) > 1 else math.nan
    row["samples"] = metrics[0]["per_seed"][0]["samples"]  # seed<k>.npz siblings hold the other seeds
    seeds = {len(m["seeds"]) for m in metrics}
    if len(seeds) != 1:
        raise ValueError(f"trainings were sampled with different numbers of seeds: {sorted(seeds)}")
    row["seeds"] = seeds.pop()
    row["samples_per_seed"] = int(metrics[0]["mean"].get("num_fake", 0))
    row["trainings"] = len(metrics)
    if compute is not None:
        if len(compute) != len(metrics):
            raise ValueError(f"{len(compute)} compute records for {len(metrics)} trainings")
        for key in COMPUTE_COLUMNS[:5]:
            row[key] = float(np.mean([c["per_sample"][key] for c in compute]))
        row["threads"] = int(compute[0]["threads"])
        row["machine"] = compute[0]["machine"]
    return row


def table1(rows: Sequence[Mapping]) -> pd.DataFrame:
    """Table 1's columns, the standard deviations over seeds, then the number of independent
    trainings and the standard deviations over them."""
    frame = pd.DataFrame(list(rows))
    missing = [c for c in TABLE1_COLUMNS + SD_COLUMNS + TRAINING_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"rows lack columns {missing}")
    compute = [c for c in COMPUTE_COLUMNS if c in frame.columns]
    return frame[TABLE1_COLUMNS + SD_COLUMNS + TRAINING_COLUMNS + compute]


def compute_note(frame: pd.DataFrame) -> str:
    """What the compute columns count, and where the seconds were measured."""
    machines = sorted(set(frame["machine"])) if "machine" in frame.columns else []
    threads = sorted({int(t) for t in frame["threads"]}) if "threads" in frame.columns else []
    where = f" on {', '.join(machines)} ({', '.join(map(str, threads))} thread(s) per sampling job)" if machines else ""
    return ("Per sample: denoiser and guide forward/backward passes (counted), wall_s seconds of sampling"
            f"{where}.")


def ablation_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    first = ["ablation", "value", "method", "guide", "sampling"]
    rest = [c for c in TABLE1_COLUMNS[1:] + SD_COLUMNS + TRAINING_COLUMNS + EXTRA_METRICS
            if c in frame.columns and c != "method"]
    return frame[first + rest]


def to_markdown(frame: pd.DataFrame, with_sd: bool = True, columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table; with `with_sd`, metrics read "mean ± sd" (sd over sampling seeds)
    and, where several trainings were averaged, "mean ± sd (trainings ± sd_train)"; the sd
    columns are folded in. `columns` picks (and orders) the columns shown."""
    formats = dict(fid="{:.2f}", **{"is": "{:.2f}"}, precision="{:.3f}", recall="{:.3f}", accuracy="{:.3f}",
                   density="{:.3f}", coverage="{:.3f}", miou="{:.3f}", pixel_accuracy="{:.3f}", rmse="{:.4f}")
    if columns is None:
        columns = [c for c in frame.columns if not (with_sd and (c.endswith("_sd") or c.endswith("_sd_train")))]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"no columns {missing} in the table")

    def cell(row, column):
        value = row[column]
        if column in ("trainable_params", "stored_params"):
            return f"{int(value):,}"
        if isinstance(value, float):
            if math.isnan(value):
                return "n/a"
            text = formats.get(column, "{:.4g}").format(value)
            sd = row.get(f"{column}_sd") if with_sd else None
            if sd is not None and not (isinstance(sd, float) and math.isnan(sd)) and column in formats:
                text += " ± " + formats[column].format(sd)
            sd_train = row.get(f"{column}_sd_train") if with_sd else None
            if sd_train is not None and not (isinstance(sd_train, float) and math.isnan(sd_train)) and column in formats:
                text += " (trainings ± " + formats[column].format(sd_train) + ")"
            return text
        return str(value)

    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(row, c) for c in columns) + " |" for _, row in frame.iterrows()]
    return "\n".join([header, rule, *body]) + "\n"


def _numeric(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


# The factor a token of a guide-set or sampling name (ppap.study.grammar) stands for; axis labels only.
_FACTOR_WORDS = {
    "labeled": "supervision", "datafree": "supervision", "full": "adapter (LoRA rank or full)",
    "lora": "adapter (LoRA rank or full)", "n": "number of experts N", "syn": "synthetic set size M",
    "tau": "transfer temperature", "norm": "normalisation layers", "warm": "warm start", "lr": "learning rate",
    "steps": "training steps per set", "rep": "training replicate", "ddim": "sampler and steps", "ddpm": "sampler and steps",
    "s": "guidance scale s", "clip": "clipping", "sp": "timestep spacing",
    "none": "guide", "off": "guide", "the": "guide", "shelf": "guide",
}


def _factor_label(frame: pd.DataFrame, title: str) -> str:
    """The ablated factor in words: the tokens of the guide and sampling names that not every run
    of a method shares; the ablation's name (underscores as spaces) when the frame cannot tell."""
    import re

    words = []
    if {"guide", "sampling"} <= set(frame.columns):
        for _, sub in frame.groupby("method", sort=False):
            names = [f"{guide}_{sampling}".split("_") for guide, sampling in zip(sub["guide"], sub["sampling"])]
            shared = set.intersection(*map(set, names))
            for token in (t for tokens in names for t in tokens if t not in shared):
                prefix = re.match(r"[a-z]*", token).group()
                words.append(_FACTOR_WORDS.get(prefix, prefix))
    words = list(dict.fromkeys(w for w in words if w))
    return " and ".join(words) if words else str(title).replace("_", " ")


def _value_ticks(ax, values: Sequence, numeric: list[float] | None) -> None:
    """x ticks at the ablated values themselves: an integer factor gets integer ticks, a numeric
    one its values (log scale over a wide range), a named one its names."""
    from matplotlib.ticker import MaxNLocator, NullLocator

    if numeric is None:
        ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=30)
        return
    if len(numeric) > 2 and min(numeric) > 0 and max(numeric) / min(numeric) > 20:
        ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    if len(numeric) <= 12:
        ax.set_xticks(numeric, [f"{v:g}" for v in numeric])
    elif all(float(v).is_integer() for v in numeric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_ablation(frame: pd.DataFrame, title: str, unguided: Mapping | None = None, factor: str | None = None,
                  chance: float | None = None):
    """Accuracy and FID against the ablated value (one line per method); a trade-off panel
    (accuracy against FID) when several methods are crossed with the values.

    `factor` labels the x-axis (default: read from the runs' guide and sampling names, see
    :func:`_factor_label`); `unguided` (its metrics file) and `chance` (1 / number of classes)
    draw dashed reference lines, named in the legends.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(frame["method"]))
    values = list(dict.fromkeys(frame["value"]))
    numeric = _numeric(values)
    positions = numeric if numeric is not None else list(range(len(values)))
    panels = 3 if len(methods) > 1 else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), constrained_layout=True)
    for method in methods:
        sub = frame[frame["method"] == method].set_index("value").reindex(values)
        for ax, metric in zip(axes[:2], ("accuracy", "fid")):
            ax.errorbar(positions, sub[metric], yerr=sub[f"{metric}_sd"], marker="o", capsize=3, label=method)
        if panels == 3:
            axes[2].errorbar(sub["fid"], sub["accuracy"], xerr=sub["fid_sd"], yerr=sub["accuracy_sd"], marker="o",
                             capsize=3, label=method)
            for value, fid, acc in zip(values, sub["fid"], sub["accuracy"]):
                axes[2].annotate(str(value), (fid, acc), textcoords="offset points", xytext=(3, 3), fontsize=7)
    xlabel = factor or _factor_label(frame, title)
    for ax, metric in zip(axes[:2], ("accuracy (evaluator = target)", "FID (evaluator features)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        _value_ticks(ax, values, numeric)
    references = {ax: [] for ax in axes}     # the dashed lines each panel names in its legend
    if chance is not None:
        label = f"chance accuracy ({chance:g})"
        references[axes[0]].append(axes[0].axhline(chance, color="black", ls="--", lw=0.8, label=label))
        if panels == 3:
            references[axes[2]].append(axes[2].axhline(chance, color="black", ls="--", lw=0.8, label=label))
    if unguided is not None:
        fid = unguided["mean"]["fid"]
        references[axes[1]].append(axes[1].axhline(fid, color="grey", ls="--", lw=1, label="unguided FID"))
        if panels == 3:
            references[axes[2]].append(axes[2].axvline(fid, color="grey", ls="--", lw=1, label="unguided FID"))
    if panels == 3:
        axes[2].set_xlabel("FID")
        axes[2].set_ylabel("accuracy")
        axes[2].set_title("trade-off (labels: value)", fontsize=9)
    axes[0].legend(fontsize=7)        # the methods, and chance
    for ax in axes[1:]:
        if references[ax]:
            ax.legend(handles=references[ax], fontsize=7)
    fig.suptitle(f"ablation: {title} (mean ± sd over seeds)", fontsize=10)
    return fig


def sampling_label(sampling: str) -> str:
    spec = grammar.parse_sampling(sampling)
    return f"{spec.sampler.upper()}-{spec.steps}, s = {spec.scale:g}"


def plot_noisy_accuracy(curves: Mapping[str, Mapping], boundaries: Mapping[str, Sequence[int]] | None = None,
                        chance: float | None = 0.1):
    """Guide accuracy on q(x_t | x0) against t: the paper's motivating figure.

    `curves` maps a label to ``{"timesteps": [...], "accuracy": [...]}``; `boundaries` marks where
    a set's experts hand over; `chance` (1 / number of classes; the digits' 0.1 by default) is a
    dashed line named in the legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    for label, curve in curves.items():
        ax.plot(curve["timesteps"], curve["accuracy"], marker="o", ms=3, label=label)
    edges = sorted({edge for set_edges in (boundaries or {}).values() for edge in set_edges})
    for i, edge in enumerate(edges):
        ax.axvline(edge, color="grey", lw=0.5, ls=":", label="expert boundaries" if i == 0 else "_nolegend_")
    if chance is not None:
        ax.axhline(chance, color="black", lw=0.8, ls="--", label=f"chance accuracy ({chance:g})")
    ax.set_xlabel("timestep t")
    ax.set_ylabel("top-1 accuracy on x_t (test digits)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    return fig


def _crop_grid(grid: np.ndarray, layout: Mapping, rows: int, cols: int) -> np.ndarray:
    """The first `rows` x `cols` cells of a grid tiled as `layout` says (cells, then padding)."""
    pad = layout["padding"]
    pitch_y, pitch_x = (grid.shape[0] + pad) // layout["rows"], (grid.shape[1] + pad) // layout["cols"]
    return grid[: rows * pitch_y - pad, : cols * pitch_x - pad]


def plot_sample_grids(grids: Mapping[str, np.ndarray], layouts: Mapping[str, Mapping | None] | None = None):
    """Sample grids side by side, one row per target class, labelled at the left ("—" for an
    unguided run, which has no target).

    `layouts` (from :func:`ppap.data.load_sample_grid`: rows, cols, padding, row_labels) places the
    row labels and crops every panel to the rows and columns all panels have, so panels line up;
    a grid without a layout is shown as it is, unlabelled.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = {name: layout for name, layout in (layouts or {}).items() if layout and name in grids}
    rows = min((layout["rows"] for layout in layouts.values()), default=None)
    cols = min((layout["cols"] for layout in layouts.values()), default=None)
    aspect = cols / rows if layouts else 1.0
    fig, axes = plt.subplots(1, len(grids), figsize=((2.4 * aspect + 0.3) * len(grids), 2.9),
                             constrained_layout=True)
    for i, (ax, (name, grid)) in enumerate(zip(np.atleast_1d(axes), grids.items())):
        layout = layouts.get(name)
        if layout:
            grid = _crop_grid(grid, layout, rows, cols)
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.spines[:].set_visible(False)
        if not layout:
            ax.set_yticks([])
            continue
        pitch = (grid.shape[0] + layout["padding"]) / rows
        centres = [r * pitch + (pitch - layout["padding"] - 1) / 2 for r in range(rows)]
        ax.set_yticks(centres, (layout["row_labels"] or ["—"] * rows)[:rows], fontsize=7)
        ax.tick_params(axis="y", length=0, pad=2)
        if i == 0:
            ax.set_ylabel("target class", fontsize=8)
    return fig
