"""Which layers of a network LoRA adapts: a filter over (name, layer type) pairs.

Torch-free, so the plan-time check (:func:`ppap.study.checks.check_lora_targets`) applies the same
rule to the names in a weights file's header as :func:`ppap.experts.adapters.lora_target_modules`
applies to the built network.
"""

from __future__ import annotations

import re
from typing import Iterable

LAYER_TYPES = ("conv", "linear")    # the layer types LoRA adapts (nn.Conv2d, nn.Linear)


def select_layers(layers: Iterable[tuple[str, str]], layer_types: Iterable[str], include: str | None = None,
                  exclude: str | None = None) -> list[str]:
    """Names of the ``(name, type)`` layers whose type is one of ``layer_types``, whose name
    ``include`` finds (``re.search``; None: every name) and ``exclude`` does not. Raises
    ValueError on an unknown type or when nothing matches."""
    layer_types = list(layer_types)
    unknown = set(layer_types) - set(LAYER_TYPES)
    if unknown:
        raise ValueError(f"unknown layer types {sorted(unknown)}; use {sorted(LAYER_TYPES)}")
    names = [name for name, kind in layers
             if kind in layer_types
             and (include is None or re.search(include, name))
             and (exclude is None or not re.search(exclude, name))]
    if not names:
        raise ValueError(f"no {layer_types} layers match include={include!r} exclude={exclude!r}")
    return names
