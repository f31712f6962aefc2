"""Rule synthesize: the unlabeled data-free transfer set, sampled from the base diffusion model."""
from ppap import data
from ppap.pipeline import generate_samples, load_eps_model
from ppap.runtime import batch_size_for, resolve_device, rule_session

with rule_session(snakemake.log[0], snakemake.threads, "synthesize") as log:
    cfg = snakemake.params.synthetic
    device = resolve_device(snakemake.params.device)
    precision = snakemake.params.get("precision", "fp32")
    eps_model, alphas_cumprod, image_shape = load_eps_model(snakemake.input.model, device)
    images, _ = generate_samples(eps_model, alphas_cumprod, image_shape, cfg["num_samples"],
                                 batch_size_for(cfg, device), cfg["seed"], device, sampler="ddim",
                                 steps=cfg["sampler_steps"], precision=precision)
    log.info("synthesized %d images of shape %s", len(images), images.shape[1:])
    data.save_samples(snakemake.output[0], images)
