"""Rule evaluate: FID / IS / precision / recall / density / coverage / accuracy of every seed of a cell.

The real set is the test digits, or the images at ``evaluation.reference`` (a folder of PNGs or an
``.npz`` with ``arr_0``) when the config sets it; they must match the samples' size and channels.
With ``evaluation.feature_extractor: inception`` the features are InceptionV3's (local weights), the
real set's computed once, and accuracy comes from ``evaluation.accuracy_classifier`` when it is set.
"""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

from harness import rule_session
from ppap import data, metrics
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.io import write_json
from ppap.study import report

with rule_session(snakemake.log[0], snakemake.threads, "evaluate") as log:
    cfg = snakemake.params.evaluation
    samples = [data.load_samples(path) for path in snakemake.input.samples]
    if "reference" in snakemake.input.keys():
        _, size, _, channels = samples[0][0].shape
        real = data.load_reference_images(snakemake.input.reference, size, channels)
        log.info("real set: %d reference images from %s", len(real), snakemake.input.reference)
    else:
        real = load_digits_npz(snakemake.input.data)["test_images"]
        log.info("real set: %d test digits", len(real))
    # the evaluator network (on the CPU), or InceptionV3 on the configured device (ppap.metrics.make_scorer)
    device = resolve_device(snakemake.params.device) if "device" in snakemake.params.keys() else "cpu"
    scorer = metrics.make_scorer(cfg.get("feature_extractor"), real, evaluator=snakemake.input.get("evaluator"),
                                 inception=snakemake.input.get("inception"),
                                 classifier=snakemake.input.get("classifier"), device=device)
    per_seed = []
    for seed, path, (images, labels) in zip(snakemake.params.seeds, snakemake.input.samples, samples):
        result = scorer.score(images, target_labels=labels, nearest_k=cfg["nearest_k"], isc_splits=cfg["isc_splits"])
        result.update(seed=int(seed), samples=path)
        log.info("seed %d: %s", seed, result)
        per_seed.append(result)
    write_json(snakemake.output[0], dict(guide=snakemake.wildcards.guide, sampling=snakemake.wildcards.sampling,
                                         **report.summarize_seeds(per_seed)))
