"""Noise schedules as pure functions: alpha-bar from a diffusers scheduler, respaced timesteps.

The diffusion model's own scheduler (diffusers format) is the source of truth for the training
schedule; this module only reads it and derives what samplers need.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from ppap.spacing import spaced_timesteps


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


def respaced_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "ddim") -> torch.Tensor:
    """Decreasing timesteps visited by a `num_steps` sampler (:func:`ppap.spacing.spaced_timesteps`:
    ``ddim`` = guided-diffusion's ``ddimN``, ``leading``, ``trailing``)."""
    return torch.as_tensor(spaced_timesteps(num_train_timesteps, num_steps, spacing), dtype=torch.int64)


def q_sample(x0: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I) with the given noise."""
    abar = alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def _betas_from_config(config: dict) -> np.ndarray | None:
    """The beta schedules diffusers' DDPM-family schedulers define, from their config alone.

    Returns None for anything else (trained betas, rescaling options), so the caller falls back
    to diffusers itself.
    """
    if config.get("trained_betas") is not None or config.get("rescale_betas_zero_snr"):
        return None
    n, start, end = config["num_train_timesteps"], config.get("beta_start", 1e-4), config.get("beta_end", 0.02)
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        return np.linspace(start, end, n, dtype=np.float32)
    if kind == "scaled_linear":
        return (np.linspace(start**0.5, end**0.5, n, dtype=np.float32) ** 2).astype(np.float32)
    if kind == "squaredcos_cap_v2":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)], dtype=np.float32)
    return None


def load_alphas_cumprod(scheduler_dir) -> torch.Tensor:
    """alpha-bar of a diffusers scheduler directory, without importing diffusers when the config
    names a standard beta schedule (jobs that only need the schedule start seconds faster)."""
    directory = Path(scheduler_dir)
    if (directory / "scheduler").is_dir():
        directory = directory / "scheduler"
    path = directory / "scheduler_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no scheduler_config.json in {directory}")
    betas = _betas_from_config(json.loads(path.read_text()))
    if betas is None:
        return alphas_cumprod_from_scheduler(load_scheduler(directory))
    # The same float32 arithmetic as diffusers (cumprod of 1 - beta), then widened.
    alphas_cumprod = torch.cumprod(1.0 - torch.from_numpy(betas), dim=0)
    return alphas_cumprod.double()


def load_scheduler(directory: str | os.PathLike):
    """The training schedule alone, from a scheduler directory or a pipeline directory."""
    from diffusers import DDPMScheduler

    directory = Path(directory)
    if (directory / "scheduler").is_dir():
        directory = directory / "scheduler"
    if not (directory / "scheduler_config.json").is_file():
        raise FileNotFoundError(f"no scheduler_config.json in {directory}")
    return DDPMScheduler.from_pretrained(directory)
