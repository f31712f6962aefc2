# The data-free transfer set: unconditional samples of the base model, no labels. The pool is
# written in `synthetic.shards` files that separate jobs generate in parallel (on a cluster, one
# GPU job per shard); distillation memory-maps them and reads only the batches it draws.


def synthetic_shard_files():
    return expand(
        "results/data/synthetic/shard{shard}.npz",
        shard=range(config["synthetic"].get("shards", 1)),
    )


rule synthesize:
    input:
        model=diffusion_model_dir(),
    output:
        shard="results/data/synthetic/shard{shard}.npz",
        compute="results/data/synthetic/shard{shard}.compute.json",
    log:
        "logs/synthesize/shard{shard}.log",
    benchmark:
        "benchmarks/snakemake/synthesize/shard{shard}.tsv"
    priority: 10
    threads: THREADS["sample"]
    resources:
        **rule_resources("synthesize", mem_mb=4000, runtime=60, gpu=GPU),
        cpus_per_task=THREADS["sample"],
    params:
        **device_params(config["synthetic"]),
        shard=lambda wc: synthetic_shard(int(wc.shard)),
        sampler_steps=config["synthetic"]["sampler_steps"],
        # Unguided DDIM with the sampling section's timesteps and clipping (PPAP: DDIM-25, ddim25).
        spacing=config["sampling"]["spacing"],
        clip=config["sampling"]["clip"],
        batch_size=config["synthetic"]["batch_size"],
        device=config["device"],
    script:
        "../scripts/synthesize.py"
