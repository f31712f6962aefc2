"""High-level steps the workflow scripts call: one function per rule, models passed as paths.

Kept here (not in the scripts) so every step is importable and unit-tested.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ppap import adapters, data, diffusion, distill, experts, grammar, guidance, schedules
from ppap.classifier_free import classifier_free_eps
from ppap.compute import SamplingCost
from ppap.config import ExpertTraining
from ppap.models import classifiers, dense as dense_models, unet as unet_models
from ppap.models.checkpoints import CheckpointError, load_checkpoint, load_state_dict_strict
from ppap.models.convs import use_center_taps
from ppap.runtime import autocast_context
from ppap.training_free import TrainingFreeSettings, sample_ddim_training_free
from ppap.training import adamw, load_optimizer_moments, noisy_accuracy, optimizer_moments


# ---------------------------------------------------------------------------------------- data

def load_digits_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


# ---------------------------------------------------------------------------------------- guides

def guide_checkpoint_kind(path) -> str:
    """The checkpoint kind of a guide file: a classifier's or a dense guide's."""
    kind = load_checkpoint(path)["kind"]
    if kind not in (classifiers.GUIDE_KIND, dense_models.DENSE_GUIDE_KIND):
        raise CheckpointError(f"{path} holds a {kind!r} checkpoint, not a guide")
    return kind


def load_any_guide(path) -> torch.nn.Module:
    """A classifier guide or a dense guide, whichever the file holds (its weights loaded strictly)."""
    if guide_checkpoint_kind(path) == dense_models.DENSE_GUIDE_KIND:
        return dense_models.load_dense_guide(path)
    return classifiers.load_guide(path)


def guide_output_kind(guide: torch.nn.Module) -> str:
    """What a guide's output is: ``classification`` logits, ``segmentation`` logits or ``regression``."""
    return getattr(guide, "task", "classification")


def save_full_guide(path, model: torch.nn.Module, base_guide_path, **metadata) -> None:
    """A whole guide (a fully fine-tuned expert) with the base guide's spec, in the base's kind."""
    kind = guide_checkpoint_kind(base_guide_path)
    spec = load_checkpoint(base_guide_path, kind)["spec"]
    if kind == dense_models.DENSE_GUIDE_KIND:
        dense_models.save_dense_guide(path, model, spec, **metadata)
    else:
        classifiers.save_guide(path, model, spec, **metadata)


# -------------------------------------------------------------------------------------- experts

def train_expert(
    settings: ExpertTraining,           # the set's resolved factors and the training section
    index: int,                         # which expert of the set
    base_guide_path,                    # the off-the-shelf guide (backbone, teacher)
    alphas_cumprod: torch.Tensor,
    clean_images,                       # synthetic x0 (data-free) or real training images (labeled)
    labels: torch.Tensor | None,        # ground truth (labeled sets only)
    generator: torch.Generator,
    device: torch.device,
    previous_expert=None,               # expert index-1's file: the warm start (None: from the guide)
    show_progress: bool = True,
    regression_loss: str = "mse",       # a dense regressor's transfer / labeled loss (ppap.distill)
) -> tuple[torch.nn.Module, dict, dict | None]:
    """Train expert `index` of a guide set; returns (model to save, stats, optimizer moments).

    ``clean_images`` (a float NCHW tensor in [-1, 1], or a :class:`ppap.data.ImagePool` that reads
    each batch from uint8 arrays, e.g. memory-mapped shards) are the synthetic samples for
    data-free transfer and the real training images (with ``labels``) for the labeled baselines.

    As the original PPAP trains its experts: LoRA experts with ``norm: trained`` carry their own
    normalisation layers (affine parameters trainable, batch norm in train mode, so its running
    statistics follow the expert's noise levels); with ``warm_start`` the expert starts from
    expert index-1's weights (LoRA and normalisation state, or the whole network) and, with
    ``optimizer``, continues its AdamW moments. Under ``precision`` bf16 the guide's forward
    passes run in autocast; weights, optimiser state and losses stay float32. A dense guide
    (segmenter, regressor) trains alike with its own losses (:func:`ppap.distill.transfer_loss`);
    its ``labels`` are then the ground-truth maps.
    """
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
        losses = distill.fit_noise_aware(
            model, params, images, ranges[index], alphas_cumprod.to(device), settings.steps, batch_size,
            settings.lr, generator, labels=None if teacher_logits is not None else labels.to(device),
            teacher_logits=teacher_logits, temperature=settings.temperature or 1.0,
            weight_decay=settings.weight_decay, show_progress=show_progress,
            desc=f"{settings.guide_set}[{index}]", optimizer=optimizer, kind=kind,
            regression_loss=regression_loss)
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


def load_expert_set(guide_set: str, base_guide_path, expert_paths: Sequence, num_timesteps: int,
                    ranges: Sequence[Sequence[int]] | None = None, merge: bool = False,
                    routing: str = "owner") -> experts.RoutedGuide:
    """The routed guide of a trained set: adapters on one backbone, or N full copies.

    Each expert file records the set, index and range it was trained for; a file of another
    kind (adapter vs full guide), set, index, rank or range is a :class:`CheckpointError` naming
    it, not a silently wrong guide. Every file loads with ``weights_only=True`` and strict keys;
    each adapter brings its own normalisation state, which the router selects with it.
    ``routing`` (:func:`ppap.experts.expert_for_timestep`): ``owner`` or the original's ``lower``.
    """
    spec = grammar.parse_guide_set(guide_set)
    if len(expert_paths) != spec.n_experts:
        raise ValueError(f"{guide_set}: {len(expert_paths)} expert files for {spec.n_experts} experts")
    ranges = expert_ranges(guide_set, spec.n_experts, num_timesteps, ranges)
    kind = guide_checkpoint_kind(base_guide_path) if spec.rank is None else adapters.ADAPTER_KIND
    for index, path in enumerate(expert_paths):
        payload = load_checkpoint(path, kind)
        _check_expert_file(path, payload, guide_set, spec.rank, index, ranges[index])
    if spec.rank is None:
        return experts.ModuleExperts([load_any_guide(p) for p in expert_paths], ranges, routing).eval()
    guide = load_any_guide(base_guide_path)
    first = adapters.read_adapter(expert_paths[0])["lora"]
    names = [f"expert{i}" for i in range(spec.n_experts)]
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


def training_cost(guide_set: str, expert_paths: Sequence) -> dict:
    """The one-time cost of a trained set: its experts' training wall-seconds and guide passes
    (None where an expert file predates the record)."""
    spec = grammar.parse_guide_set(guide_set)
    stats = [expert_stats(path, spec.rank) for path in expert_paths]

    def total(key):
        return None if any(key not in s for s in stats) else float(sum(s[key] for s in stats))
    return dict(training_wall_s=total("wall_s"), training_guide_forward=total("guide_forward"),
                training_guide_backward=total("guide_backward"))


def parameter_accounting(guide_set: str | None, base_params: int, expert_paths: Sequence = ()) -> dict:
    """Trainable parameters (trained for guidance) and stored parameters (on disk, guide included).

    LoRA experts: their LoRA matrices and, when trained, their own normalisation parameters
    (trainable) plus its running statistics (stored). Full fine-tuning: N whole copies.
    """
    if guide_set is None:
        return dict(trainable_params=0, stored_params=base_params)
    spec = grammar.parse_guide_set(guide_set)
    if spec.rank is None:
        return dict(trainable_params=spec.n_experts * base_params, stored_params=spec.n_experts * base_params)
    trainable, stored = 0, base_params
    for path in expert_paths:
        payload = adapters.read_adapter(path)
        trainable += int(payload["stats"]["trainable_params"])
        stored += sum(v.numel() for k, v in payload["state_dict"].items() if not k.endswith("num_batches_tracked"))
    return dict(trainable_params=trainable, stored_params=int(stored))


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
    clip: str = "guided_diffusion",     # guided_diffusion | after_guidance | none (see below)
    spacing: str = "ddim",              # ddim (guided-diffusion's ddimN) | leading | trailing
    training_free: TrainingFreeSettings | None = None,  # the guide on x0_hat (ppap.training_free)
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
    from ppap.training import progress

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
        x_T = diffusion.randn((n, *image_shape), generator, torch.empty(0, device=device))
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
                x = diffusion.sample_ddim(model.eps_fn, x_T, timesteps, alphas_cumprod, eta=eta, generator=generator,
                                          clip_x0=model.clip_x0)
            elif sampler == "ddpm":
                x = diffusion.sample_ddpm(model.eps_fn, x_T, timesteps, alphas_cumprod, generator=generator,
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


def load_guidance(guide_name: str, eps_model, num_timesteps: int, device: torch.device, guide_path=None,
                  manifest: dict | None = None, conditional_model_dir=None, training_free: dict | None = None,
                  routing: str = "owner", energy: guidance.Energy | None = None, merge_adapters: bool = False,
                  channels_last: bool = False, center_tap_convs: bool = False) -> Guidance:
    """The :class:`Guidance` of a guide name (:mod:`ppap.grammar`): none, the off-the-shelf guide on
    x_t or (training-free) on x0_hat, a trained guide set (its manifest's experts and ranges), or
    the class-conditional model at ``conditional_model_dir`` (classifier-free).

    ``guide_path`` may hold a classifier or a dense guide; ``energy`` is then the guide's
    log-likelihood of a target (default: the classifier's; a dense guide needs its own).
    Speed only (config ``performance``): ``merge_adapters`` merges the LoRA expert in use into the
    weights (:class:`ppap.experts.AdapterExperts`), ``channels_last`` puts the guide in NHWC,
    ``center_tap_convs`` skips the padding's taps on 1x1 maps (:mod:`ppap.models.convs`)."""
    kind = grammar.guide_kind(guide_name)
    if kind == "none":
        return Guidance(eps_model)
    if kind == "classifier_free":
        model, null_label = unet_models.load_conditional_eps_model(conditional_model_dir, device)
        return Guidance(model, num_classes=null_label, classifier_free=null_label,
                        description=f"class-conditional model {conditional_model_dir} (null label {null_label})")
    dense = guide_checkpoint_kind(guide_path) == dense_models.DENSE_GUIDE_KIND
    if dense and energy is None:
        raise ValueError(f"{guide_path} is a dense guide: give its energy (ppap.guidance.energy_for)")
    energy = energy or guidance.classifier_energy
    num_classes = (dense_models.read_dense_spec(guide_path)["num_outputs"] if dense
                   else classifiers.read_guide_spec(guide_path)["num_classes"])
    if kind in ("off_the_shelf", "training_free"):
        guide = experts.SingleGuide(load_any_guide(guide_path)).to(device).requires_grad_(False)
        guide = with_speed_switches(guide, channels_last, center_tap_convs)
        settings = TrainingFreeSettings(**training_free) if kind == "training_free" else None
        return Guidance(eps_model, guide, num_classes, settings, energy=energy,
                        description=f"{guide_path} off the shelf" + (f", on x0_hat: {settings}" if settings else ""))
    guide = load_expert_set(guide_name, guide_path, manifest["experts"], num_timesteps, manifest["ranges"],
                            merge=merge_adapters, routing=routing).to(device)
    guide = with_speed_switches(guide, channels_last, center_tap_convs)
    return Guidance(eps_model, guide, num_classes, energy=energy,
                    description=f"{guide_name} on {guide_path}: experts {manifest['experts']}, ranges {manifest['ranges']}")


def with_speed_switches(guide: torch.nn.Module, channels_last: bool, center_tap_convs: bool) -> torch.nn.Module:
    """A guide (to train or to sample with) under the config's ``performance`` switches: NHWC
    (oneDNN's native layout on the CPU, tensor cores' on CUDA) and centre-tap convolutions on 1x1
    maps (:mod:`ppap.models.convs`). The same computation, other kernels."""
    if center_tap_convs:
        use_center_taps(guide)
    return guide.to(memory_format=torch.channels_last) if channels_last else guide


def sample_with_cost(guidance: Guidance, alphas_cumprod: torch.Tensor, image_shape, num_samples: int,
                     batch_size: int, seed: int, device: torch.device, **settings):
    """:func:`generate_samples` with the guidance's parts; returns (images, labels, passes counted,
    wall-seconds)."""
    cost = SamplingCost()
    start = time.perf_counter()
    images, labels = generate_samples(guidance.eps_model, alphas_cumprod, image_shape, num_samples, batch_size,
                                      seed, device, cost=cost, **guidance.sampling_kwargs(), **settings)
    return images, labels, cost, time.perf_counter() - start


def load_eps_model(model_dir, device: torch.device):
    if (Path(model_dir) / "glide").is_dir():     # GLIDE's base model (ppap.models.convert_glide)
        from ppap.models.glide import load_glide_eps

        return load_glide_eps(model_dir, device)
    unet, scheduler = unet_models.load_diffusion_model(model_dir)
    alphas_cumprod = schedules.alphas_cumprod_from_scheduler(scheduler)
    eps = unet_models.EpsilonModel(unet, alphas_cumprod, scheduler.config.prediction_type).to(device).eval()
    eps.requires_grad_(False)
    image_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    return eps, alphas_cumprod, image_shape
