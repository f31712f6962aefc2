"""A convolution that skips the multiplications by padding: on a 1x1 input, a k x k kernel padded by
k // 2 reads only its centre tap (every other tap falls on the zero padding).

The embedded preset's guide (timm resnet10t on 16x16 inputs) reaches 1x1 feature maps in its last
stages, where such 3x3 convolutions spent eight ninths of their multiplications on zeros: more than
half of the guide's FLOPs. The centre tap alone gives the same outputs and input gradients (bit for
bit on the CPU in the tests) and the same weight gradients (zero on the other taps) up to rounding.
Larger inputs take the ordinary path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CenterTapConv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` with a centre-tap path for 1x1 inputs (same parameters, same keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (1, 1):
            return super().forward(x)
        kh, kw = self.kernel_size
        centre = self.weight[:, :, kh // 2:kh // 2 + 1, kw // 2:kw // 2 + 1]
        return F.conv2d(x, centre, self.bias, 1, 0, 1, self.groups)


def skips_padding(conv: nn.Module) -> bool:
    """A plain zero-padded convolution whose padding centres its window on a lone pixel."""
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and conv.dilation == (1, 1)
            and isinstance(conv.padding, tuple)
            and all(k % 2 == 1 and p == k // 2 for k, p in zip(conv.kernel_size, conv.padding)))


def use_center_taps(model: nn.Module) -> int:
    """Turn every eligible ``nn.Conv2d`` of `model` (LoRA's own convolutions included) into a
    :class:`CenterTapConv2d`, in place; returns how many. Parameters, buffers and state-dict keys
    are untouched, so checkpoints, peft and optimizers see the same module."""
    converted = 0
    for module in model.modules():
        if skips_padding(module):
            module.__class__ = CenterTapConv2d
            converted += 1
    return converted
