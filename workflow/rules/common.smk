# Input functions and derived settings shared by the rule files. No torch here: the Snakefile
# must parse fast, and planning (-n) must work without loading any model.
import os

from ppap.config import (
    GUIDE_SET_PATTERN,
    SAMPLING_PATTERN,
    ablation_runs,
    synthetic_shards,
    unguided_sampling,
    check_config,
    parse_guide_name,
    parse_sampling,
    table1_runs,
)

check_config(config)


wildcard_constraints:
    guide_set=GUIDE_SET_PATTERN,
    guide=f"none|off_the_shelf|{GUIDE_SET_PATTERN}",
    sampling=SAMPLING_PATTERN,
    index=r"\d+",
    ablation=r"[A-Za-z0-9_]+",


THREADS = config["threads"]
SEEDS = config["sampling"]["seeds"]
# The labeled real images: the digits split, or an ImageFolder tree (data.source: folder).
REAL_DATA = (
    "results/data/digits.npz"
    if config["data"]["source"] == "digits"
    else "results/data/real.npz"
)
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


def diffusion_model_dir():
    """The embedded model, or a diffusers-format directory from the config."""
    return config["diffusion"]["pretrained"] or "results/models/diffusion"


def scheduler_dir():
    """The training noise schedule: the pretrained model's own, or the embedded preset's."""
    pretrained = config["diffusion"]["pretrained"]
    return (
        os.path.join(pretrained, "scheduler")
        if pretrained
        else "results/models/scheduler"
    )


def base_guide_path():
    return config["guide"]["pretrained"] or "results/models/guide.pt"


def expert_files(guide_set):
    n_experts = parse_guide_name(guide_set)["n_experts"]
    return [f"results/models/guides/{guide_set}/expert{i}.pt" for i in range(n_experts)]


def expert_steps(guide_set):
    """The total distillation budget is split evenly across a set's experts."""
    return (
        config["experts"]["train"]["total_steps"]
        // parse_guide_name(guide_set)["n_experts"]
    )


def distill_settings(guide_set):
    """Data-free set size and temperature of a set: its name's overrides, else the config's."""
    parts = parse_guide_name(guide_set)
    train = config["experts"]["train"]
    return {
        "synthetic_size": parts["synthetic_size"] or train["synthetic_size"],
        "temperature": (
            parts["temperature"]
            if parts["temperature"] is not None
            else train["temperature"]
        ),
    }


def manifest_path(guide):
    return f"results/models/guides/{guide}/manifest.json"


def guide_inputs(wildcards):
    """What sampling with a guide needs besides the diffusion model."""
    if wildcards.guide == "none":
        return {}
    if wildcards.guide == "off_the_shelf":
        return {"guide": base_guide_path()}
    return {"guide": base_guide_path(), "manifest": manifest_path(wildcards.guide)}


def sample_files(guide, sampling):
    return [f"results/samples/{guide}/{sampling}/seed{seed}.npz" for seed in SEEDS]


def run_inputs(runs):
    """Metric files of the runs, the manifests of their guide sets, and the base guide."""
    manifests = sorted(
        {
            manifest_path(r.guide)
            for r in runs
            if parse_guide_name(r.guide)["kind"] == "experts"
        }
    )
    return {
        "metrics": sorted({r.metrics_path for r in runs}),
        "manifests": manifests,
        "guide": base_guide_path(),
    }


def runs_as_params(runs):
    return [
        dict(
            label=r.label,
            method=r.method,
            value=r.value,
            guide=r.guide,
            sampling=r.sampling,
        )
        for r in runs
    ]
