# Input functions and derived settings shared by the rule files. No torch here: the Snakefile
# must parse fast, and planning (-n) must work without loading any model.
import os

from ppap.config import check_config, parse_guide_name

check_config(config)


wildcard_constraints:
    guide_set=r"(labeled|datafree)_(full|lora[1-9][0-9]*)_n[1-9][0-9]*",
    index=r"\d+",
    method=r"[a-z][a-z0-9_]*",
    seed=r"\d+",


THREADS = config["threads"]


def diffusion_model_dir():
    """The embedded model, or a diffusers-format directory from the config."""
    return config["diffusion"]["pretrained"] or "results/models/diffusion"


def scheduler_dir():
    """The training noise schedule: the pretrained model's own, or the embedded preset's."""
    pretrained = config["diffusion"]["pretrained"]
    return os.path.join(pretrained, "scheduler") if pretrained else "results/models/scheduler"


def base_guide_path():
    return config["guide"]["pretrained"] or "results/models/guide.pt"


def expert_files(guide_set):
    n_experts = parse_guide_name(guide_set)["n_experts"]
    return [f"results/models/guides/{guide_set}/expert{i}.pt" for i in range(n_experts)]


def expert_steps(guide_set):
    """The total distillation budget is split evenly across a set's experts."""
    return config["experts"]["train"]["total_steps"] // parse_guide_name(guide_set)["n_experts"]


def guide_inputs(wildcards):
    """What sampling with `method` needs besides the diffusion model."""
    guide = config["methods"][wildcards.method]
    if guide == "none":
        return {}
    if guide == "off_the_shelf":
        return {"guide": base_guide_path()}
    return {"guide": base_guide_path(), "manifest": f"results/models/guides/{guide}/manifest.json"}


def metric_files(methods):
    return [
        f"results/metrics/{method}/seed{seed}.json"
        for method in methods
        for seed in config["sampling"]["seeds"]
    ]
