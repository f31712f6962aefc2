"""One sampling loop, and the DDIM and DDPM steps it takes. The model is passed in; samplers never
load or write anything.

:func:`sample_loop` walks decreasing timesteps to alpha-bar = 1 and calls one *step*
``step(x_t, context, generator) -> x_prev`` per timestep (:class:`StepContext`: the step's index,
t, alpha-bar at t and at the next timestep, whether it is the last). :func:`ddim_step_fn` and
:func:`ddpm_step_fn` make the two samplers' steps from an epsilon function ``eps_fn(x, t) -> eps``
(t: one timestep per sample). Guidance plugs in there and nowhere else (:mod:`ppap.guidance`):
classifier and classifier-free guidance as a wrapped ``eps_fn`` (DDIM) or a ``mean_shift_fn``
(ancestral DDPM), training-free guidance as a step of its own.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ppap.vocab import SAMPLERS

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Denoiser(NamedTuple):
    """A diffusion model as the sampler sees it: ``eps(x, t)`` (or ``eps(x, t, y)`` for a
    class-conditional one), its training schedule, and the shape (C, H, W) of what it makes."""

    eps: Callable
    alphas_cumprod: torch.Tensor
    image_shape: tuple[int, int, int]


def randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device, then moved to `like`'s device and dtype.

    Drawing on the generator's device keeps a seed's samples the same whether the model runs on
    the CPU or a GPU.
    """
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


def per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One value per sample, shaped to broadcast over x (B, 1, 1, ...) in its device and dtype."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    abar_t = per_sample(abar_t, x_t)
    return (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()


def clipped_eps(eps_fn: EpsFn, alphas_cumprod: torch.Tensor) -> EpsFn:
    """The denoiser as guided-diffusion's ``p_mean_variance`` sees it with ``clip_denoised``: x0
    predicted from eps and clipped to [-1, 1], eps re-derived from the clipped x0
    (``_predict_eps_from_xstart``). Guidance wraps this, and the sampler then clips no more."""

    def eps_of_clipped_x0(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar_t = per_sample(alphas_cumprod.to(x.device)[t], x)
        x0 = predict_x0(x, eps_fn(x, t), alphas_cumprod.to(x.device)[t]).clamp(-1, 1)
        return (x - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()

    return eps_of_clipped_x0


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor,
              eta: float = 0.0, noise: torch.Tensor | None = None, clip_x0: bool = True) -> torch.Tensor:
    """One DDIM update x_t -> x_prev (Song et al., 2021, Eq. 12); eta = 0 is deterministic."""
    x0 = predict_x0(x_t, eps, abar_t)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        # Re-derive eps from the clipped x0 so the step stays on the same trajectory family.
        eps = (x_t - per_sample(abar_t, x_t).sqrt() * x0) / (1 - per_sample(abar_t, x_t)).sqrt()
    abar_t_, abar_prev_ = per_sample(abar_t, x_t), per_sample(abar_prev, x_t)
    sigma = eta * ((1 - abar_prev_) / (1 - abar_t_) * (1 - abar_t_ / abar_prev_)).clamp(min=0).sqrt()
    x_prev = abar_prev_.sqrt() * x0 + (1 - abar_prev_ - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        x_prev = x_prev + sigma * noise
    return x_prev


class StepContext(NamedTuple):
    """Where a step of the loop is: the ``index``-th of the sampler's timesteps, ``t`` (one per
    sample), alpha-bar at t and at the next timestep (1 after the last), and whether it is the last."""

    index: int
    t: torch.Tensor
    abar_t: torch.Tensor
    abar_prev: torch.Tensor
    final: bool


Step = Callable[[torch.Tensor, StepContext, "torch.Generator | None"], torch.Tensor]


def sample_loop(step: Step, x_T: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
                generator: torch.Generator | None = None,
                callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """The one sampling loop: ``step`` takes x_t to x_prev at each of the decreasing ``timesteps``,
    the last step to alpha-bar = 1 (the clean image)."""
    alphas_cumprod = alphas_cumprod.to(x_T.device)  # once, not at every step
    x = x_T
    for i, t in enumerate(timesteps.tolist()):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        abar_t = alphas_cumprod[t_batch]
        prev = timesteps[i + 1].item() if i + 1 < len(timesteps) else None
        abar_prev = alphas_cumprod[prev].expand(x.shape[0]) if prev is not None else torch.ones_like(abar_t)
        x = step(x, StepContext(i, t_batch, abar_t, abar_prev, prev is None), generator)
        if callback is not None:
            callback(i, x)
    return x


def with_recurrence(step: Step, recurrence: int) -> Step:
    """FreeDoM's time travel (Yu et al., 2023, Algorithm 1; TFG's recurrence): ``step`` taken
    ``recurrence`` times per timestep, its x_prev re-noised back to t in between,
    x_t = sqrt(alpha_t) x_prev + sqrt(1 - alpha_t) n with alpha_t = abar_t / abar_prev (the strided
    step's alpha), so every guided method can spend the same denoiser passes. 1 is ``step`` itself."""
    if recurrence < 1:
        raise ValueError(f"recurrence must be >= 1 (got {recurrence})")
    if recurrence == 1:
        return step

    def repeated(x: torch.Tensor, context: StepContext, generator: torch.Generator | None) -> torch.Tensor:
        for repeat in range(recurrence):
            x_prev = step(x, context, generator)
            if repeat + 1 < recurrence:  # back to t, and take the step again
                step_alpha = per_sample(context.abar_t / context.abar_prev, x)
                x = step_alpha.sqrt() * x_prev + (1 - step_alpha).sqrt() * randn(x.shape, generator, x)
        return x_prev

    return repeated


def ddim_step_fn(eps_fn: EpsFn, eta: float = 0.0, clip_x0: bool = True) -> Step:
    """DDIM's step (Song et al., 2021, Eq. 12) with the epsilon of ``eps_fn``; eta > 0 draws noise."""

    def step(x: torch.Tensor, context: StepContext, generator: torch.Generator | None) -> torch.Tensor:
        eps = eps_fn(x, context.t)
        noise = randn(x.shape, generator, x) if eta > 0 else None
        return ddim_step(x, eps, context.abar_t, context.abar_prev, eta=eta, noise=noise, clip_x0=clip_x0)

    return step


def sample_ddim(eps_fn: EpsFn, x_T: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
                eta: float = 0.0, generator: torch.Generator | None = None, clip_x0: bool = True,
                callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """DDIM over decreasing `timesteps`, ending at alpha-bar = 1 (the clean image)."""
    return sample_loop(ddim_step_fn(eps_fn, eta, clip_x0), x_T, timesteps, alphas_cumprod, generator, callback)


def ddpm_posterior(x_t: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor,
                   clip_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_prev | x_t, x0_hat) for a (possibly strided) step t -> prev."""
    x0 = predict_x0(x_t, eps, abar_t)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
    abar_t_, abar_prev_ = per_sample(abar_t, x_t), per_sample(abar_prev, x_t)
    beta_t = 1 - abar_t_ / abar_prev_
    mean = (abar_prev_.sqrt() * beta_t / (1 - abar_t_)) * x0 + ((1 - beta_t).sqrt() * (1 - abar_prev_) / (1 - abar_t_)) * x_t
    variance = beta_t * (1 - abar_prev_) / (1 - abar_t_)
    return mean, variance


MeanShiftFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def ddpm_step_fn(eps_fn: EpsFn, clip_x0: bool = True, mean_shift_fn: MeanShiftFn | None = None) -> Step:
    """The ancestral step (Ho et al., 2020, Algorithm 2) over a possibly respaced step t -> prev.

    ``mean_shift_fn(x_t, t, variance)`` adds classifier guidance on the mean
    (Dhariwal & Nichol, 2021, Algorithm 1: mean + s * Sigma * grad log p(y | x_t)).
    """

    def step(x: torch.Tensor, context: StepContext, generator: torch.Generator | None) -> torch.Tensor:
        mean, variance = ddpm_posterior(x, eps_fn(x, context.t), context.abar_t, context.abar_prev, clip_x0=clip_x0)
        if mean_shift_fn is not None:
            mean = mean + mean_shift_fn(x, context.t, variance)
        if context.final:
            return mean
        return mean + variance.sqrt() * randn(x.shape, generator, x)

    return step


def sample_ddpm(eps_fn: EpsFn, x_T: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor,
                generator: torch.Generator | None = None, clip_x0: bool = True,
                mean_shift_fn: MeanShiftFn | None = None,
                callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Ancestral sampling (Ho et al., 2020, Algorithm 2) over (possibly respaced) `timesteps`."""
    return sample_loop(ddpm_step_fn(eps_fn, clip_x0, mean_shift_fn), x_T, timesteps, alphas_cumprod, generator,
                       callback)


def sampler_step(sampler: str, eps_fn: EpsFn, eta: float = 0.0, clip_x0: bool = True,
                 mean_shift_fn: MeanShiftFn | None = None, recurrence: int = 1) -> Step:
    """The named sampler's step: ``ddim`` (``eta``; guidance on epsilon) or ``ddpm`` (guidance as a
    mean shift; it draws its own noise, so ``eta`` does not apply), taken ``recurrence`` times per
    timestep (:func:`with_recurrence`)."""
    if sampler == "ddim":
        if mean_shift_fn is not None:
            raise ValueError("a mean shift is DDPM's guidance; DDIM guides epsilon")
        return with_recurrence(ddim_step_fn(eps_fn, eta, clip_x0), recurrence)
    if sampler == "ddpm":
        return with_recurrence(ddpm_step_fn(eps_fn, clip_x0, mean_shift_fn), recurrence)
    raise ValueError(f"unknown sampler {sampler!r} (use {' or '.join(SAMPLERS)})")
