"""Rule distill_expert: train expert i of a guide set (data-free LoRA transfer or a labeled baseline)."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import time

import torch

from harness import describe_guide, describe_schedule, rule_session
from ppap import data, dense
from ppap.compute import machine_description
from ppap.data import load_digits_npz
from ppap.devices import resolve_device
from ppap.experts.sets import TrainingPool, save_expert, train_expert
from ppap.schedules import load_alphas_cumprod
from ppap.specs import ExpertTraining

with rule_session(snakemake.log[0], snakemake.threads, "distill_expert") as log:
    settings = ExpertTraining.from_params(snakemake.params.settings)
    index = int(snakemake.wildcards.index)
    device = resolve_device(snakemake.params.device)
    alphas_cumprod = load_alphas_cumprod(snakemake.input.scheduler).float()
    log.info("expert %d of %s: %s", index, settings.guide_set, settings)
    log.info("%s; %s", describe_guide(snakemake.input.guide), describe_schedule(snakemake.input.scheduler))
    if settings.supervision == "datafree":
        # The shards are memory-mapped: only the batches drawn are read (500k images at 256 px).
        shards = [data.open_samples(path) for path in snakemake.input.synthetic]
        available = sum(len(shard) for shard in shards)
        if available < settings.synthetic_size:
            raise ValueError(f"{settings.guide_set} needs {settings.synthetic_size} synthetic images, "
                             f"the pool's {len(shards)} shard(s) hold {available} (synthetic.num_samples)")
        images, labels = data.ImagePool(shards, limit=settings.synthetic_size), None
    else:
        split = load_digits_npz(snakemake.input.data)
        images, labels = data.ImagePool([split["train_images"]]), torch.as_tensor(split["train_labels"])
        if "task" in snakemake.wildcards.keys():  # a dense guide's labeled experts learn ground-truth maps
            labels = dense.ground_truth_maps(snakemake.wildcards.task, data.to_float(split["train_images"]), labels,
                                             snakemake.params.threshold)
    generator = torch.Generator(device).manual_seed(settings.seed + 1000 * index)
    start = time.perf_counter()
    model, stats, moments = train_expert(
        settings, index, snakemake.input.guide, alphas_cumprod, TrainingPool(images, labels), generator,
        previous_expert=snakemake.input.get("previous"),
        regression_loss=snakemake.params.get("regression_loss") or "mse")
    # the one-time cost of the expert (results/guidance_methods.csv): seconds here, with these threads
    stats.update(synthetic_size=settings.synthetic_size, temperature=settings.temperature,
                 wall_s=time.perf_counter() - start, threads=snakemake.threads, machine=machine_description(device))
    log.info("expert %d of %s: %s", index, settings.guide_set, stats)
    save_expert(snakemake.output[0], model.cpu(), settings, index, stats, snakemake.input.guide, moments)
