# One job per expert: expert i of a set owns timesteps [i*T/N, (i+1)*T/N).
# Data-free sets learn from the off-the-shelf guide on synthetic images (no labels); labeled sets
# (the baselines) from ground truth on real training images. With warm start (the original's
# protocol) expert i starts from expert i-1's file, so a set's experts form a chain of jobs.


def distill_inputs(wildcards):
    settings = expert_training(wildcards.guide_set, config)
    inputs = {"guide": base_guide_path(), "scheduler": scheduler_dir()}
    if settings.supervision == "datafree":
        inputs["synthetic"] = synthetic_shard_files()
    else:
        inputs["data"] = REAL_DATA
    index = int(wildcards.index)
    if settings.warm_start != "off" and index > 0:
        inputs["previous"] = (
            f"results/models/guides/{wildcards.guide_set}/expert{index - 1}.pt"
        )
    return inputs


rule distill_expert:
    input:
        unpack(distill_inputs),
    output:
        "results/models/guides/{guide_set}/expert{index}.pt",
    log:
        "logs/distill/{guide_set}/expert{index}.log",
    benchmark:
        "benchmarks/snakemake/distill/{guide_set}/expert{index}.tsv"
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
        guide=base_guide_path(),
        scheduler=scheduler_dir(),
        data=REAL_DATA,
    output:
        "results/models/guides/{guide_set}/manifest.json",
    log:
        "logs/distill/{guide_set}/manifest.log",
    benchmark:
        "benchmarks/snakemake/distill/{guide_set}/manifest.tsv"
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
