"""Rules train_dense_guide and train_dense_evaluator: a dense network trained on clean training digits
and their ground-truth maps (the off-the-shelf dense guide, or the evaluator segmenter)."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import torch

from harness import record_trained_model, rule_session
from ppap import data, dense, pretrain
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.io import write_json
from ppap.models import dense as dense_models

with rule_session(snakemake.log[0], snakemake.threads, f"train_dense_{snakemake.params.role}") as log:
    cfg = dict(snakemake.params.network)
    task, threshold = snakemake.wildcards.task, snakemake.params.threshold
    kind = dense.TASK_KINDS[task]
    device = resolve_device(snakemake.params.device)
    split = load_digits_npz(snakemake.input.data)
    x_train = data.to_float(split["train_images"])
    maps = dense.ground_truth_maps(task, x_train, torch.as_tensor(split["train_labels"]), threshold)
    train = cfg.pop("train")
    family = cfg.pop("family")
    outputs = dense.NUM_SEGMENTATION_CLASSES if kind == "segmentation" else 1
    spec = dense_models.dense_spec(family, kind, outputs, x_train.shape[1], cfg.pop("input_size"), cfg.pop("mean"),
                                   cfg.pop("std"), **cfg)
    network = dense_models.build_dense_guide(spec, seed=train["seed"]).to(device)
    generator = torch.Generator(device).manual_seed(train["seed"])
    pretrain.train_dense_network(network, x_train.to(device), maps.to(device), kind, train["steps"],
                                 train["batch_size"], train["lr"], generator, desc=f"{task} {snakemake.params.role}")
    # how well it reads clean held-out digits (the validation split: the test split only scores samples)
    x_val = data.to_float(split["val_images"]).to(device)
    val_maps = dense.ground_truth_maps(task, x_val.cpu(), torch.as_tensor(split["val_labels"]), threshold)
    predicted = dense.guide_maps(network, x_val).cpu()
    if kind == "segmentation":
        clean = dense.segmentation_scores(predicted, val_maps, outputs)
    else:
        clean = dict(rmse=dense.regression_rmse(predicted, val_maps))
    parameters = sum(p.numel() for p in network.parameters())
    log.info("%s %s (%s, %d parameters): clean validation %s", task, snakemake.params.role, family, parameters, clean)
    dense_models.save_dense_guide(snakemake.output.checkpoint, network.cpu(), spec, clean_validation=clean)
    record_trained_model(snakemake.output.checkpoint, snakemake.output.record, snakemake.params.made_with, train, device)
    write_json(snakemake.output.stats, dict(task=task, role=snakemake.params.role, family=family, parameters=parameters,
                                            seed=train["seed"], clean_validation=clean))
