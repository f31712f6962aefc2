"""What a trained guide set cost and holds: its experts' training seconds and passes, and its
trainable and stored parameters (from the records the expert files carry)."""

from __future__ import annotations

from typing import Sequence

from ppap.experts import adapters
from ppap.experts.sets import expert_stats
from ppap.study import grammar


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
