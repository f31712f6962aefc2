# The data-free transfer set: unconditional samples of the base model, no labels.


rule synthesize:
    input:
        model=diffusion_model_dir(),
    output:
        "results/data/synthetic.npz",
    params:
        synthetic=config["synthetic"],
        device=config["device"],
    log:
        "logs/synthesize.log",
    benchmark:
        "benchmarks/snakemake/synthesize.tsv"
    threads: THREADS["sample"]
    priority: 10
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/synthesize.py"
