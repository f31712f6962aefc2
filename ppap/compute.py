"""What a sampling run costs: network passes per sample, counted as they happen.

A *pass* is one sample through a network: a forward call on a batch of n images counts n forward
passes, and a gradient that reaches that call's output counts n backward passes (whatever part of
the graph it flows on to). Dividing by the number of samples drawn gives passes per sample, the
unit of the compute columns: guided DDIM-25 with a classifier is 25 denoiser forwards and 25 guide
forwards and backwards per sample; x0-guidance adds 25 denoiser backwards; classifier-free guidance
runs the denoiser on 2n images per step (50 forwards).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

PASS_KINDS = ("denoiser_forward", "denoiser_backward", "guide_forward", "guide_backward")


@dataclass
class PassCounter:
    """Forward and backward sample-passes through one network."""

    forward: int = 0
    backward: int = 0

    def wrap(self, network: Callable) -> Callable:
        """``network`` with its passes counted; the first argument is the batch."""

        def counted(x: torch.Tensor, *args, **kwargs):
            out = network(x, *args, **kwargs)
            batch = x.shape[0]
            self.forward += batch
            if isinstance(out, torch.Tensor) and out.requires_grad:
                out.register_hook(lambda grad: self._count_backward(batch))
            return out

        return counted

    def _count_backward(self, batch: int) -> None:
        self.backward += batch


@dataclass
class SamplingCost:
    """Passes through the denoiser and the guide during one sampling run (any number of batches)."""

    denoiser: PassCounter = field(default_factory=PassCounter)
    guide: PassCounter = field(default_factory=PassCounter)
    samples: int = 0

    def per_sample(self) -> dict[str, float]:
        """Passes per sample drawn (0 when nothing was drawn)."""
        n = max(self.samples, 1)
        totals = dict(denoiser_forward=self.denoiser.forward, denoiser_backward=self.denoiser.backward,
                      guide_forward=self.guide.forward, guide_backward=self.guide.backward)
        return {key: value / n for key, value in totals.items()}

    def totals(self) -> dict[str, int]:
        return dict(samples=self.samples, denoiser=asdict(self.denoiser), guide=asdict(self.guide))


def machine_description(device: torch.device | str) -> str:
    """The processor that ran a job, for the compute columns: the CPU model or the GPU's name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def cost_record(runs: list[tuple[int, SamplingCost, float]], threads: int, device: torch.device | str) -> dict:
    """The compute of a sampling job: (seed, passes counted, wall-seconds) per seed, and per sample
    over all of them, with the threads and the machine the seconds were measured on."""
    per_seed = [dict(seed=int(seed), samples=cost.samples, wall_s=float(wall), **cost.per_sample())
                for seed, cost, wall in runs]
    total = sum(cost.samples for _, cost, _ in runs)
    if total == 0:
        raise ValueError("no samples were drawn")
    per_sample = {kind: sum(cost.per_sample()[kind] * cost.samples for _, cost, _ in runs) / total
                  for kind in PASS_KINDS}
    per_sample["wall_s"] = sum(wall for _, _, wall in runs) / total
    return dict(per_sample=per_sample, per_seed=per_seed, samples=total, threads=int(threads),
                device=torch.device(device).type, machine=machine_description(device))
