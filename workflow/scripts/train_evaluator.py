"""Rule train_evaluator: the metric network (never a guide), trained on clean images."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import torch

from harness import record_trained_model, rule_session
from ppap import data, pretrain
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.io import write_json
from ppap.models import classifiers

with rule_session(snakemake.log[0], snakemake.threads, "train_evaluator") as log:
    cfg = snakemake.params.evaluator
    device = resolve_device(snakemake.params.device)
    split = load_digits_npz(snakemake.input.data)
    x_train, y_train = data.to_float(split["train_images"]).to(device), torch.as_tensor(split["train_labels"]).to(device)
    x_test, y_test = data.to_float(split["test_images"]).to(device), torch.as_tensor(split["test_labels"]).to(device)
    evaluator = classifiers.build_evaluator(seed=cfg["train"]["seed"], in_chans=x_train.shape[1],
                                            num_classes=int(y_train.max()) + 1, width=cfg["width"],
                                            feature_dim=cfg["feature_dim"]).to(device)
    generator = torch.Generator(device).manual_seed(cfg["train"]["seed"])
    pretrain.train_classifier(evaluator, x_train, y_train, cfg["train"]["steps"], cfg["train"]["batch_size"],
                              cfg["train"]["lr"], generator, desc="evaluator")
    accuracy = pretrain.clean_accuracy(evaluator, x_test, y_test)
    log.info("evaluator clean test accuracy %.4f", accuracy)
    classifiers.save_evaluator(snakemake.output.checkpoint, evaluator.cpu(), clean_test_accuracy=accuracy)
    record_trained_model(snakemake.output.checkpoint, snakemake.output.record, snakemake.params.made_with, cfg["train"],
                         device)
    write_json(snakemake.output.stats, dict(parameters=sum(p.numel() for p in evaluator.parameters()),
                                            clean_test_accuracy=accuracy))
