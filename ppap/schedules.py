"""Noise schedules as pure functions: alpha-bar from a diffusers scheduler, respaced timesteps.

The diffusion model's own scheduler (diffusers format) is the source of truth for the training
schedule; this module only reads it and derives what samplers need.
"""

from __future__ import annotations

import numpy as np
import torch


def alphas_cumprod_from_scheduler(scheduler) -> torch.Tensor:
    """alpha-bar_t for t = 0..T-1 as float64, from any diffusers DDPM-family scheduler."""
    return torch.as_tensor(np.asarray(scheduler.alphas_cumprod, dtype=np.float64))


def make_ddpm_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                        beta_start: float = 1e-4, beta_end: float = 0.02):
    """The training schedule of the embedded preset, as a diffusers scheduler (saved with the UNet)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         beta_start=beta_start, beta_end=beta_end, prediction_type="epsilon",
                         clip_sample=False)


def respaced_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "trailing") -> torch.Tensor:
    """Decreasing timesteps visited by a `num_steps` sampler.

    ``trailing`` starts at T-1 (pure noise) and strides down: the spacing diffusers recommends
    after Lin et al. (2024); ``leading`` is guided-diffusion's ``ddimN`` (0, T/N, 2T/N, ...).
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    if spacing == "trailing":
        # diffusers' formula, cut to N: the float arange sometimes yields an (N+1)-th value at
        # about 0, i.e. timestep -1 (T = 1000, N = 61 for instance; diffusers keeps it).
        steps = np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps)).astype(np.int64)[:num_steps] - 1
    elif spacing == "leading":
        steps = (np.arange(num_steps) * (num_train_timesteps // num_steps))[::-1].astype(np.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r} (use 'trailing' or 'leading')")
    return torch.as_tensor(steps.copy())


def q_sample(x0: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) with the given noise."""
    abar = alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise
