# Guided sampling: the expert that owns each sample's timestep supplies grad log p(y | x_t).


rule sample:
    input:
        unpack(guide_inputs),
        model=diffusion_model_dir(),
    output:
        samples="results/samples/{method}/seed{seed}.npz",
        grid="results/samples/{method}/seed{seed}.png",
    params:
        guide=lambda wc: config["methods"][wc.method],
        sampling=config["sampling"],
        device=config["device"],
    log:
        "logs/sample/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/snakemake/sample/{method}/seed{seed}.tsv"
    threads: THREADS["sample"]
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/sample.py"
