"""Expert sets: train expert i of a set (data-free transfer or a labeled baseline, LoRA or full
fine-tuning, warm-started from expert i-1), save it with what it was trained for, and load a whole
set back as one routed guide whose files are checked against the set they claim to belong to."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ppap import experts
from ppap.devices import autocast_context
from ppap.experts import adapters, distill
from ppap.models.checkpoints import CheckpointError, load_checkpoint, load_state_dict_strict
from ppap.models.guides import (
    guide_checkpoint_kind,
    guide_output_kind,
    load_any_guide,
    save_full_guide,
    with_speed_switches,
)
from ppap.specs import ExpertTraining
from ppap.training import adamw, load_optimizer_moments, noisy_accuracy, optimizer_moments


class TrainingPool(NamedTuple):
    """What an expert learns from: clean images (a float NCHW tensor in [-1, 1], or a
    :class:`ppap.data.ImagePool` that reads each batch from uint8 arrays, e.g. memory-mapped shards),
    the synthetic samples for data-free transfer or the real training images with their ``labels``
    (classes, or a dense guide's ground-truth maps) for the labeled baselines."""

    images: object
    labels: torch.Tensor | None = None


def train_expert(
    settings: ExpertTraining,           # the set's resolved factors and the training section
    index: int,                         # which expert of the set
    base_guide_path,                    # the off-the-shelf guide (backbone, teacher)
    alphas_cumprod: torch.Tensor,
    pool: TrainingPool,                 # synthetic x0 (data-free) or labeled real images
    generator: torch.Generator,         # its device is the training's device
    previous_expert=None,               # expert index-1's file: the warm start (None: from the guide)
    regression_loss: str = "mse",       # a dense regressor's transfer / labeled loss (ppap.experts.distill)
    show_progress: bool = True,
) -> tuple[torch.nn.Module, dict, dict | None]:
    """Train expert `index` of a guide set; returns (model to save, stats, optimizer moments).

    As the original PPAP trains its experts: LoRA experts with ``norm: trained`` carry their own
    normalisation layers (affine parameters trainable, batch norm in train mode, so its running
    statistics follow the expert's noise levels); with ``warm_start`` the expert starts from
    expert index-1's weights (LoRA and normalisation state, or the whole network) and, with
    ``optimizer``, continues its AdamW moments. Under ``precision`` bf16 the guide's forward
    passes run in autocast; weights, optimiser state and losses stay float32. A dense guide
    (segmenter, regressor) trains alike with its own losses (:func:`ppap.experts.distill.transfer_loss`);
    its ``labels`` are then the ground-truth maps.
    """
    clean_images, labels = pool
    device = generator.device
    if settings.supervision == "labeled" and labels is None:
        raise ValueError("labeled experts need labels")
    if not 0 <= index < settings.n_experts:
        raise ValueError(f"{settings.guide_set} has experts 0..{settings.n_experts - 1}, not {index}")
    warm = settings.warm_start != "off" and index > 0
    if warm != (previous_expert is not None):
        raise ValueError(f"{settings.guide_set}[{index}]: warm start {settings.warm_start!r} "
                         + ("needs the previous expert's file" if warm else "takes no previous expert"))
    ranges = expert_ranges(settings.guide_set, settings.n_experts, len(alphas_cumprod), settings.ranges)
    guide = load_any_guide(base_guide_path).to(device)
    kind = guide_output_kind(guide)  # classifier, segmenter or dense regressor: which losses apply
    previous = None
    if warm:
        full_kind = guide_checkpoint_kind(base_guide_path)
        previous = load_checkpoint(previous_expert, full_kind if settings.rank is None else adapters.ADAPTER_KIND)
        _check_expert_file(previous_expert, previous, settings.guide_set, settings.rank, index - 1, ranges[index - 1])
    if settings.rank is not None:
        lora = settings.lora
        targets = adapters.lora_target_modules(guide, lora["layer_types"], lora["include"], lora["exclude"])
        norms = adapters.norm_modules(guide) if settings.norm == "trained" else []
        name = f"expert{index}"
        # peft draws each adapter's initial A from torch's global RNG, whose seed differs in every
        # process: seed it from this expert's generator (its stream is left untouched).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator.initial_seed())
            model = adapters.attach_lora_experts(guide, [name], settings.rank, lora["alpha"], targets,
                                                 modules_to_save=norms)
        if warm:
            adapters.load_adapter(model, name, previous_expert)
        params = adapters.train_only_adapter(model, name)
        trainable = adapters.adapter_parameter_count(model, name)
        model.eval()  # the teacher's logits below: clean statistics, adapters off
        teacher = distill.adapter_teacher(model) if settings.supervision == "datafree" else None
    else:
        model = guide
        teacher = distill.module_teacher(copy.deepcopy(guide)) if settings.supervision == "datafree" else None
        if warm:
            load_state_dict_strict(model, previous["state_dict"], previous_expert)
        params = list(model.parameters())
        trainable = sum(p.numel() for p in params)
    model = with_speed_switches(model, settings.channels_last, settings.center_tap_convs)
    images = clean_images.to(device)
    teacher_logits = None
    if settings.supervision == "datafree":
        # The teacher is frozen and sees fixed clean images: its logits are computed once.
        with autocast_context(device, settings.precision):
            teacher_logits = distill.precompute_teacher_logits(teacher, images)
    # Batch norm in train mode wherever it is trained: full fine-tuning, or per-expert norms.
    model.train(settings.rank is None or settings.norm == "trained")
    optimizer = adamw(params, settings.lr, settings.weight_decay, fused=settings.fused_optimizer)
    if warm and settings.warm_start == "optimizer":
        if previous.get("optimizer_moments") is None:
            raise CheckpointError(f"{previous_expert} holds no optimizer state to continue from "
                                  "(warm_start: optimizer)")
        load_optimizer_moments(optimizer, previous["optimizer_moments"])
    batch_size = (settings.batch_size if settings.batch_size_by_device is None
                  else settings.batch_size_by_device.get(device.type, settings.batch_size))
    with autocast_context(device, settings.precision):
        fit = distill.Fit(settings.steps, batch_size, settings.lr, settings.weight_decay,
                          temperature=settings.temperature or 1.0, kind=kind, regression_loss=regression_loss)
        losses = distill.fit_noise_aware(
            model, params, images, ranges[index], alphas_cumprod.to(device), fit, generator,
            labels=None if teacher_logits is not None else labels.to(device), teacher_logits=teacher_logits,
            optimizer=optimizer, show_progress=show_progress, desc=f"{settings.guide_set}[{index}]")
    model.eval()
    if settings.channels_last:  # files hold contiguous tensors whatever layout trained them
        model = model.to(memory_format=torch.contiguous_format)
    window = max(1, min(20, len(losses) // 10))  # short runs: the windows must not overlap
    # guide passes of the training (per image in a batch): each step a forward and a backward,
    # and data-free transfer's one teacher forward per clean image
    passes = settings.steps * batch_size
    stats = dict(t_range=list(ranges[index]), trainable_params=trainable, steps=settings.steps,
                 guide_forward=passes + (len(images) if teacher_logits is not None else 0), guide_backward=passes,
                 first_loss=float(np.mean(losses[:window])), final_loss=float(np.mean(losses[-window:])),
                 loss_window=window, warm_started_from=str(previous_expert) if warm else None,
                 norm=settings.norm if settings.rank is not None else "trained", warm_start=settings.warm_start,
                 lr=settings.lr, seed=settings.seed)
    return model, stats, optimizer_moments(optimizer)


def save_expert(path, model: torch.nn.Module, settings: ExpertTraining, index: int, stats: dict, base_guide_path,
                moments: dict | None = None) -> None:
    """Adapters (LoRA and their own normalisation state) are saved alone, the backbone being the
    base guide's file; full experts whole. The optimizer moments travel with the file only when a
    warm-started successor continues them (``warm_start: optimizer``)."""
    extra = dict(guide_id=settings.guide_set, index=index, stats=stats)
    if moments is not None and settings.warm_start == "optimizer" and index + 1 < settings.n_experts:
        extra["optimizer_moments"] = moments
    if settings.rank is not None:
        adapters.save_adapter(path, model, f"expert{index}", **extra)
    else:
        save_full_guide(path, model, base_guide_path, **extra)


def expert_ranges(guide_set: str, n_experts: int, num_timesteps: int,
                  ranges: Sequence[Sequence[int]] | None = None) -> list[tuple[int, int]]:
    """The set's half-open ranges: given ones (checked to tile [0, T)), else the equal split."""
    if ranges is None:
        return experts.timestep_ranges(num_timesteps, n_experts)
    ranges = [tuple(int(v) for v in r) for r in ranges]
    if len(ranges) != n_experts:
        raise ValueError(f"{guide_set}: {len(ranges)} ranges for {n_experts} experts")
    experts.check_ranges(ranges, num_timesteps)
    return ranges


def load_expert_set(guide_set: str, rank: int | None, base_guide_path, expert_paths: Sequence, num_timesteps: int,
                    ranges: Sequence[Sequence[int]] | None = None, merge: bool = False,
                    routing: str = "owner") -> experts.RoutedGuide:
    """The routed guide of a trained set: adapters on one backbone, or N full copies.

    Each expert file records the set, index and range it was trained for; a file of another
    kind (adapter vs full guide), set, index, rank or range is a :class:`CheckpointError` naming
    it, not a silently wrong guide. Every file loads with ``weights_only=True`` and strict keys;
    each adapter brings its own normalisation state, which the router selects with it.
    ``rank`` is the set's LoRA rank (None: N fully fine-tuned copies), one expert per file.
    ``routing`` (:func:`ppap.experts.expert_for_timestep`): ``owner`` or the original's ``lower``.
    """
    n_experts = len(expert_paths)
    ranges = expert_ranges(guide_set, n_experts, num_timesteps, ranges)
    kind = guide_checkpoint_kind(base_guide_path) if rank is None else adapters.ADAPTER_KIND
    for index, path in enumerate(expert_paths):
        payload = load_checkpoint(path, kind)
        _check_expert_file(path, payload, guide_set, rank, index, ranges[index])
    if rank is None:
        return experts.ModuleExperts([load_any_guide(p) for p in expert_paths], ranges, routing).eval()
    guide = load_any_guide(base_guide_path)
    first = adapters.read_adapter(expert_paths[0])["lora"]
    names = [f"expert{i}" for i in range(n_experts)]
    with torch.random.fork_rng(devices=[]):  # fresh adapters draw an init (then overwritten) from the global RNG
        model = adapters.attach_lora_experts(guide, names[:1], first["rank"], first["alpha"], first["target_modules"],
                                             modules_to_save=first.get("modules_to_save", ()))
        for name, path in zip(names, expert_paths):
            adapters.load_adapter(model, name, path)
    model.requires_grad_(False)
    return experts.AdapterExperts(model, names, ranges, merge=merge, routing=routing).eval()


def _check_expert_file(path, payload: dict, guide_set: str, rank: int | None, index: int,
                       t_range: Sequence[int]) -> None:
    """The metadata :func:`save_expert` wrote must say: this set, this index, this range (and rank)."""
    where = f"expert {index} of {guide_set}"
    guide_id = payload.get("guide_id")
    if guide_id is not None and guide_id != guide_set:
        raise CheckpointError(f"{path} is an expert of {guide_id}, not of {guide_set} (loading it as {where})")
    if payload.get("index") is not None and payload["index"] != index:
        raise CheckpointError(f"{path} is expert {payload['index']}, not {where}")
    trained_on = payload.get("stats", {}).get("t_range")
    if trained_on is not None and tuple(trained_on) != tuple(t_range):
        raise CheckpointError(f"{path} was trained on timesteps {list(trained_on)}, "
                              f"but {guide_set} routes {list(t_range)} to it")
    if rank is not None and payload["lora"]["rank"] != rank:
        raise CheckpointError(f"{path} holds a rank-{payload['lora']['rank']} adapter, {guide_set} has rank {rank}")


def expert_stats(path, rank: int | None) -> dict:
    """What :func:`save_expert` recorded about an expert's training (``stats``)."""
    if rank is not None:
        return dict(adapters.read_adapter(path)["stats"])
    return dict(load_checkpoint(path).get("stats", {}))


def expert_set_accuracy(guide, images: torch.Tensor, labels: torch.Tensor, alphas_cumprod: torch.Tensor,
                        timesteps: Sequence[int], seed: int) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    return noisy_accuracy(guide, images, labels, timesteps, alphas_cumprod, generator)




def read_manifest(path: str | os.PathLike) -> dict:
    """A trained set's manifest (rule expert_manifest) with its expert and base-guide paths made
    usable from anywhere: a path as written when it exists relative to the working directory, else
    relative to the manifest or to the run folder that holds it (``<run>/results/models/guides/<set>/``),
    so a finished run can be moved or read from another directory."""
    path = Path(path)
    manifest = json.loads(path.read_text())
    bases = [path.parent, *path.parents[1:]]

    def locate(name: str) -> str:
        candidate = Path(name)
        if candidate.is_absolute() or candidate.exists():
            return str(candidate)
        for base in bases:
            if (base / candidate).exists():
                return str(base / candidate)
        raise FileNotFoundError(f"{path} names {name}, found neither here nor beside the manifest's run folder")

    manifest["experts"] = [locate(p) for p in manifest["experts"]]
    if "base_guide" in manifest:
        manifest["base_guide"] = locate(manifest["base_guide"])
    return manifest


def load_manifest_set(manifest_path: str | os.PathLike, num_timesteps: int, merge: bool = False,
                      routing: str = "owner") -> experts.RoutedGuide:
    """The routed guide of a finished run's trained set, from its manifest (rule expert_manifest):
    its base guide, experts, rank and ranges, each file checked as :func:`load_expert_set` checks it."""
    manifest = read_manifest(manifest_path)
    return load_expert_set(manifest["guide_set"], manifest["rank"], manifest["base_guide"], manifest["experts"],
                           num_timesteps, manifest["ranges"], merge=merge, routing=routing)
