"""Settings objects: what a rule hands the library, built once from the config by the study layer
(:mod:`ppap.study.config`). Torch-free; each is a frozen dataclass whose ``as_params`` (a rule's
params, hence its rerun trigger) and ``from_params`` round-trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ExpertTraining:
    """Everything one distillation job needs besides its files: the resolved factors of its set
    (:func:`ppap.study.grammar.resolve_guide_set`) and the config's training section. Passed to the
    rule as params, so a job reruns only when what it uses changes."""

    guide_set: str                      # canonical name
    supervision: str                    # labeled | datafree
    rank: int | None                    # LoRA rank; None: full fine-tuning
    n_experts: int
    steps: int                          # per expert: the set's total budget split evenly
    batch_size: int
    lr: float
    weight_decay: float
    seed: int                           # expert i draws from a generator seeded seed + 1000 i
    norm: str                           # trained | frozen (LoRA); full fine-tuning: trained
    warm_start: str                     # off | weights | optimizer (off for N = 1)
    synthetic_size: int | None = None   # data-free only
    temperature: float | None = None    # data-free only
    lora: dict | None = None            # alpha, layer_types, include, exclude (LoRA only)
    ranges: list | None = None          # custom half-open ranges; None: the equal split
    batch_size_by_device: dict | None = None
    precision: str = "fp32"
    channels_last: bool = False         # performance: the student in NHWC (rounding only)
    fused_optimizer: bool = False       # performance: AdamW's fused kernel (rounding only)
    center_tap_convs: bool = False      # performance: 1x1 inputs multiply the centre tap only

    def as_params(self) -> dict:
        return asdict(self)

    @classmethod
    def from_params(cls, params) -> "ExpertTraining":
        return cls(**dict(params))
