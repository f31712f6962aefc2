"""The pieces every training loop shares: batches drawn with a passed-in generator, AdamW with
warm-up and linear decay, a stop on non-finite losses, EMA, progress, noisy-input accuracy."""

from __future__ import annotations

import copy
import sys
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppap.guidance import NonFiniteError
from ppap.schedules import q_sample


class _LineWriter:
    """A stream for tqdm that ends every refresh with a newline when stderr is a log file."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable, total: int | None = None, desc: str = "", enabled: bool = True):
    """tqdm to stderr (a rule's log), one line every few seconds so logs stay readable."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    stream = sys.stderr if sys.stderr.isatty() else _LineWriter(sys.stderr)
    return tqdm(iterable, total=total, desc=desc, file=stream, mininterval=10.0, ascii=True, ncols=90)


def make_optimizer(params: Sequence[nn.Parameter], lr: float, weight_decay: float, steps: int,
                   warmup_steps: int = 0, fused: bool = False
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW, linear warm-up then linear decay to zero (the PPAP recipe's schedule)."""
    optimizer = adamw(params, lr, weight_decay, fused)
    return optimizer, linear_decay(optimizer, steps, warmup_steps)


def adamw(params: Sequence[nn.Parameter], lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """AdamW; ``fused`` runs torch's fused kernel (one pass over every parameter per step, on the
    CPU and CUDA), which rounds differently from the per-parameter loop: same update, other bits."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)


def linear_decay(optimizer: torch.optim.Optimizer, steps: int,
                 warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of every group: linear warm-up, then linear decay to zero at `steps`."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (steps - step) / max(1, steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_moments(optimizer: torch.optim.Optimizer) -> dict:
    """The per-parameter state of an optimizer (AdamW: step, exp_avg, exp_avg_sq), by position."""
    # contiguous: a channels-last parameter's moments are channels-last too; the file stays canonical
    return {index: {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) if torch.is_tensor(v) else v
                    for k, v in state.items()}
            for index, state in optimizer.state_dict()["state"].items()}


def load_optimizer_moments(optimizer: torch.optim.Optimizer, moments: dict) -> None:
    """Continue from another run's per-parameter state (same parameter shapes, same order); the
    learning rate and the other group settings stay this optimizer's own."""
    current = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, state in moments.items():
        index = int(index)
        if index >= len(params):
            raise ValueError(f"optimizer state for parameter {index}, but only {len(params)} parameters")
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != params[index].shape:
                raise ValueError(f"optimizer state {key} of parameter {index} has shape {tuple(value.shape)}, "
                                 f"the parameter {tuple(params[index].shape)}")
    # Each moment takes its parameter's memory layout (a channels-last student): the fused kernel
    # walks parameter and moments as one layout.
    state = {}
    for index, entry in moments.items():
        param = params[int(index)]
        state[int(index)] = {k: (torch.empty_like(param, dtype=v.dtype).copy_(v)
                                 if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in entry.items()}
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def check_finite(loss: torch.Tensor, step: int, what: str) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteError(f"{what}: non-finite loss ({loss.item()}) at step {step}; stopping")


def random_batch(num_items: int, batch_size: int, generator: torch.Generator, device=None) -> torch.Tensor:
    return torch.randint(num_items, (batch_size,), generator=generator, device=device or generator.device)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (zero fill is -1, the digits' background)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator, device=generator.device).tolist()
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator, device=generator.device).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def noisy_inputs(x0: torch.Tensor, t_range: tuple[int, int], alphas_cumprod: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, t) with t uniform in the half-open range and x_t ~ q(x_t | x0)."""
    t = torch.randint(t_range[0], t_range[1], (x0.shape[0],), generator=generator, device=generator.device)
    noise = torch.randn(x0.shape, generator=generator, device=generator.device)
    t, noise = t.to(x0.device), noise.to(x0.device, x0.dtype)
    return q_sample(x0, t, alphas_cumprod, noise), t


class EMA:
    """Exponential moving average of a model's parameters and buffers (with a short warm-up)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # one multi-tensor op per step, not one op per parameter (the same lerp, bit for bit)
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


@torch.no_grad()
def noisy_accuracy(guide: Callable, images: torch.Tensor, labels: torch.Tensor, timesteps: Sequence[int],
                   alphas_cumprod: torch.Tensor, generator: torch.Generator, batch_size: int = 512) -> list[float]:
    """Top-1 accuracy of ``guide(x_t, t)`` on q(x_t | x0) at each timestep (the motivating curve)."""
    accuracies = []
    for t_value in timesteps:
        correct = 0
        for start in range(0, len(images), batch_size):
            x0 = images[start:start + batch_size]
            t = torch.full((x0.shape[0],), int(t_value), dtype=torch.long, device=x0.device)
            noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device, x0.dtype)
            logits = guide(q_sample(x0, t, alphas_cumprod, noise), t)
            correct += (logits.argmax(-1) == labels[start:start + batch_size]).sum().item()
        accuracies.append(correct / len(images))
    return accuracies
