"""The smoke preset's Table 1 on the CPU and on the GPU: wall time of each and the slowest jobs.

    python benchmarks/device_smoke.py                 # cpu, and cuda when torch sees a GPU
    python benchmarks/device_smoke.py --devices cpu   # one device only
    python benchmarks/device_smoke.py --preset default --devices cuda

Each run: ``snakemake results/table1.csv --cores K --configfile <preset> --config device=<dev>
precision=auto`` in a fresh temporary folder (bf16 autocast on CUDA, fp32 on the CPU; on the GPU
the `gpu` resource is given so the GPU rules may share the card). Runs alternate between devices
when --repeats > 1. Writes ``results/device_smoke.md|csv`` (the card's name in the header);
a device torch does not see is reported as skipped, not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import _common as common

REPO = Path(__file__).resolve().parents[1]
PRESETS = {"smoke": REPO / "config" / "smoke.yaml", "default": None}


def run_table1(workdir: Path, device: str, cores: int, configfile: Path | None, timeout: int) -> float:
    from dag_parallelism import run_workflow

    options = ["--resources", f"gpu={cores}"] if device == "cuda" else []
    options += ["--config", f"device={device}", "precision=auto"]
    return run_workflow(workdir, "results/table1.csv", cores, configfile, timeout, options)


def main() -> None:
    import torch
    from dag_parallelism import job_times

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    parser.add_argument("--out", type=Path, default=common.RESULTS)
    args = parser.parse_args()

    available = {"cpu": True, "cuda": torch.cuda.is_available()}
    card = torch.cuda.get_device_name(0) if available["cuda"] else "none visible to torch"
    devices = [d for d in args.devices if available[d]]
    skipped = [d for d in args.devices if not available[d]]
    walls: dict[str, list[float]] = {d: [] for d in devices}
    slowest: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for device in devices:
            workdir = Path(tempfile.mkdtemp(prefix=f"ppap-device-{device}-"))
            walls[device].append(run_table1(workdir, device, args.cores, PRESETS[args.preset], args.timeout))
            slowest[device] = job_times(workdir)[0]
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)

    rows = [dict(device=d, runs=len(w), wall_s_median=round(common.median(w), 2), wall_s_min=round(min(w), 2),
                 wall_s_max=round(max(w), 2)) for d, w in walls.items()]
    if "cpu" in walls and "cuda" in walls:
        ratios = [c / g for c, g in zip(walls["cpu"], walls["cuda"])]
        for row in rows:
            row["speedup_vs_cpu"] = round(common.median(ratios), 2) if row["device"] == "cuda" else 1.0
    columns = ["device", "runs", "wall_s_median", "wall_s_min", "wall_s_max", "speedup_vs_cpu"]
    common.write_csv(args.out / f"device_{args.preset}.csv", rows, columns)
    jobs = sorted({j for times in slowest.values() for j in times},
                  key=lambda j: -max(times.get(j, 0.0) for times in slowest.values()))[:12]
    job_rows = [{"job": j, **{f"s_{d}": round(slowest[d].get(j, float("nan")), 2) for d in slowest}} for j in jobs]
    header = [common.machine(1).split(", no GPU used")[0] + f"; GPU: {card}; torch {torch.__version__}.",
              f"`snakemake results/table1.csv --cores {args.cores}`, preset {args.preset}, `--config device=<d> "
              f"precision=auto`, fresh folder per run; {args.repeats} run(s) per device (medians)."]
    footer = [f"- skipped (torch sees no such device): {', '.join(skipped)}"] if skipped else []
    footer.append("- wall time includes Snakemake's start-up and every job's Python start-up; on the smoke "
                  "preset those dominate, so the GPU's gain here is a floor, not the paper-scale speed-up.")
    common.report(args.out, f"device_{args.preset}", header,
                  [("Workflow wall time", common.markdown_table(rows, columns)),
                   ("Slowest jobs (seconds, last run)", common.markdown_table(job_rows, list(job_rows[0]) if job_rows else ["job"]))],
                  footer)


if __name__ == "__main__":
    main()
