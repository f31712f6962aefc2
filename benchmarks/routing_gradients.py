"""Why does the original's router guide better? The guidance gradient at boundary timesteps.

    python benchmarks/routing_gradients.py --run RUN_DIR [--sets datafree_lora4_n5 labeled_full_n5]

For each trained guide set of a finished run, noises the validation digits to each boundary
timestep t (200, 400, ... for N = 5; and one step either side, where both routers agree) and
compares the expert that owns t (``routing: owner``) with the expert below it (the original's
``lower``): accuracy of the guide on x_t, mean log p(y | x_t) of the true class, and the mean L2
norm of grad_x log p(y | x_t), the term that classifier guidance scales. Writes
``RUN_DIR/results/diagnostics/routing_gradients.csv`` (``python -m ppap.tools.publish`` copies it to the
reference). Uses the validation split only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ppap.experts.sets import load_expert_set
from ppap.io import atomic_path, read_json
from ppap.schedules import load_alphas_cumprod
from ppap.study.public_models import locate


def probe(run: Path, guide_set: str, seed: int) -> list[dict]:
    results = run / "results"
    models = read_json(results / "table1.preset.json")["models"]  # shipped or trained: what Table 1 used
    abar = load_alphas_cumprod(locate(models["scheduler"]["path"], run)).float()
    digits = np.load(results / "data" / "digits.npz")
    x0 = torch.as_tensor(digits["val_images"]).float().permute(0, 3, 1, 2) / 127.5 - 1  # uint8 NHWC -> [-1, 1]
    labels = torch.as_tensor(digits["val_labels"]).long()
    manifest = read_json(results / "models" / "guides" / guide_set / "manifest.json")
    experts = [str(run / path) for path in manifest["experts"]]
    routers = {routing: load_expert_set(guide_set, manifest["rank"], locate(models["guide"]["path"], run), experts,
                                        len(abar), manifest["ranges"], routing=routing).eval()
               for routing in ("owner", "lower")}
    rows = []
    for start, _ in manifest["ranges"][1:]:
        for t in (start - 1, start, start + 1):
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + t))
            x_t = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * noise
            for routing, router in routers.items():
                x = x_t.clone().requires_grad_(True)
                log_probs = torch.log_softmax(router(x, torch.full((len(x),), t, dtype=torch.long)), -1)
                chosen = log_probs[torch.arange(len(labels)), labels]
                grad, = torch.autograd.grad(chosen.sum(), x)
                rows.append(dict(guide=guide_set, t=t, boundary=t == start, routing=routing,
                                 accuracy=float((log_probs.argmax(-1) == labels).float().mean()),
                                 log_prob=float(chosen.detach().mean()), grad_norm=float(grad.flatten(1).norm(dim=1).mean())))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--sets", nargs="+", default=["datafree_lora4_n5", "labeled_full_n5"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="CSV to write (default RUN_DIR/results/diagnostics/routing_gradients.csv)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = pd.DataFrame([row for guide_set in args.sets for row in probe(args.run, guide_set, args.seed)])
    wide = table.pivot_table(index=["guide", "t", "boundary"], columns="routing",
                             values=["accuracy", "grad_norm"]).reset_index()
    wide.columns = ["_".join(c for c in column if c) for column in wide.columns]
    wide["grad_ratio_lower_to_owner"] = wide["grad_norm_lower"] / wide["grad_norm_owner"]
    print(wide.round(3).to_string(index=False))
    out = args.out or args.run / "results" / "diagnostics" / "routing_gradients.csv"
    with atomic_path(out) as tmp:
        wide.round(4).to_csv(tmp, index=False)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
