"""Rule sample: every sampling seed of one (guide, sampling setting) -> ADM-style .npz files and a grid."""
from ppap import data, pipeline
from ppap.experts import SingleGuide
from ppap.io import read_json
from ppap.models import classifiers
from ppap.runtime import batch_size_for, describe_diffusion_model, describe_guide, resolve_device, rule_session

with rule_session(snakemake.log[0], snakemake.threads, "sample") as log:
    device = resolve_device(snakemake.params.device)
    precision = snakemake.params.get("precision", "fp32")
    batch_size = batch_size_for(dict(batch_size=snakemake.params.batch_size,
                                     batch_size_by_device=snakemake.params.get("batch_size_by_device")), device)
    log.info("device %s, precision %s, batch size %d", device, precision, batch_size)
    setting = snakemake.params.sampling
    eps_model, alphas_cumprod, image_shape = pipeline.load_eps_model(snakemake.input.model, device)
    log.info("%s (%d parameters)", describe_diffusion_model(snakemake.input.model),
             sum(p.numel() for p in eps_model.parameters()))
    guide_name = snakemake.wildcards.guide
    guide, num_classes = None, None
    if guide_name == "off_the_shelf":
        guide = SingleGuide(classifiers.load_guide(snakemake.input.guide)).to(device).requires_grad_(False)
    elif guide_name != "none":
        manifest = read_json(snakemake.input.manifest)
        guide = pipeline.load_expert_set(guide_name, snakemake.input.guide, manifest["experts"], len(alphas_cumprod),
                                         manifest["ranges"], routing=setting["routing"]).to(device)
    if guide is not None:
        num_classes = classifiers.read_guide_spec(snakemake.input.guide)["num_classes"]
        log.info("%s; as %s", describe_guide(snakemake.input.guide),
                 "itself (off the shelf)" if guide_name == "off_the_shelf" else
                 f"the backbone of {guide_name}: experts {manifest['experts']}, ranges {manifest['ranges']}")
    for seed, path in zip(snakemake.params.seeds, snakemake.output.samples):
        log.info("guide %s, %s (scale %s), seed %d", guide_name, snakemake.wildcards.sampling, setting["scale"], seed)
        images, labels = pipeline.generate_samples(
            eps_model, alphas_cumprod, image_shape, snakemake.params.num_samples, batch_size,
            seed, device, sampler=setting["sampler"], steps=setting["steps"], eta=snakemake.params.eta,
            guide=guide, guidance_scale=setting["scale"], num_classes=num_classes or 10, precision=precision,
            clip=setting["clip"], spacing=setting["spacing"])
        data.save_samples(path, images, labels)
        if seed == snakemake.params.seeds[0]:
            first_images, first_labels = images, labels
    upscale = max(1, 32 // first_images.shape[1])  # 8 px digits x4; 256 px images as they are
    # One row per target class (the first 10 classes), up to 10 per row, every cell a sample; an
    # unguided grid has the same rows x columns, unlabeled. The PNG records the layout for figures.
    rows = 10 if first_labels is None else min(num_classes, 10)
    cells = data.class_rows(first_images, first_labels, 10, rows)
    data.save_sample_grid(snakemake.output.grid, cells, rows, None if first_labels is None else list(range(rows)),
                          upscale=upscale, padding=2)
