"""LoRA experts through peft: attach N named adapters to one frozen guide, count, save, load.

peft does the LoRA itself (zero-initialised B, ``alpha / r`` scaling used identically in forward
and merge). Per-expert normalisation state, as the original PPAP trains it (batch-norm affine
parameters and biases trainable, batch norm in train mode), is peft's ``modules_to_save``: every
adapter holds its own copy of each normalisation layer (parameters and running statistics),
selected with the adapter, while the backbone stays shared and untouched. This module adds what
the benchmark needs around it: choosing target layers, exact parameter accounting, and adapter
files that load strictly (peft's own loader uses ``strict=False``, which would silently load
nothing from a mismatched file).
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch
from torch import nn

from ppap.layers import LAYER_TYPES, select_layers
from ppap.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

ADAPTER_KIND = "ppap-lora-adapter"
_LAYER_TYPES = dict(zip(LAYER_TYPES, (nn.Conv2d, nn.Linear)))
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_PER_ADAPTER = ("lora_", "modules_to_save")  # parameter names that belong to one adapter


def layer_kinds(model: nn.Module) -> list[tuple[str, str]]:
    """(full name, ``conv`` | ``linear`` | ``other``) of every module of `model`."""
    def kind(module):
        return next((word for word, cls in _LAYER_TYPES.items() if isinstance(module, cls)), "other")

    return [(name, kind(module)) for name, module in model.named_modules()]


def lora_target_modules(model: nn.Module, layer_types: Iterable[str] = ("conv", "linear"),
                        include: str | None = None, exclude: str | None = None) -> list[str]:
    """Full names of the layers to adapt: modules of the given types, filtered by regexes."""
    return select_layers(layer_kinds(model), layer_types, include, exclude)


def norm_modules(model: nn.Module) -> list[str]:
    """Full names of the normalisation layers (batch, group and layer norm) of `model`."""
    return [name for name, module in model.named_modules() if isinstance(module, NORM_TYPES)]


def lora_config(rank: int, alpha: float, target_modules: Sequence[str], dropout: float = 0.0,
                modules_to_save: Sequence[str] = ()):
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    # Full module names: peft matches a list entry against the name or a dotted suffix of it.
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                      bias="none", modules_to_save=list(modules_to_save) or None)


def attach_lora_experts(guide: nn.Module, adapter_names: Sequence[str], rank: int, alpha: float,
                        target_modules: Sequence[str], dropout: float = 0.0,
                        modules_to_save: Sequence[str] = ()) -> nn.Module:
    """Wrap `guide` in a peft model carrying one fresh LoRA adapter per name; the base is frozen.

    Adapters start with B = 0, and each adapter's copy of a module in `modules_to_save` (the
    normalisation layers, for experts that train them) starts as the guide's own, so every
    expert initially reproduces the guide exactly.
    """
    from peft import get_peft_model

    if not adapter_names:
        raise ValueError("need at least one adapter name")
    config = lora_config(rank, alpha, target_modules, dropout, modules_to_save)
    model = get_peft_model(guide, config, adapter_name=adapter_names[0])
    for name in adapter_names[1:]:
        model.add_adapter(name, lora_config(rank, alpha, target_modules, dropout, modules_to_save))
    model.set_adapter(adapter_names[0])
    return model


def _belongs_to(parameter_name: str, adapter_name: str) -> bool:
    return any(tag in parameter_name for tag in _PER_ADAPTER) and f".{adapter_name}." in parameter_name


def train_only_adapter(model: nn.Module, adapter_name: str) -> list[nn.Parameter]:
    """Make exactly the parameters of `adapter_name` (its LoRA matrices and its copies of the
    modules to save) trainable; return them."""
    model.set_adapter(adapter_name)
    params = []
    for name, param in model.named_parameters():
        is_this_adapter = _belongs_to(name, adapter_name)
        param.requires_grad_(is_this_adapter)
        if is_this_adapter:
            params.append(param)
    if not params:
        raise ValueError(f"adapter {adapter_name!r} has no parameters")
    return params


def adapter_parameter_count(model: nn.Module, adapter_name: str) -> int:
    """Parameters of one adapter: LoRA matrices and its own normalisation parameters, if any."""
    return sum(p.numel() for n, p in model.named_parameters() if _belongs_to(n, adapter_name))


def base_parameter_count(model: nn.Module) -> int:
    """Parameters of the shared backbone (the guide's own modules, not the adapters' copies)."""
    return sum(p.numel() for n, p in model.named_parameters() if not any(tag in n for tag in _PER_ADAPTER))


def adapter_state_dict(model: nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter_name)


def save_adapter(path: str | os.PathLike, model: nn.Module, adapter_name: str, **metadata) -> None:
    """Write the adapter's weights only (never the backbone), with its LoRA settings."""
    config = model.peft_config[adapter_name]
    save_checkpoint(path, ADAPTER_KIND, adapter_state_dict(model, adapter_name),
                    lora=dict(rank=config.r, alpha=config.lora_alpha, target_modules=sorted(config.target_modules),
                              modules_to_save=sorted(config.modules_to_save or [])),
                    **metadata)


def read_adapter(path: str | os.PathLike) -> dict:
    return load_checkpoint(path, ADAPTER_KIND)


def load_adapter(model: nn.Module, adapter_name: str, path: str | os.PathLike) -> dict:
    """Load an adapter file into `model` under `adapter_name`, adding the adapter if needed.

    Fails loudly, naming the file, when the file's keys or shapes do not match the model.
    """
    from peft import set_peft_model_state_dict

    payload = read_adapter(path)
    lora = payload["lora"]
    if adapter_name not in model.peft_config:
        try:
            model.add_adapter(adapter_name, lora_config(lora["rank"], lora["alpha"], lora["target_modules"],
                                                        modules_to_save=lora.get("modules_to_save", ())))
        except ValueError as err:  # peft: target modules missing from, or unsupported in, this model
            raise CheckpointError(f"{path}: adapter does not fit the model: {err}") from err
    elif model.peft_config[adapter_name].lora_alpha != lora["alpha"]:
        # Same keys and shapes, but a different alpha / r scaling: the outputs would silently change.
        raise CheckpointError(f"{path}: adapter has lora_alpha {lora['alpha']}, "
                              f"adapter {adapter_name!r} of the model has {model.peft_config[adapter_name].lora_alpha}")
    expected = adapter_state_dict(model, adapter_name)
    found = payload["state_dict"]
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: adapter keys do not match the model "
                              f"(missing {len(missing)}: {missing[:3]}; unexpected {len(unexpected)}: {unexpected[:3]})")
    for key, value in found.items():
        if expected[key].shape != value.shape:
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)}, model expects {tuple(expected[key].shape)}")
    result = set_peft_model_state_dict(model, found, adapter_name=adapter_name)
    if getattr(result, "unexpected_keys", None):
        raise CheckpointError(f"{path}: peft did not place keys {result.unexpected_keys[:3]}")
    return payload
