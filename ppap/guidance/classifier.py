"""Classifier guidance as model wrappers: grad log p(y | x_t) from any guide ``guide(x, t) -> outputs``.

What "log p(y | x_t)" is depends on the guide's kind: an *energy* ``energy(outputs, target) -> [B]``
(a log-likelihood per sample). A classifier's is log softmax(logits)[y]; a segmenter's the sum over
pixels of log p(target class | x_t); a dense regressor's a Gaussian log-likelihood of the target map,
optionally after MiDaS's per-sample scale-and-shift alignment (:func:`energy_for`).

DDIM guidance changes epsilon (Dhariwal & Nichol, 2021, Algorithm 2):
    eps_hat = eps - sqrt(1 - abar_t) * s * grad_x log p(y | x_t)
DDPM guidance shifts the posterior mean (their Algorithm 1):
    mean_hat = mean + s * Sigma_t * grad_x log p(y | x_t)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from ppap.guidance.energies import Energy, classifier_energy
from ppap.sampling import EpsFn, Step, clipped_eps, sampler_step
from ppap.specs import SamplingSpec
from ppap.vocab import CLIP_MODES, SAMPLERS

Guide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NonFiniteError(FloatingPointError):
    """A loss or a guidance gradient became NaN or infinite."""


def grad_log_prob(guide: Guide, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                  energy: Energy = classifier_energy) -> torch.Tensor:
    """grad_x energy(guide(x_t, t), y), per sample (the sum over the batch separates); by default
    the classifier's log softmax(guide(x_t, t))[y]."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        log_prob = energy(guide(x, t).float(), labels).sum()
        (grad,) = torch.autograd.grad(log_prob, x)
    if not torch.isfinite(grad).all():
        bad = (~torch.isfinite(grad)).flatten(1).any(1).nonzero().flatten().tolist()
        raise NonFiniteError(f"non-finite guidance gradient at timestep(s) {sorted(set(t[bad].tolist()))}")
    return grad.to(x_t.dtype)


def classifier_guided_eps(eps_fn: Callable, guide: Guide, labels: torch.Tensor, alphas_cumprod: torch.Tensor,
                          scale: float, energy: Energy = classifier_energy) -> Callable:
    """Wrap an epsilon model with classifier guidance for DDIM (guidance on epsilon)."""
    alphas_cumprod = alphas_cumprod.to(labels.device)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x, t)
        grad = grad_log_prob(guide, x, t, labels, energy)
        sqrt_one_minus_abar = (1 - alphas_cumprod[t]).sqrt().to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return eps - sqrt_one_minus_abar * scale * grad

    return guided


def classifier_mean_shift(guide: Guide, labels: torch.Tensor, scale: float,
                          energy: Energy = classifier_energy) -> Callable:
    """The DDPM mean shift ``s * Sigma_t * grad log p(y | x_t)`` (for ``sample_ddpm``)."""

    def shift(x: torch.Tensor, t: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
        return scale * variance * grad_log_prob(guide, x, t, labels, energy)

    return shift


class GuidedModel(NamedTuple):
    """What a sampler is given: the epsilon function, the DDPM mean shift, and whether the sampler
    itself clips x0 (``sample_ddim(eps_fn, ..., clip_x0=clip_x0)``)."""

    eps_fn: Callable
    mean_shift_fn: Callable | None
    clip_x0: bool

    def step(self, sampler: str, eta: float = 0.0, recurrence: int = 1) -> Step:
        """The sampling loop's step (:func:`ppap.sampling.sampler_step`) for this model."""
        return sampler_step(sampler, self.eps_fn, eta, self.clip_x0, self.mean_shift_fn, recurrence)


def guided_model(eps_model: Callable, alphas_cumprod: torch.Tensor, sampler: str = "ddim",
                 clip: str = "guided_diffusion", guide: Guide | None = None, labels: torch.Tensor | None = None,
                 scale: float = 0.0, energy: Energy = classifier_energy) -> GuidedModel:
    """Compose denoiser, clipping and classifier guidance in the order `clip` names.

    * ``guided_diffusion`` (Dhariwal & Nichol's code): DDIM predicts x0 from the *unguided* eps,
      clips it, re-derives eps, subtracts sqrt(1 - abar) s grad and clips no more; DDPM clips x0,
      forms the posterior mean and adds s Sigma grad.
    * ``after_guidance``: the DDIM sampler clips the x0 of the *guided* eps. DDPM guidance shifts
      the mean of the clipped posterior, so there it is the same as ``guided_diffusion``.
    * ``none``: nothing is clipped.
    Without a guide the same clipping applies to the plain denoiser. ``energy`` is the guide's
    log-likelihood of the target (:func:`energy_for`; a classifier's by default).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r} (use ddim or ddpm)")
    if clip not in CLIP_MODES:
        raise ValueError(f"unknown clip order {clip!r} (use guided_diffusion, after_guidance or none)")
    if sampler == "ddpm":
        shift = None if guide is None else classifier_mean_shift(guide, labels, scale, energy)
        return GuidedModel(eps_model, shift, clip != "none")
    denoiser = clipped_eps(eps_model, alphas_cumprod) if clip == "guided_diffusion" else eps_model
    eps_fn = denoiser if guide is None else classifier_guided_eps(denoiser, guide, labels, alphas_cumprod, scale, energy)
    return GuidedModel(eps_fn, None, clip == "after_guidance")


@dataclass(frozen=True)
class Unguided:
    """No guidance: the sampler's own step on the denoiser, clipped as ``spec.clip`` says."""

    guide: None = None

    def step(self, eps_fn: EpsFn, targets: torch.Tensor | None, spec: SamplingSpec, alphas_cumprod: torch.Tensor,
             timesteps: torch.Tensor) -> Step:
        return guided_model(eps_fn, alphas_cumprod, spec.sampler, spec.clip).step(spec.sampler, spec.eta, spec.recurrence)


@dataclass(frozen=True)
class ClassifierGuidance:
    """Classifier guidance with any guide on x_t (off the shelf, one noise-aware guide, or routed
    experts): DDIM on epsilon, DDPM on the mean, in the order ``spec.clip`` names (:func:`guided_model`).
    ``energy`` is the guide's log p(target | x_t) (:func:`ppap.guidance.energies.energy_for`)."""

    guide: Guide
    energy: Energy = classifier_energy

    def step(self, eps_fn: EpsFn, targets: torch.Tensor, spec: SamplingSpec, alphas_cumprod: torch.Tensor,
             timesteps: torch.Tensor) -> Step:
        model = guided_model(eps_fn, alphas_cumprod, spec.sampler, spec.clip, self.guide, targets, spec.scale,
                             self.energy)
        return model.step(spec.sampler, spec.eta, spec.recurrence)
