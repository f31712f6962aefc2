"""Rule sample: every sampling seed of one (guide, sampling setting) -> ADM-style .npz files, a grid,
and what it cost (passes per sample through the denoiser and the guide, wall-seconds)."""
from harness import describe_diffusion_model, describe_guide, rule_session
from ppap import data
from ppap.compute import cost_record
from ppap.devices import batch_size_for, resolve_device
from ppap.generate import sample_with_cost
from ppap.io import read_json, write_json
from ppap.models.denoisers import load_eps_model
from ppap.study.guides import load_guidance

with rule_session(snakemake.log[0], snakemake.threads, "sample") as log:
    device = resolve_device(snakemake.params.device)
    precision = snakemake.params.get("precision", "fp32")
    batch_size = batch_size_for(dict(batch_size=snakemake.params.batch_size,
                                     batch_size_by_device=snakemake.params.get("batch_size_by_device")), device)
    log.info("device %s, precision %s, batch size %d", device, precision, batch_size)
    setting = snakemake.params.sampling
    eps_model, alphas_cumprod, image_shape = load_eps_model(snakemake.input.model, device)
    log.info("%s (%d parameters)", describe_diffusion_model(snakemake.input.model),
             sum(p.numel() for p in eps_model.parameters()))
    guide_name = snakemake.wildcards.guide
    manifest = read_json(snakemake.input.manifest) if "manifest" in snakemake.input.keys() else None
    guidance = load_guidance(guide_name, eps_model, len(alphas_cumprod), device,
                                      guide_path=snakemake.input.get("guide"), manifest=manifest,
                                      conditional_model_dir=snakemake.input.get("conditional_model"),
                                      training_free=snakemake.params.get("training_free"),
                                      routing=setting["routing"], **snakemake.params.get("performance", {}))
    if snakemake.input.get("guide"):
        log.info("%s", describe_guide(snakemake.input.guide))
    log.info("guide %s: %s", guide_name, guidance.description)
    costs = []
    for seed, path in zip(snakemake.params.seeds, snakemake.output.samples):
        log.info("guide %s, %s (scale %s), seed %d", guide_name, snakemake.wildcards.sampling, setting["scale"], seed)
        images, labels, cost, wall = sample_with_cost(
            guidance, alphas_cumprod, image_shape, snakemake.params.num_samples, batch_size, seed, device,
            sampler=setting["sampler"], steps=setting["steps"], eta=snakemake.params.eta,
            guidance_scale=setting["scale"], precision=precision, clip=setting["clip"], spacing=setting["spacing"])
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
