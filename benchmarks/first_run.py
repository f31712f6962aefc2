"""A newcomer's first run, measured: the installation (time, size, what takes the space) and the smoke
preset's Table 1 from a fresh folder, cold (the first run after installing) and warm.

    python benchmarks/first_run.py [--cores 2] [--keep DIR]

This checkout's committed HEAD is exported (``git archive``, as a clean clone has it) into a new
folder, a new virtual environment is made there, and ``pip install -e .`` installs the package as
the README says (pip takes torch and torchvision from this machine's disk where it has them).
Then ``snakemake --cores N results/table1.csv --configfile config/smoke.yaml`` runs twice with
that environment's Python, each time in a new working folder: the first run compiles every
module's bytecode (cold), the second finds it (warm). Writes ``benchmarks/results/first_run.csv``
(one row per measured step: seconds, load average before and after) and
``first_run_sizes.csv`` (the environment's size and its largest packages), and ``first_run.md``.
About 10 minutes on 2 cores; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as common

REPO = Path(__file__).resolve().parents[1]
LARGEST = 8  # packages listed by size


def run(cmd: list[str], cwd: Path, timeout: int, env: dict | None = None) -> dict:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return dict(seconds=seconds, load_before=load_before, load_after=os.getloadavg()[0])


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def package_sizes(site_packages: Path) -> list[tuple[str, int]]:
    """(top-level entry of site-packages, bytes), largest first; a package's .dist-info is left out."""
    sizes = []
    for entry in site_packages.iterdir():
        if entry.name.endswith((".dist-info", ".pth")) or entry.name == "__pycache__":
            continue
        sizes.append((entry.name, folder_bytes(entry) if entry.is_dir() else entry.stat().st_size))
    return sorted(sizes, key=lambda item: -item[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--keep", type=Path, default=None, help="build here and keep it (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=common.RESULTS)
    args = p.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="first-run-"))
    base.mkdir(parents=True, exist_ok=True)
    tree, venv = base / "ppap-bench", base / "venv"
    commit = common.export_commit("HEAD", tree)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = []
    rows.append(dict(step="venv", what="python -m venv", **run([sys.executable, "-m", "venv", str(venv)], base, args.timeout)))
    python = str(venv / "bin" / "python")
    rows.append(dict(step="install", what="pip install -e .",
                     **run([python, "-m", "pip", "install", "--quiet", "-e", "."], tree, args.timeout)))
    for step in ("smoke_cold", "smoke_warm"):
        workdir = Path(tempfile.mkdtemp(prefix="smoke-", dir=base))
        cmd = [python, "-m", "snakemake", "results/table1.csv", "-s", str(tree / "Snakefile"), "--directory",
               str(workdir), "--cores", str(args.cores), "--configfile", str(tree / "config" / "smoke.yaml")]
        what = f"snakemake --cores {args.cores} results/table1.csv --configfile config/smoke.yaml ({step[6:]})"
        rows.append(dict(step=step, what=what, **run(cmd, workdir, args.timeout, env={"PYTHONHASHSEED": "0"})))
    site = next((venv / "lib").glob("python*/site-packages"))
    sizes = [dict(what="environment", bytes=folder_bytes(venv))]
    nvidia = sum(size for name, size in package_sizes(site) if name.startswith(("nvidia", "triton")))
    sizes.append(dict(what="cuda_libraries", bytes=nvidia))  # nvidia-* and triton: the CUDA build of torch
    sizes += [dict(what=name, bytes=size) for name, size in package_sizes(site)[:LARGEST]]
    for row in rows:
        row.update(commit=commit, cores=args.cores)
    for row in sizes:
        row["gb"] = round(row["bytes"] / 1e9, 2)
    common.write_csv(args.out / "first_run.csv", rows,
                     ["step", "what", "seconds", "load_before", "load_after", "commit", "cores"])
    common.write_csv(args.out / "first_run_sizes.csv", sizes, ["what", "bytes", "gb"])
    common.report(
        args.out, "first_run", [f"A first run: installation and the smoke Table 1. {common.machine(1)}.",
                                f"Commit {commit}; `uptime` before: {uptime}."],
        [("Steps", common.markdown_table(rows, ["what", "seconds", "load_before", "load_after"])),
         ("The environment's size", common.markdown_table(sizes, ["what", "gb"]))],
        ["Cold: the first run after installing (Python compiles every module it imports); warm: the next one. "
         "cuda_libraries: the nvidia-* and triton packages that the CUDA build of torch brings."])
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
