"""Training the guides that know about noise.

* Data-free knowledge transfer (PPAP): the frozen off-the-shelf guide labels a clean synthetic
  image x0 (no ground truth), the expert sees x_t ~ q(x_t | x0) with t in its range and matches
  the teacher's softened distribution.
* Labeled baselines: cross-entropy on noised real images, with ground-truth labels.

Per guide kind (``classification``, ``segmentation``, ``regression``): the transfer loss is the KL
on the teacher's sharpened distribution (per pixel for a segmenter), or the MSE of the teacher's
map (optionally scale-and-shift invariant, MiDaS's loss); the labeled loss is cross-entropy (per
pixel) or the MSE to the ground-truth map. Every loss is per sample; the caller takes the mean.

Both work for LoRA experts (one backbone, one adapter per expert, each with its own copy of the
normalisation layers when they are trained) and for full fine-tuning (a separate copy per expert).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppap.guidance import scale_shift_aligned
from ppap.training import check_finite, linear_decay, make_optimizer, noisy_inputs, progress, random_batch
from ppap.vocab import REGRESSION_LOSSES


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample KL(softmax(teacher / tau) || softmax(student)).

    As in PPAP, the temperature sharpens (tau < 1) the teacher only; the student runs at tau = 1.
    """
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits.float(), dim=-1)
    return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)


def pixel_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample mean over pixels of KL(softmax(teacher / tau) || softmax(student)) on [B, K, H, W]."""
    return kd_loss(student_logits.movedim(1, -1), teacher_logits.movedim(1, -1), temperature).flatten(1).mean(1)


def map_mse(prediction: torch.Tensor, target: torch.Tensor, invariant: bool = False) -> torch.Tensor:
    """Per-sample mean squared error of a map; with ``invariant`` after aligning the prediction to
    the target in scale and shift (MiDaS's scale-and-shift-invariant loss)."""
    prediction = prediction.float()
    if invariant:
        prediction = scale_shift_aligned(prediction, target)
    return ((prediction - target.float()) ** 2).flatten(1).mean(1)




def transfer_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
                  regression_loss: str = "mse") -> torch.Tensor:
    """Data-free knowledge transfer, per sample, for a guide of ``kind``."""
    if kind == "classification":
        return kd_loss(student, teacher, temperature)
    if kind == "segmentation":
        return pixel_kd_loss(student, teacher, temperature)
    if kind == "regression":
        return map_mse(student, teacher, _invariant(regression_loss))
    raise ValueError(f"unknown guide kind {kind!r}")


def supervised_loss(kind: str, outputs: torch.Tensor, targets: torch.Tensor, regression_loss: str = "mse") -> torch.Tensor:
    """The labeled baselines' loss against ground truth, per sample."""
    if kind == "classification":
        return F.cross_entropy(outputs.float(), targets, reduction="none")
    if kind == "segmentation":
        return F.cross_entropy(outputs.float(), targets.long(), reduction="none").flatten(1).mean(1)
    if kind == "regression":
        return map_mse(outputs, targets, _invariant(regression_loss))
    raise ValueError(f"unknown guide kind {kind!r}")


def _invariant(regression_loss: str) -> bool:
    if regression_loss not in REGRESSION_LOSSES:
        raise ValueError(f"unknown regression loss {regression_loss!r} (use {' or '.join(REGRESSION_LOSSES)})")
    return regression_loss == "scale_shift_invariant"


@dataclass(frozen=True)
class Fit:
    """How one noise-aware training runs: its steps, batches and AdamW, and its loss."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup_steps: int = 0
    temperature: float = 1.0            # transfer: the teacher's distribution sharpened by 1 / T
    kind: str = "classification"        # the guide's output: see transfer_loss
    regression_loss: str = "mse"        # a regression guide's loss


def fit_noise_aware(
    student: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],  # guide(x_t, t) being trained
    params: Sequence[nn.Parameter],                                  # what the optimiser updates
    clean_images,                                                     # x0 pool: float NCHW [-1, 1] or ImagePool
    t_range: tuple[int, int],                                         # half-open timestep range owned
    alphas_cumprod: torch.Tensor,
    fit: Fit,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,                               # ground truth (labeled baselines)
    teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,    # clean-image teacher (data-free)
    teacher_logits: torch.Tensor | None = None,                       # or its outputs, one row per image
    optimizer: torch.optim.Optimizer | None = None,                   # AdamW over `params`, e.g. warm-started
    show_progress: bool = True,
    desc: str = "expert",
) -> list[float]:
    """Train `student` on noisy inputs from `t_range`; returns the per-step mean loss.

    Exactly one of `labels` (cross-entropy), `teacher` or `teacher_logits` (knowledge transfer)
    must be given. The teacher sees clean, fixed images, so its logits can be computed once
    (:func:`precompute_teacher_logits`): the same loss for a fraction of the cost.
    An `optimizer` given (to continue from another run's moments) is used as it is, with the
    linear-decay schedule from its own learning rate; otherwise AdamW(lr, weight_decay).
    """
    steps, batch_size, kind = fit.steps, fit.batch_size, fit.kind
    if sum(arg is not None for arg in (labels, teacher, teacher_logits)) != 1:
        raise ValueError("give exactly one of labels (cross-entropy) or teacher / teacher_logits (knowledge transfer)")
    if teacher_logits is not None and len(teacher_logits) != len(clean_images):
        raise ValueError(f"{len(teacher_logits)} teacher logits for {len(clean_images)} images")
    if optimizer is None:
        optimizer, schedule = make_optimizer(list(params), fit.lr, fit.weight_decay, steps, fit.warmup_steps)
    else:
        schedule = linear_decay(optimizer, steps, fit.warmup_steps)
    losses = []
    for step in progress(range(steps), total=steps, desc=desc, enabled=show_progress):
        idx = random_batch(len(clean_images), batch_size, generator).to(clean_images.device)
        x0 = clean_images[idx]
        x_t, t = noisy_inputs(x0, t_range, alphas_cumprod, generator)
        logits = student(x_t, t)
        if teacher is not None or teacher_logits is not None:
            if teacher_logits is not None:
                target_logits = teacher_logits[idx]
            else:
                with torch.no_grad():
                    target_logits = teacher(x0)
            loss = transfer_loss(kind, logits, target_logits, fit.temperature, fit.regression_loss).mean()
        elif kind == "classification":  # the batch-mean form the reference results were trained with
            loss = F.cross_entropy(logits.float(), labels[idx])
        else:
            loss = supervised_loss(kind, logits, labels[idx], fit.regression_loss).mean()
        check_finite(loss, step, desc)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def precompute_teacher_logits(teacher: Callable[[torch.Tensor], torch.Tensor], images,
                              batch_size: int = 512) -> torch.Tensor:
    """The teacher's logits on every clean image (a tensor or an ImagePool), in order, batch by batch
    (its batch norm must be in eval mode)."""
    return torch.cat([teacher(images[i:i + batch_size]).float() for i in range(0, len(images), batch_size)])


def adapter_teacher(peft_model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The off-the-shelf guide as teacher: the same backbone with every adapter switched off."""

    def teacher(x0: torch.Tensor) -> torch.Tensor:
        with peft_model.disable_adapter():
            return peft_model(x0, None)

    return teacher


def module_teacher(guide: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A frozen copy of the off-the-shelf guide as teacher (for full fine-tuning)."""
    guide = guide.eval().requires_grad_(False)
    return lambda x0: guide(x0, None)
