"""The shipped public models (``ppap/public/<set>/``): publish a run's trained models, compare a
rebuild with what is shipped, list and check the sets.

    python -m ppap.tools.public_models publish RUN SET     # RUN/results/models -> ppap/public/SET/
    python -m ppap.tools.public_models compare RUN         # a rebuild (snakemake pretrain in RUN) vs shipped
    python -m ppap.tools.public_models verify              # every shipped model against its record

A set holds, below ``ppap/public/<set>/``, the files ``snakemake pretrain`` writes below
``results/models/``, at the same relative paths: each model (a safetensors file or a diffusers
folder), its record (``<model>.record.json``, :mod:`ppap.models.records`) and its training record
(``<model>.json``) where the rule writes one. The study picks, per role, the shipped model whose
record's ``made_with`` equals the config's sections (:mod:`ppap.study.public_models`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ppap.models.records import RECORD_SUFFIX, file_hashes, record_path, verify_record
from ppap.study.public_models import PUBLIC_DIR, TRAINED_PREFIX

# A diffusers folder's weights, compared tensor by tensor where the bytes differ.
WEIGHT_FILES = ("unet/diffusion_pytorch_model.safetensors",)


def recorded_models(models_dir: Path) -> list[tuple[Path, dict]]:
    """(model, record) of every model with a record below `models_dir` (expert sets have none)."""
    found = []
    for record_file in sorted(models_dir.rglob("*" + RECORD_SUFFIX)):
        record = json.loads(record_file.read_text())
        found.append((record_file.with_name(record["model"]), record))
    return found


def training_record(model: Path) -> Path:
    """The rule's training record beside a model (``guide.safetensors`` -> ``guide.json``)."""
    stem = model.name[: -len(model.suffix)] if model.suffix else model.name
    return model.with_name(stem + ".json")


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*"))
    else:
        shutil.copy2(source, target)


def publish(run: Path, set_name: str, public_dir: Path = PUBLIC_DIR) -> list[Path]:
    """Copy every recorded model of a run (with its record and training record) into a shipped set,
    each checked against its record before and after; models another set ships already are skipped."""
    models_dir = run / TRAINED_PREFIX
    elsewhere = [(m, r) for m, r in recorded_models(public_dir) if m.relative_to(public_dir).parts[0] != set_name]
    published = []
    for model, record in recorded_models(models_dir):
        verify_record(model, required=True)
        relative = model.relative_to(models_dir)
        # one copy per model: a model another preset's set already ships (same sections, same bytes) is
        # found there (ppap.study.public_models picks by record, in any set)
        if any(m.relative_to(public_dir).parts[1:] == relative.parts and r["made_with"] == record["made_with"]
               and r["sha256"] == record["sha256"] for m, r in elsewhere):
            continue
        target = public_dir / set_name / relative
        for source in (model, record_path(model), training_record(model)):
            if source.exists():
                _copy(source, target.parent / source.name)
        verify_record(target, required=True)
        published.append(target)
    if not published:
        raise FileNotFoundError(f"no recorded models below {models_dir} (run `snakemake pretrain` there first)")
    return published


def _largest_difference(a: Path, b: Path) -> float | None:
    """max |a - b| over the tensors of two safetensors files (None: their keys or shapes differ)."""
    from safetensors.torch import load_file

    left, right = load_file(str(a)), load_file(str(b))
    if left.keys() != right.keys() or any(left[k].shape != right[k].shape for k in left):
        return None
    return max((float((left[k].double() - right[k].double()).abs().max()) for k in left if left[k].numel()),
               default=0.0)


def compare(run: Path, public_dir: Path = PUBLIC_DIR) -> list[dict]:
    """For every recorded model of a run: the shipped model made with the same sections, whether
    each file's bytes are equal, and the largest weight difference where they are not."""
    rows = []
    shipped = recorded_models(public_dir)
    models_dir = run / TRAINED_PREFIX
    for model, record in recorded_models(models_dir):
        relative = model.relative_to(models_dir).as_posix()
        match = next((m for m, r in shipped if m.as_posix().endswith("/" + relative)
                      and r["made_with"] == record["made_with"]), None)
        row = {"model": relative, "shipped": str(match.relative_to(public_dir)) if match else None}
        if match is None:
            rows.append({**row, "bytes_equal": None, "max_abs_diff": None})
            continue
        ours, theirs = file_hashes(model), file_hashes(match)
        row["bytes_equal"] = ours == theirs
        differing = sorted(name for name in set(ours) | set(theirs) if ours.get(name) != theirs.get(name))
        row["differing_files"] = differing
        weights = [name for name in differing if name.endswith(".safetensors")]
        base, shipped_base = (model.parent, match.parent) if model.is_file() else (model, match)
        diffs = [_largest_difference(base / name, shipped_base / name) for name in weights
                 if (base / name).exists() and (shipped_base / name).exists()]
        row["max_abs_diff"] = max((d for d in diffs if d is not None), default=0.0 if not differing else None)
        rows.append(row)
    return rows


def _main(argv: list[str] | None = None) -> int:
    from ppap.models.cli import OneLineParser, user_errors

    parser = OneLineParser(prog="python -m ppap.tools.public_models", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="copy a run's recorded models into a shipped set")
    p.add_argument("run", type=Path)
    p.add_argument("set_name")
    c = sub.add_parser("compare", help="a run's recorded models against the shipped ones")
    c.add_argument("run", type=Path)
    sub.add_parser("verify", help="every shipped model against its record")
    args = parser.parse_args(argv)
    with user_errors(parser.prog):
        if args.command == "publish":
            for target in publish(args.run, args.set_name):
                print(target)
        elif args.command == "compare":
            for row in compare(args.run):
                print(json.dumps(row, sort_keys=True))
        else:
            models = recorded_models(PUBLIC_DIR)
            for model, _ in models:
                verify_record(model, required=True)
            print(f"{len(models)} shipped models match their records ({PUBLIC_DIR})")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
