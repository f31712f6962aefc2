"""Rule sample: every sampling seed of one (guide, sampling setting) -> ADM-style .npz files, a grid,
and what it cost (passes per sample through the denoiser and the guide, wall-seconds)."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

from harness import describe_diffusion_model, describe_guide, rule_session
from ppap import data
from ppap.compute import cost_record
from ppap.devices import resolve_device
from ppap.generate import sample_with_cost
from ppap.io import write_json
from ppap.models.denoisers import load_eps_model
from ppap.study.guides import GuideSource, load_guidance
from ppap.study.specs import sampling_spec

with rule_session(snakemake.log[0], snakemake.threads, "sample") as log:
    device = resolve_device(snakemake.params.device)
    spec = sampling_spec(snakemake.params, device)
    log.info("device %s: %s", device, spec)
    denoiser = load_eps_model(snakemake.input.model, device)
    log.info("%s (%d parameters)", describe_diffusion_model(snakemake.input.model),
             sum(p.numel() for p in denoiser.eps.parameters()))
    guide_name = snakemake.wildcards.guide
    source = GuideSource(snakemake.input.get("guide"), snakemake.input.get("manifest"),
                         snakemake.input.get("conditional_model"))
    guidance = load_guidance(guide_name, denoiser, device, source, snakemake.params.get("training_free"),
                             snakemake.params.sampling["routing"], performance=snakemake.params.get("performance"))
    if source.guide:
        log.info("%s", describe_guide(source.guide))
    log.info("guide %s: %s", guide_name, guidance.description)
    costs = []
    for seed, path in zip(snakemake.params.seeds, snakemake.output.samples):
        log.info("guide %s, %s (scale %s), seed %d", guide_name, snakemake.wildcards.sampling, spec.scale, seed)
        images, labels, cost, wall = sample_with_cost(guidance, spec, snakemake.params.num_samples, seed, device)
        data.save_samples(path, images, labels)
        costs.append((seed, cost, wall))
        log.info("seed %d: %.1f s, passes per sample %s", seed, wall, cost.per_sample())
        if seed == snakemake.params.seeds[0]:
            first_images, first_labels = images, labels
    write_json(snakemake.output.compute, cost_record(costs, snakemake.threads, device))
    upscale = max(1, 32 // first_images.shape[1])  # 8 px digits x4; 256 px images as they are
    # One row per target class (the first 10 classes), up to 10 per row, every cell a sample; an
    # unguided grid has the same rows x columns, unlabeled. The PNG records the layout for figures.
    rows = 10 if first_labels is None else min(guidance.num_classes, 10)
    cells = data.class_rows(first_images, first_labels, 10, rows)
    data.save_sample_grid(snakemake.output.grid, cells, rows, None if first_labels is None else list(range(rows)),
                          upscale=upscale, padding=2)
