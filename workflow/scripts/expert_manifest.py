"""Rule expert_manifest: load a trained guide set as one routed guide, check it, describe it.

Loading here (strict keys) catches a bad expert file before any sampling job uses it; the noisy
accuracy per timestep of the routed guide is the data of the paper's motivating figure.
"""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import torch

from harness import describe_guide, describe_schedule, rule_session
from ppap import data
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.experts.sets import expert_set_accuracy, load_expert_set
from ppap.io import write_json
from ppap.models import classifiers
from ppap.schedules import load_alphas_cumprod
from ppap.study import grammar
from ppap.study.accounting import parameter_accounting, training_cost

with rule_session(snakemake.log[0], snakemake.threads, "expert_manifest") as log:
    guide_set = snakemake.wildcards.guide_set
    spec = grammar.parse_guide_set(guide_set)
    device = resolve_device(snakemake.params.device)
    alphas_cumprod = load_alphas_cumprod(snakemake.input.scheduler).float()
    num_timesteps = len(alphas_cumprod)
    log.info("%s; %s", describe_guide(snakemake.input.guide), describe_schedule(snakemake.input.scheduler))
    routed = load_expert_set(guide_set, spec.rank, snakemake.input.guide, snakemake.input.experts, num_timesteps,
                                      snakemake.params.ranges).to(device)
    base_params = sum(p.numel() for p in classifiers.load_guide(snakemake.input.guide).parameters())
    accounting = parameter_accounting(guide_set, base_params, snakemake.input.experts)
    split = load_digits_npz(snakemake.input.data)
    timesteps = snakemake.params.accuracy_timesteps
    noisy = {}
    # Validation accuracy is what tuning may look at; test accuracy is only reported.
    for part in ("val", "test"):
        if f"{part}_images" not in split:
            continue
        images = data.to_float(split[f"{part}_images"]).to(device)
        labels = torch.as_tensor(split[f"{part}_labels"]).to(device)
        noisy[f"noisy_{part}_accuracy"] = dict(timesteps=timesteps, accuracy=expert_set_accuracy(
            routed, images, labels, alphas_cumprod.to(device), timesteps, seed=snakemake.params.seed))
        log.info("%s: noisy %s accuracy %s", guide_set, part, dict(zip(timesteps, noisy[f"noisy_{part}_accuracy"]["accuracy"])))
    log.info("%s: %s", guide_set, accounting)
    cost = training_cost(guide_set, snakemake.input.experts)
    log.info("%s: training cost %s", guide_set, cost)
    write_json(snakemake.output[0], dict(
        guide_set=guide_set, supervision=spec.supervision, adapter=spec.adapter, rank=spec.rank,
        n_experts=spec.n_experts, ranges=[list(r) for r in routed.ranges],
        experts=list(snakemake.input.experts), base_guide=snakemake.input.guide, base_params=base_params,
        **noisy, **accounting, **cost))
