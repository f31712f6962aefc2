"""Rule x0_estimate_accuracy: the off-the-shelf guide's accuracy on the denoiser's x0 estimate of
noised validation and test digits, per timestep (where training-free guidance can read the class)."""
import torch

from ppap import data, pipeline
from ppap.experts import SingleGuide
from ppap.io import write_json
from ppap.models import classifiers
from ppap.runtime import resolve_device, rule_session
from ppap.training import noisy_accuracy
from ppap.training_free import GuideOnEstimate

with rule_session(snakemake.log[0], snakemake.threads, "x0_estimate_accuracy") as log:
    device = resolve_device(snakemake.params.device)
    eps_model, alphas_cumprod, _ = pipeline.load_eps_model(snakemake.input.model, device)
    guide = SingleGuide(classifiers.load_guide(snakemake.input.guide)).to(device).requires_grad_(False)
    on_estimate = GuideOnEstimate(eps_model, guide, alphas_cumprod, clip_x0=snakemake.params.clip != "none").to(device)
    split = pipeline.load_digits_npz(snakemake.input.data)
    timesteps = snakemake.params.accuracy_timesteps
    out = dict(timesteps=timesteps)
    for part in ("val", "test"):
        if f"{part}_images" not in split:
            continue
        images = data.to_float(split[f"{part}_images"]).to(device)
        labels = torch.as_tensor(split[f"{part}_labels"]).to(device)
        generator = torch.Generator().manual_seed(snakemake.params.seed)
        with torch.no_grad():
            accuracy = noisy_accuracy(on_estimate, images, labels, timesteps, alphas_cumprod.to(device), generator)
        out[f"{part}_accuracy"] = accuracy
        log.info("off-the-shelf guide on x0_hat, %s digits: %s", part, dict(zip(timesteps, accuracy)))
    write_json(snakemake.output[0], out)
