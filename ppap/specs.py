"""Settings objects: what a rule hands the library, built once from the config by the study layer
(:mod:`ppap.study.config`). Torch-free; each is a frozen dataclass whose ``as_params`` (a rule's
params, hence its rerun trigger) and ``from_params`` round-trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ppap.vocab import CLIP_MODES, PRECISIONS, SAMPLERS, SPACINGS


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


@dataclass(frozen=True)
class SamplingSpec:
    """How samples are drawn, whatever guides them: the sampler and its steps, the guidance scale,
    where x0 is clipped, which timesteps are visited, the networks' precision and the batch size."""

    sampler: str = "ddim"               # ddim (guidance on eps) | ddpm (guidance on the mean)
    steps: int = 25
    scale: float = 0.0                  # the guidance scale (classifier-free: w)
    eta: float = 0.0                    # DDIM's noise; 0 is deterministic (DDPM ignores it)
    recurrence: int = 1                 # steps per timestep, re-noised back in between (time travel)
    clip: str = "guided_diffusion"      # guided_diffusion | after_guidance | none (ppap.guidance.guided_model)
    spacing: str = "ddim"               # ddim (guided-diffusion's ddimN) | leading | trailing
    precision: str = "fp32"             # fp32 | bf16 | auto: bf16 autocast for the UNet and the guide
    batch_size: int = 500

    def __post_init__(self):
        for field, vocabulary in (("sampler", SAMPLERS), ("clip", CLIP_MODES), ("spacing", SPACINGS),
                                  ("precision", PRECISIONS)):
            if getattr(self, field) not in vocabulary:
                raise ValueError(f"unknown {field} {getattr(self, field)!r} (use one of {', '.join(vocabulary)})")
        if self.steps < 1 or self.batch_size < 1 or self.recurrence < 1:
            raise ValueError(f"steps, batch_size and recurrence must be >= 1 (got {self.steps}, {self.batch_size}, "
                             f"{self.recurrence})")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0 (got {self.eta})")

    def as_params(self) -> dict:
        return asdict(self)

    @classmethod
    def from_params(cls, params) -> "SamplingSpec":
        return cls(**dict(params))
