"""Which ViT shape and training budget give the ViT guide the ResNet guide's clean accuracy, on the
*validation* split (the test split only scores): config/vit.yaml's choice.

    python benchmarks/vit_guide_probe.py --data digits [--runs resnet@500/2e-3,vit_d4_w96@1500/1e-3]

Each run is ``<shape>@<steps>/<lr>``: the guide built as rule train_guide builds it (seed 20, batch
128, AdamW with warm-up and linear decay, 1-pixel shifts) and trained on the clean training images.
Writes benchmarks/results/vit_guide_probe.csv (appending this data set's rows; times are under
whatever load the machine had, one torch thread).
"""

from __future__ import annotations

import csv
import time

import torch

import _common as common
from ppap import data, pretrain
from ppap.models import classifiers

SHAPES = {
    "resnet": ("resnet10t", dict(channels=[32, 64, 128, 256], stem_width=16)),
    "vit_d4_w96": ("vit_tiny_patch16_224", dict(img_size=16, patch_size=4, embed_dim=96, depth=4, num_heads=3,
                                                mlp_ratio=2)),
    "vit_d6_w128": ("vit_tiny_patch16_224", dict(img_size=16, patch_size=4, embed_dim=128, depth=6, num_heads=4,
                                                 mlp_ratio=2)),
}
COLUMNS = ("data", "guide", "arch", "model_kwargs", "parameters", "steps", "lr", "val_accuracy", "train_s")


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--data", choices=("digits", "mnist"), default="digits")
    p.add_argument("--runs", default="resnet@500/2e-3,vit_d4_w96@500/2e-3,vit_d4_w96@1500/1e-3")
    args = p.parse_args()
    common.set_threads(args.threads)
    print(common.machine(args.threads))
    split = data.load_digits_split(8, 0.2, 0, 0.2) if args.data == "digits" else data.load_mnist_split(16, 0.2, 0, 0.2)
    x, y = data.to_float(split["train_images"]), torch.as_tensor(split["train_labels"])
    x_val, y_val = data.to_float(split["val_images"]), torch.as_tensor(split["val_labels"])
    out = args.out / "vit_guide_probe.csv"
    rows = list(csv.DictReader(out.open())) if out.exists() else []
    for run in args.runs.split(","):
        shape, budget = run.split("@")
        steps, lr = budget.split("/")
        arch, kwargs = SHAPES[shape]
        guide = classifiers.build_timm_guide(arch, 10, 1, 16, [0.5], [0.5], kwargs, seed=20)
        start = time.perf_counter()
        pretrain.train_classifier(guide, x, y, int(steps), 128, float(lr), torch.Generator().manual_seed(20),
                                  show_progress=False)
        row = dict(data=args.data, guide=shape, arch=arch,
                   model_kwargs=" ".join(f"{k}={v}".replace(", ", " ") for k, v in kwargs.items()),
                   parameters=sum(p.numel() for p in guide.parameters()), steps=steps, lr=lr,
                   val_accuracy=f"{pretrain.clean_accuracy(guide, x_val, y_val):.4f}",
                   train_s=f"{time.perf_counter() - start:.0f}")
        print(row, flush=True)
        rows.append(row)
        common.write_csv(out, rows, COLUMNS)  # after each run: a long probe keeps what it measured


if __name__ == "__main__":
    main()
