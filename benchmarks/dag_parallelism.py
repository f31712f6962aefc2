"""Wall time of the whole workflow with --cores 1 and --cores 2 from clean result folders, the
speed-up, and the per-job times from Snakemake's benchmark TSVs as a bar chart.

    python benchmarks/dag_parallelism.py                     # smoke config (about a minute a run)
    python benchmarks/dag_parallelism.py --preset default    # the real default target (~9 min a run)

Each run: ``python -m snakemake results/table1.csv -s <repo>/Snakefile --directory <fresh tmp dir>
--cores K [--configfile ...]``. Runs alternate between the core counts, so background load hits both.
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
from typing import Sequence

import _common as common

REPO = Path(__file__).resolve().parents[1]


def run_workflow(workdir: Path, target: str, cores: int, configfile: Path | None, timeout: int,
                 options: Sequence[str] = ()) -> float:
    """Wall seconds of one ``snakemake <target>`` in ``workdir``; ``options`` go last (``--config``
    takes several values and must not swallow anything after it)."""
    # The target goes first: --configfile takes several values and would swallow it.
    cmd = [sys.executable, "-m", "snakemake", target, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += list(options)
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONHASHSEED": "0"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"snakemake failed (--cores {cores}, workdir {workdir}):\n{result.stderr[-4000:]}")
    return wall


CALIBRATION = """
import sys, time, torch
torch.set_num_threads(1)
x, w = torch.randn(128, 64, 16, 16), torch.randn(64, 64, 3, 3)
torch.nn.functional.conv2d(x, w, padding=1)
while time.time() < float(sys.argv[1]):  # start together, after the imports
    time.sleep(0.005)
start = time.perf_counter()
for _ in range(40):
    torch.nn.functional.conv2d(x, w, padding=1)
print(time.perf_counter() - start)
"""


def parallel_capacity(k: int) -> float:
    """How many cores' worth of work K concurrent one-thread processes get done right now.

    A fixed convolution workload runs alone, then K copies at once: capacity = K * t_alone / t_together
    (K on an idle K-core machine, less when other processes share it).
    """

    def run(n: int) -> list[float]:
        start_at = f"{time.time() + 6.0:.3f}"
        procs = [subprocess.Popen([sys.executable, "-c", CALIBRATION, start_at], stdout=subprocess.PIPE, text=True)
                 for _ in range(n)]
        return [float(proc.communicate()[0]) for proc in procs]

    alone = run(1)[0]
    together = run(k)
    return k * alone / common.median(together)


def job_times(workdir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Wall seconds (column ``s``) and CPU seconds (``cpu_time``) per job from
    ``<workdir>/benchmarks/snakemake/**.tsv``."""
    import pandas as pd

    root = workdir / "benchmarks" / "snakemake"
    wall, cpu = {}, {}
    for tsv in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(tsv, sep="\t")
        job = tsv.relative_to(root).with_suffix("").as_posix()
        wall[job] = float(table["s"].iloc[0])
        cpu[job] = float(table["cpu_time"].iloc[0]) if "cpu_time" in table else float("nan")
    return wall, cpu


def plot(path: Path, jobs: list[str], per_cores: dict[int, dict[str, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ppap.io import atomic_path

    cores = sorted(per_cores)
    height = 0.8 / len(cores)
    y = np.arange(len(jobs))
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(jobs) + 1.5))
    for i, k in enumerate(cores):
        ax.barh(y + (i - (len(cores) - 1) / 2) * height, [per_cores[k].get(j, 0.0) for j in jobs], height,
                label=f"--cores {k}")
    ax.set_yticks(y, jobs, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per job (Snakemake benchmark, median over runs)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=["smoke", "default"], default="smoke",
                   help="smoke: --configfile config/smoke.yaml; default: the embedded default preset")
    p.add_argument("--configfile", type=Path, default=None, help="another config file (overrides --preset)")
    p.add_argument("--target", default="results/table1.csv")
    p.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5,
                   help="runs per core count (a smoke run takes 1-3 minutes, depending on the load)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directories")
    p.add_argument("--out", type=Path, default=common.RESULTS)
    args = p.parse_args()
    machine = common.machine(1).replace("1 torch thread(s)", "torch threads per job from the rules' threads")

    if args.configfile is not None:
        configfile, label = args.configfile.resolve(), args.configfile.stem
    elif args.preset == "smoke":
        configfile, label = REPO / "config" / "smoke.yaml", "smoke"
    else:
        configfile, label = None, "default"

    runs = []  # (repeat, cores, wall, {job: s})
    capacity, cpu_seconds = [], []
    for r in range(args.repeats):
        order = args.cores if r % 2 == 0 else list(reversed(args.cores))
        for cores in order:
            capacity.append(parallel_capacity(max(args.cores)))  # right before each run: the load comes and goes
            workdir = Path(tempfile.mkdtemp(prefix=f"ppap-dag-{label}-c{cores}-"))
            try:
                wall = run_workflow(workdir, args.target, cores, configfile, args.timeout)
                jobs, jobs_cpu = job_times(workdir)
            finally:
                if not args.keep:
                    shutil.rmtree(workdir, ignore_errors=True)
            print(f"run {r + 1}/{args.repeats}: --cores {cores}: {wall:.1f} s wall, {len(jobs)} jobs, "
                  f"{sum(jobs.values()):.1f} job-seconds; machine capacity before it {capacity[-1]:.2f}"
                  + (f" ({workdir})" if args.keep else ""), flush=True)
            runs.append((r, cores, wall, jobs))
            cpu_seconds.append(sum(jobs_cpu.values()))

    run_rows = [dict(config=label, repeat=r, cores=c, wall_s=w, jobs=len(j), job_seconds=sum(j.values()),
                     job_seconds_over_wall=sum(j.values()) / w, job_cpu_seconds=cpu_s, machine_capacity=cap)
                for (r, c, w, j), cpu_s, cap in zip(runs, cpu_seconds, capacity)]
    common.write_csv(args.out / f"dag_parallelism_{label}.csv", run_rows)

    wall = {c: [w for _, k, w, _ in runs if k == c] for c in args.cores}
    base = min(args.cores)
    summary = []
    for c in args.cores:
        speedups = [wall[base][i] / wall[c][i] for i in range(args.repeats)]
        job_s = [row["job_seconds"] for row in run_rows if row["cores"] == c]
        job_cpu = [row["job_cpu_seconds"] for row in run_rows if row["cores"] == c]
        summary.append(dict(cores=c, runs=args.repeats, wall_s_median=common.median(wall[c]), wall_s_min=min(wall[c]),
                            wall_s_max=max(wall[c]), speedup_vs_1=common.median(speedups),
                            job_seconds_median=common.median(job_s), job_cpu_seconds_median=common.median(job_cpu),
                            job_seconds_over_wall=common.median(job_s) / common.median(wall[c])))

    names = sorted({j for *_, jobs in runs for j in jobs})
    per_cores = {c: {} for c in args.cores}
    for c in args.cores:
        for j in names:
            values = [jobs[j] for _, k, _, jobs in runs if k == c and j in jobs]
            if values:
                per_cores[c][j] = common.median(values)
    missing = [j for j in names if any(j not in per_cores[c] for c in args.cores)]
    names.sort(key=lambda j: -max(per_cores[c].get(j, 0.0) for c in args.cores))
    job_rows = [dict(job=j, **{f"s_cores{c}": per_cores[c].get(j) for c in args.cores}) for j in names]
    common.write_csv(args.out / f"dag_job_times_{label}.csv", job_rows)
    png = args.out / f"dag_job_times_{label}.png"
    plot(png, names, per_cores, f"ppap-bench {args.target}, {label} config: per-job time")

    top = max(args.cores)
    speedup = next(s["speedup_vs_1"] for s in summary if s["cores"] == top)
    # Rounds in which the machine was free before both runs (capacity near the core count).
    by_round = {}
    for row in run_rows:
        by_round.setdefault(row["repeat"], {})[row["cores"]] = row
    quiet = [rr for rr in by_round.values() if all(row["machine_capacity"] >= 0.9 * top for row in rr.values())]
    quiet_speedups = [rr[base]["wall_s"] / rr[top]["wall_s"] for rr in quiet]
    quiet_text = (f"median {common.median(quiet_speedups):.2f}x over {len(quiet)} such round(s): "
                  + ", ".join(f"{v:.2f}x" for v in quiet_speedups)) if quiet else "no such round in this run"
    footer = [
        common.goal_line(f"--cores {top} at least 1.5x faster than --cores {base}", speedup >= 1.5,
                         f"{speedup:.2f}x, median of all {args.repeats} rounds"),
        f"- speed-up in rounds where the machine was free before both runs (capacity >= {0.9 * top:.1f}): {quiet_text}.",
        f"- machine parallel capacity, measured right before each run ({top} one-thread processes doing a fixed "
        f"workload at once, in cores' worth of work; {top} on an idle machine): median {common.median(capacity):.2f} "
        f"(min {min(capacity):.2f}, max {max(capacity):.2f}). Other processes share this machine; the speed-up "
        "cannot exceed the capacity left to it.",
        "- job_seconds: sum of the jobs' own wall times (Snakemake benchmark `s`); job_seconds / wall is the "
        "parallelism achieved; job_cpu_seconds: the jobs' CPU time (`cpu_time`), which contention does not inflate "
        "much. Wall time includes Snakemake's own start-up and DAG planning.",
        f"- per-job times: `{png.relative_to(REPO) if png.is_relative_to(REPO) else png}`.",
    ]
    if missing:
        footer.append(f"- jobs not in every run (the workflow changed between runs?): {missing}")
    top_jobs = common.markdown_table(job_rows[:12], ["job", *[f"s_cores{c}" for c in args.cores]])
    common.report(args.out, f"dag_parallelism_{label}",
                  [f"Machine: {machine}.",
                   f"`snakemake {args.target} --cores K` from a clean work directory, config: {label}; "
                   f"{args.repeats} run(s) per core count, alternated (median; speed-up = median of per-round ratios)."],
                  [("Workflow wall time", common.markdown_table(
                      summary, ["cores", "runs", "wall_s_median", "wall_s_min", "wall_s_max", "speedup_vs_1",
                                "job_seconds_median", "job_seconds_over_wall", "job_cpu_seconds_median"])),
                   ("Slowest jobs (seconds, median)", top_jobs)],
                  footer)


if __name__ == "__main__":
    main()
