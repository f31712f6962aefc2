rule prepare_data:
    output:
        REAL_DATA,
    log:
        "logs/prepare_data.log",
    benchmark:
        "benchmarks/snakemake/prepare_data.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("prepare_data", mem_mb=1000, runtime=5),
    params:
        data=config["data"],
    script:
        "../scripts/prepare_data.py"
