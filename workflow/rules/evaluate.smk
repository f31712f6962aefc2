# FID, IS, precision/recall (k from config) with torch-fidelity and the evaluator network, for each
# sampling seed, against the real test digits or, when evaluation.reference is set, against that
# folder of PNGs / .npz (arr_0); accuracy = evaluator agrees with the target.


def real_images_input():
    """The real set: the configured reference images, else the digits split (its test half)."""
    reference = config["evaluation"].get("reference")
    if reference:
        return {"reference": reference}
    return {"data": "results/data/digits.npz"}


rule evaluate:
    input:
        **real_images_input(),
        samples=lambda wc: sample_files(wc.guide, wc.sampling),
        evaluator="results/models/evaluator.pt",
    output:
        "results/metrics/{guide}/{sampling}.json",
    log:
        "logs/evaluate/{guide}/{sampling}.log",
    benchmark:
        "benchmarks/snakemake/evaluate/{guide}/{sampling}.tsv"
    threads: THREADS["light"]
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        evaluation=config["evaluation"],
        seeds=SEEDS,
    script:
        "../scripts/evaluate.py"
