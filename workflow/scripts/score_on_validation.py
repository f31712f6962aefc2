"""Rule score_on_validation: one cell of the validation grid (tuning.guidance): samples drawn with
the tuning seed, scored against the validation digits (never the test digits)."""
from harness import describe_guide, rule_session
from ppap import metrics
from ppap.compute import cost_record
from ppap.data import load_digits_npz
from ppap.devices import batch_size_for, resolve_device
from ppap.generate import sample_with_cost
from ppap.io import read_json, write_json
from ppap.models.denoisers import load_eps_model
from ppap.study.guides import load_guidance

with rule_session(snakemake.log[0], snakemake.threads, "score_on_validation") as log:
    device = resolve_device(snakemake.params.device)
    setting = snakemake.params.sampling
    eps_model, alphas_cumprod, image_shape = load_eps_model(snakemake.input.model, device)
    manifest = read_json(snakemake.input.manifest) if "manifest" in snakemake.input.keys() else None
    guidance = load_guidance(snakemake.wildcards.guide, eps_model, len(alphas_cumprod), device,
                                      guide_path=snakemake.input.get("guide"), manifest=manifest,
                                      conditional_model_dir=snakemake.input.get("conditional_model"),
                                      training_free=snakemake.params.get("training_free"),
                                      routing=setting["routing"], **snakemake.params.get("performance", {}))
    if snakemake.input.get("guide"):
        log.info("%s", describe_guide(snakemake.input.guide))
    log.info("guide %s: %s", snakemake.wildcards.guide, guidance.description)
    batch_size = batch_size_for(dict(batch_size=snakemake.params.batch_size,
                                     batch_size_by_device=snakemake.params.get("batch_size_by_device")), device)
    seed = snakemake.params.seed
    images, labels, cost, wall = sample_with_cost(
        guidance, alphas_cumprod, image_shape, snakemake.params.num_samples, batch_size, seed, device,
        sampler=setting["sampler"], steps=setting["steps"], eta=snakemake.params.eta,
        guidance_scale=setting["scale"], precision=snakemake.params.get("precision", "fp32"), clip=setting["clip"],
        spacing=setting["spacing"], show_progress=False)
    split = load_digits_npz(snakemake.input.data)
    if "val_images" not in split:
        raise ValueError("tuning.guidance scores on the validation split: data.val_fraction must be > 0")
    evaluation = snakemake.params.evaluation
    result = metrics.compute_metrics(images, split["val_images"], snakemake.input.evaluator,
                                     nearest_k=evaluation["nearest_k"], target_labels=labels,
                                     isc_splits=min(evaluation["isc_splits"], len(images) // 25 or 1))
    log.info("%s %s on %d validation digits: %s", snakemake.wildcards.guide, snakemake.wildcards.sampling,
             len(split["val_images"]), result)
    write_json(snakemake.output[0], dict(guide=snakemake.wildcards.guide, sampling=snakemake.wildcards.sampling,
                                         split="val", seed=seed, metrics=result,
                                         compute=cost_record([(seed, cost, wall)], snakemake.threads, device)))
