"""Does bf16 pay on this CPU? The embedded preset's networks under ``precision: fp32`` and ``bf16``
(``ppap.devices.autocast_context``: bf16 autocast for convolutions and matmuls, weights fp32).

    python benchmarks/precision_cpu.py [--repeats 7] [--threads 1]

Workloads, each what the workflow runs most: the UNet's training step (batch 128, AdamW), its
forward in sampling (batch 500, no grad), and the guide's input gradient in guided sampling
(batch 500, the preset's guide with the default ``performance`` switches). fp32 and bf16
alternate within each round (order flipped every round); medians of per-call times.
bf16 changes the numbers, so it is not the default on CPU (``precision: auto`` = fp32 there):
this measures what it would buy. Writes ``benchmarks/results/precision_cpu.csv`` and ``.md``.
"""

from __future__ import annotations

import statistics
import time

import torch

import _common as common
from ppap.devices import autocast_context
from ppap.models.guides import with_speed_switches
from ppap.models.unet import build_unet

PRECISIONS = ("fp32", "bf16")


def workloads() -> dict:
    generator = torch.Generator().manual_seed(0)
    unet = build_unet(**common.UNET_ARGS)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    guide = with_speed_switches(common.preset_guide().eval(), True, True)
    x_train = torch.randn(128, *common.IMAGE_SHAPE, generator=generator)
    t_train = torch.randint(0, 1000, (128,), generator=generator)
    x_sample = torch.randn(500, *common.IMAGE_SHAPE, generator=generator)
    t_sample = torch.full((500,), 500)

    def unet_train_step():
        loss = (unet(x_train, t_train).sample - x_train).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def unet_forward():
        with torch.no_grad():
            unet(x_sample, t_sample)

    def guide_input_gradient():
        x = x_sample.clone().requires_grad_(True)
        torch.autograd.grad(guide(x, t_sample).float().log_softmax(1)[:, 0].sum(), x)

    return {"unet_train_step_b128": unet_train_step, "unet_forward_b500": unet_forward,
            "guide_input_gradient_b500": guide_input_gradient}


def main() -> None:
    args = common.parser(__doc__.split("\n")[0], repeats=7).parse_args()
    common.set_threads(args.threads)
    machine = common.machine(args.threads)
    calls = workloads()
    times = {(name, precision): [] for name in calls for precision in PRECISIONS}
    for r in range(args.repeats):
        for precision in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
            for name, fn in calls.items():
                with autocast_context("cpu", precision):
                    fn()  # warm: the first bf16 call builds its kernels
                    start = time.perf_counter()
                    for _ in range(3):
                        fn()
                    times[name, precision].append((time.perf_counter() - start) / 3)
    rows = []
    for name in calls:
        fp32, bf16 = (statistics.median(times[name, p]) * 1000 for p in PRECISIONS)
        ratios = [a / b for a, b in zip(times[name, "fp32"], times[name, "bf16"])]
        rows.append(dict(workload=name, fp32_ms=fp32, bf16_ms=bf16, speedup_bf16=statistics.median(ratios)))
    columns = ["workload", "fp32_ms", "bf16_ms", "speedup_bf16"]
    common.write_csv(args.out / "precision_cpu.csv", rows, columns)
    shown = [{c: common.fmt(row[c], 3) for c in columns} for row in rows]
    common.report(args.out, "precision_cpu",
                  [f"Machine: {machine}.", f"{args.repeats} rounds, fp32 and bf16 alternating; medians."],
                  [("bf16 autocast against fp32", common.markdown_table(shown, columns))],
                  ["- speedup_bf16: median of per-round fp32 / bf16 time ratios (above 1: bf16 faster)."])


if __name__ == "__main__":
    main()
