"""The one interface every guidance method implements, and the loop's unguided step.

A guidance method is a small object with ``guide`` (the network whose passes a
:class:`ppap.compute.SamplingCost` counts, or None) and one method,
``step(eps_fn, targets, spec, alphas_cumprod, timesteps) -> ppap.sampling.Step``: the step the one
sampling loop (:func:`ppap.sampling.sample_loop`) takes at every timestep, given the raw denoiser,
one target per sample and the :class:`ppap.specs.SamplingSpec`. Classifier and classifier-free
guidance return the sampler's own step around a wrapped epsilon (or DDPM's mean shift), in
guided-diffusion's ``condition_score`` / ``condition_mean`` places; training-free guidance returns a
step of its own (TFG's, recurrence included). A new method is one module with one such class.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ppap.sampling import EpsFn, Step
from ppap.specs import SamplingSpec


class GuidanceMethod(Protocol):
    guide: torch.nn.Module | None

    def step(self, eps_fn: EpsFn, targets: torch.Tensor, spec: SamplingSpec, alphas_cumprod: torch.Tensor,
             timesteps: torch.Tensor) -> Step: ...
