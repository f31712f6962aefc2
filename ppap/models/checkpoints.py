"""Checkpoint files: safe loading (``weights_only=True``), strict keys, errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ppap.io import DamagedFileError, save_torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, of the wrong kind, or does not fit the model."""


class DamagedCheckpointError(CheckpointError, DamagedFileError):
    """A checkpoint file that cannot be read as one, or holds another kind than expected."""

    def __init__(self, path, expected: str, cause: str, message: str):
        DamagedFileError.__init__(self, path, expected, cause, message)


def save_checkpoint(path: str | os.PathLike, kind: str, state_dict: dict, **metadata) -> None:
    """Write ``{"kind", "state_dict", **metadata}`` atomically; metadata must be plain data."""
    payload = {"kind": kind, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
    payload.update(metadata)
    save_torch(path, payload)


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    expected = f"a {kind!r} checkpoint" if kind else "a ppap checkpoint"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, a text file...
        # The first line only: torch's advice (re-run with weights_only=False) is exactly what a
        # file of unknown origin must not get.
        first = (str(err).strip().splitlines() or [""])[0].split(" Re-running")[0][:200]
        cause = f"{type(err).__name__}: {first}"
        raise DamagedCheckpointError(path, expected, cause, f"cannot read checkpoint {path}: {cause}") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "kind" not in payload:
        raise DamagedCheckpointError(path, expected, "no 'kind'/'state_dict' entries",
                                     f"{path} is not a ppap checkpoint (no 'kind'/'state_dict' entries)")
    if kind is not None and payload["kind"] != kind:
        raise DamagedCheckpointError(path, expected, f"it holds a {payload['kind']!r} checkpoint",
                                     f"{path} holds a {payload['kind']!r} checkpoint, expected {kind!r}")
    return payload


def load_state_dict_strict(module: nn.Module, state_dict: dict, source: str | os.PathLike) -> None:
    """``module.load_state_dict(strict=True)`` with a message naming the file and the bad keys."""
    expected = set(module.state_dict().keys())
    found = set(state_dict.keys())
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: keys do not match the model "
            f"(missing {len(missing)}: {missing[:5]}; unexpected {len(unexpected)}: {unexpected[:5]})"
        )
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"{source}: {err}") from err
