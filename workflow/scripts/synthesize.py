"""Rule synthesize: one shard of the unlabeled data-free transfer set, sampled from the base model."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import time

from harness import describe_diffusion_model, rule_session
from ppap import data
from ppap.compute import SamplingCost, cost_record
from ppap.devices import resolve_device
from ppap.generate import Guidance, generate_samples
from ppap.io import write_json
from ppap.models.denoisers import load_eps_model
from ppap.study.specs import synthesis_spec

with rule_session(snakemake.log[0], snakemake.threads, "synthesize") as log:
    params = snakemake.params
    shard = params.shard
    device = resolve_device(params.device)
    denoiser = load_eps_model(snakemake.input.model, device)
    log.info("%s (%d parameters)", describe_diffusion_model(snakemake.input.model),
             sum(p.numel() for p in denoiser.eps.parameters()))
    cost, start = SamplingCost(), time.perf_counter()
    images, _ = generate_samples(Guidance(denoiser), synthesis_spec(params, device), shard["count"], shard["seed"],
                                 device, cost=cost)
    # part of data-free PPAP's one-time cost (results/guidance_methods.csv)
    write_json(snakemake.output.compute, cost_record([(shard["seed"], cost, time.perf_counter() - start)],
                                                     snakemake.threads, device))
    log.info("shard %s: synthesized %d images of shape %s (seed %d)", snakemake.wildcards.shard, len(images),
             images.shape[1:], shard["seed"])
    data.save_samples(snakemake.output.shard, images)
