"""Rule expert_manifest: load a trained guide set as one routed guide, check it, describe it.

Loading here (strict keys) catches a bad expert file before any sampling job uses it; the noisy
accuracy per timestep of the routed guide is the data of the paper's motivating figure.
"""
import torch

from ppap import data, pipeline
from ppap.io import write_json
from ppap.models import classifiers
from ppap.runtime import resolve_device, rule_session
from ppap.schedules import load_alphas_cumprod

with rule_session(snakemake.log[0], snakemake.threads, "expert_manifest") as log:
    spec = pipeline.ExpertSetSpec.parse(snakemake.wildcards.guide_set)
    device = resolve_device(snakemake.params.device)
    alphas_cumprod = load_alphas_cumprod(snakemake.input.scheduler).float()
    num_timesteps = len(alphas_cumprod)
    routed = pipeline.load_expert_set(spec, snakemake.input.guide, snakemake.input.experts, num_timesteps,
                                      snakemake.params.ranges).to(device)
    base_params = sum(p.numel() for p in classifiers.load_guide(snakemake.input.guide).parameters())
    accounting = pipeline.parameter_accounting(spec, base_params, snakemake.input.experts)
    split = pipeline.load_digits_npz(snakemake.input.data)
    x_test = data.to_float(split["test_images"]).to(device)
    y_test = torch.as_tensor(split["test_labels"]).to(device)
    timesteps = snakemake.params.accuracy_timesteps
    accuracy = pipeline.expert_set_accuracy(routed, x_test, y_test, alphas_cumprod.to(device), timesteps,
                                            seed=snakemake.params.seed)
    log.info("%s: %s; noisy accuracy %s", spec.guide_id, accounting, dict(zip(timesteps, accuracy)))
    write_json(snakemake.output[0], dict(
        guide_set=spec.guide_id, supervision=spec.supervision, adapter=spec.adapter, rank=spec.rank,
        n_experts=spec.n_experts, ranges=[list(r) for r in routed.ranges],
        experts=list(snakemake.input.experts), base_guide=snakemake.input.guide, base_params=base_params,
        noisy_test_accuracy=dict(timesteps=timesteps, accuracy=accuracy), **accounting))
