# FID, IS, precision/recall (k from config) with torch-fidelity and the evaluator network,
# against the real test digits, for each sampling seed; accuracy = evaluator agrees with the target.


rule evaluate:
    input:
        samples=lambda wc: sample_files(wc.guide, wc.sampling),
        evaluator="results/models/evaluator.pt",
        data="results/data/digits.npz",
    output:
        "results/metrics/{guide}/{sampling}.json",
    params:
        evaluation=config["evaluation"],
        seeds=SEEDS,
    log:
        "logs/evaluate/{guide}/{sampling}.log",
    benchmark:
        "benchmarks/snakemake/evaluate/{guide}/{sampling}.tsv"
    threads: THREADS["light"]
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/evaluate.py"
