"""Pre-training of the embedded preset's networks: the base DDPM and the clean classifiers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ppap.experts.distill import supervised_loss
from ppap.schedules import q_sample
from ppap.training import EMA, check_finite, make_optimizer, progress, random_batch, random_shift


@dataclass(frozen=True)
class DiffusionTraining:
    """How a DDPM trains: steps and batches, AdamW with warm-up and linear decay, the EMA it returns."""

    steps: int
    batch_size: int
    lr: float
    ema_decay: float = 0.999
    warmup_steps: int = 100
    weight_decay: float = 0.0
    label_dropout: float = 0.1          # class-conditional training: P(label -> null label)
    fused_optimizer: bool = False       # AdamW's fused kernel (speed only; it rounds differently)


def train_diffusion(unet: nn.Module, images: torch.Tensor, alphas_cumprod: torch.Tensor, training: DiffusionTraining,
                    generator: torch.Generator, labels: torch.Tensor | None = None, num_classes: int | None = None,
                    show_progress: bool = True) -> nn.Module:
    """Epsilon-prediction DDPM training (Ho et al., 2020, Algorithm 1); returns the EMA model.

    With `labels` (and `num_classes`), a class-conditional model for classifier-free guidance (Ho &
    Salimans, 2022): each sample's label is replaced by the null label ``num_classes`` with
    probability `label_dropout`, so one network learns eps(x, t, y) and eps(x, t, null). Without
    labels the generator is drawn from exactly as it always was (the base model is reproducible).
    """
    steps, batch_size, label_dropout = training.steps, training.batch_size, training.label_dropout
    if labels is not None:
        _check_labels(labels, num_classes, label_dropout)
    num_timesteps = len(alphas_cumprod)
    optimizer, schedule = make_optimizer(list(unet.parameters()), training.lr, training.weight_decay, steps,
                                         training.warmup_steps, fused=training.fused_optimizer)
    ema = EMA(unet, training.ema_decay)
    unet.train()
    for step in progress(range(steps), total=steps, desc="diffusion", enabled=show_progress):
        idx = random_batch(len(images), batch_size, generator).to(images.device)
        x0 = images[idx]
        t = torch.randint(num_timesteps, (batch_size,), generator=generator, device=generator.device).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        x_t = q_sample(x0, t, alphas_cumprod, noise)
        if labels is None:
            prediction = unet(x_t, t).sample
        else:
            # Drawn after the noise: the first draws of every step are the unconditional ones.
            class_labels = drop_labels(labels[idx], num_classes, label_dropout, generator)
            prediction = unet(x_t, t, class_labels=class_labels).sample
        loss = F.mse_loss(prediction, noise)
        check_finite(loss, step, "diffusion training")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0, foreach=True)  # multi-tensor: same bits
        optimizer.step()
        schedule.step()
        ema.update(unet)
    return ema.model


def drop_labels(labels: torch.Tensor, null_label: int, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """Each label replaced by `null_label` with probability `dropout` (one uniform draw per label)."""
    drop = torch.rand(labels.shape, generator=generator, device=generator.device).to(labels.device) < dropout
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def _check_labels(labels: torch.Tensor, num_classes: int | None, label_dropout: float) -> None:
    if num_classes is None:
        raise ValueError("train_diffusion with labels needs num_classes (the null label is num_classes)")
    if not 0 <= label_dropout <= 1:
        raise ValueError(f"label_dropout must be in [0, 1], got {label_dropout}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min().item()}, {labels.max().item()}]")


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int,
                     lr: float, generator: torch.Generator, weight_decay: float = 0.05, max_shift: int = 1,
                     label_smoothing: float = 0.0, show_progress: bool = True, desc: str = "classifier") -> nn.Module:
    """Cross-entropy training on clean images (the guide never sees noise; nor does the evaluator)."""

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x = random_shift(images[idx], max_shift, generator)
        return F.cross_entropy(model(x), labels[idx], label_smoothing=label_smoothing)

    return _fit_on_clean(model, batch_loss, images, steps, batch_size, lr, generator, weight_decay, show_progress, desc)


def train_dense_network(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, kind: str, steps: int,
                        batch_size: int, lr: float, generator: torch.Generator, weight_decay: float = 0.05,
                        show_progress: bool = True, desc: str = "dense") -> nn.Module:
    """A dense network on clean images and their ground-truth maps (``kind``: segmentation, with
    per-pixel cross-entropy, or regression, with MSE). No shift augmentation: a shifted image's map
    would have to shift with it, and the maps are exact functions of the image already."""

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        return supervised_loss(kind, model(images[idx]), maps[idx]).mean()

    return _fit_on_clean(model, batch_loss, images, steps, batch_size, lr, generator, weight_decay, show_progress, desc)


def _fit_on_clean(model: nn.Module, batch_loss, images: torch.Tensor, steps: int, batch_size: int, lr: float,
                  generator: torch.Generator, weight_decay: float, show_progress: bool, desc: str) -> nn.Module:
    """AdamW with warm-up and linear decay over ``steps`` random batches of ``images``;
    ``batch_loss(indices)`` is the loss of one batch."""
    optimizer, schedule = make_optimizer(list(model.parameters()), lr, weight_decay, steps, warmup_steps=steps // 20)
    model.train()
    for step in progress(range(steps), total=steps, desc=desc, enabled=show_progress):
        loss = batch_loss(random_batch(len(images), batch_size, generator).to(images.device))
        check_finite(loss, step, desc)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def clean_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    model.eval()
    correct = sum((model(images[i:i + batch_size]).argmax(-1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    return correct / len(images)
