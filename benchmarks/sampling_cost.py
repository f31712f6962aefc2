"""Guided DDIM sampling cost per image: unguided, one plain guide, N LoRA experts (active or merged
into the weights), N fully fine-tuned experts. Compared with the FLOP ratio of the networks.

    python benchmarks/sampling_cost.py [--threads 1] [--batch-size 250] [--steps 10] [--repeats 5]

Embedded preset's networks (diffusers UNet 16/32 at 8x8, timm resnet10t at half width on 16x16),
random weights; classifier guidance on epsilon at scale 1 through ``ppap.pipeline.generate_samples``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import _common as common


def build_guides(n_experts: int, rank: int) -> dict:
    from ppap import adapters
    from ppap.experts import AdapterExperts, ModuleExperts, SingleGuide, timestep_ranges

    ranges = timestep_ranges(1000, n_experts)
    names = [f"expert{i}" for i in range(n_experts)]

    def lora_model():
        guide = common.preset_guide()
        model = adapters.attach_lora_experts(guide, names, rank, common.LORA_ALPHA, common.lora_targets(guide))
        common.perturb_adapters_(model)  # trained-looking, distinct experts (the cost is the same)
        return model.eval().requires_grad_(False)

    full = common.full_copies(common.preset_guide(), n_experts)
    return {
        "unguided": None,
        "single_guide": SingleGuide(common.preset_guide()).eval().requires_grad_(False),
        f"lora{rank}_n{n_experts}_active": AdapterExperts(lora_model(), names, ranges).eval(),
        f"lora{rank}_n{n_experts}_merged": AdapterExperts(lora_model(), names, ranges, merge=True).eval(),
        f"full_n{n_experts}": ModuleExperts(full, ranges).eval().requires_grad_(False),
    }


def guide_fwd_bwd_flops(guide, batch: int) -> int:
    """FLOPs of one guide forward + backward w.r.t. the input (what ``grad_log_prob`` runs).

    ``.backward()`` on a leaf input instead of ``autograd.grad``: FlopCounterMode's module tracker
    does not support the latter. With frozen weights both compute the input gradient only.
    """
    x = torch.randn((batch, *common.IMAGE_SHAPE), generator=torch.Generator().manual_seed(1))
    t = torch.full((batch,), 999)
    y = torch.arange(batch) % 10

    def run():
        xg = x.clone().requires_grad_(True)
        F.log_softmax(guide(xg, t).float(), dim=-1).gather(1, y.view(-1, 1)).sum().backward()

    run()  # a merging router swaps its weights here, outside the count
    return common.count_flops(run)


def main() -> None:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--num-samples", type=int, default=250)
    p.add_argument("--steps", type=int, default=10, help="DDIM steps")
    p.add_argument("--experts", type=int, default=5)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--name", default="sampling_cost", help="output name: <out>/<name>.csv and .md")
    args = p.parse_args()
    common.set_threads(args.threads)
    machine = common.machine(args.threads)

    from ppap import schedules
    from ppap.experts import expert_for_timestep, timestep_ranges
    from ppap.pipeline import generate_samples

    eps_model = common.preset_eps_model()
    alphas_cumprod = common.alphas_cumprod()
    guides = build_guides(args.experts, args.rank)
    cpu = torch.device("cpu")

    def sample(guide, num_samples=args.num_samples):
        return generate_samples(eps_model, alphas_cumprod, common.IMAGE_SHAPE, num_samples, args.batch_size, seed=0,
                                device=cpu, steps=args.steps, guide=guide, guidance_scale=1.0 if guide else 0.0,
                                num_classes=10, show_progress=False)

    # Correctness first: merged and active adapters must draw the same images.
    active_name, merged_name = f"lora{args.rank}_n{args.experts}_active", f"lora{args.rank}_n{args.experts}_merged"
    n_check = min(args.batch_size, args.num_samples)
    images_active, _ = sample(guides[active_name], n_check)
    images_merged, _ = sample(guides[merged_name], n_check)
    images_single, _ = sample(guides["single_guide"], n_check)
    max_diff = int((images_active.astype(int) - images_merged.astype(int)).__abs__().max())
    differ_single = float((images_active != images_single).mean())

    # FLOPs per image and DDIM step.
    flop_batch = 16
    x = torch.randn((flop_batch, *common.IMAGE_SHAPE))
    with torch.no_grad():
        unet_flops = common.count_flops(lambda: eps_model(x, torch.full((flop_batch,), 999))) / flop_batch
    guide_flops = {name: (guide_fwd_bwd_flops(g, flop_batch) / flop_batch if g is not None else 0.0)
                   for name, g in guides.items()}

    # Timing: one warm-up run each, then interleaved rounds.
    for g in guides.values():
        sample(g, n_check)
    calls = {name: (lambda g=g: sample(g)) for name, g in guides.items()}
    times = common.interleaved_times(calls, args.repeats)

    # The cost of one expert change in the merged router (unmerge + set_adapter + merge): a call
    # that changes the expert minus a call that does not, on a batch of 2.
    merged = guides[merged_name]
    xs = torch.randn((2, *common.IMAGE_SHAPE))
    change, same = [], []
    with torch.no_grad():
        for r in range(2 * max(args.repeats, 5)):
            t = torch.full((2,), 999 if r % 2 else 0)
            change.append(common.timed(lambda: merged(xs, t)))
            same.append(common.timed(lambda: merged(xs, t)))
    merged.unmerge()
    swap_s = max(common.median(change) - common.median(same), 0.0)
    timesteps = schedules.respaced_timesteps(1000, args.steps)
    owners = expert_for_timestep(timesteps, timestep_ranges(1000, args.experts))
    swaps_per_batch = int((owners[1:] != owners[:-1]).sum()) + 1  # the first call of a batch changes back too

    rows = []
    base_flops = unet_flops
    single_flops = unet_flops + guide_flops["single_guide"]
    for name in guides:
        step_flops = unet_flops + guide_flops[name]
        ms = [1000 * s / args.num_samples for s in times[name]]
        ratio_unguided = common.median(common.round_ratios(times, name, "unguided"))
        ratio_single = common.median(common.round_ratios(times, name, "single_guide"))
        flop_ratio = step_flops / base_flops
        rows.append(dict(
            config=name, ms_per_image=common.median(ms), ms_min=min(ms), ms_max=max(ms),
            ratio_to_unguided=ratio_unguided, flop_ratio_to_unguided=flop_ratio,
            measured_over_flop_ratio=ratio_unguided / flop_ratio,
            ratio_to_single_guide=ratio_single, flop_ratio_to_single_guide=step_flops / single_flops,
            mflops_per_image_step=step_flops / 1e6, guide_mflops_fwd_bwd=guide_flops[name] / 1e6,
            threads=args.threads, batch_size=args.batch_size, steps=args.steps, num_samples=args.num_samples,
            repeats=args.repeats,
        ))
    common.write_csv(args.out / f"{args.name}.csv", rows)

    by = {r["config"]: r for r in rows}
    single = by["single_guide"]
    lo, hi = 1 / 1.2, 1.2
    footer = [
        common.goal_line(f"N={args.experts} LoRA experts cost <= 1.05x one plain guide (adapters active)",
                         by[active_name]["ratio_to_single_guide"] <= 1.05,
                         f"{by[active_name]['ratio_to_single_guide']:.3f}x"),
        common.goal_line(f"N={args.experts} LoRA experts cost <= 1.05x one plain guide (merged when the expert changes)",
                         by[merged_name]["ratio_to_single_guide"] <= 1.05,
                         f"{by[merged_name]['ratio_to_single_guide']:.3f}x"),
        common.goal_line("guided/unguided within 1.2x of the FLOP ratio (one plain guide)",
                         lo <= single["measured_over_flop_ratio"] <= hi,
                         f"measured {single['ratio_to_unguided']:.3f}x, FLOPs {single['flop_ratio_to_unguided']:.3f}x, "
                         f"measured/FLOPs {single['measured_over_flop_ratio']:.3f}"),
        "",
        f"- FLOPs per image and DDIM step: UNet forward {unet_flops / 1e6:.2f} M; plain guide forward+backward "
        f"w.r.t. the input {guide_flops['single_guide'] / 1e6:.2f} M (matmuls and convolutions only, "
        "torch.utils.flop_counter).",
        f"- merged router: one expert change (unmerge + set_adapter + merge) costs {1000 * swap_s:.1f} ms (median); "
        f"{swaps_per_batch} changes per batch of {args.batch_size} at DDIM-{args.steps}, i.e. "
        f"{1000 * swaps_per_batch * swap_s / args.batch_size:.3f} ms per image: "
        f"{100 * swaps_per_batch * swap_s / args.batch_size / single['ms_per_image'] * 1000:.1f}% of the plain guide's "
        f"{single['ms_per_image']:.3f} ms (measured excess {100 * (by[merged_name]['ratio_to_single_guide'] - 1):.1f}%). "
        "It is paid per batch, not per step: larger batches and more steps amortise it.",
        f"- check: merged vs active adapters, same seed, {n_check} images: max |difference| {max_diff} "
        f"(uint8); {100 * differ_single:.0f}% of pixels differ from the plain guide's samples "
        "(the adapters are perturbed, so routing matters).",
        "- ratios are medians of per-round ratios (every configuration timed once per round, order rotated).",
    ]
    columns = ["config", "ms_per_image", "ms_min", "ms_max", "ratio_to_unguided", "flop_ratio_to_unguided",
               "measured_over_flop_ratio", "ratio_to_single_guide", "flop_ratio_to_single_guide"]
    common.report(args.out, args.name,
                  [f"Machine: {machine}.",
                   f"DDIM-{args.steps}, {args.num_samples} images in batches of {args.batch_size}, guidance scale 1, "
                   f"{args.repeats} interleaved repeats (median; min and max of ms per image shown)."],
                  [("Sampling cost per image", common.markdown_table(rows, columns))], footer)


if __name__ == "__main__":
    main()
