# The networks the study starts from: the unconditional diffusion model, the off-the-shelf guide
# (clean images only) and the metric evaluator, and the class-conditional model of the labeled
# upper bound (classifier-free guidance). The embedded presets ship them (ppap/public/, chosen by
# ppap.study.public_models): these rules run where none was shipped for the config's sections, with
# `public_models: train`, or as `snakemake pretrain`. A `pretrained` path in the config skips them.
# Each writes its model's record (ppap.models.records) beside it.


rule noise_schedule:
    output:
        directory(paths.SCHEDULER),
    log:
        paths.log("noise_schedule"),
    benchmark:
        paths.benchmark("noise_schedule")
    threads: THREADS["light"]
    resources:
        **rule_resources("noise_schedule", mem_mb=1000, runtime=5),
    params:
        diffusion=config["diffusion"],
    script:
        "../scripts/noise_schedule.py"


rule train_diffusion:
    input:
        data=REAL_DATA,
        scheduler=paths.SCHEDULER,
    output:
        model=directory(paths.DIFFUSION),
        record=paths.model_record(paths.DIFFUSION),
    log:
        paths.log("train_diffusion"),
    benchmark:
        paths.benchmark("train_diffusion")
    # first whenever a core is free: the base model heads the longest chain (synthesize, the
    # data-free experts, their samples)
    priority: 20
    threads: THREADS["diffusion"]
    resources:
        **rule_resources("train_diffusion", mem_mb=4000, runtime=60, gpu=GPU),
        cpus_per_task=THREADS["diffusion"],
    params:
        diffusion=config["diffusion"],
        made_with=made_with("diffusion", config),
        fused_optimizer=PERFORMANCE["fused_optimizer"],
        device=config["device"],
    script:
        "../scripts/train_diffusion.py"


# The labeled upper bound: a class-conditional model of the same architecture and budget, sampled
# with classifier-free guidance (ppap.guidance.classifier_free). Not part of `all` by itself.
rule train_conditional_diffusion:
    input:
        data=REAL_DATA,
        scheduler=SCHEDULER,
    output:
        model=directory(paths.CONDITIONAL_DIFFUSION),
        model_record=paths.model_record(paths.CONDITIONAL_DIFFUSION),
        record=paths.CONDITIONAL_DIFFUSION_RECORD,
    log:
        paths.log("train_conditional_diffusion"),
    benchmark:
        paths.benchmark("train_conditional_diffusion")
    threads: THREADS["diffusion"]
    resources:
        **rule_resources(
            "train_conditional_diffusion", mem_mb=4000, runtime=60, gpu=GPU
        ),
        cpus_per_task=THREADS["diffusion"],
    params:
        unet=config["diffusion"]["unet"],
        conditional=config["conditional_diffusion"],
        made_with=made_with("conditional_diffusion", config),
        fused_optimizer=PERFORMANCE["fused_optimizer"],
        device=config["device"],
    script:
        "../scripts/train_conditional_diffusion.py"


rule train_guide:
    input:
        data=REAL_DATA,
        scheduler=SCHEDULER,
    output:
        checkpoint=paths.GUIDE,
        record=paths.model_record(paths.GUIDE),
        stats=paths.GUIDE_STATS,
    log:
        paths.log("train_guide"),
    benchmark:
        paths.benchmark("train_guide")
    priority: 5
    threads: THREADS["train"]
    resources:
        **rule_resources("train_guide", mem_mb=4000, runtime=30, gpu=GPU),
        cpus_per_task=THREADS["train"],
    params:
        guide=config["guide"],
        made_with=made_with("guide", config),
        accuracy_timesteps=config["evaluation"]["accuracy_timesteps"],
        device=config["device"],
    script:
        "../scripts/train_guide.py"


rule train_evaluator:
    input:
        data=REAL_DATA,
    output:
        checkpoint=paths.EVALUATOR,
        record=paths.model_record(paths.EVALUATOR),
        stats=paths.EVALUATOR_STATS,
    log:
        paths.log("train_evaluator"),
    benchmark:
        paths.benchmark("train_evaluator")
    threads: THREADS["train"]
    resources:
        **rule_resources("train_evaluator", mem_mb=2000, runtime=30),
    params:
        evaluator=config["evaluator"],
        made_with=made_with("evaluator", config),
        device=config["device"],
    script:
        "../scripts/train_evaluator.py"
