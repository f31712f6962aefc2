"""Classifier-free guidance (Ho & Salimans, 2022) of a class-conditional epsilon model."""

from __future__ import annotations

from typing import Callable

import torch


def classifier_free_eps(cond_eps_fn: Callable, labels: torch.Tensor, null_label: int, scale: float) -> Callable:
    """eps~ = (1 + w) eps(x, t, y) - w eps(x, t, null), w = ``scale`` (w = 0: the conditional model,
    one denoiser pass; otherwise one pass over the 2n batch)."""

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if scale == 0:
            return cond_eps_fn(x, t, labels)
        both = cond_eps_fn(torch.cat([x, x]), torch.cat([t, t]),
                           torch.cat([labels, torch.full_like(labels, null_label)]))
        cond, uncond = both.chunk(2)
        return ((1 + scale) * cond - scale * uncond).to(x.dtype)

    return guided
