"""Rule evaluate: FID / IS / precision / recall / density / coverage / accuracy of every seed of a cell."""
from ppap import data, metrics, report
from ppap.io import write_json
from ppap.pipeline import load_digits_npz
from ppap.runtime import rule_session

with rule_session(snakemake.log[0], snakemake.threads, "evaluate") as log:
    cfg = snakemake.params.evaluation
    real = load_digits_npz(snakemake.input.data)["test_images"]
    per_seed = []
    for seed, path in zip(snakemake.params.seeds, snakemake.input.samples):
        images, labels = data.load_samples(path)
        result = metrics.compute_metrics(images, real, snakemake.input.evaluator, nearest_k=cfg["nearest_k"],
                                         target_labels=labels, isc_splits=cfg["isc_splits"])
        result.update(seed=int(seed), samples=path)
        log.info("seed %d: %s", seed, result)
        per_seed.append(result)
    write_json(snakemake.output[0], dict(guide=snakemake.wildcards.guide, sampling=snakemake.wildcards.sampling,
                                         **report.summarize_seeds(per_seed)))
