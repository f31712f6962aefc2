"""Rule score_on_validation: one cell of the validation grid (tuning.guidance): samples drawn with
the tuning seed (or each of its seeds), scored against the validation digits (never the test digits)."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

from harness import describe_guide, rule_session
from ppap import metrics
from ppap.compute import cost_record
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.generate import sample_with_cost
from ppap.io import write_json
from ppap.models.denoisers import load_eps_model
from ppap.study.comparison import validation_record
from ppap.study.guides import GuideSource, load_guidance
from ppap.study.specs import sampling_spec

with rule_session(snakemake.log[0], snakemake.threads, "score_on_validation") as log:
    device = resolve_device(snakemake.params.device)
    spec = sampling_spec(snakemake.params, device)
    denoiser = load_eps_model(snakemake.input.model, device)
    source = GuideSource(snakemake.input.get("guide"), snakemake.input.get("manifest"),
                         snakemake.input.get("conditional_model"))
    guidance = load_guidance(snakemake.wildcards.guide, denoiser, device, source, snakemake.params.get("training_free"),
                             snakemake.params.sampling["routing"], performance=snakemake.params.get("performance"))
    if source.guide:
        log.info("%s", describe_guide(source.guide))
    log.info("guide %s: %s", snakemake.wildcards.guide, guidance.description)
    # one seed (tuning.guidance.seed) or several (tuning.guidance.seeds): the cell is their mean, with its sd
    seeds = snakemake.params.seed if isinstance(snakemake.params.seed, list) else [snakemake.params.seed]
    split = load_digits_npz(snakemake.input.data)
    if "val_images" not in split:
        raise ValueError("tuning.guidance scores on the validation split: data.val_fraction must be > 0")
    evaluation = snakemake.params.evaluation
    # validation cells are scored in the evaluator network's space whatever evaluation.feature_extractor says
    scorer = metrics.make_scorer("evaluator", split["val_images"], evaluator=snakemake.input.evaluator)
    per_seed, costs = [], []
    for seed in seeds:
        images, labels, cost, wall = sample_with_cost(guidance, spec, snakemake.params.num_samples, seed, device,
                                                      show_progress=False)
        result = scorer.score(images, target_labels=labels, nearest_k=evaluation["nearest_k"],
                              isc_splits=min(evaluation["isc_splits"], len(images) // 25 or 1))
        log.info("%s %s seed %d on %d validation digits: %s", snakemake.wildcards.guide,
                 snakemake.wildcards.sampling, seed, len(split["val_images"]), result)
        per_seed.append(dict(result, seed=seed))
        costs.append((seed, cost, wall))
    write_json(snakemake.output[0], validation_record(snakemake.wildcards.guide, snakemake.wildcards.sampling,
                                                      per_seed, cost_record(costs, snakemake.threads, device)))
