"""Checks on the workflow config that a JSON schema cannot express (cross-key consistency).

Imported by the Snakefile before any job runs, so it must stay light (no torch).
"""

from __future__ import annotations

import os
import re

GUIDE_SET = re.compile(r"^(labeled|datafree)_(full|lora[1-9][0-9]*)_n([1-9][0-9]*)$")


class ConfigError(ValueError):
    """A config value is inconsistent; the message names the key."""


def parse_guide_name(name: str) -> dict:
    """``none``, ``off_the_shelf`` or ``<labeled|datafree>_<full|lora<r>>_n<N>`` -> its parts."""
    if name in ("none", "off_the_shelf"):
        return dict(kind=name, n_experts=0 if name == "none" else 1, rank=None, supervision="none")
    match = GUIDE_SET.match(name)
    if not match:
        raise ConfigError(f"unknown guide {name!r}")
    adapter = match[2]
    return dict(kind="experts", supervision=match[1], n_experts=int(match[3]),
                rank=None if adapter == "full" else int(adapter[4:]))


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the first inconsistent key."""
    unet = config["diffusion"]["unet"]
    if len(unet["attention"]) != len(unet["block_out_channels"]):
        raise ConfigError("diffusion.unet.attention needs one flag per entry of diffusion.unet.block_out_channels")
    if len(config["guide"]["mean"]) != len(config["guide"]["std"]):
        raise ConfigError("guide.mean and guide.std must have the same length")
    timesteps = config["diffusion"]["num_train_timesteps"]
    for key, name in config["methods"].items():
        try:
            parts = parse_guide_name(name)
        except ConfigError as err:
            raise ConfigError(f"methods.{key}: {err}") from None
        if parts["n_experts"] > timesteps:
            raise ConfigError(f"methods.{key}: {parts['n_experts']} experts for {timesteps} timesteps "
                              "(diffusion.num_train_timesteps)")
        if parts["kind"] == "experts" and config["experts"]["train"]["total_steps"] < parts["n_experts"]:
            raise ConfigError(f"experts.train.total_steps is smaller than the {parts['n_experts']} experts "
                              f"of methods.{key}")
    for name in config["table1"]:
        if name not in config["methods"]:
            raise ConfigError(f"table1 lists {name!r}, which is not a key of methods "
                              f"(known: {sorted(config['methods'])})")
    bad_t = [t for t in config["evaluation"]["accuracy_timesteps"] if t >= timesteps]
    if bad_t:
        raise ConfigError(f"evaluation.accuracy_timesteps {bad_t} outside [0, {timesteps}) "
                          "(diffusion.num_train_timesteps)")
    for key in ("diffusion", "guide"):
        path = config[key]["pretrained"]
        if path is not None and not os.path.exists(path):
            raise ConfigError(f"{key}.pretrained: no such file or directory: {path}")
