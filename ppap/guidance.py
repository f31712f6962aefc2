"""Classifier guidance as model wrappers: grad log p(y | x_t) from any guide ``guide(x, t) -> logits``.

DDIM guidance changes epsilon (Dhariwal & Nichol, 2021, Algorithm 2):
    eps_hat = eps - sqrt(1 - abar_t) * s * grad_x log p(y | x_t)
DDPM guidance shifts the posterior mean (their Algorithm 1):
    mean_hat = mean + s * Sigma_t * grad_x log p(y | x_t)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Guide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class NonFiniteError(FloatingPointError):
    """A loss or a guidance gradient became NaN or infinite."""


def grad_log_prob(guide: Guide, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """grad_x log softmax(guide(x_t, t))[y], per sample (the sum over the batch separates)."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        logits = guide(x, t).float()
        log_prob = F.log_softmax(logits, dim=-1).gather(1, labels.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(log_prob, x)
    if not torch.isfinite(grad).all():
        bad = (~torch.isfinite(grad)).flatten(1).any(1).nonzero().flatten().tolist()
        raise NonFiniteError(f"non-finite guidance gradient at timestep(s) {sorted(set(t[bad].tolist()))}")
    return grad.to(x_t.dtype)


def classifier_guided_eps(eps_fn: Callable, guide: Guide, labels: torch.Tensor, alphas_cumprod: torch.Tensor,
                          scale: float) -> Callable:
    """Wrap an epsilon model with classifier guidance for DDIM (guidance on epsilon)."""
    alphas_cumprod = alphas_cumprod.to(labels.device)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x, t)
        grad = grad_log_prob(guide, x, t, labels)
        sqrt_one_minus_abar = (1 - alphas_cumprod[t]).sqrt().to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return eps - sqrt_one_minus_abar * scale * grad

    return guided


def classifier_mean_shift(guide: Guide, labels: torch.Tensor, scale: float) -> Callable:
    """The DDPM mean shift ``s * Sigma_t * grad log p(y | x_t)`` (for ``sample_ddpm``)."""

    def shift(x: torch.Tensor, t: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
        return scale * variance * grad_log_prob(guide, x, t, labels)

    return shift
