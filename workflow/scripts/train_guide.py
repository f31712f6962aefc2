"""Rule train_guide: the off-the-shelf classifier, trained on clean images only."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import torch

from harness import record_trained_model, rule_session
from ppap import data, pretrain, schedules
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.io import write_json
from ppap.models import classifiers
from ppap.training import noisy_accuracy

with rule_session(snakemake.log[0], snakemake.threads, "train_guide") as log:
    cfg = snakemake.params.guide
    device = resolve_device(snakemake.params.device)
    split = load_digits_npz(snakemake.input.data)
    x_train, y_train = data.to_float(split["train_images"]).to(device), torch.as_tensor(split["train_labels"]).to(device)
    x_test, y_test = data.to_float(split["test_images"]).to(device), torch.as_tensor(split["test_labels"]).to(device)
    num_classes = int(y_train.max()) + 1
    spec = classifiers.guide_spec(cfg["arch"], num_classes, x_train.shape[1], cfg["input_size"], cfg["mean"], cfg["std"],
                                     cfg["model_kwargs"])
    guide = classifiers.build_timm_guide(**spec, seed=cfg["train"]["seed"]).to(device)
    generator = torch.Generator(device).manual_seed(cfg["train"]["seed"])
    pretrain.train_classifier(guide, x_train, y_train, cfg["train"]["steps"], cfg["train"]["batch_size"],
                              cfg["train"]["lr"], generator, desc="guide")
    accuracy = pretrain.clean_accuracy(guide, x_test, y_test)
    alphas_cumprod = schedules.load_alphas_cumprod(snakemake.input.scheduler).float().to(device)
    timesteps = snakemake.params.accuracy_timesteps
    noisy = noisy_accuracy(lambda x, t: guide(x), x_test, y_test, timesteps, alphas_cumprod,
                           torch.Generator(device).manual_seed(0))
    log.info("clean test accuracy %.4f; noisy: %s", accuracy, dict(zip(timesteps, noisy)))
    parameters = sum(p.numel() for p in guide.parameters())
    classifiers.save_guide(snakemake.output.checkpoint, guide.cpu(), spec, clean_test_accuracy=accuracy)
    record_trained_model(snakemake.output.checkpoint, snakemake.output.record, snakemake.params.made_with, cfg["train"],
                         device)
    write_json(snakemake.output.stats, dict(arch=cfg["arch"], parameters=parameters, clean_test_accuracy=accuracy,
                                            noisy_test_accuracy=dict(timesteps=timesteps, accuracy=noisy)))
