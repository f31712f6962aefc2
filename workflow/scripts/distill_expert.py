"""Rule distill_expert: train expert i of a guide set (data-free LoRA transfer or a labeled baseline)."""
import torch

from ppap import data, pipeline
from ppap.runtime import batch_size_for, resolve_device, rule_session
from ppap.schedules import load_alphas_cumprod

with rule_session(snakemake.log[0], snakemake.threads, "distill_expert") as log:
    spec = pipeline.ExpertSetSpec.parse(snakemake.wildcards.guide_set)
    index = int(snakemake.wildcards.index)
    if not 0 <= index < spec.n_experts:
        raise ValueError(f"{spec.guide_id} has experts 0..{spec.n_experts - 1}, not {index}")
    cfg = snakemake.params.experts
    device = resolve_device(snakemake.params.device)
    alphas_cumprod = load_alphas_cumprod(snakemake.input.scheduler).float()
    settings = snakemake.params.settings
    if spec.supervision == "datafree":
        # The shards are memory-mapped: only the batches drawn are read (500k images at 256 px).
        shards = [data.open_samples(path) for path in snakemake.input.synthetic]
        available = sum(len(shard) for shard in shards)
        if available < settings["synthetic_size"]:
            raise ValueError(f"{spec.guide_id} needs {settings['synthetic_size']} synthetic images, "
                             f"the pool's {len(shards)} shard(s) hold {available} (synthetic.num_samples)")
        images, labels = data.ImagePool(shards, limit=settings["synthetic_size"]), None
    else:
        split = pipeline.load_digits_npz(snakemake.input.data)
        images, labels = data.ImagePool([split["train_images"]]), torch.as_tensor(split["train_labels"])
    train = cfg["train"]
    generator = torch.Generator(device).manual_seed(train["seed"] + 1000 * index)
    model, stats = pipeline.train_expert(
        spec, index, snakemake.input.guide, alphas_cumprod, images, labels,
        steps=snakemake.params.steps, batch_size=batch_size_for(train, device),
        lr=train["lr"] if spec.rank is not None else train["full_lr"], weight_decay=train["weight_decay"],
        temperature=settings["temperature"], lora_alpha=cfg["lora"]["alpha"],
        lora_layer_types=cfg["lora"]["layer_types"], lora_include=cfg["lora"]["include"],
        lora_exclude=cfg["lora"]["exclude"], generator=generator, device=device, ranges=snakemake.params.ranges,
        precision=snakemake.params.get("precision", "fp32"))
    stats.update(settings, steps=snakemake.params.steps)
    log.info("expert %d of %s: %s", index, spec.guide_id, stats)
    pipeline.save_expert(snakemake.output[0], model.cpu(), spec, index, stats, snakemake.input.guide)
