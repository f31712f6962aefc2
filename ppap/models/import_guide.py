"""Wrap a timm classifier with weights from a local file into a ppap guide checkpoint.

    python -m ppap.models.import_guide --arch resnet50 --weights resnet50.pth --num-classes 1000 \
        --input-size 224 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --out guide.pt

Then set ``guide.pretrained: guide.pt`` in the config. The weights are loaded with
``weights_only=True`` and strict keys: a file for another architecture fails, naming the keys.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ppap.models.checkpoints import CheckpointError, load_state_dict_strict
from ppap.models.classifiers import build_timm_guide, guide_spec, save_guide


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt (possibly nested under 'state_dict' or 'model') or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"guide weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read guide weights {path}: {type(err).__name__}: {err}") from err
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return payload


def import_timm_guide(arch: str, weights: str | Path, num_classes: int, in_chans: int, input_size: int | None,
                      mean, std, out: str | Path, model_kwargs: dict | None = None) -> None:
    spec = guide_spec(arch, num_classes, in_chans, input_size, mean, std, model_kwargs)
    guide = build_timm_guide(**spec)
    load_state_dict_strict(guide.backbone, read_weights(weights), weights)
    save_guide(out, guide, spec, source=str(weights))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="timm model name, e.g. resnet50 or deit_small_patch16_224")
    parser.add_argument("--weights", required=True, help="local .pth/.pt/.safetensors state dict")
    parser.add_argument("--num-classes", type=int, required=True)
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=None, help="side the classifier expects")
    parser.add_argument("--mean", type=float, nargs="+", required=True)
    parser.add_argument("--std", type=float, nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import_timm_guide(args.arch, args.weights, args.num_classes, args.in_chans, args.input_size, args.mean,
                      args.std, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
