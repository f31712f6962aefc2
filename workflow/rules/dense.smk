# Dense guides (results/table_dense.csv): each sample is guided towards the map of a held-out real
# digit by a dense guide (segmentation: 11 classes per pixel; distance: each pixel's distance to the
# nearest stroke, standing in for depth), with the same kinds of guidance as Table 1: the off-the-shelf
# dense network, labeled experts, PPAP's data-free LoRA experts, training-free x0-guidance. Scored
# by an independent evaluator segmenter (mIoU, pixel accuracy) or the samples' own exact distance
# maps (RMSE), and FID / IS / precision / recall. `snakemake tune` scores the validation grid
# (results/tuning/dense.csv); dense.scales holds its choices.
from ppap.study.config import dense_cell_path, dense_runs, dense_validation_runs

DENSE = config.get("dense") or {}
DENSE_TUNING = (config.get("tuning") or {}).get("dense") or {}


wildcard_constraints:
    task=r"segmentation|distance|depth",


def dense_guide_path(task):
    """The task's off-the-shelf dense guide: a file from the config, or the embedded one."""
    return (DENSE.get("pretrained") or {}).get(
        task
    ) or f"results/models/dense/{task}/guide.pt"


def dense_evaluator_inputs(task):
    """What scores a task's samples: the evaluator network (segmentation, depth) or nothing (the
    distance map of a sample is computed from it exactly)."""
    if task == "distance":
        return {}
    pretrained = (DENSE.get("evaluator") or {}).get("pretrained") or {}
    return {
        "dense_evaluator": pretrained.get(task)
        or f"results/models/dense/{task}/evaluator.pt"
    }


def dense_expert_files(task, guide_set):
    n_experts = grammar.parse_guide_set(guide_set).n_experts
    return [
        f"results/models/dense/{task}/{guide_set}/expert{i}.pt"
        for i in range(n_experts)
    ]


def expert_ranges_param(guide):
    """A guide set's ranges (None: the equal split); None for other guides."""
    if grammar.guide_kind(guide) != "experts":
        return None
    return distill_settings(guide)["ranges"]


def dense_cell_inputs(wildcards):
    inputs = {
        "model": diffusion_model_dir(),
        "data": REAL_DATA,
        **metric_model_input(),
        "dense_guide": dense_guide_path(wildcards.task),
        **dense_evaluator_inputs(wildcards.task),
    }
    if grammar.guide_kind(wildcards.guide) == "experts":
        inputs["experts"] = dense_expert_files(wildcards.task, wildcards.guide)
    return inputs


def dense_test_inputs(wildcards):
    """A test cell's inputs: dense_cell_inputs, and the target maps' file if the config gives one."""
    inputs = dense_cell_inputs(wildcards)
    maps = (DENSE.get("target_maps") or {}).get(wildcards.task)
    if maps:
        inputs["target_maps"] = maps
    return inputs


def dense_distill_inputs(wildcards):
    settings = expert_training(wildcards.guide_set, config)
    inputs = {
        "guide": dense_guide_path(wildcards.task),
        "scheduler": scheduler_dir(),
    }
    if settings.supervision == "datafree":
        inputs["synthetic"] = synthetic_shard_files()
    else:
        inputs["data"] = REAL_DATA
    index = int(wildcards.index)
    if settings.warm_start != "off" and index > 0:
        inputs["previous"] = (
            f"results/models/dense/{wildcards.task}/{wildcards.guide_set}/expert{index - 1}.pt"
        )
    return inputs


def dense_task_params():
    return {
        "task": lambda wc: wc.task,
        "dense": {
            key: DENSE.get(key)
            for key in (
                "stroke_threshold",
                "target",
                "regression_energy",
                "regression_sigma",
            )
        },
    }


rule train_dense_guide:
    input:
        data=REAL_DATA,
    output:
        checkpoint="results/models/dense/{task}/guide.pt",
        stats="results/models/dense/{task}/guide.json",
    log:
        "logs/dense/{task}/guide.log",
    benchmark:
        "benchmarks/snakemake/dense/{task}/guide.tsv"
    priority: 6
    threads: THREADS["train"]
    resources:
        **rule_resources("train_dense_guide", mem_mb=4000, runtime=30, gpu=GPU),
        cpus_per_task=THREADS["train"],
    params:
        network=DENSE.get("guide"),
        threshold=DENSE.get("stroke_threshold"),
        role="guide",
        device=config["device"],
    script:
        "../scripts/train_dense_network.py"


rule train_dense_evaluator:
    input:
        data=REAL_DATA,
    output:
        checkpoint="results/models/dense/{task}/evaluator.pt",
        stats="results/models/dense/{task}/evaluator.json",
    log:
        "logs/dense/{task}/evaluator.log",
    benchmark:
        "benchmarks/snakemake/dense/{task}/evaluator.tsv"
    threads: THREADS["train"]
    resources:
        **rule_resources("train_dense_evaluator", mem_mb=4000, runtime=30, gpu=GPU),
        cpus_per_task=THREADS["train"],
    params:
        network=DENSE.get("evaluator"),
        threshold=DENSE.get("stroke_threshold"),
        role="evaluator",
        device=config["device"],
    script:
        "../scripts/train_dense_network.py"


rule distill_dense_expert:
    input:
        unpack(dense_distill_inputs),
    output:
        "results/models/dense/{task}/{guide_set}/expert{index}.pt",
    log:
        "logs/dense/{task}/{guide_set}/expert{index}.log",
    benchmark:
        "benchmarks/snakemake/dense/{task}/{guide_set}/expert{index}.tsv"
    priority: 5
    threads: THREADS["train"]
    resources:
        **rule_resources("distill_dense_expert", mem_mb=4000, runtime=60, gpu=GPU),
        cpus_per_task=THREADS["train"],
    params:
        settings=lambda wc: distill_settings(wc.guide_set),
        threshold=DENSE.get("stroke_threshold"),
        regression_loss=DENSE.get("regression_loss"),
        device=config["device"],
    script:
        "../scripts/distill_expert.py"


rule dense_cell:
    input:
        unpack(dense_test_inputs),
    output:
        cell="results/dense/{task}/{guide}/{sampling}.json",
        samples="results/dense/{task}/{guide}/{sampling}.npz",
    log:
        "logs/dense/{task}/{guide}/{sampling}.log",
    benchmark:
        "benchmarks/snakemake/dense/{task}/{guide}/{sampling}.tsv"
    threads: THREADS["sample"]
    resources:
        **rule_resources("dense_cell", mem_mb=4000, runtime=60, gpu=GPU),
        cpus_per_task=THREADS["sample"],
    params:
        **device_params(config["sampling"]),
        **training_free_params(),
        **performance_params(),
        **dense_task_params(),
        split="test",
        samplings=lambda wc: [sampling_settings(wc.sampling)],
        ranges=lambda wc: expert_ranges_param(wc.guide),
        num_samples=DENSE.get("num_samples"),
        seeds=SEEDS,
        batch_size=config["sampling"]["batch_size"],
        eta=config["sampling"]["eta"],
        evaluation=SCORING,
        device=config["device"],
    script:
        "../scripts/dense_cell.py"


def dense_validation_samplings(wildcards):
    return [
        sampling_settings(run.sampling)
        for run in dense_validation_runs(config)
        if run.task == wildcards.task and run.guide == wildcards.guide
    ]


rule dense_validation:
    input:
        unpack(dense_cell_inputs),
    output:
        cell="results/tuning/dense/{task}/{guide}.json",
        samples="results/tuning/dense/{task}/{guide}.npz",
    log:
        "logs/tuning/dense/{task}/{guide}.log",
    benchmark:
        "benchmarks/snakemake/tuning/dense/{task}/{guide}.tsv"
    threads: THREADS["sample"]
    resources:
        **rule_resources("dense_validation", mem_mb=4000, runtime=60, gpu=GPU),
        cpus_per_task=THREADS["sample"],
    params:
        **device_params(config["sampling"]),
        **training_free_params(),
        **performance_params(),
        **dense_task_params(),
        split="val",
        samplings=dense_validation_samplings,
        ranges=lambda wc: expert_ranges_param(wc.guide),
        num_samples=None,
        seeds=[DENSE_TUNING.get("seed")],
        batch_size=config["sampling"]["batch_size"],
        eta=config["sampling"]["eta"],
        evaluation=SCORING,
        device=config["device"],
    script:
        "../scripts/dense_cell.py"


rule tune_dense:
    input:
        cells=sorted(
            {
                f"results/tuning/dense/{run.task}/{run.guide}.json"
                for run in dense_validation_runs(config)
            }
        ),
    output:
        csv="results/tuning/dense.csv",
        markdown="results/tuning/dense.md",
    log:
        "logs/tuning/dense.log",
    benchmark:
        "benchmarks/snakemake/tuning/dense.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("tune_dense", mem_mb=2000, runtime=10),
    params:
        runs=[vars(run) for run in dense_validation_runs(config)],
        max_fid_ratio=DENSE_TUNING.get("max_fid_ratio"),
        configured=DENSE.get("scales"),
    script:
        "../scripts/tune_dense.py"


rule table_dense:
    input:
        cells=[
            dense_cell_path(run.task, run.guide, run.sampling)
            for run in dense_runs(config)
        ],
        samples=[
            dense_cell_path(run.task, run.guide, run.sampling).replace(".json", ".npz")
            for run in dense_runs(config)
        ],
    output:
        csv="results/table_dense.csv",
        markdown="results/table_dense.md",
        figures=expand(
            "results/figures/dense_{task}.png", task=DENSE.get("tasks") or []
        ),
    log:
        "logs/table_dense.log",
    benchmark:
        "benchmarks/snakemake/table_dense.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("table_dense", mem_mb=2000, runtime=10),
    params:
        runs=[vars(run) for run in dense_runs(config)],
    script:
        "../scripts/table_dense.py"
