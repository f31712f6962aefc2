"""Model records: what a model file (or a diffusers folder) was made with, and its sha256.

A record is ``<model>.record.json`` beside the model (``guide.safetensors`` ->
``guide.record.json``, the folder ``diffusion/`` -> ``diffusion.record.json``). It holds the
config sections that made the model (``made_with``), its training's seeds and steps, the library
versions and the machine, and the sha256 of every file of the model. The loaders
(:func:`ppap.models.checkpoints.load_checkpoint`, :func:`ppap.models.unet.load_diffusion_model`)
check the hashes whenever a record is there: the shipped public models always have one, and a
user's own model gets one with ``python -m ppap.models.records write <model>``.

No torch here: the Snakefile reads records while it plans.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from ppap.io import write_json

RECORD_SUFFIX = ".record.json"
RECORD_VERSION = 1
# The libraries whose versions can change a trained model's bytes (or how it loads).
RECORDED_LIBRARIES = ("torch", "numpy", "timm", "diffusers", "safetensors", "peft", "scikit-learn")


class ModelRecordError(ValueError):
    """A model differs from its record (a changed or missing file), or the record is unreadable."""


def record_path(model: str | os.PathLike) -> Path:
    """Where the record of a model file or folder lives: beside it, its suffix replaced."""
    model = Path(model)
    stem = model.name if model.is_dir() or not model.suffix else model.name[: -len(model.suffix)]
    return model.with_name(stem + RECORD_SUFFIX)


def model_files(model: str | os.PathLike) -> list[Path]:
    """The files a model consists of: itself, or every file of its folder (hidden ones skipped)."""
    model = Path(model)
    if model.is_file():
        return [model]
    return sorted(p for p in model.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                         for part in p.relative_to(model).parts))


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(model: str | os.PathLike) -> dict[str, str]:
    """sha256 per file, keyed by the path relative to the model (a file: its own name)."""
    model = Path(model)
    base = model.parent if model.is_file() else model
    return {p.relative_to(base).as_posix(): sha256_of(p) for p in model_files(model)}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape a model (read from metadata: nothing imported)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict:
    """The machine a model was made on, as far as it can change the bytes."""
    return {"system": platform.system(), "machine": platform.machine(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "python_implementation": sys.implementation.name}


def make_record(model: str | os.PathLike, made_with: dict, training: dict | None = None, **extra) -> dict:
    """A record of `model` as it is now: its files' hashes, what made it, the environment."""
    return {"record_version": RECORD_VERSION, "model": Path(model).name, "made_with": made_with,
            "training": training or {}, "versions": library_versions(), "machine": machine(),
            "sha256": file_hashes(model), **extra}


def write_record(model: str | os.PathLike, made_with: dict, training: dict | None = None, **extra) -> Path:
    """Write the record of `model` beside it (atomically) and return its path."""
    path = record_path(model)
    write_json(path, make_record(model, made_with, training, **extra))
    return path


def read_record(model: str | os.PathLike) -> dict | None:
    """The record beside `model`, or None where there is none."""
    path = record_path(model)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelRecordError(f"{path}: unreadable model record ({type(err).__name__}: {err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), dict):
        raise ModelRecordError(f"{path}: not a model record (no 'sha256' entry)")
    return record


# (resolved path, size, mtime_ns) of every file already checked in this process: a job that loads
# one model twice hashes it once.
_verified: set[tuple[str, int, int]] = set()


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def verify_record(model: str | os.PathLike, required: bool = False) -> dict | None:
    """Check `model` against its record; return the record (None: no record, and not `required`).

    A file that differs from its record, is missing, or is not in it raises a one-line
    :class:`ModelRecordError` naming the file.
    """
    model = Path(model)
    record = read_record(model)
    if record is None:
        if required:
            raise ModelRecordError(f"{model}: no model record {record_path(model).name} beside it")
        return None
    base = model.parent if model.is_file() else model
    recorded = record["sha256"]
    present = {p.relative_to(base).as_posix(): p for p in model_files(model)} if model.exists() else {}
    for name, expected in sorted(recorded.items()):
        path = base / name
        if name not in present:
            raise ModelRecordError(f"{path}: missing, but listed in its model record {record_path(model)}")
        if _stamp(path) in _verified:
            continue
        found = sha256_of(path)
        if found != expected:
            raise ModelRecordError(f"{path}: sha256 {found[:12]}... differs from its model record "
                                   f"{record_path(model)} ({expected[:12]}...): the file changed after it was recorded")
        _verified.add(_stamp(path))
    extra = sorted(set(present) - set(recorded))
    if extra:
        raise ModelRecordError(f"{base / extra[0]}: not in the model record {record_path(model)} "
                               f"(a file added after it was recorded)")
    return record


def _main(argv: list[str] | None = None) -> int:
    from ppap.models.cli import OneLineParser, user_errors

    parser = OneLineParser(prog="python -m ppap.models.records",
                           description="Write or check the record (sha256, versions, machine) of a model file or folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="record a model as it is now (a model of your own: the loaders then check it)")
    write.add_argument("model")
    write.add_argument("--made-with", default="{}", help="JSON: what made the model (for instance its source)")
    check = sub.add_parser("verify", help="check a model against its record")
    check.add_argument("model")
    args = parser.parse_args(argv)
    with user_errors(parser.prog):
        if not Path(args.model).exists():
            raise FileNotFoundError(f"no model at {args.model}")
        if args.command == "write":
            print(write_record(args.model, json.loads(args.made_with)))
        else:
            record = verify_record(args.model, required=True)
            print(f"{args.model}: {len(record['sha256'])} file(s) match {record_path(args.model)}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
