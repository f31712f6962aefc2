# FID, IS, precision/recall (k from config) with torch-fidelity and the evaluator network,
# against the real test digits; accuracy = evaluator agrees with the target class.


rule evaluate:
    input:
        samples="results/samples/{method}/seed{seed}.npz",
        evaluator="results/models/evaluator.pt",
        data="results/data/digits.npz",
    output:
        "results/metrics/{method}/seed{seed}.json",
    params:
        evaluation=config["evaluation"],
        guide=lambda wc: config["methods"][wc.method],
    log:
        "logs/evaluate/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/snakemake/evaluate/{method}/seed{seed}.tsv"
    threads: THREADS["light"]
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/evaluate.py"
