# Dense guides (results/table_dense.csv): each sample is guided towards the map of a held-out real
# digit by a dense guide (segmentation: 11 classes per pixel; distance: each pixel's distance to the
# nearest stroke, standing in for depth), with the same kinds of guidance as Table 1: the off-the-shelf
# dense network, labeled experts, PPAP's data-free LoRA experts, training-free x0-guidance. Scored
# by an independent evaluator segmenter (mIoU, pixel accuracy) or the samples' own exact distance
# maps (RMSE), and FID / IS / precision / recall. `snakemake tune` scores the validation grid
# (results/tuning/dense.csv); dense.scales holds its choices.
from ppap.study.config import dense_runs, dense_validation_runs
from ppap.vocab import EXACTLY_SCORED_TASKS

DENSE = config.get("dense") or {}
DENSE_TUNING = (config.get("tuning") or {}).get("dense") or {}


wildcard_constraints:
    task=r"segmentation|distance|depth",


def dense_guide_path(task):
    """The task's off-the-shelf dense guide: a file from the config, the shipped or the trained one."""
    return MODELS.dense_guides.get(task) or paths.dense_guide(task)


def dense_evaluator_inputs(task):
    """What scores a task's samples: the evaluator network (segmentation, depth) or nothing (the
    distance map of a sample is computed from it exactly)."""
    if task in EXACTLY_SCORED_TASKS:
        return {}
    return {
        "dense_evaluator": MODELS.dense_evaluators.get(task)
        or paths.dense_evaluator(task)
    }


def dense_expert_files(task, guide_set):
    n_experts = grammar.parse_guide_set(guide_set).n_experts
    return paths.dense_expert_files(task, guide_set, n_experts)


def expert_ranges_param(guide):
    """A guide set's ranges (None: the equal split); None for other guides."""
    if grammar.guide_kind(guide) != "experts":
        return None
    return distill_settings(guide)["ranges"]


def dense_cell_inputs(wildcards):
    inputs = {
        "model": DIFFUSION_MODEL,
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
        "scheduler": SCHEDULER,
    }
    if settings.supervision == "datafree":
        inputs["synthetic"] = synthetic_shard_files()
    else:
        inputs["data"] = REAL_DATA
    index = int(wildcards.index)
    if settings.warm_start != "off" and index > 0:
        inputs["previous"] = paths.dense_expert(
            wildcards.task, wildcards.guide_set, index - 1
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
                "quality_reference",
            )
        },
    }


rule train_dense_guide:
    input:
        data=REAL_DATA,
    output:
        checkpoint=paths.DENSE_GUIDE,
        record=paths.model_record(paths.DENSE_GUIDE),
        stats=paths.DENSE_GUIDE_STATS,
    log:
        paths.log("dense/{task}/guide"),
    benchmark:
        paths.benchmark("dense/{task}/guide")
    priority: 6
    threads: THREADS["train"]
    resources:
        **rule_resources("train_dense_guide", mem_mb=4000, runtime=30, gpu=GPU),
        cpus_per_task=THREADS["train"],
    params:
        network=DENSE.get("guide"),
        made_with=lambda wc: made_with("dense_guide", config, wc.task),
        threshold=DENSE.get("stroke_threshold"),
        role="guide",
        device=config["device"],
    script:
        "../scripts/train_dense_network.py"


rule train_dense_evaluator:
    input:
        data=REAL_DATA,
    output:
        checkpoint=paths.DENSE_EVALUATOR,
        record=paths.model_record(paths.DENSE_EVALUATOR),
        stats=paths.DENSE_EVALUATOR_STATS,
    log:
        paths.log("dense/{task}/evaluator"),
    benchmark:
        paths.benchmark("dense/{task}/evaluator")
    threads: THREADS["train"]
    resources:
        **rule_resources("train_dense_evaluator", mem_mb=4000, runtime=30, gpu=GPU),
        cpus_per_task=THREADS["train"],
    params:
        network=DENSE.get("evaluator"),
        made_with=lambda wc: made_with("dense_evaluator", config, wc.task),
        threshold=DENSE.get("stroke_threshold"),
        role="evaluator",
        device=config["device"],
    script:
        "../scripts/train_dense_network.py"


rule distill_dense_expert:
    input:
        unpack(dense_distill_inputs),
    output:
        paths.DENSE_EXPERT,
    log:
        paths.log("dense/{task}/{guide_set}/expert{index}"),
    benchmark:
        paths.benchmark("dense/{task}/{guide_set}/expert{index}")
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
        cell=paths.DENSE_CELL,
        samples=paths.DENSE_CELL_SAMPLES,
    log:
        paths.log("dense/{task}/{guide}/{sampling}"),
    benchmark:
        paths.benchmark("dense/{task}/{guide}/{sampling}")
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
        cell=paths.DENSE_VALIDATION,
        samples=paths.DENSE_VALIDATION_SAMPLES,
    log:
        paths.log("tuning/dense/{task}/{guide}"),
    benchmark:
        paths.benchmark("tuning/dense/{task}/{guide}")
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
                paths.dense_validation(run.task, run.guide)
                for run in dense_validation_runs(config)
            }
        ),
    output:
        csv=paths.tuning_table("dense"),
        markdown=paths.tuning_table("dense", "md"),
    log:
        paths.log("tuning/dense"),
    benchmark:
        paths.benchmark("tuning/dense")
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
            paths.dense_cell(run.task, run.guide, run.sampling)
            for run in dense_runs(config)
        ],
        samples=[
            paths.dense_cell(run.task, run.guide, run.sampling, "npz")
            for run in dense_runs(config)
        ],
    output:
        csv=paths.table("table_dense"),
        markdown=paths.table("table_dense", "md"),
        figures=[paths.figure(f"dense_{task}") for task in DENSE.get("tasks") or []],
        # the preset and the models (shipped or trained) the table was made with
        preset=paths.preset_record("table_dense"),
    log:
        paths.log("table_dense"),
    benchmark:
        paths.benchmark("table_dense")
    threads: THREADS["light"]
    resources:
        **rule_resources("table_dense", mem_mb=2000, runtime=10),
    params:
        runs=[vars(run) for run in dense_runs(config)],
    script:
        "../scripts/table_dense.py"
