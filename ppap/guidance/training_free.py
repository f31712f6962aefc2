"""Training-free guidance: the clean off-the-shelf guide applied to the denoiser's estimate of x0.

One DDIM step of TFG's unified form (Ye et al., 2024, "TFG: Unified Training-Free Guidance for
Diffusion Models", Algorithm 1), with x0_hat = Tweedie's estimate from eps(x_t, t), clipped to
[-1, 1] as the unguided sampler clips it, and log p~(y | x) = log E_n p(y | x + gamma_t n) (the
guide smoothed by Gaussian noise of std gamma_t = smoothing * sqrt(1 - abar_t); exact when 0):

* variance guidance  Delta_t = rho_t grad_{x_t} log p~(y | x0_hat(x_t)), backpropagated through
  the denoiser (DPS, Chung et al. 2023; Universal Guidance's forward guidance, Bansal et al. 2023);
* mean guidance      x0 <- x0 + mu_t grad_{x0} log p~(y | x0), ``iterations`` times, no pass
  through the denoiser (MPGD, He et al. 2024); Delta_0 is the total change of x0;
* x_prev = DDIM(x_t, x0_hat) + Delta_t / sqrt(alpha_t) + sqrt(abar_prev) Delta_0
  (alpha_t = abar_t / abar_prev, the strided step's alpha);
* recurrence (FreeDoM's time travel, Yu et al. 2023): ``recurrence`` = r > 1 re-noises x_prev back
  to t, x_t = sqrt(alpha_t) x_prev + sqrt(1 - alpha_t) n, and repeats the step, r times in all.

rho_t = scale * variance * w_t and mu_t = scale * mean * w_t, with w over the sampler's steps
(``schedule``: constant 1, increase alpha_t, decrease 1 - alpha_t) normalised to mean 1, as TFG.
DPS, FreeDoM and MPGD are TFG's special cases (which terms each keeps:
:func:`ppap.study.grammar.training_free_settings`). The guide sees x0_hat as
the clean image it estimates: ``guide(x0_hat, t=0)``. At scale 0 nothing is guided, drawn or
repeated, and the step is exactly the unguided one of ``guided_model(clip="guided_diffusion")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ppap.guidance.classifier import NonFiniteError
from ppap.guidance.energies import Energy, classifier_energy
from ppap.sampling import (
    EpsFn,
    Step,
    StepContext,
    ddim_step,
    per_sample,
    predict_x0,
    randn,
    sample_loop,
    with_recurrence,
)
from ppap.specs import SamplingSpec
from ppap.vocab import TF_SCHEDULES


@dataclass(frozen=True)
class TrainingFreeSettings:
    """The hyperparameters of TFG's step; the sampling scale multiplies ``variance`` and ``mean``."""

    variance: float                 # rho: weight of grad_{x_t} through the denoiser
    mean: float                     # mu: weight of grad_{x0} (no denoiser backward)
    recurrence: int = 1             # steps taken per timestep (r - 1 re-noisings)
    iterations: int = 1             # mean-guidance gradient steps on x0
    smoothing: float = 0.0          # gamma: std of the guide's smoothing noise, times sqrt(1 - abar_t)
    smoothing_samples: int = 1      # Monte-Carlo samples of the smoothing noise
    schedule: str = "constant"      # how rho_t and mu_t vary over the steps

    def __post_init__(self):
        if self.variance < 0 or self.mean < 0:
            raise ValueError("training-free guidance weights (variance, mean) must be >= 0")
        if self.recurrence < 1 or self.iterations < 1 or self.smoothing_samples < 1:
            raise ValueError("recurrence, iterations and smoothing_samples must be >= 1")
        if self.smoothing < 0:
            raise ValueError("smoothing must be >= 0")
        if self.schedule not in TF_SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r} (use one of {', '.join(TF_SCHEDULES)})")


def smoothed_log_prob(guide: Callable, x0: torch.Tensor, labels: torch.Tensor,
                      noise: torch.Tensor | None = None, energy: Energy = classifier_energy) -> torch.Tensor:
    """log p~(y | x0) per sample: log of the mean of p(y | x0 + n_k) over the noise samples
    ``noise`` (K, *x0.shape), or log p(y | x0) when ``noise`` is None. The guide sees t = 0.
    ``energy`` is the guide's log p(target | x) (:func:`ppap.guidance.energy_for`)."""
    if noise is None:
        batch = x0
    else:
        batch = (x0.unsqueeze(0) + noise).flatten(0, 1)
    t = torch.zeros(batch.shape[0], dtype=torch.long, device=x0.device)
    repeats = batch.shape[0] // len(labels)
    targets = labels.repeat(repeats, *([1] * (labels.ndim - 1)))
    picked = energy(guide(batch, t), targets).view(repeats, len(labels))
    return torch.logsumexp(picked, dim=0) - torch.log(torch.tensor(float(repeats)))


def _check_finite(grad: torch.Tensor, t: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(grad).all():
        raise NonFiniteError(f"non-finite {what} gradient at timestep {int(t[0])}")
    return grad


def x0_estimate(eps_fn: Callable, x_t: torch.Tensor, t: torch.Tensor, abar_t: torch.Tensor,
                clip_x0: bool) -> torch.Tensor:
    """Tweedie's x0_hat(x_t) from the denoiser, clipped to [-1, 1] when the sampler clips."""
    x0 = predict_x0(x_t, eps_fn(x_t, t), abar_t)
    return x0.clamp(-1, 1) if clip_x0 else x0


def variance_guidance_gradient(eps_fn: Callable, guide: Callable, x_t: torch.Tensor, t: torch.Tensor,
                               labels: torch.Tensor, abar_t: torch.Tensor, clip_x0: bool = True,
                               noise: torch.Tensor | None = None,
                               energy: Energy = classifier_energy) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_{x_t} log p~(y | x0_hat(x_t)) through the denoiser, x0_hat) for every sample."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        x0 = x0_estimate(eps_fn, x, t, abar_t, clip_x0)
        (grad,) = torch.autograd.grad(smoothed_log_prob(guide, x0, labels, noise, energy).sum(), x)
    return _check_finite(grad, t, "x0-guidance").to(x_t.dtype), x0.detach()


def mean_guidance_gradient(guide: Callable, x0: torch.Tensor, labels: torch.Tensor,
                           noise: torch.Tensor | None = None, energy: Energy = classifier_energy) -> torch.Tensor:
    """grad_{x0} log p~(y | x0): the guide's gradient at x0_hat, which never reaches the denoiser."""
    with torch.enable_grad():
        x = x0.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(smoothed_log_prob(guide, x, labels, noise, energy).sum(), x)
    return _check_finite(grad, torch.zeros(1), "x0 mean-guidance").to(x0.dtype)


def schedule_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, schedule: str) -> torch.Tensor:
    """w_i over the sampler's steps t_i -> t_{i+1} (the last to abar = 1), mean 1 (TFG's rho/mu schedule)."""
    abar = alphas_cumprod[timesteps].double()
    abar_prev = torch.cat([abar[1:], abar.new_ones(1)])
    step_alpha = abar / abar_prev
    raw = {"constant": torch.ones_like(abar), "increase": step_alpha, "decrease": 1 - step_alpha}[schedule]
    return (raw * len(raw) / raw.sum()).float()


def training_free_step(
    eps_fn: Callable,                   # the raw denoiser eps(x, t), not clipped
    guide: Callable,                    # guide(x, t) -> logits, clean (it sees x0_hat at t = 0)
    labels: torch.Tensor,
    weights: torch.Tensor,              # w_i over the sampler's steps (schedule_weights)
    settings: TrainingFreeSettings,
    scale: float,
    clip_x0: bool = True,
    eta: float = 0.0,
    energy: Energy = classifier_energy,  # the guide's log p(target | x): a classifier's, or a dense one
) -> Step:
    """TFG's guided DDIM step (module docstring), recurrence included: the step the sampling loop
    (:func:`ppap.sampling.sample_loop`) takes at the ``index``-th timestep."""
    guided = scale != 0

    def step(x: torch.Tensor, context: StepContext, generator: torch.Generator | None) -> torch.Tensor:
        t_batch, abar_t, abar_prev = context.t, context.abar_t, context.abar_prev
        rho = scale * settings.variance * float(weights[context.index])
        mu = scale * settings.mean * float(weights[context.index])
        noise = None
        if guided and settings.smoothing > 0:
            gamma = per_sample((1 - abar_t).sqrt(), x) * settings.smoothing
            noise = gamma * randn((settings.smoothing_samples, *x.shape), generator, x)
        if rho != 0:
            grad_t, x0 = variance_guidance_gradient(eps_fn, guide, x, t_batch, labels, abar_t, clip_x0, noise, energy)
        else:
            x0, grad_t = x0_estimate(eps_fn, x, t_batch, abar_t, clip_x0), None
        # eps re-derived from the (clipped) x0, as guided-diffusion's clipped denoiser does
        abar_ = per_sample(abar_t, x)
        eps = (x - abar_.sqrt() * x0) / (1 - abar_).sqrt()
        step_noise = randn(x.shape, generator, x) if eta > 0 else None
        x_prev = ddim_step(x, eps, abar_t, abar_prev, eta=eta, noise=step_noise, clip_x0=False)
        if grad_t is not None:
            x_prev = x_prev + rho * grad_t / per_sample(abar_t / abar_prev, x).sqrt()
        if mu != 0:
            moved = x0
            for _ in range(settings.iterations):
                moved = moved + mu * mean_guidance_gradient(guide, moved, labels, noise, energy)
            x_prev = x_prev + per_sample(abar_prev, x).sqrt() * (moved - x0)
        return x_prev

    # time travel as every sampler's (ppap.sampling.with_recurrence); unguided, nothing is repeated
    return with_recurrence(step, settings.recurrence if guided else 1)


def sample_ddim_training_free(
    eps_fn: Callable,                   # the raw denoiser eps(x, t), not clipped
    guide: Callable,                    # guide(x, t) -> logits, clean (it sees x0_hat at t = 0)
    labels: torch.Tensor,
    x_T: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    settings: TrainingFreeSettings,
    scale: float,
    clip_x0: bool = True,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    energy: Energy = classifier_energy,
) -> torch.Tensor:
    """DDIM over decreasing ``timesteps`` with TFG's guided step: the one loop with
    :func:`training_free_step`."""
    weights = schedule_weights(alphas_cumprod.to(x_T.device), timesteps.to(x_T.device), settings.schedule)
    step = training_free_step(eps_fn, guide, labels, weights, settings, scale, clip_x0, eta, energy)
    return sample_loop(step, x_T, timesteps, alphas_cumprod, generator)


@dataclass(frozen=True)
class TrainingFreeGuidance:
    """Training-free guidance: the clean ``guide`` on the denoiser's x0 estimate, TFG's step with
    ``settings`` (DPS, FreeDoM, MPGD and TFG are its special cases). DDIM only; x0 clipped unless
    ``spec.clip`` is ``none`` (``after_guidance`` has no meaning here)."""

    guide: Callable
    settings: TrainingFreeSettings
    energy: Energy = classifier_energy

    def step(self, eps_fn: EpsFn, targets: torch.Tensor, spec: SamplingSpec, alphas_cumprod: torch.Tensor,
             timesteps: torch.Tensor) -> Step:
        if spec.sampler != "ddim" or spec.clip == "after_guidance":
            raise ValueError("training-free guidance needs a guide, the ddim sampler and clip guided_diffusion or none")
        if spec.recurrence != 1:
            raise ValueError("training-free guidance repeats its steps by its own settings' recurrence, "
                             f"not the sampling's (got recurrence {spec.recurrence})")
        weights = schedule_weights(alphas_cumprod, timesteps.to(alphas_cumprod.device), self.settings.schedule)
        return training_free_step(eps_fn, self.guide, targets, weights, self.settings, spec.scale,
                                  clip_x0=spec.clip != "none", eta=spec.eta, energy=self.energy)


class GuideOnEstimate(torch.nn.Module):
    """``(x_t, t) -> guide(x0_hat(x_t), 0)``: what training-free guidance asks of the clean guide.
    Its noisy accuracy (``ppap.training.noisy_accuracy``) shows where x0_hat is too blurred for the
    guide to read the class, beside the off-the-shelf guide on x_t and PPAP's experts."""

    def __init__(self, eps_fn: Callable, guide: Callable, alphas_cumprod: torch.Tensor, clip_x0: bool = True):
        super().__init__()
        self.eps_fn, self.guide, self.clip_x0 = eps_fn, guide, clip_x0
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = x0_estimate(self.eps_fn, x_t, t, self.alphas_cumprod[t], self.clip_x0)
        return self.guide(x0, torch.zeros_like(t))
