"""Drawing samples batch by batch: seeded noise per batch, target labels, the guidance's parts handed
to the one sampling loop of the chosen sampler, and the passes it cost."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ppap import data, guidance, sampling, schedules
from ppap.compute import SamplingCost
from ppap.devices import autocast_context
from ppap.guidance.classifier_free import classifier_free_eps
from ppap.guidance.training_free import TrainingFreeSettings, sample_ddim_training_free
from ppap.training import progress


def balanced_labels(num_samples: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Target classes uniform over the classes: each class equally often, in a seeded random order."""
    labels = torch.arange(num_samples) % num_classes
    return labels[torch.randperm(num_samples, generator=generator)]


def generate_samples(
    eps_model,                          # eps_fn(x, t)
    alphas_cumprod: torch.Tensor,
    image_shape: Sequence[int],         # (C, H, W)
    num_samples: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    sampler: str = "ddim",              # "ddim" (guidance on eps) or "ddpm" (guidance on the mean)
    steps: int = 25,
    eta: float = 0.0,
    guide=None,                         # guide(x_t, t) -> logits, or None for unguided sampling
    guidance_scale: float = 0.0,
    num_classes: int = 10,
    show_progress: bool = True,
    precision: str = "fp32",            # fp32 | bf16 | auto: bf16 autocast for the UNet and the guide
    clip: str = "guided_diffusion",     # guided_diffusion | after_guidance | none (see below)
    spacing: str = "ddim",              # ddim (guided-diffusion's ddimN) | leading | trailing
    training_free: TrainingFreeSettings | None = None,  # the guide on x0_hat (ppap.guidance.training_free)
    classifier_free: int | None = None, # the null label: eps_model(x, t, y) is class-conditional
    cost: SamplingCost | None = None,   # passes through the denoiser and the guide are added here
    targets: torch.Tensor | None = None,  # one target per sample (class or map); default balanced classes
    energy: guidance.Energy = guidance.classifier_energy,  # the guide's log p(target | x)
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw samples batch by batch; batch b uses a generator seeded (seed, b), so runs are
    reproducible and any batch can be regenerated alone. Returns uint8 NHWC images and labels.

    ``clip`` says where x0 is clipped to [-1, 1]. ``guided_diffusion`` is guided-diffusion's order:
    DDIM clips the denoiser's own x0 and re-derives epsilon from it, then adds the guidance term
    and does not clip again (``condition_score`` then ``ddim_sample``); DDPM clips x0, forms the
    posterior mean and shifts it (``p_mean_variance``, ``condition_mean``). ``after_guidance``
    (DDIM only) clips the x0 predicted from the guided epsilon, which removes the part of the push
    that leaves [-1, 1]. ``none`` never clips.

    With ``training_free`` the guide is applied to the denoiser's x0 estimate instead (DPS,
    FreeDoM, MPGD, TFG; DDIM only; ``clip`` guided_diffusion or none). With ``classifier_free``
    (the null label) ``eps_model(x, t, y)`` is a class-conditional model sampled with classifier-free
    guidance at ``guidance_scale`` (w = 0: the conditional model). ``cost`` counts every pass.
    A dense guide is given its ``targets`` (one map per sample) and its ``energy``
    (:func:`ppap.guidance.energy_for`); the targets are returned in place of the labels.

    Under bf16 the networks run in autocast; x_t, the guidance gradient and the sampler's update
    stay float32 (the epsilon model and ``grad_log_prob`` return float32)."""
    if training_free is not None and (sampler != "ddim" or clip == "after_guidance" or guide is None):
        raise ValueError("training-free guidance needs a guide, the ddim sampler and clip guided_diffusion or none")
    timesteps = schedules.respaced_timesteps(len(alphas_cumprod), steps, spacing)
    label_generator = torch.Generator().manual_seed(seed)
    conditional = guide is not None or classifier_free is not None
    if targets is not None:
        if len(targets) != num_samples:
            raise ValueError(f"{len(targets)} targets for {num_samples} samples")
        labels = targets if conditional else None
    else:
        labels = balanced_labels(num_samples, num_classes, label_generator) if conditional else None
    alphas_cumprod = alphas_cumprod.to(device)
    if cost is not None:
        eps_model = cost.denoiser.wrap(eps_model)
        guide = cost.guide.wrap(guide) if guide is not None else None
    images = []
    batches = list(range(0, num_samples, batch_size))
    for b, start in enumerate(progress(batches, total=len(batches), desc="sampling", enabled=show_progress)):
        n = min(batch_size, num_samples - start)
        generator = torch.Generator().manual_seed(seed * 100_003 + b)
        x_T = sampling.randn((n, *image_shape), generator, torch.empty(0, device=device))
        y = labels[start:start + n].to(device) if conditional else None
        if training_free is not None:
            with torch.no_grad(), autocast_context(device, precision):
                x = sample_ddim_training_free(eps_model, guide, y, x_T, timesteps, alphas_cumprod, training_free,
                                              guidance_scale, clip_x0=clip != "none", eta=eta, generator=generator,
                                              energy=energy)
            images.append(data.to_uint8(x))
            if cost is not None:
                cost.samples += n
            continue
        if classifier_free is not None:
            denoiser = classifier_free_eps(eps_model, y, classifier_free, guidance_scale)
            model = guidance.guided_model(denoiser, alphas_cumprod, sampler, clip)
        else:
            model = guidance.guided_model(eps_model, alphas_cumprod, sampler, clip, guide, y, guidance_scale, energy)
        with torch.no_grad(), autocast_context(device, precision):
            if sampler == "ddim":
                x = sampling.sample_ddim(model.eps_fn, x_T, timesteps, alphas_cumprod, eta=eta, generator=generator,
                                          clip_x0=model.clip_x0)
            elif sampler == "ddpm":
                x = sampling.sample_ddpm(model.eps_fn, x_T, timesteps, alphas_cumprod, generator=generator,
                                          clip_x0=model.clip_x0, mean_shift_fn=model.mean_shift_fn)
            else:
                raise ValueError(f"unknown sampler {sampler!r} (use ddim or ddpm)")
        images.append(data.to_uint8(x))
        if cost is not None:
            cost.samples += n
    return np.concatenate(images), (labels.cpu().numpy() if labels is not None else None)


@dataclass
class Guidance:
    """How a named guide steers sampling: what :func:`generate_samples` is given besides the
    sampling settings (the denoiser, and a guide on x_t, a guide on x0_hat, or a null label)."""

    eps_model: Callable                             # eps(x, t), or eps(x, t, y) with classifier_free
    guide: torch.nn.Module | None = None            # guide(x, t) -> logits
    num_classes: int = 10
    training_free: TrainingFreeSettings | None = None
    classifier_free: int | None = None              # the null label of a class-conditional model
    description: str = "unguided"
    energy: guidance.Energy = guidance.classifier_energy  # the guide's log p(target | x)

    def sampling_kwargs(self) -> dict:
        return dict(guide=self.guide, num_classes=self.num_classes, training_free=self.training_free,
                    classifier_free=self.classifier_free, energy=self.energy)


def sample_with_cost(guidance: Guidance, alphas_cumprod: torch.Tensor, image_shape, num_samples: int,
                     batch_size: int, seed: int, device: torch.device, **settings):
    """:func:`generate_samples` with the guidance's parts; returns (images, labels, passes counted,
    wall-seconds)."""
    cost = SamplingCost()
    start = time.perf_counter()
    images, labels = generate_samples(guidance.eps_model, alphas_cumprod, image_shape, num_samples, batch_size,
                                      seed, device, cost=cost, **guidance.sampling_kwargs(), **settings)
    return images, labels, cost, time.perf_counter() - start
