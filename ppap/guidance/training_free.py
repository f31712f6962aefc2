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

Beside TFG's form, each method's own step as its authors' code takes it (``settings.rule``: DPS,
FreeDoM, MPGD, Universal Guidance; :func:`published_step` cites each), through the same loop.
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
from ppap.vocab import TF_RULES, TF_SCHEDULES


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
    rule: str = "tfg"               # TFG's unified step, or one method's own (module docstring)

    def __post_init__(self):
        if self.rule not in TF_RULES:
            raise ValueError(f"unknown training-free rule {self.rule!r} (use one of {', '.join(TF_RULES)})")
        if self.rule != "tfg" and self.smoothing > 0:
            raise ValueError(f"the {self.rule} rule has no smoothing (TFG's own term); set smoothing 0")
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
    grad, x0, _ = log_prob_through_denoiser(eps_fn, guide, x_t, t, labels, abar_t, clip_x0, noise, energy)
    return grad, x0


def log_prob_through_denoiser(eps_fn: Callable, guide: Callable, x_t: torch.Tensor, t: torch.Tensor,
                              labels: torch.Tensor, abar_t: torch.Tensor, clip_x0: bool = True,
                              noise: torch.Tensor | None = None, energy: Energy = classifier_energy
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_{x_t} log p~(y | x0_hat(x_t)), x0_hat, log p~(y | x0_hat)) per sample, from one pass
    through the denoiser and the guide and one backward pass through both."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        x0 = x0_estimate(eps_fn, x, t, abar_t, clip_x0)
        log_prob = smoothed_log_prob(guide, x0, labels, noise, energy)
        (grad,) = torch.autograd.grad(log_prob.sum(), x)
    return _check_finite(grad, t, "x0-guidance").to(x_t.dtype), x0.detach(), log_prob.detach()


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
    num_timesteps: int = 1000,          # the training schedule's T (FreeDoM's time-travel range is a share of it)
) -> Step:
    """TFG's guided DDIM step (module docstring), recurrence included: the step the sampling loop
    (:func:`ppap.sampling.sample_loop`) takes at the ``index``-th timestep; a method's own step
    (:func:`published_step`) where ``settings.rule`` names one."""
    if settings.rule != "tfg":
        return published_step(eps_fn, guide, labels, weights, settings, scale, clip_x0, eta, energy, num_timesteps)
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
        x_prev = _ddim_from_x0(x, x0, context, eta, generator)
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


# FreeDoM's time travel on ImageNet: 500 <= t <= 800 of T = 1000 (Face-GD/functions/denoising.py)
FREEDOM_TRAVEL = (0.5, 0.8)


def _rms(v: torch.Tensor) -> torch.Tensor:
    """Root mean square per sample, broadcastable against ``v``."""
    return v.pow(2).flatten(1).mean(1).sqrt().view(-1, *([1] * (v.ndim - 1)))


def published_step(eps_fn: Callable, guide: Callable, labels: torch.Tensor, weights: torch.Tensor,
                   settings: TrainingFreeSettings, scale: float, clip_x0: bool = True, eta: float = 0.0,
                   energy: Energy = classifier_energy, num_timesteps: int = 1000) -> Step:
    """One method's own step, as its authors' code takes it, on this harness's DDIM step (x0_hat
    clipped as the sampler clips; ``eta`` the sampling's) with log p(y | x0_hat) for their losses;
    s = scale x w_i (the schedule's weight). Of the settings only ``recurrence``, ``iterations``,
    ``schedule`` and (ug) ``mean`` apply. At scale 0 it is the unguided step, nothing repeated.

    * ``dps`` (DPS2022/diffusion-posterior-sampling, guided_diffusion/condition_methods.py,
      PosteriorSampling): x_prev - s grad_{x_t} ||residual||, the *un-squared* norm's gradient
      through the denoiser; here ||residual|| is sqrt(-log p(y | x0_hat)) per sample (the norm a
      Gaussian likelihood's log-density is the square of).
    * ``freedom`` (vvictoryuki/FreeDoM, Face-GD/functions/denoising.py, the pixel-space guidance):
      x_prev + rho g with g = grad_{x_t} log p(y | x0_hat) through the denoiser, rescaled per sample to
      rho = s l1 / rms(g), l1 = rms(eps) sqrt(1 - abar_t) / sqrt(abar_t) c1, c1 = sqrt(abar_prev)
      (1 - alpha_t) / (1 - abar_t) (the x0 noise's size in the step); time travel (``recurrence``)
      only where 0.5 T <= t <= 0.8 T.
    * ``mpgd`` (KellyYutongHe/mpgd_pytorch, linear_inv/guided_diffusion/condition_methods.py,
      WoProjSampling): x0 <- x0 + s grad_{x0} log p(y | x0) / sqrt(abar_prev), ``iterations`` times,
      then the DDIM step from the moved x0 with the unguided eps: x_prev moves by s grad at every t.
    * ``ug`` (arpitbansal297/Universal-Guided-Diffusion, Guided_Diffusion_Imagenet/guided_diffusion/
      gaussian_diffusion.py, ddim_sample_operation): forward guidance eps_hat = eps - s sqrt(1 - abar_t)
      grad_{x_t} log p(y | x0_hat(x_t)); backward guidance (``mean`` > 0): ``iterations`` Adam steps at
      learning rate scale x ``mean`` on Delta minimising -log p(y | clip(x0_hat + Delta)), then
      eps_tilde = eps_hat - sqrt(abar_t / (1 - abar_t)) Delta; self-recurrence as ``recurrence``.
    """
    rule, guided = settings.rule, scale != 0

    def plain(x, context, generator):
        x0 = x0_estimate(eps_fn, x, context.t, context.abar_t, clip_x0)
        return _ddim_from_x0(x, x0, context, eta, generator)

    def step(x: torch.Tensor, context: StepContext, generator: torch.Generator | None) -> torch.Tensor:
        s = scale * float(weights[context.index])
        t, abar_t, abar_prev = context.t, per_sample(context.abar_t, x), per_sample(context.abar_prev, x)
        if rule == "mpgd":
            x0 = x0_estimate(eps_fn, x, t, context.abar_t, clip_x0)
            moved = x0
            for _ in range(settings.iterations):
                moved = moved + s * mean_guidance_gradient(guide, moved, labels, None, energy) / abar_prev.sqrt()
            # the DDIM step with the unguided eps, from the moved x0
            return _ddim_from_x0(x, x0, context, eta, generator) + abar_prev.sqrt() * (moved - x0)
        grad, x0, log_prob = log_prob_through_denoiser(eps_fn, guide, x, t, labels, context.abar_t, clip_x0,
                                                       None, energy)
        if rule == "dps":
            residual = (-log_prob).clamp(min=1e-12).sqrt()
            return _ddim_from_x0(x, x0, context, eta, generator) + s * grad / (2 * per_sample(residual, x))
        if rule == "freedom":
            eps = (x - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
            c1 = abar_prev.sqrt() * (1 - abar_t / abar_prev) / (1 - abar_t)
            l1 = _rms(eps) * (1 - abar_t).sqrt() / abar_t.sqrt() * c1
            norm = _rms(grad)
            rho = torch.where(norm > 0, s * l1 / norm.clamp(min=1e-30), torch.zeros_like(norm))
            return _ddim_from_x0(x, x0, context, eta, generator) + rho * grad
        # ug: forward guidance on eps, then backward guidance on its x0
        eps = (x - abar_t.sqrt() * x0) / (1 - abar_t).sqrt() - s * (1 - abar_t).sqrt() * grad
        x0 = predict_x0(x, eps, context.abar_t)
        x0 = x0.clamp(-1, 1) if clip_x0 else x0
        if settings.mean > 0:
            x0 = _backward_guidance(guide, x0, labels, scale * settings.mean, settings.iterations, clip_x0, energy)
        return _ddim_from_x0(x, x0, context, eta, generator)

    if not guided:
        return plain
    if rule == "freedom" and settings.recurrence > 1:
        low, high = (share * num_timesteps for share in FREEDOM_TRAVEL)
        travel = with_recurrence(step, settings.recurrence)
        return lambda x, context, generator: (travel if low <= int(context.t[0]) <= high else step)(
            x, context, generator)
    if rule == "ug":
        return with_recurrence(step, settings.recurrence)
    return step


def _ddim_from_x0(x: torch.Tensor, x0: torch.Tensor, context: StepContext, eta: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """DDIM's step to the next timestep from an x0, eps re-derived from the (clipped) x0 as
    guided-diffusion's clipped denoiser does."""
    abar = per_sample(context.abar_t, x)
    eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
    noise = randn(x.shape, generator, x) if eta > 0 else None
    return ddim_step(x, eps, context.abar_t, context.abar_prev, eta=eta, noise=noise, clip_x0=False)


def _backward_guidance(guide: Callable, x0: torch.Tensor, labels: torch.Tensor, lr: float, steps: int,
                       clip_x0: bool, energy: Energy) -> torch.Tensor:
    """Universal Guidance's backward guidance: Adam on Delta against -log p(y | x0 + Delta), x0 + Delta
    clipped before each evaluation when the sampler clips; returns the moved x0."""
    delta = torch.zeros_like(x0, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            moved = x0.detach() + delta
            moved = moved.clamp(-1, 1) if clip_x0 else moved
            loss = -smoothed_log_prob(guide, moved, labels, None, energy).sum()
            optimizer.zero_grad()
            loss.backward()
            _check_finite(delta.grad, torch.zeros(1), "backward-guidance")
            optimizer.step()
    moved = x0 + delta.detach()
    return moved.clamp(-1, 1) if clip_x0 else moved


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
    step = training_free_step(eps_fn, guide, labels, weights, settings, scale, clip_x0, eta, energy,
                              len(alphas_cumprod))
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
                                  clip_x0=spec.clip != "none", eta=spec.eta, energy=self.energy,
                                  num_timesteps=len(alphas_cumprod))


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
