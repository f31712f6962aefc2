"""Drawing samples batch by batch: seeded noise per batch, one target per sample, and the guidance
method's step handed to the one sampling loop (:func:`ppap.sampling.sample_loop`).

    denoiser = load_eps_model("results/models/diffusion", device)     # ppap.models.denoisers
    guidance = Guidance(denoiser, ClassifierGuidance(guide))          # any ppap.guidance method
    images, labels = generate_samples(guidance, SamplingSpec(steps=25, scale=1.0), 16, seed=0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from ppap import data, sampling, schedules
from ppap.compute import SamplingCost
from ppap.devices import autocast_context
from ppap.guidance.base import GuidanceMethod
from ppap.guidance.classifier import Unguided
from ppap.sampling import Denoiser
from ppap.specs import SamplingSpec
from ppap.training import progress


@dataclass
class Guidance:
    """What steers sampling: the denoiser, the guidance method (:mod:`ppap.guidance`; None is
    unguided), how many classes targets are drawn from, and one line saying what it is."""

    denoiser: Denoiser
    method: GuidanceMethod | None = None
    num_classes: int = 10
    description: str = "unguided"


def balanced_labels(num_samples: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Target classes uniform over the classes: each class equally often, in a seeded random order."""
    labels = torch.arange(num_samples) % num_classes
    return labels[torch.randperm(num_samples, generator=generator)]


def generate_samples(guidance: Guidance, spec: SamplingSpec, num_samples: int, seed: int,
                     device: torch.device | str = "cpu", targets: torch.Tensor | None = None,
                     cost: SamplingCost | None = None, show_progress: bool = True
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw samples batch by batch; batch b uses a generator seeded (seed, b), so runs are
    reproducible and any batch can be regenerated alone. Returns uint8 NHWC images and the targets.

    A guided run aims sample i at ``targets[i]`` (a class, or a dense guide's map); by default
    classes balanced over ``guidance.num_classes`` in a seeded order. ``cost`` counts every pass
    through the denoiser and the guide. Under bf16 (``spec.precision``) the networks run in
    autocast; x_t, the guidance gradient and the sampler's update stay float32."""
    device = torch.device(device)
    denoiser, method = guidance.denoiser, guidance.method
    timesteps = schedules.respaced_timesteps(len(denoiser.alphas_cumprod), spec.steps, spec.spacing)
    label_generator = torch.Generator().manual_seed(seed)
    if targets is not None:
        if len(targets) != num_samples:
            raise ValueError(f"{len(targets)} targets for {num_samples} samples")
        labels = targets if method is not None else None
    else:
        labels = balanced_labels(num_samples, guidance.num_classes, label_generator) if method is not None else None
    alphas_cumprod = denoiser.alphas_cumprod.to(device)
    eps_fn = denoiser.eps
    if cost is not None:
        eps_fn = cost.denoiser.wrap(eps_fn)
        if method is not None and method.guide is not None:
            method = replace(method, guide=cost.guide.wrap(method.guide))
    method = method or Unguided()
    images = []
    batches = list(range(0, num_samples, spec.batch_size))
    for b, start in enumerate(progress(batches, total=len(batches), desc="sampling", enabled=show_progress)):
        n = min(spec.batch_size, num_samples - start)
        generator = torch.Generator().manual_seed(seed * 100_003 + b)
        x_T = sampling.randn((n, *denoiser.image_shape), generator, torch.empty(0, device=device))
        y = labels[start:start + n].to(device) if labels is not None else None
        step = method.step(eps_fn, y, spec, alphas_cumprod, timesteps)
        with torch.no_grad(), autocast_context(device, spec.precision):
            x = sampling.sample_loop(step, x_T, timesteps, alphas_cumprod, generator)
        images.append(data.to_uint8(x))
        if cost is not None:
            cost.samples += n
    return np.concatenate(images), (labels.cpu().numpy() if labels is not None else None)


def sample_with_cost(guidance: Guidance, spec: SamplingSpec, num_samples: int, seed: int,
                     device: torch.device | str = "cpu", targets: torch.Tensor | None = None,
                     show_progress: bool = True):
    """:func:`generate_samples` with its cost; returns (images, labels, passes counted, wall-seconds)."""
    cost = SamplingCost()
    start = time.perf_counter()
    images, labels = generate_samples(guidance, spec, num_samples, seed, device, targets, cost, show_progress)
    return images, labels, cost, time.perf_counter() - start
