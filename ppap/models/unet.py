"""The base diffusion model: a diffusers ``UNet2DModel`` plus its scheduler, in diffusers format.

Any unconditional diffusers-format model directory (``unet/`` and ``scheduler/`` subfolders, as
``DDPMPipeline.save_pretrained`` writes) can replace the embedded one by changing one config path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ppap.io import atomic_directory
from ppap.models.checkpoints import CheckpointError


def build_unet(sample_size: int, in_channels: int, block_out_channels: Sequence[int], layers_per_block: int = 1,
               attention: Sequence[bool] | None = None, norm_num_groups: int = 8, seed: int = 0):
    """A small unconditional UNet; `attention[i]` puts self-attention in resolution level i."""
    from diffusers import UNet2DModel

    attention = list(attention) if attention is not None else [False] * len(block_out_channels)
    if len(attention) != len(block_out_channels):
        raise ValueError("attention needs one flag per entry of block_out_channels")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                           block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                           down_block_types=down, up_block_types=up, norm_num_groups=norm_num_groups)


def save_diffusion_model(directory: str | os.PathLike, unet, scheduler) -> None:
    """Write a diffusers pipeline directory atomically (to a temporary sibling, then renamed)."""
    from diffusers import DDPMPipeline

    with atomic_directory(directory) as tmp:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)


def load_diffusion_model(directory: str | os.PathLike):
    """(unet, scheduler) from a diffusers directory; errors name the missing piece or the bad file.

    Weights load strictly: a missing, unexpected or mis-shaped tensor is a :class:`CheckpointError`.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    directory = Path(directory)
    for sub in ("unet", "scheduler"):
        if not (directory / sub).is_dir():
            raise FileNotFoundError(f"diffusion model directory {directory} has no {sub}/ subfolder "
                                    "(expected the layout DDPMPipeline.save_pretrained writes)")
    # diffusers reads safetensors, or .bin files with weights_only=True; by itself it only warns about
    # missing (then randomly initialised) or unexpected weights: here those are errors.
    try:
        unet, info = UNet2DModel.from_pretrained(directory, subfolder="unet", output_loading_info=True)
    except Exception as err:  # truncated or foreign weights, a broken config.json...
        raise CheckpointError(f"cannot load the UNet of {directory / 'unet'}: {type(err).__name__}: {err}") from err
    problems = {key: list(info.get(key) or []) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {key: value for key, value in problems.items() if value}
    if problems or info.get("error_msgs"):
        details = "; ".join(f"{key.replace('_', ' ')} {len(v)}: {v[:5]}" for key, v in problems.items())
        raise CheckpointError(f"{directory / 'unet'}: weights do not match its config.json "
                              f"({details or info.get('error_msgs')})")
    # Any DDPM-family scheduler config gives the same training betas; DDPMScheduler reads them all.
    try:
        scheduler = DDPMScheduler.from_pretrained(directory, subfolder="scheduler")
    except Exception as err:
        raise CheckpointError(f"cannot load the scheduler of {directory / 'scheduler'}: "
                              f"{type(err).__name__}: {err}") from err
    return unet.eval(), scheduler


def save_scheduler(directory: str | os.PathLike, scheduler) -> None:
    """Write a scheduler config directory atomically (``scheduler_config.json`` inside)."""
    with atomic_directory(directory) as tmp:
        scheduler.save_pretrained(tmp)


def load_scheduler(directory: str | os.PathLike):
    """The training schedule alone, from a scheduler directory or a pipeline directory."""
    from diffusers import DDPMScheduler

    directory = Path(directory)
    if (directory / "scheduler").is_dir():
        directory = directory / "scheduler"
    if not (directory / "scheduler_config.json").is_file():
        raise FileNotFoundError(f"no scheduler_config.json in {directory}")
    return DDPMScheduler.from_pretrained(directory)


class EpsilonModel(nn.Module):
    """``eps_fn(x, t)`` over a diffusers UNet, whatever it predicts.

    Learned-variance models (ADM: 2C output channels) keep the first C channels; ``v_prediction``
    and ``sample`` outputs are converted to epsilon with the training schedule.
    """

    def __init__(self, unet, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction_type {prediction_type!r}")
        self.unet = unet
        self.prediction_type = prediction_type
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.unet(x, t).sample
        channels = x.shape[1]
        if out.shape[1] == 2 * channels:
            out = out[:, :channels]
        out = out.to(x.dtype)
        if self.prediction_type == "epsilon":
            return out
        abar = self.alphas_cumprod[t].to(x.dtype).view(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":
            return abar.sqrt() * out + (1 - abar).sqrt() * x
        return (x - abar.sqrt() * out) / (1 - abar).sqrt()
