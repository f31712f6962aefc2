"""This checkout against an older commit, in one run: distillation throughput (images per second
per core, LoRA and full fine-tuning) and guided sampling throughput (samples per second, one plain
guide and N = 5 LoRA experts), through the workflow's own entry points.

    python benchmarks/speed_vs_commit.py --old c5a451b [--repeats 5] [--threads 1]

The old commit is exported (``git archive``) into a temporary folder. Every measurement runs in a
fresh process with this file's probe and ``PYTHONPATH`` set to one tree or the other, so both
trees run the same measuring code; old and new alternate round by round (the order flips every
round), and the ratios are medians of per-round ratios. Each side runs with the settings its tree
has: the new tree with the default preset's ``performance`` switches (channels-last guides, fused
AdamW, merged adapters, centre-tap convolutions), the old one without (it has none).

- distillation: ``train_expert`` on the embedded preset's guide (timm resnet10t at half
  width, random weights), batch 128, a 2000-image pool; per-step time = (time of S2 steps - time
  of S1 steps) / (S2 - S1), so set-up (teacher logits, peft) is left out. ``datafree_lora4`` is
  PPAP's expert (data-free transfer, LoRA rank 4, trained norms); ``labeled_full`` the labeled
  baseline (full fine-tuning, cross-entropy).
- sampling: ``load_guidance`` + ``sample_with_cost``: DDIM-25, 500 samples in one
  batch, scale 1; the N = 5 set is five rank-4 adapters with seeded non-zero B (the cost of
  trained experts). The samples of both trees are compared (uint8 levels).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKLOADS = ("distill_datafree_lora4", "distill_labeled_full", "sample_plain_guide", "sample_lora4_n5")
POOL, BATCH, SAMPLES, STEPS = 2000, 128, 500, 25
SHORT, LONG = 20, 120  # distillation steps of the two timed runs (their difference is timed)


# ---------------------------------------------------------------------------------- probe

def probe(workload: str, tree: Path, rounds: int, out_dir: Path) -> dict:
    """Runs in the tree's own process: times `rounds` repeats of one workload."""
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    import _common as common
    from ppap.experts.sets import TrainingPool, save_expert, train_expert
    from ppap.generate import sample_with_cost
    from ppap.models import classifiers
    from ppap.sampling import Denoiser
    from ppap.specs import ExpertTraining, SamplingSpec
    from ppap.study.guides import GuideSource, load_guidance

    performance = _tree_performance(tree)
    work = Path(tempfile.mkdtemp(prefix="speedprobe"))
    spec = classifiers.guide_spec(**common.GUIDE_ARGS)
    guide_path = work / "guide.pt"
    classifiers.save_guide(guide_path, common.preset_guide(seed=0), spec)
    alphas_cumprod = common.alphas_cumprod().float()
    gen = torch.Generator().manual_seed(0)
    pool = torch.rand((POOL, *common.IMAGE_SHAPE), generator=gen) * 2 - 1
    labels = torch.randint(10, (POOL,), generator=gen)
    cpu = torch.device("cpu")
    fields = {f.name for f in dataclasses.fields(ExpertTraining)}

    def settings(guide_set: str, steps: int, n_experts: int = 5):
        lora = dict(rank=4, alpha=4, layer_types=["conv"], include=r"(conv1\.[0-9]+|conv[12])$", exclude=None)
        datafree = guide_set.startswith("datafree")
        values = dict(guide_set=guide_set, supervision="datafree" if datafree else "labeled",
                      rank=4 if "lora" in guide_set else None, n_experts=n_experts, steps=steps, batch_size=BATCH,
                      lr=1e-2 if "lora" in guide_set else 3e-3, weight_decay=0.05, seed=50, norm="trained",
                      warm_start="off", synthetic_size=POOL if datafree else None,
                      temperature=0.25 if datafree else None, lora=lora if "lora" in guide_set else None,
                      channels_last=performance["channels_last"], fused_optimizer=performance["fused_optimizer"],
                      center_tap_convs=performance["center_tap_convs"])
        return ExpertTraining(**{k: v for k, v in values.items() if k in fields})

    def train(guide_set: str, steps: int, index: int = 0):
        s = settings(guide_set, steps)
        return s, train_expert(s, index, guide_path, alphas_cumprod,
                               TrainingPool(pool, None if s.supervision == "datafree" else labels),
                               torch.Generator().manual_seed(1 + index), show_progress=False)

    timings = []
    if workload.startswith("distill"):
        guide_set = {"distill_datafree_lora4": "datafree_lora4_n5", "distill_labeled_full": "labeled_full_n5"}[workload]
        train(guide_set, 5)  # warm-up
        for _ in range(rounds):
            times = {}
            for steps in (SHORT, LONG):
                wall, cpu_time = time.perf_counter(), time.process_time()
                train(guide_set, steps)
                times[steps] = (time.perf_counter() - wall, time.process_time() - cpu_time)
            per_step = [(times[LONG][i] - times[SHORT][i]) / (LONG - SHORT) for i in (0, 1)]
            timings.append(dict(wall=BATCH / per_step[0], cpu=BATCH / per_step[1]))  # images per second
        return dict(workload=workload, unit="images/s", timings=timings)

    eps_model = common.preset_eps_model()
    switches = {}
    if workload == "sample_plain_guide":
        guide_name, manifest = "off_the_shelf", None
    else:
        guide_name, paths = "datafree_lora4_n5", []
        for index in range(5):
            s, (model, stats, moments) = train("datafree_lora4_n5", 1, index)
            with torch.no_grad():  # trained-looking experts: non-zero B, different per expert
                g = torch.Generator().manual_seed(100 + index)
                for name, param in model.named_parameters():
                    if "lora_B" in name and f"expert{index}" in name:
                        param.copy_(torch.randn(param.shape, generator=g) * 0.02)
            path = work / f"expert{index}.pt"
            save_expert(path, model, s, index, stats, guide_path, moments)
            paths.append(str(path))
        manifest = {"experts": paths, "ranges": [[200 * i, 200 * (i + 1)] for i in range(5)]}
        switches["merge_adapters"] = performance["merge_adapters"]
    for switch in ("channels_last", "center_tap_convs"):
        switches[switch] = performance[switch]
    guidance = load_guidance(guide_name, Denoiser(eps_model, alphas_cumprod, common.IMAGE_SHAPE), cpu,
                             GuideSource(guide_path, manifest), performance=switches)

    def draw(seed: int):
        images, _, _, _ = sample_with_cost(guidance, SamplingSpec(steps=STEPS, scale=1.0, batch_size=SAMPLES), SAMPLES,
                                           seed, cpu, show_progress=False)
        return images

    np.save(out_dir / f"{workload}.npy", draw(0))  # the warm-up draw, kept for the comparison
    for r in range(rounds):
        wall, cpu_time = time.perf_counter(), time.process_time()
        draw(1 + r)
        timings.append(dict(wall=SAMPLES / (time.perf_counter() - wall), cpu=SAMPLES / (time.process_time() - cpu_time)))
    return dict(workload=workload, unit="samples/s", timings=timings)


def _tree_performance(tree: Path) -> dict:
    """The tree's default-preset speed switches (all off in a tree that has none)."""
    import yaml

    config = yaml.safe_load((tree / "config" / "default.yaml").read_text())
    section = config.get("performance") or {}
    return {k: bool(section.get(k, False))
            for k in ("channels_last", "fused_optimizer", "merge_adapters", "center_tap_convs")}


# ---------------------------------------------------------------------------------- driver

def run_probe(tree: Path, workload: str, rounds: int, threads: int, out_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", workload, "--tree", str(tree),
           "--rounds", str(rounds), "--threads", str(threads), "--probe-out", str(out_dir)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"probe {workload} in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", default="c5a451b", help="the commit to compare with")
    p.add_argument("--repeats", type=int, default=5, help="rounds (each: old and new, order flipped every round)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--probe", choices=WORKLOADS, help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--probe-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(probe(args.probe, args.tree, args.rounds, args.probe_out)))
        return

    import numpy as np

    sys.path.insert(0, str(HERE))
    import _common as common

    machine = common.machine(args.threads)
    new_commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory(prefix="ppap-old-") as tmp:
        old_tree = Path(tmp) / "tree"
        common.export_commit(args.old, old_tree)
        trees = {"old": old_tree, "new": REPO}
        results = {side: {w: [] for w in args.workloads} for side in trees}
        for workload in args.workloads:
            for r in range(args.repeats):
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for side in order:
                    got = run_probe(trees[side], workload, 1, args.threads, Path(tmp) / side)
                    results[side][workload].append(got["timings"][0])
                    unit = got["unit"]
                print(f"{workload} round {r + 1}: old {results['old'][workload][-1]['wall']:.1f}, "
                      f"new {results['new'][workload][-1]['wall']:.1f} {unit} (wall)", flush=True)
        differences = {}
        for workload in args.workloads:
            if workload.startswith("sample"):
                old_images = np.load(Path(tmp) / "old" / f"{workload}.npy").astype(int)
                new_images = np.load(Path(tmp) / "new" / f"{workload}.npy").astype(int)
                differences[workload] = (int(np.abs(old_images - new_images).max()),
                                         float((old_images != new_images).mean()))

    rows = []
    for workload in args.workloads:
        unit = "images/s per core" if workload.startswith("distill") else "samples/s"
        row = dict(workload=workload, unit=unit)
        for clock in ("wall", "cpu"):
            old = [t[clock] for t in results["old"][workload]]
            new = [t[clock] for t in results["new"][workload]]
            row[f"old_{clock}"] = common.median(old)
            row[f"new_{clock}"] = common.median(new)
            row[f"speedup_{clock}"] = common.median([n / o for n, o in zip(new, old)])
            row[f"speedup_{clock}_min"] = min(n / o for n, o in zip(new, old))
            row[f"speedup_{clock}_max"] = max(n / o for n, o in zip(new, old))
        if workload in differences:
            row["max_uint8_difference"], row["pixels_differing"] = differences[workload]
        row.update(old_commit=args.old, new_commit=new_commit + ("+changes" if dirty else ""), threads=args.threads,
                   repeats=args.repeats)
        rows.append(row)
    common.write_csv(args.out / "speed_vs_commit.csv", rows)
    shown = [dict(workload=r["workload"], unit=r["unit"],
                  **{"old (wall / CPU)": f"{r['old_wall']:,.1f} / {r['old_cpu']:,.1f}",
                     "new (wall / CPU)": f"{r['new_wall']:,.1f} / {r['new_cpu']:,.1f}",
                     "speed-up wall (min-max)": f"{r['speedup_wall']:.2f} ({r['speedup_wall_min']:.2f}-"
                                                f"{r['speedup_wall_max']:.2f})",
                     "speed-up CPU": f"{r['speedup_cpu']:.2f}",
                     "samples vs old": ("" if "max_uint8_difference" not in r else
                                        f"max {r['max_uint8_difference']} level(s), "
                                        f"{100 * r['pixels_differing']:.2f}% of pixels")}) for r in rows]
    footer = [common.goal_line(f"{r['workload']} at least 2x the old commit's throughput",
                               r["speedup_wall"] >= 2 and r["speedup_cpu"] >= 2,
                               f"wall {r['speedup_wall']:.2f}x, CPU {r['speedup_cpu']:.2f}x") for r in rows]
    footer += ["(a goal counts as met when both the wall-clock and the CPU-time medians meet it)", "",
               "- throughput: distillation in training images per second (one torch thread = per core), "
               f"from the difference of {LONG}- and {SHORT}-step runs of `train_expert`; sampling in "
               f"samples per second of DDIM-{STEPS}, {SAMPLES} samples in one batch.",
               "- speed-up: median of per-round ratios new / old (each round runs both, order flipped every round); "
               "CPU = the probe process's CPU time."]
    common.report(args.out, "speed_vs_commit",
                  [f"Machine: {machine}.",
                   f"Old: {args.old} (exported with git archive); new: {new_commit}{' with uncommitted changes' if dirty else ''}. "
                   f"{args.repeats} rounds per workload, a fresh process per measurement."],
                  [("Throughput, this checkout vs the old commit", common.markdown_table(shown, list(shown[0])))],
                  footer)


if __name__ == "__main__":
    main()
