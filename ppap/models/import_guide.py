"""Wrap a timm classifier with weights from a local file into a ppap guide checkpoint.

    python -m ppap.models.import_guide --arch resnet50 --weights resnet50.pth --num-classes 1000 \
        --in-chans 3 --input-size 224 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --out guide.pt

Then set ``guide.pretrained: guide.pt`` in the config. ``--mean`` and ``--std`` give one value per
input channel (a 1-channel classifier: ``--in-chans 1 --mean 0.5 --std 0.5``). The weights are
loaded with ``weights_only=True`` and strict keys: a file for another architecture fails, naming
the keys, and a file whose tensors have other shapes names them and the flag that fits the file.
Expected user errors (a missing file, an unknown architecture, mismatched flags) print one line
and exit with code 2.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ppap.models.checkpoints import CheckpointError, load_state_dict_strict
from ppap.models.classifiers import build_timm_guide, guide_spec, save_guide
from ppap.models.cli import OneLineParser, positive_int, user_errors


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth/.pt (possibly nested under 'state_dict' or 'model') or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"guide weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
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


def check_normalisation(in_chans: int, mean, std) -> None:
    """One mean and one positive std per input channel (ValueError naming the flags otherwise)."""
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"--mean has {len(mean)} values and --std {len(std)} for --in-chans {in_chans}: "
                         "give one of each per input channel")
    if any(s <= 0 for s in std):
        raise ValueError(f"--std must be positive, got {list(std)}")


def check_arch(arch: str) -> None:
    """ValueError naming the closest timm names if `arch` is not a timm model."""
    import difflib

    import timm

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        raise ValueError(f"unknown timm architecture {arch!r}" + (f" (did you mean {', '.join(close)}?)" if close else
                                                                  " (see timm.list_models())"))


def check_shapes(backbone: torch.nn.Module, state: dict[str, torch.Tensor], source, in_chans: int,
                 num_classes: int) -> None:
    """One-line :class:`CheckpointError` for tensors whose shapes differ from the built model's,
    with the --in-chans / --num-classes value that fits the file when its stem or head is the cause."""
    expected = backbone.state_dict()
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
           if k in state and state[k].shape != v.shape]
    if not bad:
        return
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    first_conv, classifier = cfg.get("first_conv"), cfg.get("classifier")
    first_conv = first_conv[0] if isinstance(first_conv, (list, tuple)) else first_conv
    hints = []
    for key, found, wanted in bad:
        if first_conv and key == f"{first_conv}.weight" and len(found) > 1 and found[1] != wanted[1]:
            hints.append(f"the file's first layer takes {found[1]} input channels: pass --in-chans {found[1]}")
        if classifier and key.startswith(f"{classifier}.") and found[0] != wanted[0]:
            hints.append(f"the file's classifier has {found[0]} outputs: pass --num-classes {found[0]}")
    details = "; ".join(f"{k}: file {f}, model {w}" for k, f, w in bad[:3])
    hint = "; ".join(dict.fromkeys(hints)) or "check --arch"
    raise CheckpointError(f"{source}: tensor shapes differ from the model built with --in-chans {in_chans} "
                          f"--num-classes {num_classes} ({len(bad)} tensors; {details}); {hint}")


def import_timm_guide(arch: str, weights: str | Path, num_classes: int, in_chans: int, input_size: int | None,
                      mean, std, out: str | Path, model_kwargs: dict | None = None) -> None:
    check_normalisation(in_chans, mean, std)
    check_arch(arch)
    state = read_weights(weights)
    spec = guide_spec(arch, num_classes, in_chans, input_size, mean, std, model_kwargs)
    guide = build_timm_guide(**spec)
    if set(state) == set(guide.backbone.state_dict()):   # otherwise the key check below names the keys
        check_shapes(guide.backbone, state, weights, in_chans, num_classes)
    load_state_dict_strict(guide.backbone, state, weights)
    save_guide(out, guide, spec, source=str(weights))


def main(argv=None) -> None:
    parser = OneLineParser(prog="python -m ppap.models.import_guide", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="timm model name, e.g. resnet50 or deit_small_patch16_224")
    parser.add_argument("--weights", required=True, help="local .pth/.pt/.safetensors state dict")
    parser.add_argument("--num-classes", type=positive_int, required=True)
    parser.add_argument("--in-chans", type=positive_int, default=3,
                        help="input channels of the classifier (default 3; 1 for grey-scale guides)")
    parser.add_argument("--input-size", type=positive_int, default=None, help="side the classifier expects")
    parser.add_argument("--mean", type=float, nargs="+", required=True, help="one per input channel, on [0, 1]")
    parser.add_argument("--std", type=float, nargs="+", required=True, help="one per input channel")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with user_errors(parser.prog):
        import_timm_guide(args.arch, args.weights, args.num_classes, args.in_chans, args.input_size, args.mean,
                          args.std, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
