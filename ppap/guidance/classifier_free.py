"""Classifier-free guidance (Ho & Salimans, 2022) as a model wrapper: cond_eps_fn -> eps_fn.

    eps~(x, t, y) = (1 + w) eps(x, t, y) - w eps(x, t, null)

w = 0 is the conditional model itself, w > 0 guides towards y. The labeled upper bound of the
benchmark sweeps the same scale values as classifier guidance. The samplers
(``ppap.sampling.sample_ddim`` / ``sample_ddpm``) take the wrapped ``eps_fn(x, t)`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ppap.guidance.classifier import guided_model
from ppap.sampling import EpsFn, Step
from ppap.specs import SamplingSpec

CondEpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def classifier_free_eps(cond_eps_fn: CondEpsFn, labels: torch.Tensor, null_label: int, scale: float) -> EpsFn:
    """Implements Algorithm 2 of Ho & Salimans (2022): ``(1 + w) eps(x, t, y) - w eps(x, t, null)``, w = `scale`.

    `cond_eps_fn(x, t, class_labels)` is a class-conditional epsilon model (e.g. ``EpsilonModel``
    over a UNet built with ``num_classes``); `labels` holds one target class per sample and
    `null_label` is the label the model was trained to read as "no class" (label dropout).

    Scale 0 runs the conditional forward alone (exactly the conditional sample, one denoiser pass
    per step). Otherwise the conditional and the unconditional predictions come from ONE forward
    on the 2n batch (x twice; labels, then null labels), which is still one denoiser call per step.
    The result has x's dtype (bf16 autocast included). Any x0 clipping (``clipped_eps``, the
    sampler's ``clip_x0``) goes outside this wrapper: this guidance changes the denoiser itself.
    """
    if scale == 0:
        def conditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            _check_batch(x, labels)
            return cond_eps_fn(x, t, labels.to(x.device)).to(x.dtype)

        return conditional

    both_labels = torch.cat([labels, torch.full_like(labels, null_label)])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _check_batch(x, labels)
        eps = cond_eps_fn(torch.cat([x, x]), torch.cat([t, t]), both_labels.to(x.device))
        eps_conditional, eps_unconditional = eps.chunk(2)
        return ((1 + scale) * eps_conditional - scale * eps_unconditional).to(x.dtype)

    return guided


def _check_batch(x: torch.Tensor, labels: torch.Tensor) -> None:
    if labels.shape != (x.shape[0],):
        raise ValueError(f"classifier-free guidance needs one label per sample: labels {tuple(labels.shape)} "
                         f"for a batch of {x.shape[0]}")


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Classifier-free guidance of a class-conditional denoiser ``eps_fn(x, t, y)`` at ``spec.scale``
    (w = 0: the conditional model), clipped as ``spec.clip`` says; ``null_label`` reads as "no class"."""

    null_label: int
    guide: None = None

    def step(self, eps_fn: CondEpsFn, targets: torch.Tensor, spec: SamplingSpec, alphas_cumprod: torch.Tensor,
             timesteps: torch.Tensor) -> Step:
        denoiser = classifier_free_eps(eps_fn, targets, self.null_label, spec.scale)
        return guided_model(denoiser, alphas_cumprod, spec.sampler, spec.clip).step(spec.sampler, spec.eta, spec.recurrence)
