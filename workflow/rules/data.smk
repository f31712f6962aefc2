rule prepare_data:
    output:
        REAL_DATA,
    log:
        paths.log("prepare_data"),
    benchmark:
        paths.benchmark("prepare_data")
    threads: THREADS["light"]
    resources:
        **rule_resources("prepare_data", mem_mb=1000, runtime=5),
    params:
        data=config["data"],
    script:
        "../scripts/prepare_data.py"
