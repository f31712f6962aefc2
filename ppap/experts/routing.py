"""Timestep experts: half-open ranges over [0, T), per-sample routing, and the routed guide.

Expert i owns [start_i, end_i). A batch whose samples sit at different timesteps is split, each
part goes to the expert that owns it, and the logits are put back in order: a boundary step is
never handed to an expert that did not train on it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ppap.vocab import ROUTINGS

Range = tuple[int, int]


def timestep_ranges(num_timesteps: int, n_experts: int) -> list[Range]:
    """Cut [0, T) into `n_experts` contiguous half-open ranges of (nearly) equal length."""
    if n_experts < 1:
        raise ValueError(f"n_experts must be >= 1, got {n_experts}")
    if n_experts > num_timesteps:
        raise ValueError(f"n_experts ({n_experts}) exceeds the number of timesteps ({num_timesteps})")
    edges = [i * num_timesteps // n_experts for i in range(n_experts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n_experts)]


def check_ranges(ranges: Sequence[Range], num_timesteps: int) -> None:
    """Raise unless `ranges` tile [0, T) exactly, in order, without gaps or overlaps."""
    if not ranges:
        raise ValueError("no expert ranges given")
    expected_start = 0
    for i, (start, end) in enumerate(ranges):
        if start != expected_start:
            raise ValueError(f"expert {i} starts at {start}, expected {expected_start}: ranges must tile [0, {num_timesteps})")
        if end <= start:
            raise ValueError(f"expert {i} has an empty range [{start}, {end})")
        expected_start = end
    if expected_start != num_timesteps:
        raise ValueError(f"ranges end at {expected_start}, not at T = {num_timesteps}")




def expert_for_timestep(t: torch.Tensor, ranges: Sequence[Range], routing: str = "owner") -> torch.Tensor:
    """Index of the expert for each timestep in `t`.

    ``owner``: the expert whose half-open range holds t (the one that trained on it).
    ``lower``: the original PPAP's router, with closed intervals searched from the bottom: a step on
    a boundary (t = start of expert i > 0) goes to expert i - 1, which never trained on it.
    """
    if routing not in ROUTINGS:
        raise ValueError(f"unknown routing {routing!r} (use one of {', '.join(ROUTINGS)})")
    t = torch.as_tensor(t)
    low, high = ranges[0][0], ranges[-1][1]
    if ((t < low) | (t >= high)).any():
        bad = t[(t < low) | (t >= high)].unique().tolist()
        raise ValueError(f"timestep(s) {bad} outside [{low}, {high}) covered by the experts")
    starts = torch.tensor([start for start, _ in ranges[1:]], device=t.device, dtype=t.dtype)
    return torch.bucketize(t, starts, right=routing == "owner")


class RoutedGuide(nn.Module):
    """A guide ``(x, t) -> logits`` that sends each sample to the expert owning its timestep.

    Subclasses say how expert ``i`` runs: a separate module, or one backbone with adapter ``i``.
    """

    def __init__(self, ranges: Sequence[Range], routing: str = "owner"):
        super().__init__()
        self.ranges = [tuple(r) for r in ranges]
        check_ranges(self.ranges, self.ranges[-1][1])
        if routing not in ROUTINGS:
            raise ValueError(f"unknown routing {routing!r} (use one of {', '.join(ROUTINGS)})")
        self.routing = routing

    @property
    def n_experts(self) -> int:
        return len(self.ranges)

    def run_expert(self, index: int, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        owners = expert_for_timestep(t, self.ranges, self.routing)
        present = owners.unique().tolist()
        if len(present) == 1:  # the usual case in sampling: one timestep per batch
            return self.run_expert(present[0], x, t)
        parts = [(idx, (owners == idx).nonzero().flatten()) for idx in present]
        outputs = [self.run_expert(idx, x[rows], t[rows]) for idx, rows in parts]
        out = outputs[0].new_empty((x.shape[0], *outputs[0].shape[1:]))
        for (_, rows), value in zip(parts, outputs):
            out[rows] = value
        return out


class ModuleExperts(RoutedGuide):
    """N separate guides, one per range (the fully fine-tuned labeled baseline)."""

    def __init__(self, guides: Sequence[nn.Module], ranges: Sequence[Range], routing: str = "owner"):
        super().__init__(ranges, routing)
        if len(guides) != len(self.ranges):
            raise ValueError(f"{len(guides)} guides for {len(self.ranges)} ranges")
        self.guides = nn.ModuleList(guides)

    def run_expert(self, index, x, t):
        return self.guides[index](x, t)


class AdapterExperts(RoutedGuide):
    """One backbone carrying N named LoRA adapters (peft); expert i activates adapter i.

    With ``merge=True`` (for sampling, not training) the active adapter is merged into the
    backbone's weights and swapped (unmerge, merge the next) only when the expert changes, so
    each guide call costs what the plain guide costs. peft merges in place, which autograd does
    not see: take each call's gradient before the next call (``grad_log_prob`` does), and a
    batch that mixes experts runs with its adapters unmerged (swapping weights between its parts
    would change what the earlier parts' backward pass reads). peft's unmerge subtracts the delta it
    added, which rounds (W + d - d is not W in float); the backbone's weights are therefore kept
    before each merge and put back on unmerge, so every merge starts from the trained weights and a
    batch's samples do not depend on the batches before it. Call :meth:`unmerge` before saving or
    training the backbone.
    """

    def __init__(self, peft_model: nn.Module, adapter_names: Sequence[str], ranges: Sequence[Range],
                 merge: bool = False, routing: str = "owner"):
        super().__init__(ranges, routing)
        if len(adapter_names) != len(self.ranges):
            raise ValueError(f"{len(adapter_names)} adapters for {len(self.ranges)} ranges")
        self.model = peft_model
        self.adapter_names = list(adapter_names)
        self.merge = merge
        # One LoRA layer whose merge record we read (a tuple, so it is not registered twice).
        self._probe = tuple(m for m in peft_model.modules() if hasattr(m, "merged_adapters"))[:1]
        if merge and not self._probe:
            raise ValueError("merge=True needs a peft model with LoRA layers")
        self._merge_now = False  # this call merges: merge=True and one expert owns the whole batch
        self._unmerged_weights: list[tuple[torch.Tensor, torch.Tensor]] = []  # (weight, its value unmerged)

    @property
    def merged_adapter(self) -> str | None:
        """The adapter merged into the weights now (peft's own record), or None."""
        merged = self._probe[0].merged_adapters if self._probe else []
        return merged[-1] if merged else None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._merge_now = self.merge and expert_for_timestep(t, self.ranges, self.routing).unique().numel() == 1
        return super().forward(x, t)

    def run_expert(self, index, x, t):
        name = self.adapter_names[index]
        if self._merge_now:
            if self.merged_adapter != name:
                self.unmerge()
                self.model.set_adapter(name, inference_mode=True)
                with torch.no_grad():
                    self._unmerged_weights = [(w, w.detach().clone()) for w in self._lora_base_weights()]
                    self.model.merge_adapter([name])
        else:
            self.unmerge()  # a merging router on the same backbone may have left an adapter merged
            if self.model.active_adapter != name:
                # inference_mode keeps the adapter frozen: guidance needs grad w.r.t. x only.
                self.model.set_adapter(name, inference_mode=True)
        return self.model(x, t)

    def unmerge(self) -> None:
        """Take the merged adapter (if any) back out of the backbone's weights."""
        if self.merged_adapter is not None:
            with torch.no_grad():
                self.model.unmerge_adapter()  # peft's own record of what is merged
                for weight, unmerged in self._unmerged_weights:
                    weight.copy_(unmerged)
            self._unmerged_weights = []

    def _lora_base_weights(self) -> list[torch.Tensor]:
        """The weights a merge changes: each LoRA layer's base weight (peft merges no bias here)."""
        return [m.get_base_layer().weight for m in self.model.modules() if hasattr(m, "lora_A")]


class SingleGuide(nn.Module):
    """Adapts a guide that owns every timestep (off-the-shelf or noise-aware) to ``(x, t)``."""

    def __init__(self, guide: nn.Module):
        super().__init__()
        self.guide = guide

    def forward(self, x, t):
        return self.guide(x, t)
