"""Rule sample: one sampling run of one method and seed -> ADM-style .npz and a PNG grid."""
from ppap import data, pipeline
from ppap.io import read_json
from ppap.models import classifiers
from ppap.experts import SingleGuide
from ppap.runtime import resolve_device, rule_session

with rule_session(snakemake.log[0], snakemake.threads, "sample") as log:
    cfg = snakemake.params.sampling
    device = resolve_device(snakemake.params.device)
    eps_model, alphas_cumprod, image_shape = pipeline.load_eps_model(snakemake.input.model, device)
    guide_name = snakemake.params.guide
    guide, num_classes = None, 10
    if guide_name == "off_the_shelf":
        guide = SingleGuide(classifiers.load_guide(snakemake.input.guide)).to(device).requires_grad_(False)
    elif guide_name != "none":
        manifest = read_json(snakemake.input.manifest)
        spec = pipeline.ExpertSetSpec.parse(guide_name)
        guide = pipeline.load_expert_set(spec, snakemake.input.guide, manifest["experts"], len(alphas_cumprod)).to(device)
    if guide is not None:
        num_classes = classifiers.read_guide_spec(snakemake.input.guide)["num_classes"]
    log.info("method %s: guide %s, scale %s, %s-%d", snakemake.wildcards.method, guide_name,
             cfg["guidance_scale"], cfg["sampler"], cfg["steps"])
    images, labels = pipeline.generate_samples(
        eps_model, alphas_cumprod, image_shape, cfg["num_samples"], cfg["batch_size"], int(snakemake.wildcards.seed),
        device, sampler=cfg["sampler"], steps=cfg["steps"], eta=cfg["eta"], guide=guide,
        guidance_scale=cfg["guidance_scale"], num_classes=num_classes)
    data.save_samples(snakemake.output.samples, images, labels)
    if labels is not None:
        grid = data.image_grid(data.class_rows(images, labels, 10, num_classes), nrow=10, upscale=4, padding=2)
    else:
        grid = data.image_grid(images[:100], nrow=10, upscale=4, padding=2)
    data.save_png(snakemake.output.grid, grid)
