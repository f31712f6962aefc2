# Input functions and derived settings shared by the rule files. No torch here: the Snakefile
# must parse fast, and planning (-n) must work without loading any model.

from ppap.study import grammar, paths
from ppap.study.public_models import (
    check_shipped,
    made_with,
    model_files,
    trainable_models,
    trained_model,
)
from ppap.study.checks import (
    check_files,
    check_guide_architecture,
    check_lora_targets,
    config_errors_in_one_line,
    is_main_process,
)
from ppap.study.config import (
    ablation_runs,
    check_config,
    expert_training,
    guide_performance,
    performance,
    scoring_settings,
    synthetic_shards,
    table1_runs,
    tuning_runs,
    unguided_sampling,
)

with config_errors_in_one_line(workflow):
    check_config(config)
    # Every file the config names is opened and checked against the data (torch only if one is
    # set); once, in the Snakemake the user started (a cluster job's own Snakemake skips it).
    if is_main_process(workflow):
        check_files(config)


wildcard_constraints:
    guide_set=grammar.GUIDE_SET_PATTERN,
    guide=grammar.GUIDE_PATTERN,
    sampling=grammar.SAMPLING_PATTERN,
    index=r"\d+",
    ablation=r"[A-Za-z0-9_]+",


THREADS = config["threads"]
SEEDS = config["sampling"]["seeds"]
# The labeled real images: the digits split, or an ImageFolder tree (data.source: folder).
REAL_DATA = paths.real_data(config["data"]["source"])
# Jobs that run the UNet or train a guide ask for one GPU unless the config says device: cpu
# (SLURM: --gpus=1; locally the `gpu` resource only counts if --resources gpu=N is given).
GPU = 0 if config["device"] == "cpu" else 1


def rule_resources(rule, **defaults):
    """The rule's own resources (sized for the embedded preset), with the preset's `resources:`
    entry for it on top (config/imagenet256.yaml sizes the paper's jobs there)."""
    return {**defaults, **(config.get("resources") or {}).get(rule, {})}


SYNTHETIC_SHARDS = synthetic_shards(
    config["synthetic"]["num_samples"],
    config["synthetic"].get("shards", 1),
    config["synthetic"]["seed"],
)


def synthetic_shard(shard):
    """(count, seed) of one shard of the data-free pool."""
    count, seed = SYNTHETIC_SHARDS[shard]
    return {"count": count, "seed": seed}


def device_params(section=None):
    """Precision and per-device batch sizes as params, only where they differ from the embedded
    preset's (fp32, no overrides): params are a rerun trigger, and adding these keys must not
    invalidate results computed before they existed."""
    extra = {}
    if config["precision"] != "fp32":
        extra["precision"] = config["precision"]
    if section is not None and section.get("batch_size_by_device"):
        extra["batch_size_by_device"] = section["batch_size_by_device"]
    return extra


# Every network the study starts from: the shipped public model made with this config's sections,
# else the one its rule trains (public_models: train trains them all), unless a `pretrained` key
# names a file (ppap.study.public_models).
MODELS = model_files(config)
with config_errors_in_one_line(workflow):
    if is_main_process(workflow):
        # a shipped file changed since it was recorded: one line naming it
        check_shipped(MODELS)
        check_guide_architecture(config)
        check_lora_targets(config, MODELS)
DIFFUSION_MODEL = MODELS.diffusion
SCHEDULER = MODELS.scheduler
BASE_GUIDE = MODELS.guide


def pretrain_targets():
    """Every model the rules train from scratch (`snakemake pretrain`), with its record."""
    models = [trained_model(role, task) for role, task in trainable_models(config)]
    return models + [paths.model_record(model) for model in models]


def expert_files(guide_set):
    n_experts = grammar.parse_guide_set(guide_set).n_experts
    return paths.expert_files(guide_set, n_experts)


def distill_settings(guide_set):
    """What one expert job of a set uses (ppap.specs.ExpertTraining), as params: a job reruns
    when these change, not when an unrelated key of the experts section does."""
    return expert_training(guide_set, config).as_params()


def sampling_settings(sampling):
    """A sampling name with every factor resolved from the config, as params (grammar.sampling_params)."""
    return grammar.sampling_params(sampling, config)


def guide_inputs(wildcards):
    """What sampling with a guide needs besides the diffusion model."""
    kind = grammar.guide_kind(wildcards.guide)
    if kind == "none":
        return {}
    if kind == "classifier_free":
        return {"conditional_model": MODELS.conditional_diffusion}
    if kind in ("off_the_shelf", "training_free"):
        return {"guide": BASE_GUIDE}
    return {"guide": BASE_GUIDE, "manifest": paths.manifest(wildcards.guide)}


def performance_params():
    """The speed switches (config performance) that sampling with the cell's guide uses."""
    return {"performance": lambda wildcards: guide_performance(wildcards.guide, config)}


PERFORMANCE = performance(config)
# What scoring reads of the evaluation section (ppap.study.config.scoring_settings), as params.
SCORING = scoring_settings(config)


def training_free_params():
    """TFG's hyperparameters of a training-free guide, as a param (None for other guides)."""

    def settings(wildcards):
        if grammar.guide_kind(wildcards.guide) != "training_free":
            return None
        return grammar.training_free_settings(wildcards.guide, config)

    return {"training_free": settings}


def run_inputs(runs):
    """Metric files of the runs, the manifests of their guide sets, and the base guide."""
    manifests = sorted(
        {
            paths.manifest(guide)
            for r in runs
            for guide in r.guides
            if grammar.guide_kind(guide) == "experts"
        }
    )
    return {
        "metrics": sorted({path for r in runs for path in r.metrics_paths}),
        "compute": sorted({path for r in runs for path in r.compute_paths}),
        "manifests": manifests,
        "guide": BASE_GUIDE,
    }


def runs_as_params(runs):
    return [
        dict(
            label=r.label,
            method=r.method,
            value=r.value,
            guides=list(r.guides),
            sampling=r.sampling,
        )
        for r in runs
    ]
