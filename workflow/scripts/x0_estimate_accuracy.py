"""Rule x0_estimate_accuracy: the off-the-shelf guide's accuracy on the denoiser's x0 estimate of
noised validation and test digits, per timestep (where training-free guidance can read the class)."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import torch

from harness import rule_session
from ppap import data
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.experts import SingleGuide
from ppap.guidance.training_free import GuideOnEstimate
from ppap.io import write_json
from ppap.models import classifiers
from ppap.models.denoisers import load_eps_model
from ppap.training import noisy_accuracy

with rule_session(snakemake.log[0], snakemake.threads, "x0_estimate_accuracy") as log:
    device = resolve_device(snakemake.params.device)
    eps_model, alphas_cumprod, _ = load_eps_model(snakemake.input.model, device)
    guide = SingleGuide(classifiers.load_guide(snakemake.input.guide)).to(device).requires_grad_(False)
    on_estimate = GuideOnEstimate(eps_model, guide, alphas_cumprod, clip_x0=snakemake.params.clip != "none").to(device)
    split = load_digits_npz(snakemake.input.data)
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
