"""Names and checks of the workflow config that a JSON schema cannot express.

Imported by the Snakefile before any job runs, so it must stay light (no torch).

Guides are named ``none``, ``off_the_shelf`` or
``<labeled|datafree>_<full|lora<rank>>_n<N>[_syn<M>][_tau<T>]`` (a trained guide set: N experts;
``_syn`` and ``_tau`` override the data-free set size and temperature). Sampling settings are
named ``<ddim|ddpm><steps>_s<scale>``, e.g. ``ddim25_s1``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

GUIDE_SET = re.compile(r"^(?P<supervision>labeled|datafree)_(?P<adapter>full|lora[1-9][0-9]*)_n(?P<n>[1-9][0-9]*)"
                       r"(?:_syn(?P<syn>[1-9][0-9]*))?(?:_tau(?P<tau>[0-9]+(?:\.[0-9]+)?))?$")
# The grammar with zeros allowed, only to say precisely what is wrong with a rejected name.
_LOOSE_GUIDE_SET = re.compile(r"^(labeled|datafree)_(full|lora(?P<rank>[0-9]+))_n(?P<n>[0-9]+)"
                              r"(?:_syn[0-9]+)?(?:_tau[0-9.]+)?$")
SAMPLING = re.compile(r"^(?P<sampler>ddim|ddpm)(?P<steps>[1-9][0-9]*)_s(?P<scale>[0-9]+(?:\.[0-9]+)?)$")
GUIDE_SET_PATTERN = (r"(labeled|datafree)_(full|lora[1-9][0-9]*)_n[1-9][0-9]*"
                     r"(_syn[1-9][0-9]*)?(_tau[0-9]+(\.[0-9]+)?)?")
SAMPLING_PATTERN = r"(ddim|ddpm)[1-9][0-9]*_s[0-9]+(\.[0-9]+)?"


class ConfigError(ValueError):
    """A config value is inconsistent; the message names the key."""


def key_path(path) -> str:
    """A config key path as written in messages: ``sampling.steps``, ``sampling.seeds[1]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def schema_error_message(error: BaseException) -> str:
    """One line naming the offending key for a JSON-schema failure.

    ``error`` is a ``jsonschema.ValidationError`` or an exception raised while handling one (as
    ``snakemake.utils.validate`` raises a ``WorkflowError`` whose message is the schema dump);
    the key path comes from the validation error's ``absolute_path``. Guide names that fail
    the schema's pattern get :func:`parse_guide_name`'s explanation.
    """
    validation = error
    while validation is not None and not (hasattr(validation, "absolute_path") and hasattr(validation, "validator")):
        validation = validation.__cause__ or validation.__context__
    if validation is None:
        return str(error)
    path = list(validation.absolute_path)
    message = validation.message
    if validation.validator == "pattern" and path[:1] == ["methods"]:
        try:
            parse_guide_name(validation.instance)
        except ConfigError as err:
            message = str(err)
    return f"config key {key_path(path)}: {message} (config/schema.yaml)"


def _number(text: str) -> str:
    """Canonical spelling of a number in a name: 1.0 -> 1, 0.50 -> 0.5."""
    return f"{float(text):g}"


def parse_guide_name(name: str) -> dict:
    """Split a guide name into its parts (see the module docstring)."""
    if name in ("none", "off_the_shelf"):
        return dict(kind=name, n_experts=0 if name == "none" else 1, rank=None, supervision="none",
                    synthetic_size=None, temperature=None)
    match = GUIDE_SET.match(str(name))
    if not match:
        loose = _LOOSE_GUIDE_SET.match(str(name))
        if loose and int(loose["n"]) < 1:
            raise ConfigError(f"guide {name!r}: the number of experts N (_n<N>) must be >= 1")
        if loose and loose["rank"] is not None and int(loose["rank"]) < 1:
            raise ConfigError(f"guide {name!r}: the LoRA rank (lora<rank>) must be >= 1")
        raise ConfigError(f"unknown guide {name!r}: expected none, off_the_shelf or "
                          "<labeled|datafree>_<full|lora<rank>>_n<N>[_syn<M>][_tau<T>], e.g. datafree_lora4_n5")
    adapter = match["adapter"]
    parts = dict(kind="experts", supervision=match["supervision"], n_experts=int(match["n"]),
                 rank=None if adapter == "full" else int(adapter[4:]),
                 synthetic_size=int(match["syn"]) if match["syn"] else None,
                 temperature=float(match["tau"]) if match["tau"] else None)
    if parts["supervision"] == "labeled" and (parts["synthetic_size"] or parts["temperature"] is not None):
        raise ConfigError(f"guide {name!r}: _syn and _tau apply to data-free sets only")
    if parts["temperature"] is not None and parts["temperature"] <= 0:
        raise ConfigError(f"guide {name!r}: the temperature must be > 0")
    return parts


def canonical_guide(name: str, config: dict) -> str:
    """The one name of a guide: suffixes equal to the config's defaults are dropped, numbers tidied,
    so that an ablation's centre point and Table 1's PPAP row share their files."""
    parts = parse_guide_name(name)
    if parts["kind"] != "experts":
        return name
    adapter = "full" if parts["rank"] is None else f"lora{parts['rank']}"
    out = f"{parts['supervision']}_{adapter}_n{parts['n_experts']}"
    train = config["experts"]["train"]
    if parts["synthetic_size"] is not None and parts["synthetic_size"] != train["synthetic_size"]:
        out += f"_syn{parts['synthetic_size']}"
    if parts["temperature"] is not None and parts["temperature"] != float(train["temperature"]):
        out += f"_tau{_number(parts['temperature'])}"
    return out


def parse_sampling(name: str) -> dict:
    match = SAMPLING.match(str(name))
    if not match:
        raise ConfigError(f"unknown sampling setting {name!r}: expected <ddim|ddpm><steps>_s<scale>, e.g. ddim25_s1")
    return dict(sampler=match["sampler"], steps=int(match["steps"]), scale=float(match["scale"]))


def sampling_name(sampler: str, steps: int, scale: float) -> str:
    return f"{sampler}{int(steps)}_s{_number(scale)}"


def default_sampling(config: dict) -> str:
    s = config["sampling"]
    return sampling_name(s["sampler"], s["steps"], s["guidance_scale"])


def canonical_sampling(guide: str, sampling: str) -> str:
    """Unguided sampling does not depend on the scale: its runs are named with s0 and shared."""
    parts = parse_sampling(sampling)
    if guide == "none":
        parts["scale"] = 0.0
    return sampling_name(**parts)


def unguided_sampling(config: dict) -> str:
    return canonical_sampling("none", default_sampling(config))


@dataclass(frozen=True)
class Run:
    """One evaluated cell: a guide sampled with one sampling setting (over all seeds)."""

    label: str              # the row's name: a method, an ablation value, or "value/method"
    method: str | None      # the Table 1 method it derives from, if any
    value: str | None       # the ablated factor's value, if any
    guide: str              # canonical guide name
    sampling: str           # canonical sampling name

    @property
    def metrics_path(self) -> str:
        return f"results/metrics/{self.guide}/{self.sampling}.json"


def table1_runs(config: dict) -> list[Run]:
    sampling = default_sampling(config)
    runs = []
    for method in config["table1"]:
        guide = canonical_guide(config["methods"][method], config)
        runs.append(Run(method, method, None, guide, canonical_sampling(guide, sampling)))
    return runs


def ablation_runs(config: dict, name: str) -> list[Run]:
    """Expand one ablation entry: ``values`` x (``methods`` or the centre method) through the
    ``guide`` and ``sampling`` templates ({value} and {method} are filled in)."""
    if name not in config.get("ablations", {}):
        raise ConfigError(f"no ablation {name!r} in ablations (known: {sorted(config.get('ablations', {}))})")
    entry = config["ablations"][name]
    methods = entry.get("methods") or [config["ablation_center"]]
    runs = []
    for value in entry["values"]:
        for method in methods:
            if method not in config["methods"]:
                raise ConfigError(f"ablations.{name}.methods: {method!r} is not a key of methods")
            method_guide = config["methods"][method]
            guide = entry.get("guide", "{method}").format(value=value, method=method_guide)
            sampling = entry.get("sampling", "{default}").format(value=value, default=default_sampling(config))
            try:
                guide = canonical_guide(guide, config)
                sampling = canonical_sampling(guide, sampling)
            except ConfigError as err:
                raise ConfigError(f"ablations.{name} (value {value!r}): {err}") from None
            label = str(value) if len(methods) == 1 else f"{value}/{method}"
            runs.append(Run(label, method, str(value), guide, sampling))
    return runs


def all_runs(config: dict) -> list[Run]:
    runs = table1_runs(config)
    for name in config.get("ablations", {}):
        runs.extend(ablation_runs(config, name))
    return runs


def synthetic_shards(num_samples: int, shards: int, seed: int) -> list[tuple[int, int]]:
    """(count, seed) of each shard of the data-free pool, which separate jobs generate in parallel.

    An even split (the first ``num_samples % shards`` shards hold one more image); shard k samples
    with seed ``seed + k`` (:func:`ppap.pipeline.generate_samples` seeds its batches from it), so
    one shard is exactly the unsharded pool.
    """
    if not 1 <= shards <= num_samples:
        raise ConfigError(f"synthetic.shards: {shards} shards for {num_samples} images "
                          "(need 1 <= shards <= synthetic.num_samples)")
    base, extra = divmod(num_samples, shards)
    return [(base + (k < extra), seed + k) for k in range(shards)]


# Rules whose resources (mem_mb, runtime, gpu, ...) a preset may size in its `resources:` section.
RESOURCE_RULES = ("prepare_data", "noise_schedule", "train_diffusion", "train_guide", "train_evaluator",
                  "synthesize", "distill_expert", "expert_manifest", "sample", "evaluate", "table1",
                  "ablation", "figures", "report_notebook", "render_report")


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the first inconsistent key."""
    unet = config["diffusion"]["unet"]
    if len(unet["attention"]) != len(unet["block_out_channels"]):
        raise ConfigError("diffusion.unet.attention needs one flag per entry of diffusion.unet.block_out_channels")
    if len(config["guide"]["mean"]) != len(config["guide"]["std"]):
        raise ConfigError("guide.mean and guide.std must have the same length")
    timesteps = config["diffusion"]["num_train_timesteps"]
    pool = config["synthetic"]["num_samples"]
    if config["experts"]["train"]["synthetic_size"] > pool:
        raise ConfigError(f"experts.train.synthetic_size ({config['experts']['train']['synthetic_size']}) exceeds "
                          f"synthetic.num_samples ({pool})")
    shards = synthetic_shards(pool, config["synthetic"].get("shards", 1), config["synthetic"]["seed"])
    shared = sorted({seed for _, seed in shards} & set(config["sampling"]["seeds"]))
    if shared:
        raise ConfigError(f"sampling.seeds {shared} are also seeds of synthetic shards (synthetic.seed + k for "
                          "k < synthetic.shards): evaluated samples would repeat the transfer set's noise")
    for rule in config.get("resources") or {}:
        if rule not in RESOURCE_RULES:
            raise ConfigError(f"resources.{rule}: not a rule of this workflow (known: {', '.join(RESOURCE_RULES)})")
    for key, name in config["methods"].items():
        try:
            parse_guide_name(name)
        except ConfigError as err:
            raise ConfigError(f"methods.{key}: {err}") from None
    for name in config["table1"]:
        if name not in config["methods"]:
            raise ConfigError(f"table1 lists {name!r}, which is not a key of methods "
                              f"(known: {sorted(config['methods'])})")
    if config.get("ablations") and config.get("ablation_center") not in config["methods"]:
        raise ConfigError(f"ablation_center {config.get('ablation_center')!r} is not a key of methods")
    for ablation in config.get("ablations", {}):
        ablation_runs(config, ablation)  # raises with the ablation's name
    for run in all_runs(config):
        parts = parse_guide_name(run.guide)
        where = f"methods or ablations ({run.label})"
        if parts["n_experts"] > timesteps:
            raise ConfigError(f"{where}: {parts['n_experts']} experts for {timesteps} timesteps "
                              "(diffusion.num_train_timesteps)")
        if parts["kind"] == "experts" and config["experts"]["train"]["total_steps"] < parts["n_experts"]:
            raise ConfigError(f"experts.train.total_steps is smaller than the {parts['n_experts']} experts of {where}")
        if (parts["synthetic_size"] or 0) > pool:
            raise ConfigError(f"{where}: synthetic size {parts['synthetic_size']} exceeds synthetic.num_samples ({pool})")
        if parse_sampling(run.sampling)["steps"] > timesteps:
            raise ConfigError(f"{where}: {run.sampling} has more steps than diffusion.num_train_timesteps")
    for guide_set, ranges in config["experts"].get("custom_ranges", {}).items():
        key = f"experts.custom_ranges.{guide_set}"
        try:
            parts = parse_guide_name(guide_set)
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None
        if len(ranges) != parts["n_experts"]:
            raise ConfigError(f"{key}: {len(ranges)} ranges for {parts['n_experts']} experts")
        edge = 0
        for start, end in ranges:
            if start != edge or end <= start:
                raise ConfigError(f"{key}: ranges must tile [0, {timesteps}) in order without gaps or overlaps "
                                  f"(got [{start}, {end}) where [{edge}, ...) was expected)")
            edge = end
        if edge != timesteps:
            raise ConfigError(f"{key}: ranges end at {edge}, not at diffusion.num_train_timesteps = {timesteps}")
    reference = config["evaluation"].get("reference")
    if reference is not None and not os.path.exists(reference):
        raise ConfigError(f"evaluation.reference: no such file or directory: {reference}")
    bad_t = [t for t in config["evaluation"]["accuracy_timesteps"] if t >= timesteps]
    if bad_t:
        raise ConfigError(f"evaluation.accuracy_timesteps {bad_t} outside [0, {timesteps}) "
                          "(diffusion.num_train_timesteps)")
    for key in ("diffusion", "guide"):
        path = config[key]["pretrained"]
        if path is not None and not os.path.exists(path):
            raise ConfigError(f"{key}.pretrained: no such file or directory: {path}")
    _check_data_source(config["data"])
    _check_evaluation(config["evaluation"])


def _check_data_source(data: dict) -> None:
    """digits: scikit-learn's 8x8 digits (up to 64 px); folder: an ImageFolder tree that must exist."""
    if data["source"] == "digits":
        if data["image_size"] > 64:
            raise ConfigError(f"data.image_size {data['image_size']}: the digits are 8x8, at most 64 is allowed")
        return
    train_dir = data.get("train_dir")
    if not train_dir:
        raise ConfigError("data.train_dir: data.source folder needs an ImageFolder tree (<class>/<image>)")
    for key in ("train_dir", "test_dir"):
        path = data.get(key)
        if path is not None and not os.path.isdir(path):
            raise ConfigError(f"data.{key}: no such directory: {path}")


def _check_evaluation(evaluation: dict) -> None:
    extractor = evaluation.get("feature_extractor", "evaluator")
    weights = evaluation.get("inception_weights")
    if extractor == "inception":
        if not weights:
            raise ConfigError("evaluation.inception_weights: feature_extractor inception needs a local weights file "
                              "(torch-fidelity's pt_inception-2015-12-05-6726825d.pth; nothing is downloaded)")
        if not os.path.isfile(weights):
            raise ConfigError(f"evaluation.inception_weights: no such file: {weights}")
    elif weights is not None or evaluation.get("accuracy_classifier") is not None:
        raise ConfigError("evaluation.inception_weights and evaluation.accuracy_classifier apply to "
                          "feature_extractor: inception only")
    classifier = evaluation.get("accuracy_classifier")
    if classifier is not None and not os.path.isfile(classifier):
        raise ConfigError(f"evaluation.accuracy_classifier: no such file: {classifier}")
