"""The dense study (results/table_dense.csv): digits guided towards a target map by a dense guide.

Each sample i is guided towards the map of held-out real digit i (the off-the-shelf dense guide's
own map of it, as the paper takes a reference image's, or its ground-truth map) and scored on what
it became: an independent evaluator's segmentation against the target (mean IoU, pixel accuracy),
or the exact distance map of its own strokes against the target (RMSE), beside FID / IS /
precision / recall against real digits of the same split that are not targets
(``quality_reference: disjoint``, :func:`targets_and_reference`): a sample that copied its
target's digit would otherwise be rewarded twice, once by its dense score and once by FID. Scales
are chosen on the validation split (``snakemake tune``: results/tuning/dense.csv); the test split
only scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ppap import data, dense, guidance
from ppap.generate import sample_with_cost
from ppap.specs import SamplingSpec
from ppap.study import report

TARGETS = ("off_the_shelf", "ground_truth")
# what the samples' FID / IS / precision / recall are computed against: the split's digits that are not
# targets (disjoint), or the targets themselves (targets: the protocol before the leak was found)
QUALITY_REFERENCES = ("disjoint", "targets")
# the score each task is tuned and ranked on, and whether higher is better
TASK_SCORE = {"segmentation": ("miou", True), "distance": ("rmse", False), "depth": ("rmse", False)}
METRICS = ("miou", "pixel_accuracy", "rmse", "fid", "is", "precision", "recall")


@dataclass(frozen=True)
class DenseSettings:
    """One dense task's settings (config section ``dense``)."""

    task: str                               # segmentation | distance
    threshold: float = 0.5                  # stroke pixels: intensity (0..1) above it
    target: str = "off_the_shelf"           # whose map of the held-out digit is the target
    regression_energy: str = "gaussian"     # gaussian | scale_shift_invariant (distance only)
    regression_sigma: float = 0.1           # sigma of the Gaussian energy, in units of the image side
    quality_reference: str = "disjoint"     # FID & co. against the split's other digits | the targets

    def __post_init__(self):
        if self.task not in dense.TASK_KINDS:
            raise ValueError(f"unknown dense task {self.task!r} (use one of {', '.join(dense.TASK_KINDS)})")
        if self.target not in TARGETS:
            raise ValueError(f"unknown dense target {self.target!r} (use one of {', '.join(TARGETS)})")
        if self.quality_reference not in QUALITY_REFERENCES:
            raise ValueError(f"unknown dense quality_reference {self.quality_reference!r} "
                             f"(use one of {', '.join(QUALITY_REFERENCES)})")

    @property
    def kind(self) -> str:
        """The guide's output kind: segmentation or regression."""
        return dense.TASK_KINDS[self.task]

    def energy(self) -> guidance.Energy:
        return guidance.energy_for(self.kind, self.regression_energy, self.regression_sigma)

    @classmethod
    def from_config(cls, task: str, section: Mapping) -> "DenseSettings":
        return cls(task, section["stroke_threshold"], section["target"], section["regression_energy"],
                   section["regression_sigma"], section.get("quality_reference") or "disjoint")


def targets_and_reference(labels: np.ndarray, quality_reference: str = "disjoint") -> tuple[np.ndarray, np.ndarray]:
    """(indices of a split's digits that are guidance targets, indices of those its samples' image
    quality is scored against). ``disjoint``: each class's digits, in split order, alternate between
    the two (the first to the targets), so both halves keep the split's class balance and no
    target is a quality reference; ``targets``: all digits are both."""
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    if quality_reference == "targets":
        return everything, everything
    if quality_reference != "disjoint":
        raise ValueError(f"unknown dense quality_reference {quality_reference!r}")
    rank = np.zeros(len(labels), dtype=np.int64)  # position of each digit among its class's
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank[members] = np.arange(len(members))
    targets, reference = everything[rank % 2 == 0], everything[rank % 2 == 1]
    if not len(targets) or not len(reference):
        raise ValueError(f"{len(labels)} digit(s) cannot be split into guidance targets and a disjoint quality "
                         f"reference (dense.quality_reference: disjoint needs two of a class)")
    return targets, reference


def target_maps(settings: DenseSettings, images: torch.Tensor, labels: torch.Tensor | None, guide=None) -> torch.Tensor:
    """The targets of the held-out ``images`` (float NCHW in [-1, 1]): the off-the-shelf dense
    ``guide``'s own maps, or their ground-truth maps."""
    if settings.target == "ground_truth":
        return dense.ground_truth_maps(settings.task, images.cpu(), labels, settings.threshold)
    if guide is None or getattr(guide, "task", None) != settings.kind:
        raise ValueError(f"targets from the off-the-shelf guide need a {settings.kind} guide")
    return dense.guide_maps(guide, images)


def load_target_maps(path, settings: DenseSettings, image_size: int,
                     num_classes: int = dense.NUM_SEGMENTATION_CLASSES) -> torch.Tensor:
    """Target maps given in a file (``dense.target_maps``): an ``.npz`` whose ``maps`` holds
    [N, H, W] class indices (segmentation) or [N, H, W] / [N, 1, H, W] values (regression) at the
    diffusion model's resolution; checked, not resized."""
    with np.load(path, allow_pickle=False) as arrays:
        if "maps" not in arrays.files:
            raise ValueError(f"{path}: no 'maps' array (found {arrays.files})")
        maps = torch.from_numpy(np.array(arrays["maps"]))
    if settings.kind == "regression" and maps.ndim == 3:
        maps = maps.unsqueeze(1)
    expected = 3 if settings.kind == "segmentation" else 4
    if maps.ndim != expected or tuple(maps.shape[-2:]) != (image_size, image_size) or len(maps) == 0:
        raise ValueError(f"{path}: maps of shape {tuple(maps.shape)}; {settings.task} needs "
                         + ("[N, H, W]" if expected == 3 else "[N, 1, H, W]") + f" with H = W = {image_size}")
    if settings.kind == "segmentation":
        if maps.dtype.is_floating_point or maps.min() < 0 or maps.max() >= num_classes:
            raise ValueError(f"{path}: segmentation maps must be integer classes in [0, {num_classes})")
        return maps.long()
    return maps.float()


def targets_for_samples(maps: torch.Tensor, num_samples: int | None) -> tuple[np.ndarray, torch.Tensor]:
    """(target index of each sample, its map): sample i aims at held-out digit i mod len(maps)."""
    count = len(maps) if num_samples is None else int(num_samples)
    index = np.arange(count) % len(maps)
    return index, maps[torch.from_numpy(index)]


def predicted_maps(settings: DenseSettings, images_uint8: np.ndarray, evaluator=None,
                   batch_size: int = 512) -> torch.Tensor:
    """What the samples show: the exact distance map of their own strokes (no network: nothing of
    any guide is in the score), or the independent evaluator's map (its argmax for segmentation)."""
    x = data.to_float(images_uint8)
    if settings.task == "distance":
        return dense.stroke_distance_map(x, settings.threshold)
    if evaluator is None:
        raise ValueError(f"scoring {settings.task} needs an evaluator network")
    with torch.no_grad():  # on the evaluator's device; the maps come back to the CPU
        return dense.guide_maps(evaluator, x.to(next(evaluator.parameters()).device), batch_size).cpu()


def dense_scores(settings: DenseSettings, predicted: torch.Tensor, targets: torch.Tensor,
                 num_classes: int = dense.NUM_SEGMENTATION_CLASSES) -> dict:
    if settings.kind == "segmentation":
        return dense.segmentation_scores(predicted, targets, num_classes)
    return dict(rmse=dense.regression_rmse(predicted, targets))


@dataclass
class DenseCell:
    """What one (guide, scale) cell produced: per-seed metrics, the passes and seconds of each seed,
    and the first seed's samples and what they show (for the figure)."""

    per_seed: list
    costs: list                 # (seed, SamplingCost, wall-seconds)
    target_index: np.ndarray    # sample i aimed at held-out digit target_index[i]
    samples: np.ndarray         # the first seed's samples, uint8 NHWC
    predicted: np.ndarray       # what they show (evaluator's map or their own distance map)


def sample_and_score(guidance_, spec: SamplingSpec, settings: DenseSettings, target_pool: torch.Tensor, evaluator,
                     image_metrics: Callable[[np.ndarray], dict], seeds: Sequence[int], num_samples: int | None,
                     device: torch.device, num_classes: int = dense.NUM_SEGMENTATION_CLASSES) -> DenseCell:
    """Draw every seed's samples of one cell towards the targets and score them: the dense scores
    against the targets, and ``image_metrics(samples)`` (FID / IS / precision / recall against the
    real images of the same split, in the preset's feature space)."""
    index, targets = targets_for_samples(target_pool, num_samples)
    per_seed, costs, first = [], [], None
    for seed in seeds:
        images, _, cost, wall = sample_with_cost(guidance_, spec, len(index), seed, device, targets.to(device),
                                                 show_progress=False)
        predicted = predicted_maps(settings, images, evaluator)
        result = dense_scores(settings, predicted, targets, num_classes)
        result.update(image_metrics(images))
        result["seed"] = int(seed)
        per_seed.append(result)
        costs.append((seed, cost, wall))
        if first is None:
            first = (images, predicted.numpy())
    return DenseCell(per_seed, costs, index, first[0], first[1])


def summarise_seeds(per_seed: Sequence[Mapping]) -> dict:
    """The seed summary of the dense metrics a cell holds (:func:`ppap.study.report.summarize_seeds`)
    as flat columns, ``<metric>`` and ``<metric>_sd``: a cell record's ``metrics``, a table row's."""
    return report.seed_columns(report.summarize_seeds(per_seed, METRICS))


def validation_cells(results: Sequence[Mapping]) -> pd.DataFrame:
    """One row per (task, method, guide, scale) validation cell, with the task's score as ``score``
    (higher is better: mIoU, or -RMSE) and its FID; a cell whose guidance diverged (a non-finite
    gradient) has FID inf and no score, so it never qualifies."""
    rows = []
    for cell in results:
        metric, higher = TASK_SCORE[cell["task"]]
        value = float(cell["metrics"][metric])
        rows.append(dict(task=cell["task"], method=cell["method"], guide=cell["guide"], scale=float(cell["scale"]),
                         metric=metric, value=value, score=value if higher else -value,
                         fid=float(cell["metrics"]["fid"]), diverged="diverged" in cell))
    return pd.DataFrame(rows)


def choose_scales(cells: pd.DataFrame, max_fid_ratio: float) -> pd.DataFrame:
    """Per task, :func:`ppap.study.comparison.choose_on_validation` with the task's score in place of accuracy."""
    from ppap.study.comparison import choose_on_validation

    chosen = []
    for task, group in cells.groupby("task", sort=False):
        marked = choose_on_validation(group.rename(columns={"score": "accuracy"}), max_fid_ratio)
        chosen.append(marked.rename(columns={"accuracy": "score"}))
    return pd.concat(chosen)


def dense_table(cells: Sequence[Mapping]) -> pd.DataFrame:
    """results/table_dense.csv: one row per (task, method) test cell, metrics with the seed spread
    and the compute per sample."""
    rows = []
    for cell in cells:
        row = dict(task=cell["task"], method=cell["method"], guide=cell["guide"], scale=float(cell["scale"]),
                   seeds=len(cell["per_seed"]), samples_per_seed=cell["samples_per_seed"])
        row.update(summarise_seeds(cell["per_seed"]))
        compute = (cell.get("compute") or {}).get("per_sample", {})
        for key in ("denoiser_forward", "denoiser_backward", "guide_forward", "guide_backward", "wall_s"):
            if key in compute:
                row[key] = compute[key]
        rows.append(row)
    table = pd.DataFrame(rows)
    ordered = ["task", "method", "guide", "scale", "seeds", "samples_per_seed"]
    for metric in METRICS:
        if metric in table:
            ordered += [metric, f"{metric}_sd"]
    return table[ordered + [c for c in table.columns if c not in ordered]]


def plot_dense_maps(task: str, rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], examples: int = 6):
    """One row per method: (target map | sample | what the sample shows) for the first ``examples``
    targets. ``rows``: (method, target maps, samples uint8 NHWC, predicted maps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segmentation = task == "segmentation"
    # background light grey, digits 0..9 in tab10's colours
    classes = matplotlib.colors.ListedColormap(["#eeeeee", *plt.get_cmap("tab10").colors])
    cmap = classes if segmentation else plt.get_cmap("viridis")
    limits = dict(vmin=0, vmax=dense.NUM_SEGMENTATION_CLASSES - 1) if segmentation else dict(vmin=0, vmax=0.6)
    fig, axes = plt.subplots(len(rows), 3 * examples, figsize=(0.62 * 3 * examples, 0.75 * len(rows) + 0.4),
                             squeeze=False)
    for r, (method, targets, samples, predicted) in enumerate(rows):
        for k in range(examples):
            cells = (np.asarray(targets[k]).squeeze(), samples[k, ..., 0], np.asarray(predicted[k]).squeeze())
            for j, image in enumerate(cells):
                ax = axes[r, 3 * k + j]
                if j == 1:
                    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
                else:
                    ax.imshow(image, cmap=cmap, interpolation="nearest", **limits)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(("target", "sample", "shows")[j], fontsize=6)
        axes[r, 0].set_ylabel(method, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"dense guidance, {task}: target map | sample | "
                 + ("evaluator's segmentation" if segmentation else "its stroke-distance map"), fontsize=8)
    fig.tight_layout(pad=0.2)
    return fig
