"""High-level steps the workflow scripts call: one function per rule, models passed as paths.

Kept here (not in the scripts) so every step is importable and unit-tested.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ppap import adapters, data, diffusion, distill, experts, guidance, schedules
from ppap.config import ConfigError, parse_guide_name
from ppap.models import classifiers, unet as unet_models
from ppap.models.checkpoints import CheckpointError, load_checkpoint
from ppap.runtime import autocast_context
from ppap.training import noisy_accuracy


@dataclass(frozen=True)
class ExpertSetSpec:
    """A trained guide set, parsed from names like ``datafree_lora4_n5`` or ``labeled_full_n1``
    (grammar in :mod:`ppap.config`)."""

    guide_id: str
    supervision: str                # "labeled" (ground truth, real images) or "datafree" (teacher, synthetic)
    rank: int | None                # LoRA rank; None for full fine-tuning
    n_experts: int
    synthetic_size: int | None = None   # data-free set size override (None: the config's)
    temperature: float | None = None    # knowledge-transfer temperature override (None: the config's)

    @classmethod
    def parse(cls, guide_id: str) -> "ExpertSetSpec":
        try:
            parts = parse_guide_name(guide_id)
        except ConfigError as err:
            raise ValueError(f"bad guide set id: {err}") from None
        if parts["kind"] != "experts":
            raise ValueError(f"{guide_id!r} is not a trained guide set")
        return cls(guide_id, parts["supervision"], parts["rank"], parts["n_experts"], parts["synthetic_size"],
                   parts["temperature"])

    @property
    def adapter(self) -> str:
        return "full" if self.rank is None else f"lora{self.rank}"


# ---------------------------------------------------------------------------------------- data

def load_digits_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


# -------------------------------------------------------------------------------------- experts

def train_expert(
    spec: ExpertSetSpec,
    index: int,
    base_guide_path,
    alphas_cumprod: torch.Tensor,
    clean_images: torch.Tensor,
    labels: torch.Tensor | None,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    temperature: float,
    lora_alpha: float,
    lora_layer_types: Sequence[str],
    lora_include: str | None,
    lora_exclude: str | None,
    generator: torch.Generator,
    device: torch.device,
    show_progress: bool = True,
    ranges: Sequence[tuple[int, int]] | None = None,
    precision: str = "fp32",
) -> tuple[torch.nn.Module, dict]:
    """Train expert `index` of the set `spec`; returns (model to save, stats).

    ``clean_images`` (a float NCHW tensor in [-1, 1], or a :class:`ppap.data.ImagePool` that reads
    each batch from uint8 arrays, e.g. memory-mapped shards) are the synthetic samples for
    data-free transfer and the real training images (with ``labels``) for the labeled baselines.
    ``ranges`` overrides the equal split of [0, T).
    ``precision`` (fp32 | bf16 | auto) runs the guide's forward passes under bf16 autocast
    (:func:`ppap.runtime.autocast_context`); weights, optimiser state and losses stay float32.
    """
    ranges = expert_ranges(spec, len(alphas_cumprod), ranges)
    t_range = ranges[index]
    guide = classifiers.load_guide(base_guide_path).to(device)
    alphas_cumprod = alphas_cumprod.to(device)
    common = dict(clean_images=clean_images.to(device), t_range=t_range, alphas_cumprod=alphas_cumprod,
                  steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, generator=generator,
                  temperature=temperature, show_progress=show_progress, desc=f"{spec.guide_id}[{index}]",
                  labels=None if labels is None else labels.to(device))
    if spec.supervision == "labeled" and labels is None:
        raise ValueError("labeled experts need labels")
    if spec.rank is not None:
        targets = adapters.lora_target_modules(guide, lora_layer_types, lora_include, lora_exclude)
        name = f"expert{index}"
        # peft draws each adapter's initial A from torch's global RNG, whose seed differs in every
        # process: seed it from this expert's generator (its stream is left untouched).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator.initial_seed())
            model = adapters.attach_lora_experts(guide, [name], spec.rank, lora_alpha, targets)
        params = adapters.train_only_adapter(model, name)
        model.eval()  # batch norm keeps the clean guide's statistics: the backbone is shared and frozen
        teacher = distill.adapter_teacher(model) if spec.supervision == "datafree" else None
        trainable = adapters.adapter_parameter_count(model, name)
    else:
        model = guide
        teacher = None
        if spec.supervision == "datafree":
            teacher = distill.module_teacher(copy.deepcopy(guide))
        model.train()
        params = list(model.parameters())
        trainable = sum(p.numel() for p in params)
    teacher_logits = None
    if spec.supervision == "datafree":
        common["labels"] = None  # data-free: the teacher's softened outputs are the only target
        # The teacher is frozen and sees fixed clean images: its logits are computed once.
        with autocast_context(device, precision):
            teacher_logits = distill.precompute_teacher_logits(teacher, common["clean_images"])
    with autocast_context(device, precision):
        losses = distill.fit_noise_aware(model, params, teacher_logits=teacher_logits, **common)
    model.eval()
    stats = dict(t_range=list(t_range), trainable_params=trainable, final_loss=float(np.mean(losses[-20:])),
                 first_loss=float(np.mean(losses[:20])))
    return model, stats


def save_expert(path, model: torch.nn.Module, spec: ExpertSetSpec, index: int, stats: dict, base_guide_path) -> None:
    """Adapters are saved alone (the backbone is the base guide's file); full experts whole."""
    if spec.rank is not None:
        adapters.save_adapter(path, model, f"expert{index}", guide_id=spec.guide_id, index=index, stats=stats)
    else:
        base_spec = load_checkpoint(base_guide_path, classifiers.GUIDE_KIND)["spec"]
        classifiers.save_guide(path, model, base_spec, guide_id=spec.guide_id, index=index, stats=stats)


def expert_ranges(spec: ExpertSetSpec, num_timesteps: int,
                  ranges: Sequence[Sequence[int]] | None = None) -> list[tuple[int, int]]:
    """The set's half-open ranges: given ones (checked to tile [0, T)), else the equal split."""
    if ranges is None:
        return experts.timestep_ranges(num_timesteps, spec.n_experts)
    ranges = [tuple(int(v) for v in r) for r in ranges]
    if len(ranges) != spec.n_experts:
        raise ValueError(f"{spec.guide_id}: {len(ranges)} ranges for {spec.n_experts} experts")
    experts.check_ranges(ranges, num_timesteps)
    return ranges


def load_expert_set(spec: ExpertSetSpec, base_guide_path, expert_paths: Sequence, num_timesteps: int,
                    ranges: Sequence[Sequence[int]] | None = None) -> experts.RoutedGuide:
    """The routed guide of a trained set: adapters on one backbone, or N full copies.

    Each expert file records the set, index and range it was trained for; a file of another
    kind (adapter vs full guide), set, index, rank or range is a :class:`CheckpointError` naming
    it, not a silently wrong guide. Every file loads with ``weights_only=True`` and strict keys.
    """
    if len(expert_paths) != spec.n_experts:
        raise ValueError(f"{spec.guide_id}: {len(expert_paths)} expert files for {spec.n_experts} experts")
    ranges = expert_ranges(spec, num_timesteps, ranges)
    kind = classifiers.GUIDE_KIND if spec.rank is None else adapters.ADAPTER_KIND
    for index, path in enumerate(expert_paths):
        payload = load_checkpoint(path, kind)
        _check_expert_file(path, payload, spec, index, ranges[index])
    if spec.rank is None:
        return experts.ModuleExperts([classifiers.load_guide(p) for p in expert_paths], ranges).eval()
    guide = classifiers.load_guide(base_guide_path)
    first = adapters.read_adapter(expert_paths[0])["lora"]
    names = [f"expert{i}" for i in range(spec.n_experts)]
    with torch.random.fork_rng(devices=[]):  # fresh adapters draw an init (then overwritten) from the global RNG
        model = adapters.attach_lora_experts(guide, names[:1], first["rank"], first["alpha"], first["target_modules"])
        for name, path in zip(names, expert_paths):
            adapters.load_adapter(model, name, path)
    model.requires_grad_(False)
    return experts.AdapterExperts(model, names, ranges).eval()


def _check_expert_file(path, payload: dict, spec: ExpertSetSpec, index: int, t_range: Sequence[int]) -> None:
    """The metadata :func:`save_expert` wrote must say: this set, this index, this range (and rank)."""
    where = f"expert {index} of {spec.guide_id}"
    guide_id = payload.get("guide_id")
    if guide_id is not None and guide_id != spec.guide_id:
        raise CheckpointError(f"{path} is an expert of {guide_id}, not of {spec.guide_id} (loading it as {where})")
    if payload.get("index") is not None and payload["index"] != index:
        raise CheckpointError(f"{path} is expert {payload['index']}, not {where}")
    trained_on = payload.get("stats", {}).get("t_range")
    if trained_on is not None and tuple(trained_on) != tuple(t_range):
        raise CheckpointError(f"{path} was trained on timesteps {list(trained_on)}, "
                              f"but {spec.guide_id} routes {list(t_range)} to it")
    if spec.rank is not None and payload["lora"]["rank"] != spec.rank:
        raise CheckpointError(f"{path} holds a rank-{payload['lora']['rank']} adapter, {spec.guide_id} has rank {spec.rank}")


def parameter_accounting(spec: ExpertSetSpec | None, base_params: int, expert_paths: Sequence = ()) -> dict:
    """Trainable parameters (trained for guidance) and stored parameters (on disk, guide included)."""
    if spec is None:
        return dict(trainable_params=0, stored_params=base_params)
    if spec.rank is None:
        return dict(trainable_params=spec.n_experts * base_params, stored_params=spec.n_experts * base_params)
    adapter_params = [sum(v.numel() for v in adapters.read_adapter(p)["state_dict"].values()) for p in expert_paths]
    return dict(trainable_params=int(sum(adapter_params)), stored_params=int(base_params + sum(adapter_params)))


def expert_set_accuracy(guide, images: torch.Tensor, labels: torch.Tensor, alphas_cumprod: torch.Tensor,
                        timesteps: Sequence[int], seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    return noisy_accuracy(guide, images, labels, timesteps, alphas_cumprod, generator)


# ------------------------------------------------------------------------------------- sampling

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
) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw samples batch by batch; batch b uses a generator seeded (seed, b), so runs are
    reproducible and any batch can be regenerated alone. Returns uint8 NHWC images and labels.

    Under bf16 the networks run in autocast; x_t, the guidance gradient and the sampler's update
    stay float32 (the epsilon model and ``grad_log_prob`` return float32)."""
    from ppap.training import progress

    timesteps = schedules.respaced_timesteps(len(alphas_cumprod), steps)
    label_generator = torch.Generator().manual_seed(seed)
    labels = balanced_labels(num_samples, num_classes, label_generator) if guide is not None else None
    alphas_cumprod = alphas_cumprod.to(device)
    images = []
    batches = list(range(0, num_samples, batch_size))
    for b, start in enumerate(progress(batches, total=len(batches), desc="sampling", enabled=show_progress)):
        n = min(batch_size, num_samples - start)
        generator = torch.Generator().manual_seed(seed * 100_003 + b)
        x_T = diffusion.randn((n, *image_shape), generator, torch.empty(0, device=device))
        eps_fn, mean_shift = eps_model, None
        if guide is not None:
            y = labels[start:start + n].to(device)
            if sampler == "ddim":
                eps_fn = guidance.classifier_guided_eps(eps_model, guide, y, alphas_cumprod, guidance_scale)
            else:
                mean_shift = guidance.classifier_mean_shift(guide, y, guidance_scale)
        with torch.no_grad(), autocast_context(device, precision):
            if sampler == "ddim":
                x = diffusion.sample_ddim(eps_fn, x_T, timesteps, alphas_cumprod, eta=eta, generator=generator)
            elif sampler == "ddpm":
                x = diffusion.sample_ddpm(eps_fn, x_T, timesteps, alphas_cumprod, generator=generator,
                                          mean_shift_fn=mean_shift)
            else:
                raise ValueError(f"unknown sampler {sampler!r} (use ddim or ddpm)")
        images.append(data.to_uint8(x))
    return np.concatenate(images), (labels.numpy() if labels is not None else None)


def load_eps_model(model_dir, device: torch.device):
    unet, scheduler = unet_models.load_diffusion_model(model_dir)
    alphas_cumprod = schedules.alphas_cumprod_from_scheduler(scheduler)
    eps = unet_models.EpsilonModel(unet, alphas_cumprod, scheduler.config.prediction_type).to(device).eval()
    eps.requires_grad_(False)
    image_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    return eps, alphas_cumprod, image_shape
