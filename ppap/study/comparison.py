"""Guidance methods side by side: results/guidance_methods.csv, the validation choices behind it,
and its two figures (accuracy against FID over each method's scales; accuracy against compute).

Every guided row is at the scale (and, for training-free methods, the variant) chosen on the
validation split by :func:`choose_on_validation`; the test digits only score. Compute is what the
sampling job counted (:mod:`ppap.compute`), per sample, plus each trained method's one-time cost
(synthetic set and distillation, or the class-conditional model's training), from which
:func:`break_even_samples` says after how many samples a trained method has paid for itself.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ppap.compute import PASS_KINDS
from ppap.study import grammar
from ppap.study.report import EXTRA_METRICS, METRICS, summarize_seeds, to_markdown

COMPUTE_COLUMNS = list(PASS_KINDS) + ["wall_s"]
CRITERION = ("the highest validation accuracy among cells whose validation FID is at most "
             "max_fid_ratio x the unguided cell's (none qualifying: the lowest FID)")
# tuning.guidance.tie_break: fid
FID_TIE_BREAK = ("; among the qualifying cells whose accuracy is within the combined spread of the best one's, "
                 "the lowest FID")
# tuning.guidance.spread: what "within the spread" means for a cell's accuracy
SPREADS = {
    "seeds": "the sd of its accuracy over the cell's seeds",
    "binomial": ("the larger of the sd over its seeds and the binomial sd of one seed's accuracy, "
                 "sqrt(p (1 - p) / (m + 4)) with p = (k + 2) / (n + 4) for k correct of n samples over all "
                 "seeds, m per seed (Agresti and Coull's smoothing: it does not vanish at accuracy 0 or 1)"),
}


def guide_family(guide: str) -> str:
    """How a guide was obtained: what a reader weighs against its numbers."""
    kind = grammar.guide_kind(guide)
    if kind == "experts":
        spec = grammar.parse_guide_set(guide)
        return f"{'data-free' if spec.supervision == 'datafree' else 'labeled'} {spec.adapter} x{spec.n_experts}"
    return {"none": "unguided", "off_the_shelf": "off the shelf (on x_t)", "training_free": "training-free (on x0_hat)",
            "classifier_free": "labeled conditional model (CFG)"}[kind]


def compute_columns(record: Mapping) -> dict:
    """Per-sample passes and wall-seconds of a sampling job's compute record."""
    return {key: float(record["per_sample"][key]) for key in COMPUTE_COLUMNS}


def metric_columns(metrics: Mapping) -> dict:
    row = {}
    for metric in METRICS + EXTRA_METRICS:
        row[metric] = float(metrics["mean"].get(metric, math.nan))
        row[f"{metric}_sd"] = float(metrics["sd"].get(metric, math.nan))
    row["seeds"] = len(metrics["seeds"])
    row["samples_per_seed"] = int(metrics["mean"].get("num_fake", 0))
    return row


def synthetic_cost(shard_records: Sequence[Mapping], synthetic_size: int) -> float:
    """Wall-seconds of the part of the synthetic pool a data-free set uses (its first M images)."""
    total_images = sum(r["samples"] for r in shard_records)
    total_s = sum(r["per_sample"]["wall_s"] * r["samples"] for r in shard_records)
    return total_s * min(synthetic_size, total_images) / total_images


def one_time_cost(guide: str, manifest: Mapping | None, shard_records: Sequence[Mapping],
                  conditional_record: Mapping | None, config: Mapping) -> float:
    """Seconds spent before the first sample: 0 for untrained guides; a trained set's distillation
    (plus the synthetic images it learned from, when data-free); the conditional model's training."""
    kind = grammar.guide_kind(guide)
    if kind in ("none", "off_the_shelf", "training_free"):
        return 0.0
    if kind == "classifier_free":
        return float(conditional_record["wall_s"]) if conditional_record else math.nan
    if manifest is None or manifest.get("training_wall_s") is None:
        return math.nan
    cost = float(manifest["training_wall_s"])
    spec = grammar.resolve_guide_set(guide, config)
    if spec.supervision == "datafree":
        cost += synthetic_cost(shard_records, spec.synthetic_size)
    return cost


def break_even_samples(one_time_s: float, per_sample_s: float, other_per_sample_s: float) -> float:
    """Samples after which a method with a one-time cost is cheaper in total than another method
    without one (inf if it never is: its per-sample cost is not lower)."""
    saving = other_per_sample_s - per_sample_s
    if not saving > 0:
        return math.inf
    return one_time_s / saving


def guidance_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """The table's columns in order: what the row is, its metrics, its compute, then the spreads."""
    first = ["method", "guide", "family", "scale", "sampling", "trainable_params"]
    compute = COMPUTE_COLUMNS + ["one_time_s"]
    rest = [f"{m}_sd" for m in METRICS] + EXTRA_METRICS + ["seeds", "samples_per_seed", "threads", "machine"]
    return pd.DataFrame(list(rows))[first + METRICS + compute + rest]


def validation_record(guide: str, sampling: str, per_seed: list[dict], compute: dict) -> dict:
    """A validation cell's record (rule score_on_validation): one seed's scores as ``metrics``
    (with ``seed``), or, over several seeds, their mean as ``metrics``, their sd as ``metrics_sd``,
    ``seeds`` and each seed's scores."""
    record = dict(guide=guide, sampling=sampling, split="val", compute=compute)
    if len(per_seed) == 1:  # the single-seed record, as before several seeds existed
        only = dict(per_seed[0])
        return dict(record, seed=only.pop("seed"), metrics=only)
    summary = summarize_seeds(per_seed)
    return dict(record, seeds=[run["seed"] for run in per_seed], metrics=summary["mean"], metrics_sd=summary["sd"],
                per_seed=per_seed)


def validation_row(cell: dict) -> dict:
    """The scores tune_guidance takes from a validation cell's record: fid, accuracy (NaN for the
    unguided cell), precision, recall, accuracy_sd (NaN with one seed), seeds, samples per seed, wall_s."""
    scores = cell["metrics"]
    return dict(fid=scores["fid"], accuracy=scores.get("accuracy", float("nan")), precision=scores["precision"],
                recall=scores["recall"], accuracy_sd=(cell.get("metrics_sd") or {}).get("accuracy", float("nan")),
                seeds=len(cell.get("seeds", [cell.get("seed")])), samples_per_seed=int(scores.get("num_fake", 0)),
                wall_s=cell["compute"]["per_sample"]["wall_s"])


def binomial_sd(accuracy: float, samples_per_seed: int, seeds: int = 1) -> float:
    """The sd of one seed's accuracy (``samples_per_seed`` samples) for a cell whose mean accuracy
    over ``seeds`` seeds is ``accuracy``: Agresti and Coull's smoothed proportion, so that a cell at
    accuracy 0 or 1 still has a spread. NaN without samples."""
    total = samples_per_seed * seeds
    if not total > 0 or not math.isfinite(accuracy):
        return math.nan
    smoothed = (accuracy * total + 2) / (total + 4)
    return math.sqrt(smoothed * (1 - smoothed) / (samples_per_seed + 4))


def accuracy_spread(cells: pd.DataFrame, spread: str = "seeds") -> pd.Series:
    """Each cell's accuracy spread under ``spread`` (:data:`SPREADS`); NaN where it has none."""
    if spread not in SPREADS:
        raise ValueError(f"unknown spread {spread!r} (use {' or '.join(SPREADS)})")
    seed_sd = cells["accuracy_sd"] if "accuracy_sd" in cells else pd.Series(math.nan, index=cells.index)
    if spread == "seeds":
        return seed_sd.astype(float)
    binomial = pd.Series([binomial_sd(row.accuracy, int(row.samples_per_seed), int(row.seeds))
                          for row in cells[["accuracy", "samples_per_seed", "seeds"]].itertuples()],
                         index=cells.index, dtype=float)
    return pd.concat([seed_sd.astype(float), binomial], axis=1).max(axis=1, skipna=True)


def choose_on_validation(cells: pd.DataFrame, max_fid_ratio: float, tie_break: str = "accuracy",
                         spread: str = "seeds") -> pd.DataFrame:
    """Mark each method's chosen cell (``chosen``) among its (guide, scale) cells scored on the
    validation split: :data:`CRITERION`. ``cells`` has columns method, guide, scale, fid, accuracy,
    and one row with method ``unguided`` (the FID bound's reference). Ties go to the smaller scale.
    ``tie_break="fid"`` (:data:`FID_TIE_BREAK`): accuracies within their combined spread of the best
    (``spread``, :data:`SPREADS`: the seeds' ``accuracy_sd``, or with ``binomial`` at least the
    binomial sd from ``samples_per_seed`` and ``seeds``) count as tied, and the lowest FID among them
    wins; without a spread only equal accuracies are tied. The spread is written as ``accuracy_spread``,
    each cell's place in its method's order (:func:`rank_cells`) as ``rank`` (1: chosen)."""
    cells = rank_cells(cells, max_fid_ratio, tie_break, spread)
    cells["chosen"] = cells["rank"] == 1
    return mark_choice_quality(cells)


def rank_cells(cells: pd.DataFrame, max_fid_ratio: float, tie_break: str = "accuracy",
               spread: str = "seeds") -> pd.DataFrame:
    """Each method's cells in the order :func:`choose_on_validation` prefers them (``rank`` 1, 2, ...):
    the qualifying cells (FID within the bound) by accuracy, then scale; with ``tie_break="fid"``
    those tied with the best first, by FID; then the cells over the bound, by FID. Adds
    ``fid_bound``, ``qualifies``, ``accuracy_spread`` and ``rank`` (NaN for the unguided cell)."""
    if tie_break not in ("accuracy", "fid"):
        raise ValueError(f"unknown tie_break {tie_break!r} (use accuracy or fid)")
    unguided = cells[cells["method"] == "unguided"]
    if len(unguided) != 1:
        raise ValueError("the validation grid needs exactly one unguided cell")
    bound = max_fid_ratio * float(unguided["fid"].iloc[0])
    cells = cells.copy()
    cells["fid_bound"] = bound
    cells["qualifies"] = cells["fid"] <= bound
    cells["accuracy_spread"] = accuracy_spread(cells, spread)
    cells["rank"] = math.nan
    sd = cells["accuracy_spread"].fillna(0.0)
    for method, group in cells[cells["method"] != "unguided"].groupby("method", sort=False):
        ok = group[group["qualifies"]].sort_values(["accuracy", "scale"], ascending=[False, True])
        order = list(ok.index)
        if tie_break == "fid" and len(ok):
            best = ok.index[0]
            within = np.sqrt(sd[best] ** 2 + sd[ok.index] ** 2) + 1e-12
            tied = ok[cells.loc[best, "accuracy"] - ok["accuracy"] <= within]
            order = list(tied.sort_values(["fid", "scale"]).index) + [i for i in order if i not in tied.index]
        order += list(group[~group["qualifies"]].sort_values(["fid", "scale"]).index)
        cells.loc[order, "rank"] = range(1, len(order) + 1)
    return cells


def mark_choice_quality(cells: pd.DataFrame) -> pd.DataFrame:
    """For each method's chosen cell: ``at_edge`` (its scale is the smallest or largest its guide was
    tried at: the optimum may lie beyond the grid), ``margin`` (its accuracy minus that of the method's
    best other qualifying cell) and ``margin_over_spread`` (whether the margin exceeds the two cells'
    combined spread, ``accuracy_spread`` where :func:`choose_on_validation` set it, else the seed sd;
    NaN without one, e.g. one seed per cell)."""
    cells = cells.copy()
    cells["at_edge"], cells["margin"], cells["margin_over_spread"] = None, float("nan"), None
    sd = next((cells[c] for c in ("accuracy_spread", "accuracy_sd") if c in cells),
              pd.Series(float("nan"), index=cells.index))
    for index in cells.index[cells["chosen"]]:
        chosen = cells.loc[index]
        scales = cells.loc[(cells["method"] == chosen["method"]) & (cells["guide"] == chosen["guide"]), "scale"]
        cells.at[index, "at_edge"] = len(scales) > 1 and chosen["scale"] in (scales.min(), scales.max())
        others = cells[(cells["method"] == chosen["method"]) & cells["qualifies"] & (cells.index != index)]
        if chosen["qualifies"] and len(others):
            runner_up = others["accuracy"].idxmax()
            margin = float(chosen["accuracy"] - cells.at[runner_up, "accuracy"])
            spread = float((sd[index] ** 2 + sd[runner_up] ** 2) ** 0.5)
            cells.at[index, "margin"] = margin
            cells.at[index, "margin_over_spread"] = None if pd.isna(spread) else bool(margin > spread)
    return cells


def tuning_budget(cells: pd.DataFrame) -> pd.DataFrame:
    """Each guided method's validation search, to set side by side: how many variants (guides) and
    scales it was tried at, its cells and the samples they drew (samples per seed x seeds)."""
    guided = cells[cells["method"] != "unguided"]
    samples = guided["samples_per_seed"] * guided["seeds"] if "samples_per_seed" in guided else guided["seeds"] * 0
    return (guided.assign(samples=samples).groupby("method", sort=False)
            .agg(variants=("guide", "nunique"), scales=("scale", "nunique"), cells=("scale", "size"),
                 samples=("samples", "sum")).reset_index())


def chosen_settings(cells: pd.DataFrame) -> dict[str, dict]:
    """method -> {guide, scale} of each chosen cell."""
    return {row.method: dict(guide=row.guide, scale=float(row.scale)) for row in cells[cells["chosen"]].itertuples()}


def accuracy_at_fid(sweep: pd.DataFrame, bound: float) -> tuple[float, float]:
    """(interpolated, measured): the highest accuracy one method's scale sweep reaches with FID at
    most ``bound``. Measured: its best cell under the bound. Interpolated: also where the FID of two
    neighbouring scales crosses the bound, the accuracy linearly interpolated in FID at the crossing
    (what a scale between the two would reach, were the curve straight there). NaN when no cell and
    no crossing is under the bound."""
    cells = sweep.sort_values("scale")[["fid", "accuracy"]].to_numpy(float)
    under = [accuracy for fid, accuracy in cells if fid <= bound]
    measured = max(under) if under else math.nan
    crossings = [a0 + (bound - f0) / (f1 - f0) * (a1 - a0)
                 for (f0, a0), (f1, a1) in zip(cells[:-1], cells[1:]) if (f0 - bound) * (f1 - bound) < 0]
    candidates = under + crossings
    return (max(candidates) if candidates else math.nan), measured


def compute_curves(rows: pd.DataFrame) -> pd.Series:
    """Which curve each table row belongs to in the fixed-FID figure: the rows that guide with the
    same guide, sampler and eta differ only in how much compute they spend (time travel, more steps),
    and are named after their cheapest member (e.g. ppap with ppap_rec2, ppap_rec4, ppap_ddim100)."""
    def key(row):
        spec = grammar.parse_sampling(row["sampling"])
        return row["guide"], spec.sampler, spec.eta

    keys = rows.apply(key, axis=1)
    label = {}
    for k, group in rows.groupby(keys, sort=False):
        label[k] = group.sort_values("wall_s")["method"].iloc[0]
    return keys.apply(label.__getitem__)


def fixed_fid_table(rows: pd.DataFrame, sweeps: pd.DataFrame, unguided_fid: float,
                    bound_ratios: Sequence[float]) -> pd.DataFrame:
    """Each guided table row at each FID bound (``ratio`` x the unguided row's test FID): the accuracy
    its scale sweep reaches there (:func:`accuracy_at_fid`), beside its measured compute per sample
    and its one-time cost; ``curve`` groups the rows that differ only in compute (:func:`compute_curves`)."""
    guided = rows[rows["guide"] != "none"].copy()
    guided["curve"] = compute_curves(guided)
    out = []
    for ratio in bound_ratios:
        bound = ratio * unguided_fid
        for row in guided.itertuples():
            interpolated, measured = accuracy_at_fid(sweeps[sweeps["method"] == row.method], bound)
            out.append(dict(method=row.method, curve=row.curve, guide=row.guide, family=row.family,
                            sampling=row.sampling, fid_ratio=ratio, fid_bound=bound, accuracy_at_fid=interpolated,
                            accuracy_measured=measured, **{c: getattr(row, c) for c in COMPUTE_COLUMNS},
                            one_time_s=row.one_time_s))
    return pd.DataFrame(out)


def break_even_at_fid(table: pd.DataFrame, amortised: str) -> pd.DataFrame:
    """For each training-free row at each FID bound: the cheapest row guided by ``amortised``'s guide
    (e.g. ppap with its time-travel and DDIM-100 rows, and at eta 1: its one training, any sampler) that
    reaches at least its accuracy there, and after how many samples that row's one-time cost is paid back
    by its lower wall-seconds per sample (:func:`break_even_samples`; inf: never; NaN: no such row reaches
    that accuracy)."""
    guide = table.loc[table["method"] == amortised, "guide"]
    out = []
    if guide.empty:
        return pd.DataFrame(out)
    for ratio, at_bound in table.groupby("fid_ratio", sort=False):
        own = at_bound[at_bound["guide"] == guide.iloc[0]]
        for other in at_bound[at_bound["family"].str.startswith("training-free")].itertuples():
            if not math.isfinite(other.accuracy_at_fid):
                continue
            enough = own[own["accuracy_at_fid"] >= other.accuracy_at_fid]
            row = dict(fid_ratio=ratio, training_free=other.method, training_free_accuracy=other.accuracy_at_fid,
                       training_free_wall_s=other.wall_s, method=None, accuracy=math.nan, wall_s=math.nan,
                       one_time_s=math.nan, break_even_samples=math.nan)
            if len(enough):
                cheapest = enough.sort_values("wall_s").iloc[0]
                row.update(method=cheapest["method"], accuracy=cheapest["accuracy_at_fid"], wall_s=cheapest["wall_s"],
                           one_time_s=cheapest["one_time_s"],
                           break_even_samples=break_even_samples(cheapest["one_time_s"], cheapest["wall_s"],
                                                                 other.wall_s))
            out.append(row)
    return pd.DataFrame(out)


def fixed_fid_markdown(table: pd.DataFrame, amortised: str) -> list[str]:
    """The fixed-FID section of guidance_methods.md: the table (:func:`fixed_fid_table`) and, per
    bound, the break-even of ``amortised``'s curve against each training-free row (:func:`break_even_at_fid`)."""
    lines = ["## At a fixed FID", "",
             "Each row's accuracy where its scale sweep reaches FID = ratio x the unguided row's (interpolated "
             "between neighbouring scales; measured: its best cell under the bound), beside its compute per sample.",
             "", to_markdown(table, columns=["fid_ratio", "method", "curve", "accuracy_at_fid", "accuracy_measured",
                                             "denoiser_forward", "guide_backward", "wall_s", "one_time_s"]), ""]
    for even in break_even_at_fid(table, amortised).itertuples():
        head = f"- FID <= {even.fid_ratio:g} x unguided, {even.training_free} ({even.training_free_accuracy:.3f}): "
        if even.method is None:
            lines.append(head + f"no row guided as {amortised} reaches its accuracy")
        elif math.isfinite(even.break_even_samples):
            lines.append(head + f"{even.method} reaches {even.accuracy:.3f} and its one-time {even.one_time_s:.0f} s "
                         f"pays for itself after {even.break_even_samples:,.0f} samples")
        else:
            lines.append(head + f"{even.method} reaches {even.accuracy:.3f} but is not cheaper per sample")
    return lines


TOP_ACCURACY = 0.999  # the fixed-FID figure's logit axis cannot show 1: drawn here


def plot_fixed_fid(table: pd.DataFrame):
    """Accuracy at each FID bound against wall-milliseconds per sample: one panel per bound, one
    curve per method (its rows in order of compute); training-free curves dashed. An empty table (no
    unguided row to set the bounds) gives a figure that says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if table.empty:
        fig, ax = plt.subplots(figsize=(6.2, 2))
        ax.text(0.5, 0.5, "no unguided row in guidance_methods: no FID bound", ha="center", va="center")
        ax.set_axis_off()
        return fig
    ratios = list(dict.fromkeys(table["fid_ratio"]))
    curves = list(dict.fromkeys(table["curve"]))
    legend_rows = math.ceil(len(curves) / 6)
    fig, axes = plt.subplots(1, len(ratios), figsize=(6.2 * len(ratios), 4.6 + 0.22 * legend_rows), squeeze=False,
                             sharey=True)
    # a fair race has some 22 curves: a colour per method (its eta-1 row shares it), a marker per sampler's noise
    base = {curve: re.sub(r"_eta[0-9.]+$", "", curve) for curve in curves}
    palette = plt.get_cmap("tab20").colors
    palette = palette[0::2] + palette[1::2]  # tab20's ten dark colours first, then their light pairs
    colors = {name: palette[i % len(palette)] for i, name in enumerate(dict.fromkeys(base.values()))}
    for ax, ratio in zip(axes[0], ratios):
        at_bound = table[table["fid_ratio"] == ratio]
        for curve in curves:
            group = at_bound[at_bound["curve"] == curve].sort_values("wall_s")
            style = "--" if group["family"].iloc[0].startswith("training-free") else "-"
            marker = "s" if grammar.parse_sampling(group["sampling"].iloc[0]).eta else "o"  # DDIM's noise: squares
            color = colors[base[curve]]
            shown = group["accuracy_at_fid"].clip(upper=TOP_ACCURACY)
            ax.plot(group["wall_s"] * 1e3, shown, style, marker=marker, color=color, label=curve)
            for row, accuracy in zip(group.itertuples(), shown):
                if row.method != curve:  # the curve's other rows: say which compute variant the point is
                    ax.annotate(row.method.removeprefix(curve).lstrip("_"), (row.wall_s * 1e3, accuracy),
                                textcoords="offset points", xytext=(3, -9), fontsize=6, color=color)
        ax.set_xscale("log")
        # logit: the rows that matter differ at 0.98 against 0.99; an accuracy of 1 is drawn at TOP_ACCURACY
        ax.set_yscale("logit")
        ax.set_ylim(0.05, 1 - (1 - TOP_ACCURACY) / 2)
        ax.set_xlabel("milliseconds per sample (measured)")
        ax.set_title(f"FID at most {ratio:g} x unguided ({at_bound['fid_bound'].iloc[0]:.2f})")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"accuracy at that FID (interpolated; logit axis, 1 drawn at {TOP_ACCURACY})")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.22 * legend_rows / fig.get_figheight() + 0.02, 1, 1))
    return fig


def plot_tradeoff(sweeps: pd.DataFrame, rows: pd.DataFrame, unguided: Mapping | None = None):
    """Accuracy against FID, one curve per method over its scales; each table row's point ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for i, (method, group) in enumerate(sweeps.groupby("method", sort=False)):
        group = group.sort_values("scale")
        color = f"C{i % 10}"
        style = "--" if group["family"].iloc[0].startswith("training-free") else "-"
        ax.plot(group["fid"], group["accuracy"], style, marker="o", color=color, label=method)
        for _, cell in group.iterrows():
            ax.annotate(f"{cell['scale']:g}", (cell["fid"], cell["accuracy"]), textcoords="offset points",
                        xytext=(3, 3), fontsize=6, color=color)
        chosen = rows[rows["method"] == method]
        if len(chosen):
            ax.scatter(chosen["fid"], chosen["accuracy"], s=140, facecolors="none", edgecolors=color, linewidths=1.5)
    if unguided is not None:
        ax.axvline(unguided["fid"], color="grey", lw=0.8, ls=":", label="unguided FID")
    ax.set_xscale("log")
    ax.set_xlabel("FID against the test digits (log scale; lower is better)")
    ax.set_ylabel("accuracy: the evaluator agrees with the target class")
    ax.set_title("Guidance scale sweeps (numbers: scale; rings: the validation-chosen row)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_compute(rows: pd.DataFrame, amortised_method: str | None = None,
                 sample_counts: Sequence[int] = (100, 1_000, 10_000, 100_000, 1_000_000)):
    """Accuracy against wall-seconds per sample of every table row; for each trained row (one-time
    cost > 0) a dotted line of its per-sample cost with that cost spread over n samples, marked
    with n for ``amortised_method``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for i, row in enumerate(rows.itertuples()):
        color = f"C{i % 10}"
        ax.scatter(row.wall_s * 1e3, row.accuracy, color=color, label=row.method, zorder=3)
        if not (np.isfinite(row.one_time_s) and row.one_time_s > 0):
            continue
        # a trained method's cost per sample once its training is spread over n samples
        costs = np.array([row.wall_s + row.one_time_s / n for n in sample_counts])
        ax.plot(costs * 1e3, [row.accuracy] * len(costs), ":", color=color, lw=1)
        if row.method == amortised_method:
            for n, cost in zip(sample_counts, costs):
                if cost < 1.1 * row.wall_s:  # the line has reached its point: no room for more labels
                    break
                ax.annotate(f"n={n:,}", (cost * 1e3, row.accuracy), textcoords="offset points", xytext=(0, -12),
                            fontsize=6, ha="center", color=color)
    ax.set_xscale("log")
    ax.set_xlabel(f"milliseconds per sample ({rows['machine'].iloc[0]}, {int(rows['threads'].iloc[0])} thread(s))")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against compute per sample (dotted: training spread over n samples)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
