# One job per expert: expert i of a set owns timesteps [i*T/N, (i+1)*T/N).
# Data-free sets learn from the off-the-shelf guide on synthetic images (no labels); labeled sets
# (the baselines) from ground truth on real training images. With warm start (the original's
# protocol) expert i starts from expert i-1's file, so a set's experts form a chain of jobs.


def distill_inputs(wildcards):
    settings = expert_training(wildcards.guide_set, config)
    inputs = {"guide": BASE_GUIDE, "scheduler": SCHEDULER}
    if settings.supervision == "datafree":
        inputs["synthetic"] = synthetic_shard_files()
    else:
        inputs["data"] = REAL_DATA
    index = int(wildcards.index)
    if settings.warm_start != "off" and index > 0:
        inputs["previous"] = paths.expert(wildcards.guide_set, index - 1)
    return inputs


rule distill_expert:
    input:
        unpack(distill_inputs),
    output:
        paths.EXPERT,
    log:
        paths.log("distill/{guide_set}/expert{index}"),
    benchmark:
        paths.benchmark("distill/{guide_set}/expert{index}")
    priority: 5
    threads: THREADS["train"]
    resources:
        **rule_resources("distill_expert", mem_mb=4000, runtime=60, gpu=GPU),
        cpus_per_task=THREADS["train"],
    params:
        settings=lambda wc: distill_settings(wc.guide_set),
        device=config["device"],
    script:
        "../scripts/distill_expert.py"


rule expert_manifest:
    input:
        experts=lambda wc: expert_files(wc.guide_set),
        guide=BASE_GUIDE,
        scheduler=SCHEDULER,
        data=REAL_DATA,
    output:
        paths.MANIFEST,
    log:
        paths.log("distill/{guide_set}/manifest"),
    benchmark:
        paths.benchmark("distill/{guide_set}/manifest")
    threads: THREADS["light"]
    resources:
        **rule_resources("expert_manifest", mem_mb=2000, runtime=10, gpu=GPU),
        cpus_per_task=THREADS["light"],
    params:
        accuracy_timesteps=config["evaluation"]["accuracy_timesteps"],
        ranges=lambda wc: distill_settings(wc.guide_set)["ranges"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/expert_manifest.py"
