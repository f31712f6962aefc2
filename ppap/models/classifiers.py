"""Classifiers: the timm "off-the-shelf" guide behind an input adapter, and the metric evaluator.

The diffusion side always speaks images in [-1, 1] at its own resolution. A guide wraps any
classifier with the resize and normalisation that classifier was trained with, so a public model
can be plugged in unchanged.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppap.models.checkpoints import load_checkpoint, load_state_dict_strict, save_checkpoint

GUIDE_KIND = "ppap-guide"
EVALUATOR_KIND = "ppap-evaluator"


def to_network_input(x: torch.Tensor, input_size: int | None, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images at the diffusion model's resolution -> what a network was trained on: resized
    (bilinear) to ``input_size`` unless None, then normalised on [0, 1] with its mean and std."""
    if input_size is not None and x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return ((x + 1) / 2 - mean.to(x.dtype)) / std.to(x.dtype)


class ClassifierGuide(nn.Module):
    """A classifier seen from the diffusion model: ``forward(x, t) -> logits`` for x in [-1, 1].

    ``t`` is accepted so that every guide has one signature; an off-the-shelf classifier ignores it.
    """

    def __init__(
        self,
        backbone: nn.Module,            # any classifier taking normalised images
        input_size: int | None,         # side the classifier expects; None keeps the input's
        mean: Sequence[float],          # per-channel normalisation of the classifier, on [0, 1]
        std: Sequence[float],
    ):
        super().__init__()
        self.backbone = backbone
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return to_network_input(x, self.input_size, self.mean, self.std)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.backbone(self.preprocess(x))


def build_timm_guide(
    arch: str,
    num_classes: int,
    in_chans: int,
    input_size: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    model_kwargs: dict | None = None,
    seed: int = 0,
) -> ClassifierGuide:
    """A randomly initialised timm classifier behind a :class:`ClassifierGuide`.

    ``model_kwargs`` go to ``timm.create_model`` (e.g. ``channels`` and ``stem_width`` to slim
    a ResNet down for the CPU preset); an entry set to None is left out.
    """
    import timm

    # A null entry removes a keyword an overlay inherited (config files merge key by key).
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (model_kwargs or {}).items() if v is not None}
    # timm initialises from the global RNG; fork it so the caller's RNG state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    return ClassifierGuide(backbone, input_size, mean, std)


def guide_spec(arch: str, num_classes: int, in_chans: int, input_size, mean, std,
               model_kwargs: dict | None = None) -> dict:
    kwargs = {k: v for k, v in (model_kwargs or {}).items() if v is not None}  # null: removed by an overlay
    return dict(arch=arch, num_classes=num_classes, in_chans=in_chans, input_size=input_size,
                mean=list(mean), std=list(std), model_kwargs=kwargs)


def save_guide(path: str | os.PathLike, guide: ClassifierGuide, spec: dict, **metadata) -> None:
    save_checkpoint(path, GUIDE_KIND, guide.state_dict(), spec=spec, **metadata)


def read_guide_spec(path: str | os.PathLike) -> dict:
    """The architecture spec stored in a guide checkpoint (no model is built)."""
    return dict(load_checkpoint(path, GUIDE_KIND)["spec"])


def load_guide(path: str | os.PathLike) -> ClassifierGuide:
    payload = load_checkpoint(path, GUIDE_KIND)
    guide = build_timm_guide(**payload["spec"])
    load_state_dict_strict(guide, payload["state_dict"], path)
    return guide.eval()


class DigitEvaluator(nn.Module):
    """A plain CNN used only for metrics: ``features`` (a 64-d embedding) and ``forward`` (logits).

    A different architecture from the guide, so that the guide's own features cannot be gamed.
    """

    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 32, feature_dim: int = 64):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.body = nn.Sequential(
            block(in_chans, width), block(width, width), nn.MaxPool2d(2),
            block(width, 2 * width), block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(2 * width, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)
        self.spec = dict(in_chans=in_chans, num_classes=num_classes, width=width, feature_dim=feature_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1], shape [B, C, H, W] -> [B, feature_dim]."""
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_evaluator(seed: int = 0, **spec) -> DigitEvaluator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DigitEvaluator(**spec)


def save_evaluator(path: str | os.PathLike, evaluator: DigitEvaluator, **metadata) -> None:
    save_checkpoint(path, EVALUATOR_KIND, evaluator.state_dict(), spec=evaluator.spec, **metadata)


def load_evaluator(path: str | os.PathLike) -> DigitEvaluator:
    payload = load_checkpoint(path, EVALUATOR_KIND)
    evaluator = build_evaluator(**payload["spec"])  # seeded init in a forked RNG, then overwritten
    load_state_dict_strict(evaluator, payload["state_dict"], path)
    return evaluator.eval()
