"""Guided DDIM sampling cost per image: unguided, one plain guide, N LoRA experts (active or merged
into the weights), N fully fine-tuned experts. Compared with the FLOP ratio of the networks.

    python benchmarks/sampling_cost.py [--threads 1] [--batch-size 250] [--steps 10] [--repeats 5]

Embedded preset's networks (diffusers UNet 16/32 at 8x8, timm resnet10t at half width on 16x16),
random weights; classifier guidance on epsilon at scale 1 through ``ppap.generate.generate_samples``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import _common as common


def build_guides(n_experts: int, rank: int) -> dict:
    from ppap.experts import AdapterExperts, ModuleExperts, SingleGuide, adapters, timestep_ranges

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
    from ppap.generate import Guidance, generate_samples
    from ppap.guidance import ClassifierGuidance
    from ppap.sampling import Denoiser
    from ppap.specs import SamplingSpec

    eps_model = common.preset_eps_model()
    alphas_cumprod = common.alphas_cumprod()
    guides = build_guides(args.experts, args.rank)
    cpu = torch.device("cpu")

    def sample(guide, num_samples=args.num_samples):
        denoiser = Denoiser(eps_model, alphas_cumprod, common.IMAGE_SHAPE)
        guidance = Guidance(denoiser, None if guide is None else ClassifierGuidance(guide))
        spec = SamplingSpec(steps=args.steps, scale=0.0 if guide is None else 1.0, batch_size=args.batch_size)
        return generate_samples(guidance, spec, num_samples, 0, cpu, show_progress=False)

    # Correctness first: merged and active adapters must draw the same images.
    active_name, merged_name = f"lora{args.rank}_n{args.experts}_active", f"lora{args.rank}_n{args.experts}_merged"
    n_check = min(args.batch_size, args.num_samples)
    images_active, _ = sample(guides[active_name], n_check)
    images_merged, _ = sample(guides[merged_name], n_check)
    images_single, _ = sample(guides["single_guide"], n_check)
    max_diff = int(np.abs(images_active.astype(int) - images_merged.astype(int)).max())
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
    wall, cpu = common.interleaved_times(calls, args.repeats)

    # The cost of one expert change in the merged router (unmerge + set_adapter + merge): a call
    # that changes the expert minus a call that does not, on a batch of 2 (CPU time).
    merged = guides[merged_name]
    xs = torch.randn((2, *common.IMAGE_SHAPE))
    change, same = [], []
    with torch.no_grad():
        for r in range(20):
            t = torch.full((2,), 999 if r % 2 else 0)
            change.append(common.timed_both(lambda: merged(xs, t))[1])
            same.append(common.timed_both(lambda: merged(xs, t))[1])
    merged.unmerge()
    swap_s = max(common.median(change) - common.median(same), 0.0)
    timesteps = schedules.respaced_timesteps(1000, args.steps)
    owners = expert_for_timestep(timesteps, timestep_ranges(1000, args.experts))
    swaps_per_batch = int((owners[1:] != owners[:-1]).sum()) + 1  # the first call of a batch changes back too

    rows = []
    single_flops = unet_flops + guide_flops["single_guide"]
    for name in guides:
        step_flops = unet_flops + guide_flops[name]
        flop_ratio = step_flops / unet_flops
        row = dict(config=name, mflops_per_image_step=step_flops / 1e6, guide_mflops_fwd_bwd=guide_flops[name] / 1e6,
                   flop_ratio_to_unguided=flop_ratio, flop_ratio_to_single_guide=step_flops / single_flops)
        for clock, times in (("wall", wall), ("cpu", cpu)):
            ms = [1000 * s / args.num_samples for s in times[name]]
            to_unguided = common.median(common.round_ratios(times, name, "unguided"))
            row.update({f"{clock}_ms_per_image": common.median(ms), f"{clock}_ms_min": min(ms),
                        f"{clock}_ms_max": max(ms), f"{clock}_ratio_to_unguided": to_unguided,
                        f"{clock}_over_flop_ratio": to_unguided / flop_ratio,
                        f"{clock}_ratio_to_single_guide": common.median(common.round_ratios(times, name, "single_guide"))})
        row.update(threads=args.threads, batch_size=args.batch_size, steps=args.steps, num_samples=args.num_samples,
                   repeats=args.repeats)
        rows.append(row)
    common.write_csv(args.out / f"{args.name}.csv", rows)

    def pair(row, key, digits=3):
        return f"{row[f'wall_{key}']:.{digits}f} / {row[f'cpu_{key}']:.{digits}f}"

    shown = [dict(config=r["config"],
                  **{"ms/image wall (min-max)": f"{r['wall_ms_per_image']:.3f} ({r['wall_ms_min']:.2f}-{r['wall_ms_max']:.2f})",
                     "ms/image CPU": f"{r['cpu_ms_per_image']:.3f}",
                     "x unguided wall / CPU": pair(r, "ratio_to_unguided"),
                     "FLOP x unguided": f"{r['flop_ratio_to_unguided']:.3f}",
                     "measured / FLOP wall / CPU": pair(r, "over_flop_ratio"),
                     "x single guide wall / CPU": pair(r, "ratio_to_single_guide"),
                     "FLOP x single guide": f"{r['flop_ratio_to_single_guide']:.3f}"}) for r in rows]

    by = {r["config"]: r for r in rows}
    single = by["single_guide"]
    lo, hi = 1 / 1.2, 1.2

    def verdicts(key, ok):
        return " / ".join(f"{clock} {by_value:.3f}" for clock, by_value in key), all(ok(v) for _, v in key)

    footer = []
    for name, label in ((active_name, "adapters active"), (merged_name, "merged when the expert changes")):
        values = [(c, by[name][f"{c}_ratio_to_single_guide"]) for c in ("wall", "cpu")]
        detail, met = verdicts(values, lambda v: v <= 1.05)
        footer.append(common.goal_line(f"N={args.experts} LoRA experts cost <= 1.05x one plain guide ({label})",
                                       met, f"{detail}x"))
    values = [(c, single[f"{c}_over_flop_ratio"]) for c in ("wall", "cpu")]
    detail, met = verdicts(values, lambda v: lo <= v <= hi)
    footer.append(common.goal_line(
        "guided/unguided within 1.2x of the FLOP ratio (one plain guide)", met,
        f"measured/FLOPs {detail}; measured {pair(single, 'ratio_to_unguided')}x vs FLOPs "
        f"{single['flop_ratio_to_unguided']:.3f}x"))
    excess = swaps_per_batch * swap_s / args.batch_size
    footer += [
        "(a goal counts as met when both the wall-clock and the CPU-time medians meet it)",
        "",
        f"- FLOPs per image and DDIM step: UNet forward {unet_flops / 1e6:.2f} M; plain guide forward+backward "
        f"w.r.t. the input {guide_flops['single_guide'] / 1e6:.2f} M; with LoRA active "
        f"{guide_flops[active_name] / 1e6:.2f} M (matmuls and convolutions only, torch.utils.flop_counter).",
        f"- merged router: one expert change (unmerge + set_adapter + merge, peft) costs {1000 * swap_s:.1f} ms CPU "
        f"(median); {swaps_per_batch} changes per batch of {args.batch_size} at DDIM-{args.steps}: "
        f"{1000 * excess:.3f} ms per image, {100 * excess / (single['cpu_ms_per_image'] / 1000):.1f}% of the plain "
        f"guide's {single['cpu_ms_per_image']:.3f} ms CPU (measured excess: wall "
        f"{100 * (by[merged_name]['wall_ratio_to_single_guide'] - 1):.1f}%, CPU "
        f"{100 * (by[merged_name]['cpu_ratio_to_single_guide'] - 1):.1f}%). Paid per batch, not per step: "
        "larger batches and more steps amortise it.",
        f"- check: merged vs active adapters, same seed, {n_check} images: max |difference| {max_diff} "
        f"(uint8); {100 * differ_single:.0f}% of pixels differ from the plain guide's samples "
        "(the adapters are perturbed, so routing matters).",
        "- ratios are medians of per-round ratios (every configuration timed once per round, order rotated); "
        "CPU = this process's CPU time (one torch thread), which leaves out time other processes held the core.",
    ]
    common.report(args.out, args.name,
                  [f"Machine: {machine}.",
                   f"DDIM-{args.steps}, {args.num_samples} images in batches of {args.batch_size}, guidance scale 1, "
                   f"{args.repeats} interleaved repeats (medians; min-max of wall ms per image in brackets)."],
                  [("Sampling cost per image", common.markdown_table(shown, list(shown[0])))], footer)


if __name__ == "__main__":
    main()
