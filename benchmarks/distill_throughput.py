"""Training throughput of one expert: LoRA (rank 4, data-free knowledge transfer with the adapter
teacher, as ``ppap.experts.sets.train_expert`` does) against full fine-tuning (labeled cross-entropy,
and data-free transfer with a module teacher). Images per second of ``distill.fit_noise_aware``.

    python benchmarks/distill_throughput.py [--threads 1] [--batch-size 128] [--steps 10] [--repeats 5]

Embedded preset's guide (timm resnet10t at half width on 16x16), random weights; random images
stand in for the synthetic / real sets (the cost does not depend on their content).
"""

from __future__ import annotations

import copy
import inspect

import torch

import _common as common

_TRAIN = common.PRESET["experts"]["train"]  # config/default.yaml's experts section
LORA_LR, FULL_LR, WEIGHT_DECAY, TEMPERATURE = _TRAIN["lr"], _TRAIN["full_lr"], _TRAIN["weight_decay"], _TRAIN["temperature"]
T_RANGE = (200, 400)


def setups(rank: int, pool: torch.Tensor, labels: torch.Tensor, precompute: bool) -> dict:
    """name -> (student, params, objective kwargs, one-off seconds before training)."""
    from ppap.experts import adapters, distill

    out = {}

    def lora():
        guide = common.preset_guide()
        model = adapters.attach_lora_experts(guide, ["expert0"], rank, common.LORA_ALPHA, common.lora_targets(guide))
        params = adapters.train_only_adapter(model, "expert0")
        model.eval()  # batch norm keeps the clean guide's statistics: the backbone is shared
        return model, params, distill.adapter_teacher(model)

    def full():
        guide = common.preset_guide().train()
        teacher = distill.module_teacher(copy.deepcopy(guide))
        return guide, list(guide.parameters()), teacher

    model, params, teacher = lora()
    out[f"lora{rank}_kd_adapter_teacher"] = (model, params, dict(teacher=teacher), 0.0)
    model, params, teacher = full()
    out["full_kd_module_teacher"] = (model, params, dict(teacher=teacher), 0.0)
    model, params, _ = full()
    out["full_ce_labeled"] = (model, params, dict(labels=labels), 0.0)
    if precompute:  # the library can take the teacher's logits computed once (no teacher pass per step)
        for name, make in ((f"lora{rank}_kd_precomputed_logits", lora), ("full_kd_precomputed_logits", full)):
            model, params, teacher = make()
            seconds = common.timed(lambda: distill.precompute_teacher_logits(teacher, pool))
            logits = distill.precompute_teacher_logits(teacher, pool)
            out[name] = (model, params, dict(teacher_logits=logits), seconds)
    return out


def main() -> None:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="training steps per timed repeat")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--pool", type=int, default=2000, help="images in the (random) training pool")
    args = p.parse_args()
    common.set_threads(args.threads)
    machine = common.machine(args.threads)

    from ppap.experts import distill

    gen = torch.Generator().manual_seed(0)
    pool = torch.rand((args.pool, *common.IMAGE_SHAPE), generator=gen) * 2 - 1
    labels = torch.randint(10, (args.pool,), generator=gen)
    alphas_cumprod = common.alphas_cumprod()
    precompute = ("teacher_logits" in inspect.signature(distill.fit_noise_aware).parameters
                  and hasattr(distill, "precompute_teacher_logits"))
    configs = setups(args.rank, pool, labels, precompute)

    def train(name, steps):
        model, params, objective, _ = configs[name]
        lr = LORA_LR if name.startswith("lora") else FULL_LR
        fit = distill.Fit(steps, args.batch_size, lr, WEIGHT_DECAY,
                          temperature=TEMPERATURE if "labels" not in objective else 1.0)
        return distill.fit_noise_aware(model, params, pool, T_RANGE, alphas_cumprod, fit,
                                       torch.Generator().manual_seed(1), show_progress=False, **objective)

    flops = {name: common.count_flops(lambda n=name: train(n, 1)) for name in configs}  # also a warm-up
    for name in configs:
        train(name, 2)
    wall, cpu = common.interleaved_times({name: (lambda n=name: train(n, args.steps)) for name in configs},
                                         args.repeats)

    reference = "full_kd_module_teacher"
    rows = []
    for name in configs:
        row = dict(config=name)
        for clock, times in (("wall", wall), ("cpu", cpu)):
            step_s = [s / args.steps for s in times[name]]
            row.update({f"{clock}_images_per_s": args.batch_size / common.median(step_s),
                        f"{clock}_ms_per_step": 1000 * common.median(step_s),
                        f"{clock}_ms_per_step_min": 1000 * min(step_s), f"{clock}_ms_per_step_max": 1000 * max(step_s),
                        f"{clock}_speed_vs_full_kd": common.median(common.round_ratios(times, reference, name))})
        row.update(gflops_per_step=flops[name] / 1e9, flops_vs_full_kd=flops[name] / flops[reference],
                   trainable_params=sum(p.numel() for p in configs[name][1]), one_off_teacher_s=configs[name][3],
                   batch_size=args.batch_size, threads=args.threads, steps_per_repeat=args.steps, repeats=args.repeats)
        rows.append(row)
    common.write_csv(args.out / "distill_throughput.csv", rows)

    shown = [dict(config=r["config"],
                  **{"images/s wall (ms/step min-max)": f"{r['wall_images_per_s']:,.0f} "
                                                       f"({r['wall_ms_per_step_min']:.1f}-{r['wall_ms_per_step_max']:.1f})",
                     "images/s CPU": f"{r['cpu_images_per_s']:,.0f}",
                     "speed vs full KD wall / CPU": f"{r['wall_speed_vs_full_kd']:.2f} / {r['cpu_speed_vs_full_kd']:.2f}",
                     "GFLOP/step": f"{r['gflops_per_step']:.3f}",
                     "FLOPs vs full KD": f"{r['flops_vs_full_kd']:.2f}",
                     "trainable params": f"{r['trainable_params']:,}",
                     "one-off teacher s": f"{r['one_off_teacher_s']:.2f}"}) for r in rows]
    by = {r["config"]: r for r in rows}
    lora_online = by[f"lora{args.rank}_kd_adapter_teacher"]

    from ppap.experts.sets import train_expert

    uses_precomputed = "precompute_teacher_logits" in inspect.getsource(train_expert)
    footer = [
        f"- LoRA rank {args.rank} with the adapter teacher per step: {lora_online['cpu_speed_vs_full_kd']:.2f}x "
        f"(CPU; wall {lora_online['wall_speed_vs_full_kd']:.2f}x) the images/s of full fine-tuning with a module "
        f"teacher, for {lora_online['flops_vs_full_kd']:.2f}x its FLOPs per step.",
        "- speed vs full KD: median of per-round ratios of step times (full KD / this config), wall and CPU time "
        "(this process's, one torch thread: it leaves out time other processes held the core).",
        "- FLOPs: matmuls and convolutions of one step (torch.utils.flop_counter); the teacher's forward is "
        "included where it runs per step.",
    ]
    if precompute:
        footer.append(f"- precomputed_logits rows: the teacher's logits on the {args.pool}-image pool computed once "
                      "(one-off teacher s), with `distill.precompute_teacher_logits`; no teacher pass per step. "
                      f"`train_expert` in this checkout {'does this' if uses_precomputed else 'runs the teacher per step'}.")
    else:
        footer.append("- this ppap has no precomputed-teacher option; only per-step teachers are measured.")
    common.report(args.out, "distill_throughput",
                  [f"Machine: {machine}.",
                   f"Batch {args.batch_size}, t uniform in {list(T_RANGE)}, AdamW; {args.steps} steps per repeat, "
                   f"{args.repeats} interleaved repeats (medians; min-max of wall ms per step in brackets)."],
                  [("Training throughput per expert", common.markdown_table(shown, list(shown[0])))], footer)


if __name__ == "__main__":
    main()
