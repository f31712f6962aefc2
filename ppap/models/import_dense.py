"""Public dense models with weights from local files, as ppap dense guides: torchvision's segmentation
models (DeepLabV3, FCN, LR-ASPP) and transformers' DPT depth estimator (MiDaS v3 weights).

    python -m ppap.models.import_dense --family torchvision_segmentation --arch deeplabv3_resnet50 \
        --weights deeplabv3_resnet50_coco-cd0a2569.pth --num-outputs 21 --input-size 256 \
        --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --out seg.pt
    python -m ppap.models.import_dense --family dpt --weights dpt-hybrid-midas/ --input-size 384 \
        --mean 0.5 0.5 0.5 --std 0.5 0.5 0.5 --out depth.pt

Presets (the published models' own preprocessing; nothing here downloads them):

- DeepLabV3-ResNet50 COCO with VOC labels (torchvision's ``deeplabv3_resnet50_coco-cd0a2569.pth``):
  21 classes (background + the 20 VOC classes), ImageNet mean/std. torchvision's transforms resize to
  520; the network is fully convolutional, so ``--input-size`` is a choice: at GLIDE's 64x64 with no
  resize (``--input-size`` left out) its output stride of 8 leaves an 8x8 map of features trained on
  far larger objects, so 256 (or 520, four times the cost) is the sensible range. The guide's map is
  resized back to x's resolution either way. The other torchvision models (``deeplabv3_resnet101``,
  ``deeplabv3_mobilenet_v3_large``, ``fcn_resnet50``, ``lraspp_mobilenet_v3_large``, ...) import alike.
- DPT-Large / DPT-Hybrid MiDaS (a transformers directory: ``config.json`` and ``model.safetensors`` or
  ``pytorch_model.bin``): input 384, mean = std = 0.5. The map is MiDaS's *inverse relative depth*
  (disparity up to an unknown scale and shift: larger is nearer), clipped at 0 by the head's ReLU;
  a depth energy must compare it scale- and shift-invariantly. The hybrid (BiT) embedding accepts
  only its configured image size, so ``--input-size`` must be that size (384) there.

Auxiliary heads: torchvision's DeepLabV3 and FCN checkpoints carry an ``aux_classifier.*`` head, a
training-time loss on layer-3 features whose output inference discards. It is dropped explicitly (the
guide is built with ``aux_loss=False``, the dropped keys are listed in the guide's metadata), so a
guidance step does not pay for it; every other key is loaded strictly, and a missing or unexpected
key fails naming the file and the keys.

Why DPT through transformers and not timm-based MiDaS: the original MiDaS code is not a package
(torch.hub fetches its code at run time, which cannot happen here), and its DPT head would have to be
re-expressed and tested as the ADM converter is. transformers' ``DPTForDepthEstimation`` is the same
architecture, and the Intel DPT directories are conversions of the MiDaS v3 weights. A MiDaS ``.pt``
file (timm key names) is not read here: use the converted directory.

Expected user errors (a missing file, an unknown architecture, mismatched flags or keys) print one
line and exit with code 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ppap.models.checkpoints import CheckpointError, load_state_dict_strict
from ppap.models.cli import OneLineParser, positive_int, user_errors
from ppap.models.dense import build_dense_guide, dense_spec, save_dense_guide
from ppap.models.dense_builders import dpt_config, torchvision_segmentation_archs, unknown_name
from ppap.models.import_guide import check_normalisation, read_weights

FAMILY_TASKS = {"torchvision_segmentation": "segmentation", "dpt": "regression"}
AUX_PREFIX = "aux_classifier."
DPT_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DPT_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


# ---------------------------------------------------------------------------------------------------
# builders (called by ppap.models.dense.BUILDERS through build_dense_guide, RNG already forked)


# ---------------------------------------------------------------------------------------------------
# reading local files


def read_dpt_directory(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor], str]:
    """``(config, state_dict, weights_source)`` from a transformers model directory: ``config.json``
    and one weights file (or a sharded index). ``from_pretrained`` is not used: it fills weights the
    files lack with random ones after a warning, where a guide must fail."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"DPT model directory not found: {directory} (a folder with config.json and "
                              f"{' or '.join(DPT_WEIGHT_FILES)})")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {config_path}: {err}") from err
    for name in DPT_WEIGHT_FILES:
        if (directory / name).is_file():
            return config, read_weights(directory / name), str(directory / name)
    for name in DPT_INDEX_FILES:
        index = directory / name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, json.JSONDecodeError, KeyError, AttributeError) as err:
                raise CheckpointError(f"cannot read the shard index {index}: {err}") from err
            state = {}
            for shard in shards:
                state.update(read_weights(directory / shard))
            return config, state, str(index)
    raise CheckpointError(f"{directory} has no {' or '.join(DPT_WEIGHT_FILES + DPT_INDEX_FILES)}")


def check_classifier_shapes(network: nn.Module, state: dict[str, torch.Tensor], source, num_outputs: int) -> None:
    """One-line :class:`CheckpointError` for tensors whose shapes differ from the built model's, with the
    --num-outputs that fits the file when the classifier is the cause."""
    expected = network.state_dict()
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
           if k in state and state[k].shape != v.shape]
    if not bad:
        return
    hints = [f"the file's classifier has {found[0]} outputs: pass --num-outputs {found[0]}"
             for key, found, wanted in bad
             if key.startswith("model.classifier.") and wanted[0] == num_outputs and found[0] != wanted[0]]
    details = "; ".join(f"{k}: file {f}, model {w}" for k, f, w in bad[:3])
    hint = "; ".join(dict.fromkeys(hints)) or "check --arch"
    raise CheckpointError(f"{source}: tensor shapes differ from the model built with --num-outputs {num_outputs} "
                          f"({len(bad)} tensors; {details}); {hint}")


# ---------------------------------------------------------------------------------------------------
# import

def import_dense(family: str, weights: str | Path, out: str | Path, *, arch: str | None = None,
                 task: str | None = None, num_outputs: int | None = None, input_size: int | None = None,
                 mean=(), std=()) -> dict:
    """Build the family's network from local weights, load them strictly, write a dense-guide
    checkpoint to ``out``; returns its spec. ``task`` and ``num_outputs`` default from the family
    (segmentation needs ``num_outputs``; a depth map has one output)."""
    if family not in FAMILY_TASKS:
        raise ValueError(unknown_name("dense family to import", family, sorted(FAMILY_TASKS)))
    task = task or FAMILY_TASKS[family]
    if task != FAMILY_TASKS[family]:
        raise ValueError(f"--family {family} imports a {FAMILY_TASKS[family]} model, not --task {task}")
    check_normalisation(3, mean, std)
    if family == "torchvision_segmentation":
        if not arch:
            raise ValueError("--arch is required for --family torchvision_segmentation "
                             f"(one of {', '.join(torchvision_segmentation_archs())})")
        if num_outputs is None:
            raise ValueError("--num-outputs is required for a segmentation model (21 for the VOC-label checkpoints)")
        if arch not in torchvision_segmentation_archs():
            raise ValueError(unknown_name("torchvision segmentation architecture", arch, torchvision_segmentation_archs()))
        state = read_weights(weights)
        dropped = sorted(k for k in state if k.startswith(AUX_PREFIX))
        state = {f"model.{k}": v for k, v in state.items() if not k.startswith(AUX_PREFIX)}
        spec = dense_spec(family, task, num_outputs, 3, input_size, mean, std, arch=arch, aux_loss=False)
        source = str(weights)
    else:
        if arch:
            raise ValueError("--arch is not used with --family dpt: the directory's config.json is the architecture")
        config, state, source = read_dpt_directory(weights)
        dpt = dpt_config(config)
        if dpt.is_hybrid:
            size = dpt.image_size if isinstance(dpt.image_size, int) else dpt.image_size[0]
            if input_size != size:
                raise ValueError(f"a hybrid DPT takes only its configured image size: pass --input-size {size}")
        state = {f"model.{k}": v for k, v in state.items()}
        dropped = []
        spec = dense_spec(family, task, 1 if num_outputs is None else num_outputs, 3, input_size, mean, std,
                          config=config)
    guide = build_dense_guide(spec)
    if set(state) == set(guide.network.state_dict()):   # otherwise the key check below names the keys
        check_classifier_shapes(guide.network, state, source, spec["num_outputs"])
    load_state_dict_strict(guide.network, state, source)
    save_dense_guide(out, guide, spec, source=str(weights), dropped_keys=dropped)
    return spec


def main(argv=None) -> None:
    parser = OneLineParser(prog="python -m ppap.models.import_dense", description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", required=True, choices=sorted(FAMILY_TASKS))
    parser.add_argument("--arch", default=None,
                        help="torchvision segmentation model name, e.g. deeplabv3_resnet50 (not for dpt)")
    parser.add_argument("--weights", required=True,
                        help="torchvision: a local .pth/.pt/.safetensors state dict; dpt: a local model directory")
    parser.add_argument("--task", choices=sorted(set(FAMILY_TASKS.values())), default=None,
                        help="default: the family's (segmentation for torchvision, regression for dpt)")
    parser.add_argument("--num-outputs", type=positive_int, default=None,
                        help="classes of a segmentation model (21 for VOC labels); 1 for depth (the default)")
    parser.add_argument("--input-size", type=positive_int, default=None,
                        help="side the network runs at (default: x's own resolution)")
    parser.add_argument("--mean", type=float, nargs=3, required=True, help="per RGB channel, on [0, 1]")
    parser.add_argument("--std", type=float, nargs=3, required=True, help="per RGB channel")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with user_errors(parser.prog):
        import_dense(args.family, args.weights, args.out, arch=args.arch, task=args.task,
                     num_outputs=args.num_outputs, input_size=args.input_size, mean=args.mean, std=args.std)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
