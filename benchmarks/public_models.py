"""Rebuild the shipped public models on this machine and compare them, file by file, with ppap/public/.

    python benchmarks/public_models.py [--presets default smoke tiny_guided] [--cores 2] [--table1]

For each preset, runs ``snakemake pretrain --config public_models=train`` in a new folder (today's
rules, from scratch: the noise schedule, base and class-conditional diffusion models, the
off-the-shelf guide, the evaluator and the dense networks) and compares every recorded model with
the shipped one made with the same config sections (``ppap.tools.public_models.compare``): are the
bytes equal, and if not, the largest weight difference. With ``--table1``, a preset whose rebuild
differs also runs Table 1 on the rebuilt models and checks it against the reference
(``python -m ppap.tools.reference``), which says what the difference does to the metrics. Writes
``benchmarks/results/public_models.csv`` (one row per model), ``public_models_summary.csv`` (per preset:
models, how many have the shipped bytes, rebuild wall seconds and load) and ``public_models.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as common
from ppap.tools.public_models import compare

PRESET_FILES = {"default": [], "smoke": ["config/smoke.yaml"], "tiny_guided": ["config/tiny_guided.yaml"]}


def snakemake(workdir: Path, target: str, overlays: list[str], cores: int, timeout: int) -> float:
    """Run one target with every model trained (public_models: train); returns its wall seconds."""
    configfiles = ["--configfile", *[str(common.REPO / f) for f in overlays]] if overlays else []
    cmd = [sys.executable, "-m", "snakemake", target, "-s", str(common.REPO / "Snakefile"), "--directory",
           str(workdir), "--cores", str(cores), *configfiles, "--config", "public_models=train"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    if done.returncode != 0:
        raise SystemExit(f"{target} failed in {workdir}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def table1_effect(workdir: Path, overlays: list[str], cores: int, timeout: int) -> str:
    """Table 1 on the rebuilt models against the reference (the reference check's verdict, last line)."""
    snakemake(workdir, "results/table1.csv", overlays, cores, timeout)
    done = subprocess.run([sys.executable, "-m", "ppap.tools.reference", "--results", str(workdir)],
                          capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return f"reference check rc {done.returncode}: {lines[-1] if lines else ''}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=list(PRESET_FILES), choices=list(PRESET_FILES))
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--timeout", type=int, default=7200)
    p.add_argument("--table1", action="store_true", help="run Table 1 on a rebuild that differs")
    p.add_argument("--out", type=Path, default=common.RESULTS)
    args = p.parse_args()
    machine = common.machine(1)
    rows, walls = [], {}
    for preset in args.presets:
        with tempfile.TemporaryDirectory(prefix=f"pretrain-{preset}-") as tmp:
            workdir = Path(tmp)
            load = os.getloadavg()[0]
            walls[preset] = (snakemake(workdir, "pretrain", PRESET_FILES[preset], args.cores, args.timeout), load,
                             os.getloadavg()[0])
            compared = compare(workdir)
            effect = ""
            if args.table1 and not all(row["bytes_equal"] for row in compared):
                effect = table1_effect(workdir, PRESET_FILES[preset], args.cores, args.timeout)
            for row in compared:
                rows.append(dict(preset=preset, model=row["model"], shipped=row["shipped"] or "",
                                 bytes_equal=row["bytes_equal"], max_abs_diff=row["max_abs_diff"],
                                 differing_files=" ".join(row.get("differing_files", [])), table1_effect=effect))
                print(f"{preset} {row['model']}: bytes equal {row['bytes_equal']}, max |diff| {row['max_abs_diff']}",
                      flush=True)
    common.write_csv(args.out / "public_models.csv", rows,
                     ["preset", "model", "shipped", "bytes_equal", "max_abs_diff", "differing_files", "table1_effect"])
    summary = [dict(preset=preset, models=sum(r["preset"] == preset for r in rows),
                    bytes_equal=sum(r["preset"] == preset and bool(r["bytes_equal"]) for r in rows),
                    wall_s=round(wall, 1), load_before=before, load_after=after)
               for preset, (wall, before, after) in walls.items()]
    summary.append(dict(preset="all", models=len(rows), bytes_equal=sum(bool(r["bytes_equal"]) for r in rows),
                        wall_s=round(sum(s["wall_s"] for s in summary), 1)))
    common.write_csv(args.out / "public_models_summary.csv", summary,
                     ["preset", "models", "bytes_equal", "wall_s", "load_before", "load_after"])
    equal = summary[-1]["bytes_equal"]
    common.report(args.out, "public_models", [
        f"Machine: {machine}.",
        f"`snakemake --cores {args.cores} pretrain --config public_models=train` from a fresh folder per preset; "
        f"{equal} of {len(rows)} rebuilt models have the shipped bytes."],
        [("Rebuilt against shipped", common.markdown_table(rows, ["preset", "model", "bytes_equal", "max_abs_diff"])),
         ("Rebuild time", "\n".join(f"- {preset}: {wall:.0f} s wall (load {before:.2f} -> {after:.2f})"
                                    for preset, (wall, before, after) in walls.items()))],
        ["bytes_equal compares the sha256 of every file of a model (a diffusers folder: its weights and configs); "
         "max_abs_diff is the largest |rebuilt - shipped| over the weights where the bytes differ."])


if __name__ == "__main__":
    main()
