"""Atomic file output: every artefact is written to a temporary file, then renamed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def _mode_for_new(kind_bits: int) -> int:
    """What ``open``/``mkdir`` would give under this process's umask (mkstemp/mkdtemp give 0600 /
    0700, which would hide every result from the other users of a shared cluster filesystem)."""
    umask = os.umask(0)
    os.umask(umask)
    return kind_bits & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A job killed half-way leaves at most a stray ``*.tmp`` file, never a truncated output that
    a rerun would mistake for a finished one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: numpy and matplotlib pick the format from it.
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _mode_for_new(0o666))
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _mode_for_new(0o777))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class DamagedFileError(ValueError):
    """A file that exists but cannot be what it should be (truncated, another format, another kind
    of checkpoint): it names the file, what it should be, and why it is not."""

    def __init__(self, path: str | os.PathLike, expected: str, cause: str, message: str | None = None):
        self.path, self.expected, self.cause = str(path), expected, cause
        super().__init__(message or f"{path} is not {expected}: {cause}")


def read_json(path: str | os.PathLike):
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedFileError(path, "a JSON record", f"{type(err).__name__}: {err}") from None


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def save_torch(path: str | os.PathLike, obj) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
