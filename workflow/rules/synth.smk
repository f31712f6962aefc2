# The data-free transfer set: unconditional samples of the base model, no labels. The pool is
# written in `synthetic.shards` files that separate jobs generate in parallel (on a cluster, one
# GPU job per shard); distillation memory-maps them and reads only the batches it draws.


def synthetic_shard_files():
    return [paths.synthetic_shard(shard) for shard in range(len(SYNTHETIC_SHARDS))]


def synthetic_compute_files():
    """What generating each shard cost (ppap.compute): one record beside each shard."""
    return [
        paths.synthetic_shard_compute(shard) for shard in range(len(SYNTHETIC_SHARDS))
    ]


rule synthesize:
    input:
        model=DIFFUSION_MODEL,
    output:
        shard=paths.SYNTHETIC_SHARD,
        compute=paths.SYNTHETIC_SHARD_COMPUTE,
    log:
        paths.log("synthesize/shard{shard}"),
    benchmark:
        paths.benchmark("synthesize/shard{shard}")
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
