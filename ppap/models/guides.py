"""Guides on disk: which kind a file holds (a classifier or a dense guide), loading either one strictly,
saving a fully fine-tuned expert in its base guide's kind, and the speed switches a loaded guide runs under."""

from __future__ import annotations

import torch

from ppap.models import classifiers
from ppap.models import dense as dense_models
from ppap.models.checkpoints import CheckpointError, load_checkpoint
from ppap.models.convs import use_center_taps


def guide_checkpoint_kind(path) -> str:
    """The checkpoint kind of a guide file: a classifier's or a dense guide's."""
    kind = load_checkpoint(path)["kind"]
    if kind not in (classifiers.GUIDE_KIND, dense_models.DENSE_GUIDE_KIND):
        raise CheckpointError(f"{path} holds a {kind!r} checkpoint, not a guide")
    return kind


def load_any_guide(path) -> torch.nn.Module:
    """A classifier guide or a dense guide, whichever the file holds (its weights loaded strictly)."""
    if guide_checkpoint_kind(path) == dense_models.DENSE_GUIDE_KIND:
        return dense_models.load_dense_guide(path)
    return classifiers.load_guide(path)


def guide_output_kind(guide: torch.nn.Module) -> str:
    """What a guide's output is: ``classification`` logits, ``segmentation`` logits or ``regression``."""
    return getattr(guide, "task", "classification")


def save_full_guide(path, model: torch.nn.Module, base_guide_path, **metadata) -> None:
    """A whole guide (a fully fine-tuned expert) with the base guide's spec, in the base's kind."""
    kind = guide_checkpoint_kind(base_guide_path)
    spec = load_checkpoint(base_guide_path, kind)["spec"]
    if kind == dense_models.DENSE_GUIDE_KIND:
        dense_models.save_dense_guide(path, model, spec, **metadata)
    else:
        classifiers.save_guide(path, model, spec, **metadata)


def with_speed_switches(guide: torch.nn.Module, channels_last: bool, center_tap_convs: bool) -> torch.nn.Module:
    """A guide (to train or to sample with) under the config's ``performance`` switches: NHWC
    (oneDNN's native layout on the CPU, tensor cores' on CUDA) and centre-tap convolutions on 1x1
    maps (:mod:`ppap.models.convs`). The same computation, other kernels."""
    if center_tap_convs:
        use_center_taps(guide)
    return guide.to(memory_format=torch.channels_last) if channels_last else guide
