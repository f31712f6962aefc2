"""Dense guides: per-pixel networks (semantic segmentation logits, or a regressed map such as depth)
seen from the diffusion model, and the dense evaluator.

A :class:`DenseGuide` speaks what every guide speaks, ``forward(x, t) -> outputs`` for x in [-1, 1]
at the diffusion model's resolution, and returns its map at that same resolution: ``[B, K, H, W]``
class logits (``task: segmentation``) or ``[B, 1, H, W]`` values (``task: regression``). The resize
to the network's own input size and its normalisation live here, so a public model (torchvision's
DeepLabV3, a MiDaS-style DPT; :mod:`ppap.models.import_dense`) plugs in unchanged.

Networks are built from a ``spec`` (plain data, stored in the checkpoint beside the weights):
``family`` says which builder: ``timm_unet`` (a timm encoder with a small U-Net decoder: the
embedded preset's off-the-shelf segmenter and regressor), ``plain_unet`` (a plain CNN U-Net: the
embedded evaluator, another architecture than every guide), or the families of imported models.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppap.models import dense_builders
from ppap.models.checkpoints import load_checkpoint, load_state_dict_strict, save_checkpoint
from ppap.models.classifiers import to_network_input

DENSE_GUIDE_KIND = "ppap-dense-guide"
TASKS = ("segmentation", "regression")


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderStage(nn.Module):
    """Upsample to the skip's size, concatenate it, two 3x3 conv-BN-ReLU (named conv1/conv2, so the
    LoRA target pattern of the classifier path, ``conv[12]$``, adapts the decoder as well)."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin + skip, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if skip is not None:
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = torch.cat([x, skip], dim=1)
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class TimmUNet(nn.Module):
    """A timm encoder (``features_only``) and a U-Net decoder back to the encoder's first stage;
    the head's map has the first stage's resolution (stride 2 for a ResNet)."""

    def __init__(self, arch: str, in_chans: int, num_outputs: int, decoder_width: int = 32,
                 model_kwargs: dict | None = None):
        super().__init__()
        import timm

        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (model_kwargs or {}).items()}
        self.encoder = timm.create_model(arch, features_only=True, pretrained=False, in_chans=in_chans, **kwargs)
        channels = self.encoder.feature_info.channels()
        stages, width = [], channels[-1]
        for skip in reversed(channels[:-1]):
            stages.append(DecoderStage(width, skip, decoder_width))
            width = decoder_width
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(decoder_width, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features[-1]
        for stage, skip in zip(self.decoder, reversed(features[:-1])):
            y = stage(y, skip)
        return self.head(y)


class PlainUNet(nn.Module):
    """A plain CNN U-Net at the input's resolution (one 2x downsampling): the embedded dense evaluator.
    Deliberately not the guides' architecture (no timm, no resize), and trained from its own seed."""

    def __init__(self, in_chans: int, num_outputs: int, width: int = 32):
        super().__init__()
        self.enc1 = _conv_block(in_chans, width)
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), _conv_block(width, 2 * width), _conv_block(2 * width, 2 * width))
        self.dec = nn.Sequential(_conv_block(3 * width, width), _conv_block(width, width))
        self.head = nn.Conv2d(width, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc1(x)
        deep = F.interpolate(self.enc2(skip), size=skip.shape[-2:], mode="nearest")
        return self.head(self.dec(torch.cat([deep, skip], dim=1)))


def _timm_unet(spec: dict) -> nn.Module:
    return TimmUNet(spec["arch"], spec["in_chans"], spec["num_outputs"], spec.get("decoder_width", 32),
                    spec.get("model_kwargs"))


def _plain_unet(spec: dict) -> nn.Module:
    return PlainUNet(spec["in_chans"], spec["num_outputs"], spec.get("width", 32))


# family -> builder(spec) -> a network taking normalised images at ``input_size`` and returning a map
BUILDERS: dict[str, Callable[[dict], nn.Module]] = {
    "timm_unet": _timm_unet,
    "plain_unet": _plain_unet,
    "torchvision_segmentation": dense_builders.build_torchvision_segmentation,
    "dpt": dense_builders.build_dpt,
}


class DenseGuide(nn.Module):
    """A dense network seen from the diffusion model: ``forward(x, t) -> map`` at x's resolution.

    ``t`` is accepted for the one guide signature; an off-the-shelf network ignores it. Segmentation
    logits are resized bilinearly (logits, not probabilities: what a segmentation head upsamples),
    regressed maps likewise.
    """

    def __init__(self, network: nn.Module, task: str, input_size: int | None, mean: Sequence[float],
                 std: Sequence[float]):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown dense task {task!r} (use one of {', '.join(TASKS)})")
        self.network = network
        self.task = task
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return to_network_input(x, self.input_size, self.mean, self.std)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        out = self.network(self.preprocess(x))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


def dense_spec(family: str, task: str, num_outputs: int, in_chans: int, input_size: int | None,
               mean: Sequence[float], std: Sequence[float], **network) -> dict:
    """The plain-data description a dense checkpoint stores (``network``: the family's own keys)."""
    if family not in BUILDERS:
        raise ValueError(f"unknown dense network family {family!r} (use one of {', '.join(BUILDERS)})")
    if task not in TASKS:
        raise ValueError(f"unknown dense task {task!r} (use one of {', '.join(TASKS)})")
    if task == "regression" and num_outputs != 1:
        raise ValueError("a regression guide has one output channel")
    return dict(family=family, task=task, num_outputs=int(num_outputs), in_chans=int(in_chans),
                input_size=input_size, mean=list(mean), std=list(std), **network)


def build_dense_guide(spec: dict, seed: int = 0) -> DenseGuide:
    """A randomly initialised dense guide (the global RNG is forked: the caller's stream is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = BUILDERS[spec["family"]](spec)
    return DenseGuide(network, spec["task"], spec["input_size"], spec["mean"], spec["std"])


def save_dense_guide(path: str | os.PathLike, guide: DenseGuide, spec: dict, **metadata) -> None:
    save_checkpoint(path, DENSE_GUIDE_KIND, guide.state_dict(), spec=spec, **metadata)


def read_dense_spec(path: str | os.PathLike) -> dict:
    return dict(load_checkpoint(path, DENSE_GUIDE_KIND)["spec"])


def load_dense_guide(path: str | os.PathLike) -> DenseGuide:
    payload = load_checkpoint(path, DENSE_GUIDE_KIND)
    guide = build_dense_guide(payload["spec"])
    load_state_dict_strict(guide, payload["state_dict"], path)
    return guide.eval()
