"""The dense tasks of the embedded preset, and how dense guidance is scored.

Two maps computed from a clean digit (strokes = pixels brighter than a fixed threshold):

* ``segmentation``: 11 classes per pixel, 0 = background and 1 + digit on the stroke pixels;
* ``distance`` (standing in for depth: a dense regression): each pixel's Euclidean distance to
  the nearest stroke pixel (0 on the strokes), in units of the image side.

Scores: mean IoU and pixel accuracy of an evaluator's segmentation against the target maps
(one confusion matrix over every pixel of every sample), and the RMSE of a regressed map.
"""

from __future__ import annotations

import math

import numpy as np
import torch

NUM_SEGMENTATION_CLASSES = 11   # background + the ten digits
# task -> guide output kind; depth is the paper preset's (a public depth model's map, no ground truth)
TASK_KINDS = {"segmentation": "segmentation", "distance": "regression", "depth": "regression"}
# distance where a map has no stroke at all: the image's diagonal (no pixel is farther from a stroke)
EMPTY_DISTANCE = math.sqrt(2.0)


def _unit_intensity(images: torch.Tensor) -> torch.Tensor:
    """[N, H, W] intensity in [0, 1] of float NCHW images in [-1, 1] (channels averaged)."""
    return ((images.float() + 1) / 2).mean(dim=1)


def stroke_mask(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """[N, H, W] bool: pixels whose intensity (0..1) is above ``threshold``."""
    return _unit_intensity(images) > threshold


def segmentation_map(images: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """[N, H, W] long: 0 on the background, 1 + the digit's class on its stroke pixels."""
    mask = stroke_mask(images, threshold)
    return torch.where(mask, labels.view(-1, 1, 1).long() + 1, torch.zeros_like(mask, dtype=torch.long))


def stroke_distance_map(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """[N, 1, H, W] float: distance of each pixel to the nearest stroke pixel / image side
    (scipy's exact Euclidean distance transform; :data:`EMPTY_DISTANCE` where nothing is a stroke)."""
    from scipy.ndimage import distance_transform_edt

    mask = stroke_mask(images, threshold).numpy()
    side = mask.shape[-1]
    maps = np.empty(mask.shape, dtype=np.float32)
    for i, m in enumerate(mask):
        maps[i] = distance_transform_edt(~m) / side if m.any() else EMPTY_DISTANCE
    return torch.from_numpy(maps).unsqueeze(1)


def ground_truth_maps(task: str, images: torch.Tensor, labels: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """The task's map of clean images (labels are needed for segmentation only)."""
    if task == "segmentation":
        if labels is None:
            raise ValueError("the segmentation map needs each image's class")
        return segmentation_map(images, labels, threshold)
    if task == "distance":
        return stroke_distance_map(images, threshold)
    raise ValueError(f"dense task {task!r} has no ground-truth map on digits (segmentation, distance do)")


def guide_maps(guide, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """A dense guide's own map of clean images: argmax classes [N, H, W] or values [N, 1, H, W]."""
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out = guide(images[start:start + batch_size], None).float()
            outputs.append(out.argmax(1) if guide.task == "segmentation" else out)
    return torch.cat(outputs)


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[K, K] counts, rows = target class, columns = predicted class, over every pixel."""
    index = target.reshape(-1).long() * num_classes + predicted.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def segmentation_scores(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict:
    """Mean IoU (over the classes present in the target or the prediction) and pixel accuracy."""
    confusion = confusion_matrix(predicted, target, num_classes).double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    iou = true_positive[present] / union[present]
    return dict(miou=float(iou.mean()), pixel_accuracy=float(true_positive.sum() / confusion.sum()),
                classes_present=int(present.sum()))


def regression_rmse(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared error over every pixel of every map."""
    return float(((predicted.double() - target.double()) ** 2).mean().sqrt())
