"""Rule evaluate: FID / IS / precision / recall / density / coverage / accuracy of one run."""
from ppap import data, metrics
from ppap.io import write_json
from ppap.pipeline import load_digits_npz
from ppap.runtime import rule_session

with rule_session(snakemake.log[0], snakemake.threads, "evaluate") as log:
    cfg = snakemake.params.evaluation
    images, labels = data.load_samples(snakemake.input.samples)
    real = load_digits_npz(snakemake.input.data)["test_images"]
    result = metrics.compute_metrics(images, real, snakemake.input.evaluator, nearest_k=cfg["nearest_k"],
                                     target_labels=labels, isc_splits=cfg["isc_splits"])
    result.update(method=snakemake.wildcards.method, seed=int(snakemake.wildcards.seed),
                  guide=snakemake.params.guide, samples=snakemake.input.samples)
    log.info("%s", result)
    write_json(snakemake.output[0], result)
