"""The denoiser of a model directory: a diffusers UNet with its scheduler, or GLIDE's base model
(:mod:`ppap.models.convert_glide`), as the sampler sees it (:class:`ppap.sampling.Denoiser`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ppap import schedules
from ppap.models import unet as unet_models
from ppap.models.glide import load_glide_eps
from ppap.sampling import Denoiser


def load_eps_model(model_dir, device: torch.device | str = "cpu") -> Denoiser:
    """``(eps, alphas_cumprod, image_shape)`` of a model directory, the network in eval mode, frozen,
    on ``device``; the schedule stays float64 on the CPU (samplers move it once)."""
    if (Path(model_dir) / "glide").is_dir():     # GLIDE's base model (ppap.models.convert_glide)
        return Denoiser(*load_glide_eps(model_dir, device))
    unet, scheduler = unet_models.load_diffusion_model(model_dir)
    alphas_cumprod = schedules.alphas_cumprod_from_scheduler(scheduler)
    eps = unet_models.EpsilonModel(unet, alphas_cumprod, scheduler.config.prediction_type).to(device).eval()
    eps.requires_grad_(False)
    image_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    return Denoiser(eps, alphas_cumprod, image_shape)
