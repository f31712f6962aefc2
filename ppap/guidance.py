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

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from ppap.diffusion import clipped_eps

Guide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Energy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
REGRESSION_ENERGIES = ("gaussian", "scale_shift_invariant")


def _float(outputs: torch.Tensor) -> torch.Tensor:
    """float32 at least (bf16 autocast outputs), float64 kept (the gradient checks)."""
    return outputs.to(torch.promote_types(outputs.dtype, torch.float32))


def classifier_energy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(y | x) per sample from [B, K] logits."""
    return F.log_softmax(_float(logits), dim=-1).gather(1, labels.view(-1, 1)).view(-1)


def segmentation_energy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """sum over pixels of log p(target class | x), per sample, from [B, K, H, W] logits and a
    [B, H, W] map (pixels independent given x, as a segmentation head models them)."""
    log_probs = F.log_softmax(_float(logits), dim=1)
    return log_probs.gather(1, target.long().unsqueeze(1)).flatten(1).sum(1)


def scale_shift_aligned(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """s * prediction + b with the per-sample (s, b) that fit the target best in least squares
    (MiDaS's scale-and-shift invariance, Ranftl et al. 2020); differentiable in the prediction."""
    p, d = prediction.flatten(1), target.flatten(1).to(prediction.dtype)
    p_mean, d_mean = p.mean(1, keepdim=True), d.mean(1, keepdim=True)
    scale = ((p - p_mean) * (d - d_mean)).mean(1, keepdim=True) / ((p - p_mean) ** 2).mean(1, keepdim=True).clamp_min(eps)
    return (scale * (p - p_mean) + d_mean).view_as(prediction)


def regression_energy(prediction: torch.Tensor, target: torch.Tensor, sigma: float = 1.0,
                      invariant: bool = False) -> torch.Tensor:
    """-||f(x) - d||^2 / (2 sigma^2) per sample (a Gaussian log-likelihood up to a constant); with
    ``invariant`` f(x) is first aligned to d in scale and shift."""
    prediction = _float(prediction)
    if invariant:
        prediction = scale_shift_aligned(prediction, target)
    return -((prediction - target.to(prediction.dtype)) ** 2).flatten(1).sum(1) / (2 * sigma ** 2)


def energy_for(kind: str, regression: str = "gaussian", sigma: float = 1.0) -> Energy:
    """The energy of a guide kind: ``classification``, ``segmentation`` or ``regression`` (with
    ``regression`` = gaussian | scale_shift_invariant and its ``sigma``)."""
    if kind == "classification":
        return classifier_energy
    if kind == "segmentation":
        return segmentation_energy
    if kind == "regression":
        if regression not in REGRESSION_ENERGIES:
            raise ValueError(f"unknown regression energy {regression!r} (use {' or '.join(REGRESSION_ENERGIES)})")
        if sigma <= 0:
            raise ValueError("the regression energy's sigma must be positive")
        invariant = regression == "scale_shift_invariant"
        return lambda prediction, target: regression_energy(prediction, target, sigma, invariant)
    raise ValueError(f"unknown guide kind {kind!r} (use classification, segmentation or regression)")


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
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"unknown sampler {sampler!r} (use ddim or ddpm)")
    if clip not in ("guided_diffusion", "after_guidance", "none"):
        raise ValueError(f"unknown clip order {clip!r} (use guided_diffusion, after_guidance or none)")
    if sampler == "ddpm":
        shift = None if guide is None else classifier_mean_shift(guide, labels, scale, energy)
        return GuidedModel(eps_model, shift, clip != "none")
    denoiser = clipped_eps(eps_model, alphas_cumprod) if clip == "guided_diffusion" else eps_model
    eps_fn = denoiser if guide is None else classifier_guided_eps(denoiser, guide, labels, alphas_cumprod, scale, energy)
    return GuidedModel(eps_fn, None, clip == "after_guidance")
