"""The base diffusion model: a diffusers ``UNet2DModel`` plus its scheduler, in diffusers format.

Any unconditional diffusers-format model directory (``unet/`` and ``scheduler/`` subfolders, as
``DDPMPipeline.save_pretrained`` writes) can replace the embedded one by changing one config path.

A class-conditional UNet (the labeled upper bound, sampled with classifier-free guidance) has
``num_class_embeds = num_classes + 1``: labels 0 .. num_classes - 1 and the null (unconditional)
label ``num_classes``, recorded in ``unet/class_conditioning.json`` beside the UNet's config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ppap.io import atomic_directory, read_json, write_json
from ppap.models.checkpoints import CheckpointError, check_record
from ppap.schedules import alphas_cumprod_from_scheduler

CLASS_CONDITIONING_FILE = "class_conditioning.json"  # in unet/, beside diffusers' config.json


def build_unet(sample_size: int, in_channels: int, block_out_channels: Sequence[int], layers_per_block: int = 1,
               attention: Sequence[bool] | None = None, norm_num_groups: int = 8, seed: int = 0,
               num_classes: int | None = None):
    """A small UNet; `attention[i]` puts self-attention in resolution level i.

    With `num_classes`, a class-conditional UNet: a label embedding with ``num_classes + 1`` rows,
    the last (index ``num_classes``) being the null label of classifier-free guidance.
    """
    from diffusers import UNet2DModel

    attention = list(attention) if attention is not None else [False] * len(block_out_channels)
    if len(attention) != len(block_out_channels):
        raise ValueError("attention needs one flag per entry of block_out_channels")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    # Only a conditional UNet gets the extra argument: the unconditional one stays exactly as it was.
    conditioning = {} if num_classes is None else {"num_class_embeds": _num_class_embeds(num_classes)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                           block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                           down_block_types=down, up_block_types=up, norm_num_groups=norm_num_groups,
                           **conditioning)


def _num_class_embeds(num_classes: int) -> int:
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return int(num_classes) + 1  # + the null label


def null_label_of(unet) -> int | None:
    """The null (unconditional) label of a class-conditional UNet (its last embedding row); None
    for an unconditional one."""
    num_class_embeds = unet.config.num_class_embeds
    return None if num_class_embeds is None else int(num_class_embeds) - 1


def save_diffusion_model(directory: str | os.PathLike, unet, scheduler) -> None:
    """Write a diffusers pipeline directory atomically (to a temporary sibling, then renamed).

    A class-conditional UNet also gets ``unet/class_conditioning.json`` naming its null label.
    """
    from diffusers import DDPMPipeline

    with atomic_directory(directory) as tmp:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
        null_label = null_label_of(unet)
        if null_label is not None:
            write_json(tmp / "unet" / CLASS_CONDITIONING_FILE, {"num_classes": null_label, "null_label": null_label})


def load_class_conditioning(directory: str | os.PathLike) -> dict | None:
    """``{"num_classes": n, "null_label": n}`` of a saved class-conditional model; None for an
    unconditional one. The record must agree with the UNet's ``num_class_embeds``."""
    unet_dir = Path(directory) / "unet"
    num_class_embeds = read_json(unet_dir / "config.json").get("num_class_embeds")
    record_path = unet_dir / CLASS_CONDITIONING_FILE
    if num_class_embeds is None:
        if record_path.exists():
            raise CheckpointError(f"{record_path}: a class-conditioning record beside an unconditional UNet")
        return None
    if not record_path.is_file():
        raise CheckpointError(f"{unet_dir}: a class-conditional UNet ({num_class_embeds} label embeddings) without "
                              f"{CLASS_CONDITIONING_FILE} naming its null label")
    record = read_json(record_path)
    if record.get("null_label") != num_class_embeds - 1 or record.get("num_classes") != num_class_embeds - 1:
        raise CheckpointError(f"{record_path}: {record} does not match num_class_embeds = {num_class_embeds} "
                              "(expected the null label to be the last embedding)")
    return record


def load_diffusion_model(directory: str | os.PathLike):
    """(unet, scheduler) from a diffusers directory; errors name the missing piece or the bad file.

    Unconditional and class-conditional UNets load alike (the label embedding is one more weight;
    :func:`load_class_conditioning` reads the null label). Weights load strictly: a missing,
    unexpected or mis-shaped tensor is a :class:`CheckpointError`.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    directory = Path(directory)
    for sub in ("unet", "scheduler"):
        if not (directory / sub).is_dir():
            raise FileNotFoundError(f"diffusion model directory {directory} has no {sub}/ subfolder "
                                    "(expected the layout DDPMPipeline.save_pretrained writes)")
    check_record(directory)  # a shipped model (or one recorded by its user) must be its recorded bytes
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


def load_conditional_eps_model(directory: str | os.PathLike, device: torch.device | str) -> tuple[EpsilonModel, int]:
    """(eps(x, t, class_labels), null label) of a saved class-conditional model, frozen on `device`."""
    unet, scheduler = load_diffusion_model(directory)
    conditioning = load_class_conditioning(directory)
    if conditioning is None:
        raise CheckpointError(f"{directory}: an unconditional UNet where a class-conditional one was expected")
    eps = EpsilonModel(unet, alphas_cumprod_from_scheduler(scheduler), scheduler.config.prediction_type)
    return eps.to(device).eval().requires_grad_(False), conditioning["null_label"]


def save_scheduler(directory: str | os.PathLike, scheduler) -> None:
    """Write a scheduler config directory atomically (``scheduler_config.json`` inside)."""
    with atomic_directory(directory) as tmp:
        scheduler.save_pretrained(tmp)


class EpsilonModel(nn.Module):
    """``eps_fn(x, t)`` over a diffusers UNet, whatever it predicts; ``eps_fn(x, t, class_labels)``
    over a class-conditional one (the null label asks for the unconditional prediction).

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

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        # Labels are passed only when given: an unconditional UNet is called exactly as before.
        out = self.unet(x, t).sample if class_labels is None else self.unet(x, t, class_labels=class_labels).sample
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
