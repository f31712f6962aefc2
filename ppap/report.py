"""Tables and figures from metric and manifest files.

A metric file holds every sampling seed of one (guide, sampling setting) cell; tables show the
mean over seeds with a sample standard deviation column (``<metric>_sd``) per metric.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ppap.config import parse_guide_name, parse_sampling

METRICS = ["fid", "is", "precision", "recall", "accuracy"]
EXTRA_METRICS = ["density", "coverage"]
TABLE1_COLUMNS = ["method", "n_experts", "adapter_rank", "supervision", "trainable_params", "stored_params",
                  "fid", "is", "precision", "recall", "accuracy", "samples"]
SD_COLUMNS = [f"{m}_sd" for m in METRICS] + ["seeds", "samples_per_seed"]


def summarize_seeds(per_seed: Sequence[Mapping]) -> dict:
    """Mean and sample standard deviation (ddof = 1; 0 for one seed) of every numeric metric."""
    if not per_seed:
        raise ValueError("no seeds to summarize")
    keys = [k for k, v in per_seed[0].items() if isinstance(v, (int, float)) and k != "seed"]
    mean, sd = {}, {}
    for key in keys:
        values = np.array([run[key] for run in per_seed], dtype=float)
        mean[key] = float(values.mean())
        sd[key] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return dict(seeds=[run["seed"] for run in per_seed], per_seed=list(per_seed), mean=mean, sd=sd)


def guide_description(guide: str, base_params: int, manifest: Mapping | None) -> dict:
    """n_experts, adapter_rank, supervision and the parameter accounting of a guide."""
    parts = parse_guide_name(guide)
    if parts["kind"] == "experts":
        if manifest is None:
            raise ValueError(f"guide set {guide!r} needs its manifest")
        return dict(n_experts=parts["n_experts"], adapter_rank="full" if parts["rank"] is None else str(parts["rank"]),
                    supervision="data-free" if parts["supervision"] == "datafree" else "labeled",
                    trainable_params=int(manifest["trainable_params"]), stored_params=int(manifest["stored_params"]))
    if parts["kind"] == "off_the_shelf":
        return dict(n_experts=1, adapter_rank="", supervision="none", trainable_params=0, stored_params=base_params)
    return dict(n_experts=0, adapter_rank="", supervision="none", trainable_params=0, stored_params=0)


def run_row(guide: str, metrics: Mapping, base_params: int, manifest: Mapping | None) -> dict:
    """Description, seed means and standard deviations of one evaluated cell."""
    row = guide_description(guide, base_params, manifest)
    for metric in METRICS + EXTRA_METRICS:
        row[metric] = metrics["mean"].get(metric, math.nan)
        row[f"{metric}_sd"] = metrics["sd"].get(metric, math.nan)
    row["samples"] = metrics["per_seed"][0]["samples"]  # seed<k>.npz siblings hold the other seeds
    row["seeds"] = len(metrics["seeds"])
    row["samples_per_seed"] = int(metrics["mean"].get("num_fake", 0))
    return row


def table1(rows: Sequence[Mapping]) -> pd.DataFrame:
    """Table 1's columns, then the standard deviations over seeds."""
    frame = pd.DataFrame(list(rows))
    missing = [c for c in TABLE1_COLUMNS + SD_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"rows lack columns {missing}")
    return frame[TABLE1_COLUMNS + SD_COLUMNS]


def ablation_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    first = ["ablation", "value", "method", "guide", "sampling"]
    rest = [c for c in TABLE1_COLUMNS[1:] + SD_COLUMNS + EXTRA_METRICS if c in frame.columns and c != "method"]
    return frame[first + rest]


def to_markdown(frame: pd.DataFrame, with_sd: bool = True) -> str:
    """A GitHub Markdown table; with `with_sd`, metrics read "mean ± sd" and sd columns are folded in."""
    formats = dict(fid="{:.2f}", **{"is": "{:.2f}"}, precision="{:.3f}", recall="{:.3f}", accuracy="{:.3f}",
                   density="{:.3f}", coverage="{:.3f}")
    columns = [c for c in frame.columns if not (with_sd and c.endswith("_sd"))]

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


def plot_ablation(frame: pd.DataFrame, title: str, unguided: Mapping | None = None):
    """Accuracy and FID against the ablated value (one line per method); a trade-off panel
    (accuracy against FID) when several methods are crossed with the values."""
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
    for ax, metric in zip(axes[:2], ("accuracy (evaluator = target)", "FID (evaluator features)")):
        ax.set_xlabel(title)
        ax.set_ylabel(metric)
        if numeric is None:
            ax.set_xticks(positions, [str(v) for v in values], rotation=30)
        elif len(numeric) > 2 and max(numeric) / max(min(numeric), 1e-9) > 20:
            ax.set_xscale("log")
    if unguided is not None:
        axes[1].axhline(unguided["mean"]["fid"], color="grey", ls="--", lw=1, label="unguided")
        if panels == 3:
            axes[2].axvline(unguided["mean"]["fid"], color="grey", ls="--", lw=1, label="unguided FID")
    if panels == 3:
        axes[2].set_xlabel("FID")
        axes[2].set_ylabel("accuracy")
        axes[2].set_title("trade-off (labels: value)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"ablation: {title} (mean ± sd over seeds)", fontsize=10)
    return fig


def sampling_label(sampling: str) -> str:
    parts = parse_sampling(sampling)
    return f"{parts['sampler'].upper()}-{parts['steps']}, s = {parts['scale']:g}"


def plot_noisy_accuracy(curves: Mapping[str, Mapping], boundaries: Mapping[str, Sequence[int]] | None = None):
    """Guide accuracy on q(x_t | x0) against t: the paper's motivating figure.

    `curves` maps a label to ``{"timesteps": [...], "accuracy": [...]}``; `boundaries` marks where
    a set's experts hand over.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    for label, curve in curves.items():
        ax.plot(curve["timesteps"], curve["accuracy"], marker="o", ms=3, label=label)
    for label, edges in (boundaries or {}).items():
        for edge in edges:
            ax.axvline(edge, color="grey", lw=0.5, ls=":")
    ax.axhline(0.1, color="black", lw=0.8, ls="--", label="chance")
    ax.set_xlabel("timestep t")
    ax.set_ylabel("top-1 accuracy on x_t (test digits)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    return fig


def plot_sample_grids(grids: Mapping[str, np.ndarray]):
    """Sample grids side by side (one row per target class inside each grid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(2.6 * len(grids), 2.9), constrained_layout=True)
    for ax, (label, grid) in zip(np.atleast_1d(axes), grids.items()):
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    return fig
