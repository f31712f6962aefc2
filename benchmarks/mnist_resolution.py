"""Why the MNIST preset runs at 16x16: what one guided DDIM step costs per image at each side MNIST
could run at, against the digits' 8x8.

    python benchmarks/mnist_resolution.py [--threads 1] [--repeats 5] [--batch-size 250]

The networks are the presets' own (diffusion.unet at the data's side; the guide resizes to its
guide.input_size, 16, whatever the side), random weights. A guided step is the UNet forward and the
guide's forward + backward w.r.t. x_t (classifier guidance through ``grad_log_prob``); the unguided
step the UNet alone. Rounds are interleaved (``_common.interleaved_times``), ratios taken per round
against the digits' 8x8 and medians quoted, so a busy machine moves all sides alike. The budget
(issue 21): MNIST's Table 1 at most 3x the digits' job-seconds, where sampling and the data-free
pool are UNet steps.
"""

from __future__ import annotations

import torch

import _common as common

SIDES = (8, 16, 28, 32)   # the digits' 8; MNIST at 16, its native 28, padded to 32


def step_calls(side: int, batch: int) -> dict:
    from ppap.guidance.classifier import grad_log_prob

    config = common.preset_config(common.REPO / "config" / "mnist.yaml", {"data": {"image_size": side}})
    eps_model, guide = common.preset_eps_model(config), common.preset_guide(config=config).requires_grad_(False)
    x = torch.randn(batch, 1, side, side, generator=torch.Generator().manual_seed(0))
    t = torch.full((batch,), 500)
    labels = torch.arange(batch) % 10

    def unguided():
        with torch.no_grad():
            eps_model(x, t)

    def guided():
        with torch.no_grad():
            eps_model(x, t)
        grad_log_prob(guide, x, t, labels)

    return {f"unguided_{side}": unguided, f"guided_{side}": guided}


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=250)
    args = p.parse_args()
    common.set_threads(args.threads)
    print(common.machine(args.threads))
    calls = {}
    for side in SIDES:
        calls.update(step_calls(side, args.batch_size))
    for fn in calls.values():
        fn()  # warm-up: kernels chosen, memory allocated
    wall, _ = common.interleaved_times(calls, args.repeats)
    rows = []
    for side in SIDES:
        row = dict(image_size=side)
        for kind in ("unguided", "guided"):
            name = f"{kind}_{side}"
            row[f"{kind}_ms_per_image"] = round(1000 * common.median(wall[name]) / args.batch_size, 4)
            row[f"{kind}_vs_8"] = round(common.median(common.round_ratios(wall, name, f"{kind}_8")), 3)
        rows.append(row)
        print(row)
    common.write_csv(args.out / "mnist_resolution.csv", rows)


if __name__ == "__main__":
    main()
