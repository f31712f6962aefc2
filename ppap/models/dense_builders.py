"""Dense-guide architectures from torchvision (segmentation models) and transformers (DPT depth),
built from a spec; each imports its library only when it builds (the digits' own dense guides need
neither). :mod:`ppap.models.dense` picks the builder of a spec's family; importing weights into one
is :mod:`ppap.models.import_dense`'s job."""

from __future__ import annotations

import difflib

import torch
from torch import nn


def torchvision_segmentation_archs() -> list[str]:
    from torchvision.models import list_models, segmentation

    return sorted(list_models(module=segmentation))


class TorchvisionSegmentation(nn.Module):
    """A torchvision segmentation model returning its ``["out"]`` logits ``[B, K, h, w]`` at the input's
    size. Its keys are torchvision's own under ``model.``, so a torchvision state dict loads unchanged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def build_torchvision_segmentation(spec: dict) -> nn.Module:
    """``torchvision.models.get_model_builder(spec["arch"])`` with no weights of any kind (nothing is
    downloaded); ``aux_loss`` only where it is set, as LR-ASPP has no auxiliary head."""
    from torchvision.models import get_model_builder

    arch = spec["arch"]
    if arch not in torchvision_segmentation_archs():
        raise ValueError(unknown_name("torchvision segmentation architecture", arch, torchvision_segmentation_archs()))
    kwargs = dict(weights=None, weights_backbone=None, num_classes=spec["num_outputs"])
    if spec.get("aux_loss"):
        kwargs["aux_loss"] = True
    return TorchvisionSegmentation(get_model_builder(arch)(**kwargs))


class DPTDepth(nn.Module):
    """transformers' ``DPTForDepthEstimation`` returning ``predicted_depth`` as ``[B, 1, h, w]``; its keys
    are transformers' own under ``model.``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).predicted_depth.unsqueeze(1)


def dpt_config(config: dict):
    """A ``DPTConfig`` from a ``config.json``'s contents (ValueError if it describes another model)."""
    from transformers import DPTConfig

    model_type = config.get("model_type")
    if model_type != "dpt":
        raise ValueError(f"config.json describes a {model_type!r} model, not a DPT (model_type 'dpt')")
    architectures = config.get("architectures") or ["DPTForDepthEstimation"]
    if "DPTForDepthEstimation" not in architectures:
        raise ValueError(f"config.json is for {', '.join(architectures)}, not DPTForDepthEstimation "
                         "(a depth model's directory is needed)")
    return DPTConfig.from_dict(config)


def build_dpt(spec: dict) -> nn.Module:
    """``DPTForDepthEstimation`` randomly initialised from ``spec["config"]`` (no download: a hybrid's
    BiT backbone is built from its config too)."""
    from transformers import DPTForDepthEstimation

    return DPTDepth(DPTForDepthEstimation(dpt_config(spec["config"])))


def unknown_name(what: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f"unknown {what} {name!r} (" + (f"did you mean {', '.join(close)}?" if close else
                                           f"use one of {', '.join(known)}") + ")"
