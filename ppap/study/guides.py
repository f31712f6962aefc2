"""A guide name (:mod:`ppap.study.grammar`) and its files -> the :class:`ppap.generate.Guidance` that
steers sampling: none, the off-the-shelf guide on x_t or on x0_hat, a trained expert set, or the
class-conditional model. The name is parsed here, once; the library gets the parts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ppap import experts, guidance
from ppap.experts.sets import load_expert_set, read_manifest
from ppap.generate import Guidance
from ppap.guidance.classifier_free import ClassifierFreeGuidance
from ppap.guidance.training_free import TrainingFreeGuidance, TrainingFreeSettings
from ppap.models import classifiers
from ppap.models import dense as dense_models
from ppap.models import unet as unet_models
from ppap.models.guides import guide_checkpoint_kind, load_any_guide, with_speed_switches
from ppap.sampling import Denoiser
from ppap.study import grammar


@dataclass(frozen=True)
class GuideSource:
    """What a guide name needs on disk (a sampling rule's inputs): the off-the-shelf guide file (a
    classifier or a dense guide), a trained set's manifest, or the class-conditional model."""

    guide: str | os.PathLike | None = None
    manifest: str | os.PathLike | Mapping | None = None   # a manifest file, or its contents
    conditional_model: str | os.PathLike | None = None


def load_guidance(guide_name: str, denoiser: Denoiser, device: torch.device | str, source: GuideSource,
                  training_free: dict | None = None, routing: str = "owner", energy: guidance.Energy | None = None,
                  performance: dict | None = None) -> Guidance:
    """The :class:`Guidance` of a guide name: none, the off-the-shelf guide on x_t or (training-free)
    on x0_hat with TFG's ``training_free`` settings, a trained guide set (its manifest's experts and
    ranges, routed by ``routing``), or the class-conditional model (classifier-free).

    ``source.guide`` may hold a classifier or a dense guide; ``energy`` is then the guide's
    log-likelihood of a target (default: the classifier's; a dense guide needs its own).
    ``performance`` (config ``performance``, speed only): ``merge_adapters`` merges the LoRA expert
    in use into the weights, ``channels_last`` puts the guide in NHWC, ``center_tap_convs`` skips
    the padding's taps on 1x1 maps."""
    switches = dict(performance or {})
    channels_last, center_taps = switches.get("channels_last", False), switches.get("center_tap_convs", False)
    kind = grammar.guide_kind(guide_name)
    if kind == "none":
        return Guidance(denoiser)
    if kind == "classifier_free":
        model, null_label = unet_models.load_conditional_eps_model(source.conditional_model, device)
        return Guidance(denoiser._replace(eps=model), ClassifierFreeGuidance(null_label), num_classes=null_label,
                        description=f"class-conditional model {source.conditional_model} (null label {null_label})")
    guide_path = source.guide
    dense = guide_checkpoint_kind(guide_path) == dense_models.DENSE_GUIDE_KIND
    if dense and energy is None:
        raise ValueError(f"{guide_path} is a dense guide: give its energy (ppap.guidance.energy_for)")
    energy = energy or guidance.classifier_energy
    num_classes = (dense_models.read_dense_spec(guide_path)["num_outputs"] if dense
                   else classifiers.read_guide_spec(guide_path)["num_classes"])
    if kind in ("off_the_shelf", "training_free"):
        guide = experts.SingleGuide(load_any_guide(guide_path)).to(device).requires_grad_(False)
        guide = with_speed_switches(guide, channels_last, center_taps)
        if kind == "training_free":
            settings = TrainingFreeSettings(**training_free)
            return Guidance(denoiser, TrainingFreeGuidance(guide, settings, energy), num_classes,
                            f"{guide_path} off the shelf, on x0_hat: {settings}")
        return Guidance(denoiser, guidance.ClassifierGuidance(guide, energy), num_classes,
                        f"{guide_path} off the shelf")
    manifest = source.manifest if isinstance(source.manifest, Mapping) else read_manifest(source.manifest)
    guide = load_expert_set(guide_name, grammar.parse_guide_set(guide_name).rank, guide_path, manifest["experts"],
                            len(denoiser.alphas_cumprod), manifest["ranges"],
                            merge=switches.get("merge_adapters", False), routing=routing).to(device)
    guide = with_speed_switches(guide, channels_last, center_taps)
    return Guidance(denoiser, guidance.ClassifierGuidance(guide, energy), num_classes,
                    f"{guide_name} on {guide_path}: experts {manifest['experts']}, ranges {manifest['ranges']}")
