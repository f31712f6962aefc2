"""Rule train_diffusion: the unconditional DDPM of the embedded preset, saved in diffusers format."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import torch

from harness import record_trained_model, rule_session
from ppap import data, pretrain, schedules
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.models import unet as unet_models

with rule_session(snakemake.log[0], snakemake.threads, "train_diffusion") as log:
    cfg = snakemake.params.diffusion
    device = resolve_device(snakemake.params.device)
    images = data.to_float(load_digits_npz(snakemake.input.data)["train_images"]).to(device)
    scheduler = schedules.load_scheduler(snakemake.input.scheduler)
    alphas_cumprod = schedules.alphas_cumprod_from_scheduler(scheduler).float().to(device)
    net = cfg["unet"]
    unet = unet_models.build_unet(images.shape[-1], images.shape[1], net["block_out_channels"],
                                  net["layers_per_block"], net["attention"], net["norm_num_groups"],
                                  seed=cfg["train"]["seed"]).to(device)
    log.info("UNet parameters: %d", sum(p.numel() for p in unet.parameters()))
    train = cfg["train"]
    generator = torch.Generator(device).manual_seed(train["seed"])
    training = pretrain.DiffusionTraining(train["steps"], train["batch_size"], train["lr"], ema_decay=train["ema_decay"],
                                          fused_optimizer=snakemake.params.get("fused_optimizer", False))
    ema = pretrain.train_diffusion(unet, images, alphas_cumprod, training, generator)
    unet_models.save_diffusion_model(snakemake.output.model, ema.cpu(), scheduler)
    record_trained_model(snakemake.output.model, snakemake.output.record, snakemake.params.made_with, train, device)
