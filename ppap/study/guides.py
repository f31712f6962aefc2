"""A guide name (:mod:`ppap.study.grammar`) and its files -> the :class:`ppap.generate.Guidance` that
steers sampling: none, the off-the-shelf guide on x_t or on x0_hat, a trained expert set, or the
class-conditional model."""

from __future__ import annotations

import torch

from ppap import experts, guidance
from ppap.experts.sets import load_expert_set
from ppap.generate import Guidance
from ppap.guidance.training_free import TrainingFreeSettings
from ppap.models import classifiers
from ppap.models import dense as dense_models
from ppap.models import unet as unet_models
from ppap.models.guides import guide_checkpoint_kind, load_any_guide, with_speed_switches
from ppap.study import grammar


def load_guidance(guide_name: str, eps_model, num_timesteps: int, device: torch.device, guide_path=None,
                  manifest: dict | None = None, conditional_model_dir=None, training_free: dict | None = None,
                  routing: str = "owner", energy: guidance.Energy | None = None, merge_adapters: bool = False,
                  channels_last: bool = False, center_tap_convs: bool = False) -> Guidance:
    """The :class:`Guidance` of a guide name (:mod:`ppap.study.grammar`): none, the off-the-shelf guide on
    x_t or (training-free) on x0_hat, a trained guide set (its manifest's experts and ranges), or
    the class-conditional model at ``conditional_model_dir`` (classifier-free).

    ``guide_path`` may hold a classifier or a dense guide; ``energy`` is then the guide's
    log-likelihood of a target (default: the classifier's; a dense guide needs its own).
    Speed only (config ``performance``): ``merge_adapters`` merges the LoRA expert in use into the
    weights (:class:`ppap.experts.AdapterExperts`), ``channels_last`` puts the guide in NHWC,
    ``center_tap_convs`` skips the padding's taps on 1x1 maps (:mod:`ppap.models.convs`)."""
    kind = grammar.guide_kind(guide_name)
    if kind == "none":
        return Guidance(eps_model)
    if kind == "classifier_free":
        model, null_label = unet_models.load_conditional_eps_model(conditional_model_dir, device)
        return Guidance(model, num_classes=null_label, classifier_free=null_label,
                        description=f"class-conditional model {conditional_model_dir} (null label {null_label})")
    dense = guide_checkpoint_kind(guide_path) == dense_models.DENSE_GUIDE_KIND
    if dense and energy is None:
        raise ValueError(f"{guide_path} is a dense guide: give its energy (ppap.guidance.energy_for)")
    energy = energy or guidance.classifier_energy
    num_classes = (dense_models.read_dense_spec(guide_path)["num_outputs"] if dense
                   else classifiers.read_guide_spec(guide_path)["num_classes"])
    if kind in ("off_the_shelf", "training_free"):
        guide = experts.SingleGuide(load_any_guide(guide_path)).to(device).requires_grad_(False)
        guide = with_speed_switches(guide, channels_last, center_tap_convs)
        settings = TrainingFreeSettings(**training_free) if kind == "training_free" else None
        return Guidance(eps_model, guide, num_classes, settings, energy=energy,
                        description=f"{guide_path} off the shelf" + (f", on x0_hat: {settings}" if settings else ""))
    guide = load_expert_set(guide_name, grammar.parse_guide_set(guide_name).rank, guide_path, manifest["experts"], num_timesteps, manifest["ranges"],
                            merge=merge_adapters, routing=routing).to(device)
    guide = with_speed_switches(guide, channels_last, center_tap_convs)
    return Guidance(eps_model, guide, num_classes, energy=energy,
                    description=f"{guide_name} on {guide_path}: experts {manifest['experts']}, ranges {manifest['ranges']}")
