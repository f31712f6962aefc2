"""Checks the Snakefile runs before any job, beyond :func:`ppap.study.config.check_config`.

* :func:`check_overlays`: an empty mapping in an overlay (``--configfile`` or ``--config``) whose
  key is a non-empty mapping after merging, e.g. ``ablations: {}``. Snakemake merges config files
  key by key, so such an entry changes nothing; the error names the key and what to do instead.
* :func:`select_study`: ``study: {ablations: [names]}`` keeps only the named ablations (a list
  replaces, it is not merged; an empty list runs none).
* :func:`check_files`: every file the config names (``guide.pretrained``, ``diffusion.pretrained``,
  ``evaluation.reference``, ``evaluation.inception_weights``, ``evaluation.accuracy_classifier``) is
  opened and checked, and the networks' class counts, channels and sizes are compared with the
  data, so a wrong or damaged file fails in one line naming its key before any job runs.
* :func:`check_guide_architecture`: a vision transformer guide's patch size divides its input side
  and its ``img_size`` is that side; :func:`check_lora_targets`: ``experts.lora`` names at least
  one layer of the guide the LoRA experts adapt (read from its weights file's header, or built on
  the meta device before its rule has trained it).

Light at import (no torch): the Snakefile imports this module for every preset, and torch is
imported only when one of those keys is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ppap.layers import select_layers
from ppap.study import grammar
from ppap.study.config import ConfigError, all_runs, dense_runs, key_path, tuning_runs
from ppap.vocab import STROKE_SOURCES

# ------------------------------------------------------------------------ overlays and selection ----

# What to do instead of emptying a mapping, for the keys where the study offers a way.
INSTEAD = {
    ("methods",): "choose Table 1's rows with table1: [names] (a list replaces the preset's)",
    ("ablations",): "run some with study: {ablations: [names]}, none with study: {ablations: []} "
                    "(a list replaces, it is not merged)",
}


def _empty_mappings(node, path=()):
    """Key paths of the empty mappings inside `node` (not `node` itself)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if isinstance(value, Mapping) and not value:
                yield (*path, key)
            else:
                yield from _empty_mappings(value, (*path, key))


def _lookup(config, path):
    for key in path:
        if not isinstance(config, Mapping) or key not in config:
            return None
        config = config[key]
    return config


def check_overlays(overlays: list[tuple[str, Mapping]], config: Mapping) -> None:
    """Raise :class:`ConfigError` for an empty mapping in an overlay that the merge ignored.

    ``overlays``: (source, content) of each ``--configfile`` and of ``--config``; ``config``: the
    merged config. An empty mapping cannot remove the entries below it (Snakemake merges nested
    keys), so where the merged value is a non-empty mapping the overlay asked for something it
    did not get, e.g. ``methods: {}`` still runs every method.
    """
    for source, content in overlays:
        for path in _empty_mappings(content):
            merged = _lookup(config, path)
            if isinstance(merged, Mapping) and merged:
                instead = INSTEAD.get(path, "set each entry you want changed (an empty mapping cannot remove keys)")
                raise ConfigError(f"{key_path(list(path))}: the empty mapping in {source} changes nothing "
                                  f"(Snakemake merges config files key by key, so the {len(merged)} entries of "
                                  f"the preset stay); {instead}")


def overlays_of(workflow) -> list[tuple[str, Mapping]]:
    """(source, content) of the overlays Snakemake merged over the Snakefile's config file."""
    from snakemake.common.configfile import load_configfile

    settings = workflow.config_settings
    overlays = [(os.fspath(path), load_configfile(path) or {}) for path in settings.configfiles]
    if settings.config:
        overlays.append(("--config", settings.config))
    return overlays


def select_study(config: dict) -> None:
    """Apply ``study.ablations``: keep only the named ablations, in the config's order.

    ``null`` (the default) keeps every ablation; ``[]`` keeps none. A name that is not a key of
    ``ablations`` is an error naming ``study.ablations``.
    """
    selected = (config.get("study") or {}).get("ablations")
    if selected is None:
        return
    known = config.get("ablations") or {}
    unknown = [name for name in selected if name not in known]
    if unknown:
        raise ConfigError(f"study.ablations: {unknown} are not keys of ablations (known: {sorted(known)})")
    config["ablations"] = {name: entry for name, entry in known.items() if name in selected}


def is_main_process(workflow) -> bool:
    """True in the Snakemake process the user started, False in a job's own Snakemake (a cluster job
    parses the Snakefile again: the files were checked once, before it was submitted)."""
    from snakemake_interface_executor_plugins.settings import ExecMode

    return workflow.exec_mode == ExecMode.DEFAULT


# ------------------------------------------------------------------------------- named files ----

FILE_KEYS = ("guide.pretrained", "diffusion.pretrained", "evaluation.reference", "evaluation.inception_weights",
             "evaluation.accuracy_classifier")


def _get(config: Mapping, dotted: str):
    return _lookup(config, dotted.split("."))


@dataclass(frozen=True)
class DataShape:
    """What the images of the study are: the data set's classes, channels and side."""

    name: str
    classes: int
    channels: int
    image_size: int


def data_shape(config: Mapping) -> DataShape:
    """digits, mnist: 10 classes, 1 channel; folder: one class per subfolder of data.train_dir, RGB."""
    data = config["data"]
    if data["source"] in STROKE_SOURCES:
        return DataShape(data["source"], 10, 1, data["image_size"])
    root = Path(data["train_dir"])
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []
    if not classes:
        raise ConfigError(f"data.train_dir: {root} has no class folders (expected an ImageFolder tree "
                          "<class>/<image>)")
    return DataShape(f"folder {root}", len(classes), 3, data["image_size"])


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def check_files(config: Mapping) -> dict[str, dict]:
    """Open and check every file the config names; return what each holds (by key).

    Raises :class:`ConfigError` with one line naming the key and the file. Nothing is imported
    (torch, timm, diffusers) when no such key is set.
    """
    named = {key: _get(config, key) for key in FILE_KEYS}
    named = {key: path for key, path in named.items() if path}
    dense = config.get("dense") or {}
    for task, path in (dense.get("pretrained") or {}).items():
        named[f"dense.pretrained.{task}"] = path
    for task, path in ((dense.get("evaluator") or {}).get("pretrained") or {}).items():
        named[f"dense.evaluator.pretrained.{task}"] = path
    if not named:
        return {}
    data = data_shape(config)
    found: dict[str, dict] = {}
    if "guide.pretrained" in named:
        found["guide.pretrained"] = check_guide_file("guide.pretrained", named["guide.pretrained"], data)
    if "evaluation.accuracy_classifier" in named:  # it scores the guide's target labels: the data's classes too
        found["evaluation.accuracy_classifier"] = check_guide_file(
            "evaluation.accuracy_classifier", named["evaluation.accuracy_classifier"], data)
    if "diffusion.pretrained" in named:
        found["diffusion.pretrained"] = check_diffusion_dir("diffusion.pretrained", named["diffusion.pretrained"],
                                                            data, config["diffusion"]["num_train_timesteps"])
    if "evaluation.reference" in named:
        found["evaluation.reference"] = check_reference("evaluation.reference", named["evaluation.reference"], data)
    if "evaluation.inception_weights" in named:
        found["evaluation.inception_weights"] = check_inception_file("evaluation.inception_weights",
                                                                     named["evaluation.inception_weights"])
    for key, path in named.items():
        if key.startswith("dense."):
            found[key] = check_dense_guide_file(key, path, key.rsplit(".", 1)[1], data)
    return found


def check_dense_guide_file(key: str, path: str, task: str, data: DataShape) -> dict:
    """A ppap dense-guide checkpoint (python -m ppap.models.import_dense) that loads strictly into the
    network it records, of the task's output kind, taking the data's channels; returns its spec."""
    from ppap.dense import TASK_KINDS
    from ppap.models import dense as dense_models
    from ppap.models.checkpoints import CheckpointError

    if not os.path.isfile(path):
        raise ConfigError(f"{key}: no such file: {path}")
    try:
        spec = dense_models.read_dense_spec(path)
        dense_models.load_dense_guide(path)
    except CheckpointError as err:
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # no spec, a family that cannot be built, ...
        raise ConfigError(f"{key}: cannot build the dense network recorded in {path}: {_first_line(err)}") from None
    if spec["task"] != TASK_KINDS.get(task):
        raise ConfigError(f"{key}: {path} is a {spec['task']} network; task {task} needs {TASK_KINDS.get(task)}")
    if spec["in_chans"] != data.channels:
        raise ConfigError(f"{key}: {path} takes {_plural(spec['in_chans'], 'channel')}, the data ({data.name}) has "
                          f"{_plural(data.channels, 'channel')}")
    return spec


def check_guide_file(key: str, path: str, data: DataShape) -> dict:
    """A ppap guide checkpoint that loads strictly into the architecture it records, whose classes and
    input channels fit the data; returns its spec."""
    from ppap.models import classifiers
    from ppap.models.checkpoints import CheckpointError, load_checkpoint, load_state_dict_strict

    if not os.path.isfile(path):
        raise ConfigError(f"{key}: no such file: {path}")
    try:
        payload = load_checkpoint(path, classifiers.GUIDE_KIND)
        spec = dict(payload["spec"])
        guide = classifiers.build_timm_guide(**spec)
        load_state_dict_strict(guide, payload["state_dict"], path)
    except CheckpointError as err:
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # no spec, a spec timm cannot build, ...
        raise ConfigError(f"{key}: cannot build the guide recorded in {path}: {_first_line(err)}") from None
    if spec["num_classes"] != data.classes:
        raise ConfigError(f"{key}: {path} is a {spec['num_classes']}-class {spec['arch']}, the data ({data.name}) "
                          f"has {data.classes} classes")
    if spec["in_chans"] != data.channels:
        raise ConfigError(f"{key}: {path} takes {_plural(spec['in_chans'], 'channel')}, the data ({data.name}) has "
                          f"{_plural(data.channels, 'channel')}")
    return spec


VIT_NAME = re.compile(r"patch(\d+)_(\d+)")  # timm's ViT / DeiT names: <family>_patch<P>_<img_size>


def check_guide_architecture(config: Mapping) -> None:
    """A transformer guide built from the config (a ``patch_size`` in ``guide.model_kwargs`` or the
    arch's name) takes images of the side the guide resizes to, cut into whole patches; torch-free."""
    guide = config["guide"]
    if guide.get("pretrained"):
        return  # the file's own spec (check_guide_file)
    kwargs = {k: v for k, v in (guide.get("model_kwargs") or {}).items() if v is not None}  # null: removed
    named = VIT_NAME.search(guide["arch"])
    patch = kwargs.get("patch_size", int(named.group(1)) if named else None)
    if patch is None:
        return
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    side = guide["input_size"] or config["data"]["image_size"]
    side_key = "guide.input_size" if guide["input_size"] else "data.image_size"
    img_size = kwargs.get("img_size", int(named.group(2)) if named else None)
    img_size = img_size[0] if isinstance(img_size, (list, tuple)) else img_size
    if img_size is not None and img_size != side:
        key = "guide.model_kwargs.img_size" if "img_size" in kwargs else "guide.arch"
        raise ConfigError(f"{key}: {guide['arch']} is built for {img_size}x{img_size} images, the guide sees "
                          f"{side}x{side} ({side_key}); set guide.model_kwargs.img_size: {side}")
    if side % patch:
        key = "guide.model_kwargs.patch_size" if "patch_size" in kwargs else "guide.arch"
        raise ConfigError(f"{key}: patch size {patch} does not divide the guide's input side {side} ({side_key})")


def _weights_layers(path: Path) -> list[tuple[str, str]]:
    """(module name, conv | linear | other) from a .safetensors state dict's header: a 4-D ``weight``
    is a convolution's, a 2-D one a linear layer's (the guides here have no embedding tables)."""
    kinds = {4: "conv", 2: "linear"}
    return [(name[: -len(".weight")], kinds.get(len(shape), "other"))
            for name, shape in _safetensors_shapes(path).items() if name.endswith(".weight")]


def guide_spec_of(config: Mapping) -> dict:
    """The off-the-shelf guide's spec as rule train_guide builds it (``classifiers.guide_spec``) for
    this config's data; imports torch."""
    from ppap.models import classifiers

    shape, guide = data_shape(config), config["guide"]
    return classifiers.guide_spec(guide["arch"], shape.classes, shape.channels, guide["input_size"], guide["mean"],
                                  guide["std"], guide["model_kwargs"])


def _built_guide_layers(config: Mapping) -> list[tuple[str, str]]:
    """The layers of the guide train_guide will build, built on the meta device (no weights)."""
    import torch

    from ppap.experts.adapters import layer_kinds
    from ppap.models import classifiers

    guide = config["guide"]
    try:
        with torch.device("meta"):
            network = classifiers.build_timm_guide(**guide_spec_of(config))
    except Exception as err:  # an arch timm does not know, model_kwargs it does not take, ...
        raise ConfigError(f"guide.arch: timm cannot build {guide['arch']} with guide.model_kwargs "
                          f"{guide['model_kwargs']}: {_first_line(err)}") from None
    return layer_kinds(network)


def _lora_guides(config: Mapping) -> tuple[bool, list[str]]:
    """(whether the study trains LoRA experts on the classifier guide, the dense tasks it trains them on)."""
    def lora(guide: str) -> bool:
        return grammar.guide_kind(guide) == "experts" and grammar.parse_guide_set(guide).rank is not None

    classifier = any(lora(guide) for run in all_runs(config) + tuning_runs(config) for guide in run.guides)
    tasks = sorted({run.task for run in dense_runs(config) if lora(run.guide)}) if config.get("dense") else []
    return classifier, tasks


def check_lora_targets(config: Mapping, models) -> None:
    """``experts.lora`` (layer types, include, exclude) selects at least one layer of every guide
    that LoRA experts are trained on: the classifier guide (from its weights file, or built on the
    meta device when its rule has not trained it yet, which imports torch and timm) and each dense
    guide whose weights file exists. ``models``: the study's :class:`ModelFiles`."""
    classifier, tasks = _lora_guides(config)
    lora = config["experts"]["lora"]
    guides = [("guide", models.guide)] if classifier else []
    guides += [(f"dense guide ({task})", models.dense_guides[task]) for task in tasks]
    for what, model in guides:
        path = Path(model)
        if path.suffix == ".safetensors" and path.is_file():
            layers = _weights_layers(path)
        elif what == "guide" and not path.exists():
            layers = _built_guide_layers(config)
        else:
            continue  # a checkpoint file (check_files loads it) or a dense guide not trained yet
        try:
            select_layers(layers, lora["layer_types"], lora["include"], lora["exclude"])
        except ValueError as err:
            raise ConfigError(f"experts.lora.include: {err} in the {what} ({path}), so its LoRA experts would "
                              "adapt nothing") from None


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a .safetensors header; a file shorter than its header says is an error."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise ValueError(f"header of {length} bytes in a file of {size}")
        header = json.loads(f.read(length))
    end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    if 8 + length + end != size:
        raise ValueError(f"{size} bytes, the header describes {8 + length + end} (truncated or damaged)")
    return {name: list(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


def diffusion_info(directory: str | os.PathLike) -> dict:
    """What a diffusers model directory holds, from its JSON files alone (no weights are read):
    UNet class, channels, size, prediction type and the training schedule."""
    directory = Path(directory)
    if (directory / "glide").is_dir():      # GLIDE's base model (ppap.models.convert_glide)
        return _glide_info(directory)
    unet_config = json.loads((directory / "unet" / "config.json").read_text())
    scheduler_config = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    return dict(
        path=str(directory), unet_class=unet_config.get("_class_name"),
        in_channels=unet_config.get("in_channels"), out_channels=unet_config.get("out_channels"),
        sample_size=unet_config.get("sample_size"), block_out_channels=unet_config.get("block_out_channels"),
        scheduler_class=scheduler_config.get("_class_name"),
        num_train_timesteps=scheduler_config.get("num_train_timesteps"),
        beta_schedule=scheduler_config.get("beta_schedule"), beta_start=scheduler_config.get("beta_start"),
        beta_end=scheduler_config.get("beta_end"),
        prediction_type=scheduler_config.get("prediction_type", "epsilon"))


def _glide_info(directory: Path) -> dict:
    """:func:`diffusion_info` of a converted GLIDE directory (glide/ + scheduler/)."""
    record = json.loads((directory / "glide" / "config.json").read_text())
    arch = record["architecture"]
    scheduler_config = json.loads((directory / "scheduler" / "scheduler_config.json").read_text())
    mult = arch.get("channel_mult") or []
    return dict(
        path=str(directory), unet_class="GLIDE Text2ImUNet", caption=record.get("caption"),
        in_channels=arch.get("in_channels"), out_channels=arch.get("out_channels"), sample_size=arch.get("image_size"),
        block_out_channels=[int(m * arch.get("model_channels", 0)) for m in mult],
        scheduler_class=scheduler_config.get("_class_name"),
        num_train_timesteps=scheduler_config.get("num_train_timesteps"),
        beta_schedule=scheduler_config.get("beta_schedule"), beta_start=scheduler_config.get("beta_start"),
        beta_end=scheduler_config.get("beta_end"),
        prediction_type=scheduler_config.get("prediction_type", "epsilon"))


def check_diffusion_dir(key: str, path: str, data: DataShape, num_train_timesteps: int) -> dict:
    """A diffusers directory (unet/ + scheduler/) whose UNet weights match its config.json, whose
    schedule has the config's number of timesteps and whose images fit the data. A converted
    GLIDE directory (glide/ + scheduler/) is checked alike against glide/config.json."""
    directory = Path(path)
    glide = (directory / "glide").is_dir()
    model_sub = "glide" if glide else "unet"
    for sub, name in ((model_sub, "config.json"), ("scheduler", "scheduler_config.json")):
        if not (directory / sub / name).is_file():
            layout = ("a converted GLIDE directory with glide/ and scheduler/, as python -m ppap.models.convert_glide "
                      "writes") if glide else ("a diffusers directory with unet/ and scheduler/, as "
                                               "DDPMPipeline.save_pretrained writes")
            raise ConfigError(f"{key}: {directory} has no {sub}/{name} (expected {layout})")
    try:
        info = diffusion_info(directory)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{key}: cannot read the JSON configs of {directory}: {_first_line(err)}") from None
    if info["unet_class"] not in (None, "UNet2DModel", "GLIDE Text2ImUNet"):
        raise ConfigError(f"{key}: {directory / 'unet'} holds a {info['unet_class']}, expected an unconditional "
                          "UNet2DModel")
    if info["prediction_type"] not in ("epsilon", "v_prediction", "sample"):
        raise ConfigError(f"{key}: {directory / 'scheduler'} predicts {info['prediction_type']!r} "
                          "(supported: epsilon, v_prediction, sample)")
    if info["num_train_timesteps"] != num_train_timesteps:
        raise ConfigError(f"{key}: {directory / 'scheduler'} has {info['num_train_timesteps']} training timesteps, "
                          f"diffusion.num_train_timesteps says {num_train_timesteps}")
    if info["in_channels"] != data.channels or info["out_channels"] not in (data.channels, 2 * data.channels):
        raise ConfigError(f"{key}: {directory / model_sub} maps {info['in_channels']} to {info['out_channels']} "
                          f"channels, the data ({data.name}) has {_plural(data.channels, 'channel')}")
    size = info["sample_size"]
    if isinstance(size, (list, tuple)) and len(set(size)) == 1:
        size = info["sample_size"] = size[0]
    if size != data.image_size:
        raise ConfigError(f"{key}: {directory / model_sub} makes {info['sample_size']} px images, data.image_size is "
                          f"{data.image_size}")
    if glide:
        _check_glide_weights(key, directory / "glide")
    else:
        _check_unet_weights(key, directory / "unet")
    return info


def _check_glide_weights(key: str, glide_dir: Path) -> None:
    """Every tensor of the GLIDE network glide/config.json describes, with its shape, and nothing
    else (built on the meta device; the weights are not read), and a caption of text_ctx tokens."""
    from ppap.models import glide

    weights = glide_dir / glide.WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"{key}: {glide_dir} has no {glide.WEIGHTS_FILE}")
    try:
        shapes = _safetensors_shapes(weights)
    except Exception as err:
        raise ConfigError(f"{key}: cannot read {weights}: {_first_line(err)}") from None
    try:
        record = json.loads((glide_dir / glide.CONFIG_FILE).read_text())
        arch = glide.GlideArchitecture.from_json(record["architecture"])
        expected = glide.expected_shapes(arch)
        ctx = arch.text_ctx
        if len(record["tokens"]) != ctx or len(record["mask"]) != ctx:
            raise ValueError(f"the caption has {len(record['tokens'])} tokens, the model takes {ctx}")
    except Exception as err:
        raise ConfigError(f"{key}: {glide_dir / glide.CONFIG_FILE} does not describe a GLIDE model: "
                          f"{_first_line(err)}") from None
    problems = glide.state_dict_problems({name: tuple(shape) for name, shape in shapes.items()}, expected)
    if problems:
        raise ConfigError(f"{key}: {weights} does not match {glide_dir / glide.CONFIG_FILE} ({problems})")


def _check_unet_weights(key: str, unet_dir: Path) -> None:
    """Every tensor of the UNet its config.json describes, with its shape, and nothing else; the
    model is built on the meta device (no memory, no init) and the weights are not read."""
    import torch
    from diffusers import UNet2DModel

    weights = unet_dir / "diffusion_pytorch_model.safetensors"
    index = unet_dir / "diffusion_pytorch_model.safetensors.index.json"
    try:
        if weights.is_file():
            shapes = _safetensors_shapes(weights)
        elif index.is_file():  # a large model saved in shards
            weights = index
            shapes = {}
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                weights = unet_dir / shard
                shapes.update(_safetensors_shapes(weights))
            weights = index
        else:
            weights = unet_dir / "diffusion_pytorch_model.bin"
            if not weights.is_file():
                raise ConfigError(f"{key}: {unet_dir} has no diffusion_pytorch_model.safetensors (or .bin)")
            state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
            shapes = {name: list(tensor.shape) for name, tensor in state.items()}
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{key}: cannot read {weights}: {_first_line(err)}") from None
    try:
        with torch.device("meta"):
            unet = UNet2DModel.from_config(UNet2DModel.load_config(unet_dir))
    except Exception as err:
        raise ConfigError(f"{key}: {unet_dir / 'config.json'} does not describe a UNet2DModel: "
                          f"{_first_line(err)}") from None
    expected = {name: list(tensor.shape) for name, tensor in unet.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    mismatched = sorted(name for name in set(expected) & set(shapes) if expected[name] != shapes[name])
    if missing or unexpected or mismatched:
        details = "; ".join(f"{what} {len(names)}: {names[:3]}" for what, names in
                            (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched)) if names)
        raise ConfigError(f"{key}: {weights} does not match {unet_dir / 'config.json'} ({details})")


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def check_reference(key: str, path: str, data: DataShape) -> dict:
    """A folder of PNGs (every file's header and end marker) or an .npz whose arr_0 header says
    uint8 [N, size, size, channels]; the pixels are read by the evaluate jobs."""
    shape = (data.image_size, data.image_size, data.channels)
    target = Path(path)
    if target.is_dir():
        return _check_png_folder(key, target, shape)
    if target.suffix != ".npz":
        raise ConfigError(f"{key}: {path} is neither a folder of PNGs nor an .npz with arr_0")
    try:
        with zipfile.ZipFile(target) as archive, archive.open("arr_0.npy") as member:
            import numpy as np

            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            found_shape, _, dtype = read_header(member)
    except KeyError:
        raise ConfigError(f"{key}: {path} has no arr_0 (expected ADM's reference batch layout)") from None
    except Exception as err:
        raise ConfigError(f"{key}: cannot read {path}: {_first_line(err)}") from None
    if dtype != "uint8" or len(found_shape) != 4 or tuple(found_shape[1:]) != shape or found_shape[0] == 0:
        raise ConfigError(f"{key}: {path} holds {dtype} {list(found_shape)}, expected uint8 [N, {shape[0]}, "
                          f"{shape[1]}, {shape[2]}] with N > 0 (data.image_size, the data's channels)")
    return dict(path=path, images=int(found_shape[0]), shape=list(found_shape))


def _check_png_folder(key: str, folder: Path, shape: tuple[int, int, int]) -> dict:
    from PIL import Image

    mode = {1: "L", 3: "RGB"}[shape[2]]
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    if not files:
        raise ConfigError(f"{key}: {folder} holds no .png files")
    for file in files:
        try:
            with Image.open(file) as image:
                found = (image.format, image.mode, image.size)
            with open(file, "rb") as f:
                f.seek(max(0, file.stat().st_size - len(PNG_END)))
                complete = f.read() == PNG_END
        except Exception as err:
            raise ConfigError(f"{key}: cannot read {file}: {_first_line(err)}") from None
        if found[0] != "PNG":
            raise ConfigError(f"{key}: {file} is {found[0]}, not PNG")
        if found[1] != mode or found[2] != (shape[1], shape[0]):
            raise ConfigError(f"{key}: {file} is {found[2][0]}x{found[2][1]} {found[1]}, expected "
                              f"{shape[1]}x{shape[0]} {mode} (data.image_size, the data's channels)")
        if not complete:
            raise ConfigError(f"{key}: {file} is truncated (no PNG end marker)")
    return dict(path=str(folder), images=len(files), shape=[len(files), *shape])


def check_inception_file(key: str, path: str) -> dict:
    from ppap.metrics import check_inception_weights

    try:
        check_inception_weights(path)
    except ValueError as err:
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    return dict(path=path)


def preset_name(configfiles) -> str:
    """The preset a run uses, from its ``--configfile`` names: ``default`` (none), ``smoke``,
    ``imagenet256+imagenet256_deit``; default.yaml itself is not repeated."""
    stems = [Path(path).stem for path in configfiles]
    stems = [stem for i, stem in enumerate(stems) if stem != "default" and stem not in stems[:i]]
    return "+".join(stems) or "default"


@contextlib.contextmanager
def config_errors_in_one_line(workflow):
    """A :class:`ConfigError` raised inside is printed as one line (``ConfigError: <key>: <what>``)
    and Snakemake exits with status 1 before any job; ``--verbose`` keeps Snakemake's own report
    with its traceback."""
    try:
        yield
    except ConfigError as err:
        if workflow.output_settings.verbose:
            raise
        sys.stderr.write(f"ConfigError: {err}\n")
        sys.stderr.flush()
        raise SystemExit(1) from None


def check_snakemake_settings(workflow) -> None:
    """Command-line settings the suite cannot run with, named before any job: ``--cores 0`` on a
    local run would wait for a free core forever."""
    resources = workflow.resource_settings
    if resources.cores == 0 and not resources.nodes:
        raise ConfigError("--cores 0: a local run needs at least one core (--cores N, or --cores all)")


def _typed(value):
    """A value as YAML would read it: ``"2"`` -> 2, ``"1e-3"`` -> 0.001, ``"true"`` -> True; other
    strings stay strings."""
    if not isinstance(value, str):
        return value
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None, "~": None}.get(value.lower(), value)


def retype_command_line_config(config: dict, overrides: Mapping) -> None:
    """Snakemake reads a nested ``--config`` value (``sampling={guidance_scale: 2}``) as strings:
    give every nested leaf the type YAML would, in place, so ``--config`` can set numbers."""

    def walk(node, target, key):
        if isinstance(node, Mapping):
            for child, value in node.items():
                walk(value, target[key], child)
        elif isinstance(node, list):
            target[key] = [_typed(value) for value in node]
        else:
            target[key] = _typed(node)

    for key, value in overrides.items():
        if isinstance(value, (Mapping, list)):  # top-level scalars: Snakemake types them itself
            walk(value, config, key)
