# The data-free transfer set: unconditional samples of the base model, no labels.


rule synthesize:
    input:
        model=diffusion_model_dir(),
    output:
        "results/data/synthetic.npz",
    log:
        "logs/synthesize.log",
    benchmark:
        "benchmarks/snakemake/synthesize.tsv"
    priority: 10
    threads: THREADS["sample"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=GPU,
        cpus_per_task=THREADS["sample"],
    params:
        **device_params(),
        synthetic=config["synthetic"],
        device=config["device"],
    script:
        "../scripts/synthesize.py"
