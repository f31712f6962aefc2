# Tables from the metric files.


def table1_manifests():
    guides = {config["methods"][m] for m in config["table1"]}
    return sorted(
        f"results/models/guides/{g}/manifest.json"
        for g in guides
        if g not in ("none", "off_the_shelf")
    )


rule table1:
    input:
        metrics=metric_files(config["table1"]),
        manifests=table1_manifests(),
        guide=base_guide_path(),
    output:
        csv="results/table1.csv",
        markdown="results/table1.md",
    params:
        methods={m: config["methods"][m] for m in config["table1"]},
        seeds=config["sampling"]["seeds"],
    log:
        "logs/table1.log",
    benchmark:
        "benchmarks/snakemake/table1.tsv"
    threads: THREADS["light"]
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/table1.py"
