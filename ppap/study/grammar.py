"""The one place where guide-set and sampling names are parsed, formatted and validated.

Every result file of the DAG is named by what produced it, so names are the factors of the study:

* guides: ``none``, ``off_the_shelf``, ``classifier_free`` (the labeled upper bound: a
  class-conditional diffusion model), a training-free guide (the off-the-shelf guide on x0_hat)::

      trainingfree_<dps|freedom|mpgd|tfg|ug>[_form<tfg|paper>][_mu<mean>][_rec<r>][_it<k>][_sm<gamma>][_smn<K>]
                                          [_sch<constant|increase|decrease>]

  (TFG's hyperparameters, :mod:`ppap.guidance.training_free`; each applies to the methods that have it),
  or a trained guide set::

      <labeled|datafree>_<full|lora<r>>_n<N>[_syn<M>][_tau<T>][_norm<frozen|trained>]
                                          [_warm<off|weights|optimizer>][_lr<lr>][_steps<S>][_rep<k>]

  (N experts; ``_syn``/``_tau``: data-free set size and transfer temperature; ``_norm``: LoRA
  experts' normalisation layers frozen at the clean statistics or trained per expert;
  ``_warm``: each expert starts from scratch, from the previous expert's weights, or from its
  weights and optimiser state; ``_lr``: learning rate; ``_steps``: the set's training budget,
  optimiser steps split evenly over its experts; ``_rep``: independent training k,
  i.e. other training seeds);
* sampling settings: ``<ddim|ddpm><steps>_s<scale>[_clip<gd|after|none>][_sp<ddim|leading|trailing>]
  [_route<owner|lower>]`` (``_route``: a boundary timestep goes to the expert that owns it, or,
  as in the original PPAP's router, to the expert below).

A suffix is optional; absent means "the config's value". :func:`canonical_guide` and
:func:`canonical_sampling` drop suffixes equal to the config's values, so that cells that are the
same computation share one name, and its files. A new factor is one field of :class:`GuideSet`
(or :class:`Sampling`), its suffix in ``_GUIDE_SUFFIXES`` (``_SAMPLING_SUFFIXES``), and its
default in :func:`guide_defaults` (:func:`sampling_defaults`).

Imported by the Snakefile before any job runs: no torch here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ppap.vocab import NORM_MODES, ROUTINGS, SPACINGS, TF_FORMS, TF_SCHEDULES, TRAINING_FREE_METHODS, WARM_STARTS

_CLIP_TOKENS = {"guided_diffusion": "gd", "after_guidance": "after", "none": "none"}
_CLIP_FROM_TOKEN = {token: mode for mode, token in _CLIP_TOKENS.items()}

_NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:e-?[0-9]+)?"


class GrammarError(ValueError):
    """A name does not follow the grammar; the message says what is wrong."""


def format_number(value: float) -> str:
    """Canonical spelling of a number in a name: 1.0 -> 1, 0.50 -> 0.5, 0.0003 -> 0.0003."""
    text = f"{float(value):.6g}"
    if "e" in text:  # 3e-05 and the like: spell without the sign's zero padding
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


# ------------------------------------------------------------------------------------ guide sets

# suffix -> (field, regex of the value, parse, format); in the order names are written.
_GUIDE_SUFFIXES: dict[str, tuple[str, str, Any, Any]] = {
    "syn": ("synthetic_size", r"[1-9][0-9]*", int, str),
    "tau": ("temperature", _NUMBER, float, format_number),
    "norm": ("norm", "|".join(NORM_MODES), str, str),
    "warm": ("warm_start", "|".join(WARM_STARTS), str, str),
    "lr": ("lr", _NUMBER, float, format_number),
    "steps": ("total_steps", r"[1-9][0-9]*", int, str),
    "rep": ("replicate", r"[0-9]+", int, str),
}
_GUIDE_HEAD = r"(?P<supervision>labeled|datafree)_(?P<adapter>full|lora[1-9][0-9]*)_n(?P<n>[1-9][0-9]*)"
_GUIDE_TAIL = "".join(f"(?:_{key}(?P<{key}>{value}))?" for key, (_, value, _, _) in _GUIDE_SUFFIXES.items())
GUIDE_SET = re.compile(f"^{_GUIDE_HEAD}{_GUIDE_TAIL}$")
# The same grammar without named groups, for Snakemake's wildcard constraints.
GUIDE_SET_PATTERN = (r"(labeled|datafree)_(full|lora[1-9][0-9]*)_n[1-9][0-9]*"
                     + "".join(f"(_{key}({value}))?" for key, (_, value, _, _) in _GUIDE_SUFFIXES.items()))
# Training-free guidance with the off-the-shelf guide (ppap.guidance.training_free): the method, then TFG's
# hyperparameters that differ from the config's training_free.<method> section.
# suffix -> (field, regex, parse, format, methods it applies to); in the order names are written.
_TF_SUFFIXES: dict[str, tuple[str, str, Any, Any, tuple[str, ...]]] = {
    "form": ("form", "|".join(TF_FORMS), str, str, ("dps", "freedom", "mpgd")),
    "mu": ("mean", _NUMBER, float, format_number, ("tfg", "ug")),
    "rec": ("recurrence", r"[1-9][0-9]*", int, str, ("freedom", "tfg", "ug")),
    "it": ("iterations", r"[1-9][0-9]*", int, str, ("mpgd", "tfg", "ug")),
    "sm": ("smoothing", _NUMBER, float, format_number, ("tfg",)),
    "smn": ("smoothing_samples", r"[1-9][0-9]*", int, str, ("tfg",)),
    "sch": ("schedule", "|".join(TF_SCHEDULES), str, str, TRAINING_FREE_METHODS),
}
TRAINING_FREE = re.compile(r"^trainingfree_(?P<method>" + "|".join(TRAINING_FREE_METHODS) + ")"
                           + "".join(f"(?:_{key}(?P<{key}>{value}))?" for key, (_, value, *_) in _TF_SUFFIXES.items())
                           + "$")
TRAINING_FREE_PATTERN = (r"trainingfree_(" + "|".join(TRAINING_FREE_METHODS) + ")"
                         + "".join(f"(_{key}({value}))?" for key, (_, value, *_) in _TF_SUFFIXES.items()))
# The labeled upper bound: a class-conditional diffusion model, classifier-free guided.
CLASSIFIER_FREE = "classifier_free"
GUIDE_PATTERN = f"none|off_the_shelf|{CLASSIFIER_FREE}|{TRAINING_FREE_PATTERN}|{GUIDE_SET_PATTERN}"
# Zeros allowed, only to say precisely what is wrong with a rejected name.
_LOOSE_HEAD = re.compile(r"^(labeled|datafree)_(full|lora(?P<rank>[0-9]+))_n(?P<n>[0-9]+)(?P<rest>(_.*)?)$")


@dataclass(frozen=True)
class GuideSet:
    """A trained guide set: N experts over [0, T), each the off-the-shelf guide plus an adapter
    (``rank``) or a fully fine-tuned copy (``rank=None``). Fields left None take the config's value
    (:meth:`resolved`)."""

    supervision: str                    # "labeled" (ground truth, real images) | "datafree" (teacher, synthetic)
    rank: int | None                    # LoRA rank; None for full fine-tuning
    n_experts: int
    synthetic_size: int | None = None   # data-free images (the first M of the pool)
    temperature: float | None = None    # knowledge-transfer temperature on the teacher
    norm: str | None = None             # LoRA: normalisation layers "trained" per expert or "frozen"
    warm_start: str | None = None       # "off" | "weights" | "optimizer" (weights and AdamW state)
    lr: float | None = None             # learning rate (the config's per family: LoRA or full)
    total_steps: int | None = None      # optimiser steps of the whole set, split evenly over its experts
    replicate: int = 0                  # independent training k (training seeds offset by k)

    @property
    def adapter(self) -> str:
        return "full" if self.rank is None else f"lora{self.rank}"

    @property
    def name(self) -> str:
        return format_guide_set(self)

    def resolved(self, defaults: dict) -> "GuideSet":
        """Every None field filled from `defaults` (:func:`guide_defaults`)."""
        lr = self.lr if self.lr is not None else defaults["lr" if self.rank is not None else "full_lr"]
        filled = {f.name: defaults[f.name] for f in fields(self)
                  if getattr(self, f.name) is None and f.name in defaults and f.name != "lr"}
        spec = replace(self, lr=float(lr), **filled)
        if spec.rank is None:
            spec = replace(spec, norm="trained")  # full fine-tuning trains everything, norms included
        return spec


def parse_guide_set(name: str) -> GuideSet:
    """A guide-set name -> :class:`GuideSet` (unset suffixes are None); GrammarError if malformed."""
    match = GUIDE_SET.match(str(name))
    if not match:
        loose = _LOOSE_HEAD.match(str(name))
        if loose and int(loose["n"]) < 1:
            raise GrammarError(f"guide {name!r}: the number of experts N (_n<N>) must be >= 1")
        if loose and loose["rank"] is not None and int(loose["rank"]) < 1:
            raise GrammarError(f"guide {name!r}: the LoRA rank (lora<rank>) must be >= 1")
        hint = ""
        if loose and loose["rest"]:
            hint = (" (suffixes, in this order: " + " ".join(f"_{k}<{f}>" for k, (f, *_) in _GUIDE_SUFFIXES.items())
                    + f"; norm in {NORM_MODES}, warm in {WARM_STARTS})")
        raise GrammarError(f"unknown guide {name!r}: expected none, off_the_shelf or "
                           f"<labeled|datafree>_<full|lora<rank>>_n<N>[suffixes], e.g. datafree_lora4_n5{hint}")
    adapter = match["adapter"]
    values = {}
    for key, (field, _, parse, _) in _GUIDE_SUFFIXES.items():
        if match[key] is not None:
            values[field] = parse(match[key])
    spec = GuideSet(match["supervision"], None if adapter == "full" else int(adapter[4:]), int(match["n"]), **values)
    _validate_guide_set(spec, name)
    return spec


def _validate_guide_set(spec: GuideSet, name: str) -> None:
    if spec.supervision == "labeled" and (spec.synthetic_size is not None or spec.temperature is not None):
        raise GrammarError(f"guide {name!r}: _syn and _tau apply to data-free sets only")
    if spec.temperature is not None and spec.temperature <= 0:
        raise GrammarError(f"guide {name!r}: the temperature must be > 0")
    if spec.lr is not None and spec.lr <= 0:
        raise GrammarError(f"guide {name!r}: the learning rate must be > 0")
    if spec.total_steps is not None and spec.total_steps < spec.n_experts:
        raise GrammarError(f"guide {name!r}: {spec.total_steps} training steps for {spec.n_experts} experts "
                           "(_steps is the whole set's budget, at least one step per expert)")
    if spec.rank is None and spec.norm == "frozen":
        raise GrammarError(f"guide {name!r}: _normfrozen applies to LoRA sets (full fine-tuning trains every layer)")


def guide_suffix(field: str) -> str:
    """The name suffix of a :class:`GuideSet` field (``lr`` -> ``lr``, ``total_steps`` -> ``steps``)."""
    return next(key for key, (name, *_) in _GUIDE_SUFFIXES.items() if name == field)


def format_guide_set(spec: GuideSet) -> str:
    out = f"{spec.supervision}_{spec.adapter}_n{spec.n_experts}"
    for key, (field, _, _, fmt) in _GUIDE_SUFFIXES.items():
        value = getattr(spec, field)
        if value is not None and not (field == "replicate" and value == 0):
            out += f"_{key}{fmt(value)}"
    return out


def guide_kind(name: str) -> str:
    """"none", "off_the_shelf", "classifier_free", "training_free" or "experts" (a trained guide
    set); GrammarError otherwise."""
    if name in ("none", "off_the_shelf", CLASSIFIER_FREE):
        return name
    if str(name).startswith("trainingfree_"):
        parse_training_free(name)
        return "training_free"
    parse_guide_set(name)
    return "experts"


def n_experts(name: str) -> int:
    """Guide networks the sampler routes between: 0 (no guide), 1, or the set's N."""
    kind = guide_kind(name)
    if kind != "experts":
        return 0 if kind in ("none", CLASSIFIER_FREE) else 1
    return parse_guide_set(name).n_experts


# ------------------------------------------------------------------------------ training-free


@dataclass(frozen=True)
class TrainingFree:
    """A training-free guide: the method and the TFG hyperparameters its name sets (None: the
    config's ``training_free.<method>`` value)."""

    method: str
    form: str | None = None
    mean: float | None = None
    recurrence: int | None = None
    iterations: int | None = None
    smoothing: float | None = None
    smoothing_samples: int | None = None
    schedule: str | None = None

    @property
    def name(self) -> str:
        out = f"trainingfree_{self.method}"
        for key, (field, _, _, fmt, _) in _TF_SUFFIXES.items():
            value = getattr(self, field)
            if value is not None:
                out += f"_{key}{fmt(value)}"
        return out


def parse_training_free(name: str) -> TrainingFree:
    match = TRAINING_FREE.match(str(name))
    if not match:
        raise GrammarError(
            f"unknown training-free guide {name!r}: expected trainingfree_<{'|'.join(TRAINING_FREE_METHODS)}>"
            "[suffixes], suffixes in this order: " + " ".join(f"_{k}<{f}>" for k, (f, *_) in _TF_SUFFIXES.items())
            + f" (schedule in {TF_SCHEDULES})")
    method = match["method"]
    values = {}
    for key, (field, _, parse, _, methods) in _TF_SUFFIXES.items():
        if match[key] is not None:
            if method not in methods:
                raise GrammarError(f"guide {name!r}: _{key} ({field}) does not apply to {method} "
                                   f"(it applies to {', '.join(methods)})")
            values[field] = parse(match[key])
    return TrainingFree(method, **values)


def training_free_fields(method: str) -> list[str]:
    """The hyperparameters a training-free method's name can set (``form``, ``mean``, ...), in name order."""
    return [field for field, *_, methods in _TF_SUFFIXES.values() if method in methods]


def with_training_free_field(name: str, config: dict, **values) -> str:
    """The canonical name of training-free guide `name` with the given hyperparameters changed."""
    spec = parse_training_free(name)
    choices = _training_free_choices(name, config)
    kept = {field: choices[field] for field in training_free_fields(spec.method)}
    kept.update(values)
    return canonical_training_free(TrainingFree(spec.method, **kept).name, config)


def training_free_settings(name: str, config: dict) -> dict:
    """Every hyperparameter of a training-free guide (ppap.guidance.training_free.TrainingFreeSettings's
    fields): the method's structure (which terms it uses), the config's section, then the name's.
    ``rule`` (the step: TFG's, or with ``_formpaper`` / ``ug`` the method's own) only where it is not
    TFG's, so the cells of before it keep their params."""
    settings = _training_free_choices(name, config)
    form, method = settings.pop("form"), parse_training_free(name).method
    if method == "ug" or form == "paper":
        settings["rule"] = method
    return settings


def _training_free_choices(name: str, config: dict) -> dict:
    """:func:`training_free_settings` with the step's ``form`` (tfg | paper) in place of its rule."""
    spec = parse_training_free(name)
    section = (config.get("training_free") or {}).get(spec.method, {})
    settings = dict(variance=1.0, mean=0.0, recurrence=1, iterations=1, smoothing=0.0, smoothing_samples=1,
                    schedule="constant", form="tfg")
    settings.update({key: section[key] for key in settings if key in section})
    settings.update({field: getattr(spec, field) for field, *_ in _TF_SUFFIXES.values()
                     if getattr(spec, field) is not None})
    # the method fixes which of TFG's terms it has (DPS: variance only; MPGD: mean only; ...)
    settings.update({"dps": dict(variance=1.0, mean=0.0, recurrence=1, iterations=1, smoothing=0.0,
                                 smoothing_samples=1),
                     "freedom": dict(variance=1.0, mean=0.0, iterations=1, smoothing=0.0, smoothing_samples=1),
                     "mpgd": dict(variance=0.0, mean=1.0, recurrence=1, smoothing=0.0, smoothing_samples=1),
                     "tfg": dict(variance=1.0, form="tfg"),
                     "ug": dict(variance=1.0, smoothing=0.0, smoothing_samples=1, form="paper")}[spec.method])
    return settings


def canonical_training_free(name: str, config: dict) -> str:
    """Suffixes equal to the config's value (or the method's fixed one) dropped."""
    spec = parse_training_free(name)
    defaults = _training_free_choices(f"trainingfree_{spec.method}", config)
    full = _training_free_choices(name, config)
    kept = {field: full[field] for field, *_ , methods in _TF_SUFFIXES.values()
            if spec.method in methods and full[field] != defaults[field]}
    return TrainingFree(spec.method, **kept).name


def guide_defaults(config: dict) -> dict:
    """The config's value of every optional factor of a guide set."""
    experts, train = config["experts"], config["experts"]["train"]
    return dict(synthetic_size=train["synthetic_size"], temperature=float(train["temperature"]),
                norm=experts["norm"], warm_start=experts["warm_start"], lr=float(train["lr"]),
                full_lr=float(train["full_lr"]), total_steps=int(train["total_steps"]), replicate=0)


def resolve_guide_set(name: str, config: dict) -> GuideSet:
    """The set with every factor filled in from the config."""
    return parse_guide_set(name).resolved(guide_defaults(config))


def canonical_guide(name: str, config: dict) -> str:
    """The one name of a guide: suffixes equal to the config's values (or meaningless for the set)
    dropped, numbers tidied, so that cells that are the same computation share their files."""
    kind = guide_kind(name)
    if kind == "training_free":
        return canonical_training_free(name, config)
    if kind != "experts":
        return name
    spec = parse_guide_set(name)
    full = spec.resolved(guide_defaults(config))
    defaults = GuideSet(spec.supervision, spec.rank, spec.n_experts).resolved(guide_defaults(config))
    kept = {}
    for field in ("synthetic_size", "temperature", "norm", "warm_start", "lr", "total_steps"):
        if getattr(full, field) != getattr(defaults, field):
            kept[field] = getattr(full, field)
    if spec.n_experts == 1:
        kept.pop("warm_start", None)  # one expert has no predecessor to start from
    return format_guide_set(GuideSet(spec.supervision, spec.rank, spec.n_experts, replicate=spec.replicate, **kept))


def replicate_of(name: str, replicate: int, config: dict) -> str:
    """Independent training `replicate` of a guide (untrained guides have one)."""
    if guide_kind(name) != "experts" or replicate == 0:
        return canonical_guide(name, config)
    return canonical_guide(format_guide_set(replace(parse_guide_set(name), replicate=replicate)), config)


# ------------------------------------------------------------------------------------- sampling

_SAMPLING_SUFFIXES: dict[str, tuple[str, str]] = {
    "clip": ("clip", "|".join(_CLIP_TOKENS.values())),
    "sp": ("spacing", "|".join(SPACINGS)),
    "route": ("routing", "|".join(ROUTINGS)),
    "eta": ("eta", _NUMBER),
    "rec": ("recurrence", r"[1-9][0-9]*"),
}
_SAMPLING_HEAD = r"(?P<sampler>ddim|ddpm)(?P<steps>[1-9][0-9]*)_s(?P<scale>[0-9]+(?:\.[0-9]+)?)"
SAMPLING = re.compile(f"^{_SAMPLING_HEAD}"
                      + "".join(f"(?:_{key}(?P<{key}>{value}))?" for key, (_, value) in _SAMPLING_SUFFIXES.items())
                      + "$")
SAMPLING_PATTERN = (r"(ddim|ddpm)[1-9][0-9]*_s[0-9]+(\.[0-9]+)?"
                    + "".join(f"(_{key}({value}))?" for key, (_, value) in _SAMPLING_SUFFIXES.items()))


@dataclass(frozen=True)
class Sampling:
    """A sampling setting. ``clip``: where x0 is clipped to [-1, 1] relative to guidance
    (guided-diffusion's order clips the unguided x0, then guides); ``spacing``: which timesteps
    a respaced sampler visits (``ddim`` = guided-diffusion's ``ddimN``)."""

    sampler: str
    steps: int
    scale: float
    clip: str | None = None
    spacing: str | None = None
    routing: str | None = None
    eta: float | None = None
    recurrence: int | None = None

    @property
    def name(self) -> str:
        return format_sampling(self)

    def resolved(self, defaults: dict) -> "Sampling":
        return replace(self, clip=self.clip or defaults["clip"], spacing=self.spacing or defaults["spacing"],
                       routing=self.routing or defaults["routing"],
                       eta=defaults["eta"] if self.eta is None else self.eta,
                       recurrence=defaults["recurrence"] if self.recurrence is None else self.recurrence)


def parse_sampling(name: str) -> Sampling:
    match = SAMPLING.match(str(name))
    if not match:
        raise GrammarError(f"unknown sampling setting {name!r}: expected "
                           "<ddim|ddpm><steps>_s<scale>[_clip<gd|after|none>][_sp<ddim|leading|trailing>]"
                           "[_route<owner|lower>][_eta<eta>][_rec<recurrence>], "
                           "e.g. ddim25_s1")
    spec = Sampling(match["sampler"], int(match["steps"]), float(match["scale"]),
                    clip=_CLIP_FROM_TOKEN[match["clip"]] if match["clip"] else None, spacing=match["sp"],
                    routing=match["route"], eta=None if match["eta"] is None else float(match["eta"]),
                    recurrence=None if match["rec"] is None else int(match["rec"]))
    return spec


def format_sampling(spec: Sampling) -> str:
    out = f"{spec.sampler}{int(spec.steps)}_s{format_number(spec.scale)}"
    if spec.clip is not None:
        out += f"_clip{_CLIP_TOKENS[spec.clip]}"
    if spec.spacing is not None:
        out += f"_sp{spec.spacing}"
    if spec.routing is not None:
        out += f"_route{spec.routing}"
    if spec.eta is not None:
        out += f"_eta{format_number(spec.eta)}"
    if spec.recurrence is not None:
        out += f"_rec{int(spec.recurrence)}"
    return out


def sampling_defaults(config: dict) -> dict:
    s = config["sampling"]
    return dict(clip=s["clip"], spacing=s["spacing"], routing=s["routing"], eta=float(s["eta"]),
                recurrence=int(s.get("recurrence", 1)))


def resolve_sampling(name: str, config: dict) -> Sampling:
    return parse_sampling(name).resolved(sampling_defaults(config))


def sampling_params(name: str, config: dict) -> dict:
    """A sampling setting with every factor resolved, as a rule's params
    (:func:`ppap.study.specs.sampling_spec` reads it): eta and recurrence are left out where they are
    the plain samplers' (eta 0, recurrence 1) and the config's too (the rules pass the section's eta
    besides), so that the cells sampled before these factors existed keep their params."""
    settings = asdict(resolve_sampling(name, config))
    defaults = sampling_defaults(config)
    for field, plain in (("eta", 0.0), ("recurrence", 1)):
        if settings[field] == plain == defaults[field]:
            del settings[field]
    return settings


def default_sampling(config: dict) -> str:
    s = config["sampling"]
    return format_sampling(Sampling(s["sampler"], s["steps"], s["guidance_scale"]))


def canonical_sampling(guide: str, name: str, config: dict) -> str:
    """Suffixes equal to the config's dropped. Unguided sampling does not depend on the scale
    (named s0), nor on whether x0 is clipped before or after a guidance that is absent; DDPM
    guidance shifts the mean of the clipped posterior, so for DDPM "after guidance" is
    guided-diffusion's order; sampling with one guide for every timestep does not depend on routing.
    Classifier-free guidance has no guidance term to clip around (as unguided sampling); training-free
    guidance runs on DDIM only, with x0 clipped (gd) or not (none), and repeats its steps by its own
    recurrence (the guide's ``_rec``), not the sampling's. DDPM draws its own noise: eta does not apply.
    Time travel (``_rec``) changes unguided sampling too, so it is kept for every guide."""

    def same_step(clip: str) -> str:
        return "guided_diffusion" if clip == "after_guidance" else clip

    defaults = sampling_defaults(config)
    full = parse_sampling(name).resolved(defaults)
    kind = guide_kind(guide)
    if kind == "training_free" and (full.sampler != "ddim" or full.clip == "after_guidance"):
        raise GrammarError(f"{guide} with {name}: training-free guidance runs on the ddim sampler, "
                           "clipping the denoiser's x0 (clip gd) or never (clip none)")
    if kind == "training_free" and full.recurrence != 1:
        raise GrammarError(f"{guide} with {name}: a training-free guide repeats its steps by its own recurrence "
                           f"(the guide's _rec suffix, e.g. {parse_training_free(guide).method} in "
                           "training_free), not the sampling's _rec")
    if full.sampler == "ddpm":
        full = replace(full, eta=defaults["eta"])
    if guide in ("none", CLASSIFIER_FREE) or full.sampler == "ddpm":
        full = replace(full, clip=same_step(full.clip))
        defaults = {**defaults, "clip": same_step(defaults["clip"])}
    if guide == "none":
        full = replace(full, scale=0.0)
    if kind != "experts" or parse_guide_set(guide).n_experts == 1:
        full = replace(full, routing=defaults["routing"])
    return format_sampling(Sampling(full.sampler, full.steps, full.scale,
                                    clip=None if full.clip == defaults["clip"] else full.clip,
                                    spacing=None if full.spacing == defaults["spacing"] else full.spacing,
                                    routing=None if full.routing == defaults["routing"] else full.routing,
                                    eta=None if full.eta == defaults["eta"] else full.eta,
                                    recurrence=None if full.recurrence == defaults["recurrence"] else full.recurrence))
