"""Rule train_conditional_diffusion: the class-conditional DDPM of the labeled upper bound
(classifier-free guidance), the base model's architecture, saved in diffusers format."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import time

import torch

from harness import record_trained_model, rule_session
from ppap import data, pretrain, schedules
from ppap.compute import machine_description
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.io import write_json
from ppap.models import unet as unet_models

with rule_session(snakemake.log[0], snakemake.threads, "train_conditional_diffusion") as log:
    cfg, net = snakemake.params.conditional, snakemake.params.unet
    train = cfg["train"]
    device = resolve_device(snakemake.params.device)
    split = load_digits_npz(snakemake.input.data)
    images = data.to_float(split["train_images"]).to(device)
    labels = torch.as_tensor(split["train_labels"]).long().to(device)
    num_classes = int(labels.max()) + 1
    scheduler = schedules.load_scheduler(snakemake.input.scheduler)
    alphas_cumprod = schedules.alphas_cumprod_from_scheduler(scheduler).float().to(device)
    unet = unet_models.build_unet(images.shape[-1], images.shape[1], net["block_out_channels"],
                                  net["layers_per_block"], net["attention"], net["norm_num_groups"],
                                  seed=train["seed"], num_classes=num_classes).to(device)
    log.info("UNet parameters: %d; %d classes, null label %d, label dropout %s",
             sum(p.numel() for p in unet.parameters()), num_classes, num_classes, cfg["label_dropout"])
    generator = torch.Generator(device).manual_seed(train["seed"])
    start = time.perf_counter()
    training = pretrain.DiffusionTraining(train["steps"], train["batch_size"], train["lr"], ema_decay=train["ema_decay"],
                                          label_dropout=cfg["label_dropout"],
                                          fused_optimizer=snakemake.params.get("fused_optimizer", False))
    ema = pretrain.train_diffusion(unet, images, alphas_cumprod, training, generator, labels, num_classes)
    wall = time.perf_counter() - start
    unet_models.save_diffusion_model(snakemake.output.model, ema.cpu(), scheduler)
    record_trained_model(snakemake.output.model, snakemake.output.model_record, snakemake.params.made_with, train,
                         device)
    # the upper bound's one-time cost (results/guidance_methods.csv): each step a forward and a
    # backward of the UNet per image of the batch
    passes = train["steps"] * train["batch_size"]
    write_json(snakemake.output.record, dict(wall_s=wall, steps=train["steps"], denoiser_forward=passes,
                                             denoiser_backward=passes, threads=snakemake.threads,
                                             machine=machine_description(device)))
    log.info("trained in %.1f s", wall)
