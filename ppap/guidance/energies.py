"""What "log p(y | x)" is for each kind of guide: an *energy* ``energy(outputs, target) -> [B]`` (a
log-likelihood per sample). A classifier's is log softmax(logits)[y]; a segmenter's the sum over
pixels of log p(target class | x); a dense regressor's a Gaussian log-likelihood of the target map,
optionally after MiDaS's per-sample scale-and-shift alignment (:func:`energy_for`)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ppap.vocab import REGRESSION_ENERGIES

Energy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]




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
