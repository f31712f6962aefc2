"""Checkpoint files: safe loading (``weights_only=True``), strict keys, errors that name the file.

Two formats hold the same payload ``{"kind", "state_dict", **metadata}``: a torch file (``.pt``) and
a safetensors file (``.safetensors``: the tensors, and the rest as JSON in its header's metadata),
the format of the shipped public models. Either is checked against its model record
(:mod:`ppap.models.records`) when one lies beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ppap.io import DamagedFileError, atomic_path, save_torch
from ppap.models.records import ModelRecordError, verify_record

SAFETENSORS_SUFFIX = ".safetensors"
# The safetensors metadata entry holding the payload's non-tensor part (kind, spec, stats...).
PAYLOAD_METADATA_KEY = "ppap"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, of the wrong kind, or does not fit the model."""


class DamagedCheckpointError(CheckpointError, DamagedFileError):
    """A checkpoint file that cannot be read as one, or holds another kind than expected."""

    def __init__(self, path, expected: str, cause: str, message: str):
        DamagedFileError.__init__(self, path, expected, cause, message)


def save_checkpoint(path: str | os.PathLike, kind: str, state_dict: dict, **metadata) -> None:
    """Write ``{"kind", "state_dict", **metadata}`` atomically; metadata must be plain data."""
    state_dict = {k: v.detach().cpu() for k, v in state_dict.items()}
    if Path(path).suffix == SAFETENSORS_SUFFIX:
        save_safetensors_checkpoint(path, kind, state_dict, **metadata)
        return
    payload = {"kind": kind, "state_dict": state_dict}
    payload.update(metadata)
    save_torch(path, payload)


def save_safetensors_checkpoint(path: str | os.PathLike, kind: str, state_dict: dict, **metadata) -> None:
    """The payload as safetensors: tensors stored flat, ``kind`` and metadata as sorted JSON (the
    bytes depend on the weights and the metadata only, so two equal trainings give equal files)."""
    from safetensors.torch import save_file

    header = json.dumps({"kind": kind, **metadata}, sort_keys=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={PAYLOAD_METADATA_KEY: header})


def _read_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = (handle.metadata() or {}).get(PAYLOAD_METADATA_KEY)
        if header is None:
            raise ValueError(f"no {PAYLOAD_METADATA_KEY!r} metadata entry")
        payload = json.loads(header)
        payload["state_dict"] = {key: handle.get_tensor(key) for key in handle.keys()}
    return payload


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling arbitrary code;
    a file that differs from its model record is a one-line :class:`ModelRecordMismatch`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    check_record(path)
    expected = f"a {kind!r} checkpoint" if kind else "a ppap checkpoint"
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            payload = _read_safetensors(path)
        else:
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


class ModelRecordMismatch(CheckpointError):
    """A model file or folder that differs from its record (ppap.models.records)."""


def check_record(model: str | os.PathLike, required: bool = False) -> dict | None:
    """:func:`ppap.models.records.verify_record`, its error as a :class:`CheckpointError`."""
    try:
        return verify_record(model, required=required)
    except ModelRecordError as err:
        raise ModelRecordMismatch(str(err)) from None


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
