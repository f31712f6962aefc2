"""Wall time of `snakemake --cores 2 results/table1.csv` from a fresh folder, for this checkout and an
older commit, in one run, with each run's job seconds per rule.

    python benchmarks/table1_time.py --old c5a451b [--cores 2] [--repeats 1]

Each tree (the old commit exported with ``git archive``, and this checkout's committed HEAD, the
same way) runs its own Snakefile with ``PYTHONPATH`` set to it, in a new working folder; the
trees alternate (old first in odd rounds). Writes ``benchmarks/results/table1_time.csv`` (one row
per run: commit, wall seconds, jobs, job seconds in all and per rule from Snakemake's benchmark
files, the critical path (``ppap.tools.publish.run_critical_path``), the load average before and after)
and ``.md``. About 8-10 minutes per run on 2 cores.
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
from ppap.tools.publish import run_critical_path, summarize_benchmarks


def time_run(tree: Path, cores: int, timeout: int, configfiles: tuple[Path, ...] = ()) -> dict:
    with tempfile.TemporaryDirectory(prefix="table1-time-") as workdir:
        cmd = [sys.executable, "-m", "snakemake", "results/table1.csv", "-s", str(tree / "Snakefile"),
               "--directory", workdir, "--cores", str(cores)]
        if configfiles:
            cmd += ["--configfile", *map(str, configfiles)]
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        # cwd = the work folder: `python -m` puts the cwd first on sys.path, before PYTHONPATH
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir,
                              env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"snakemake failed in {tree}:\n{done.stderr[-3000:]}")
        summary = summarize_benchmarks({"run": Path(workdir) / "benchmarks" / "snakemake"}).set_index("rule")
        job_s = summary.loc["all rules", "wall_s"]
        path = run_critical_path(Path(workdir))
        chain = " > ".join(f"{name} {seconds:.0f}" for name, seconds in zip(path["chain"], path["chain_s"]))
        return dict(wall_s=wall, critical_path_s=path["seconds"], work_bound_s=job_s / cores, critical_path=chain,
                    jobs=int(summary.loc["all rules", "jobs"]), job_s=job_s,
                    load_before=load_before, load_after=os.getloadavg()[0],
                    **{f"{rule}_s": summary.loc[rule, "wall_s"] for rule in sorted(summary.index)
                       if rule != "all rules"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", default="c5a451b")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=int, default=3600)
    p.add_argument("--out", type=Path, default=common.RESULTS)
    args = p.parse_args()
    machine = common.machine(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="table1-trees-") as tmp:
        trees = {"old": Path(tmp) / "old", "new": Path(tmp) / "new"}
        commits = {side: common.export_commit(commit, trees[side])
                   for side, commit in (("old", args.old), ("new", "HEAD"))}
        for r in range(args.repeats):
            for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                row = dict(side=side, commit=commits[side], cores=args.cores, round=r + 1,
                           **time_run(trees[side], args.cores, args.timeout))
                rows.append(row)
                print(f"{side} {commits[side]}: {row['wall_s']:.0f} s wall, {row['jobs']} jobs, "
                      f"{row['job_s']:.0f} job-s (load {row['load_before']:.2f} -> {row['load_after']:.2f})",
                      flush=True)
    columns = ["side", "commit", "cores", "round", "wall_s", "critical_path_s", "work_bound_s", "jobs", "job_s",
               "load_before", "load_after", "critical_path"]
    columns += sorted({k for row in rows for k in row} - set(columns))
    common.write_csv(args.out / "table1_time.csv", rows, columns)
    shown = [dict(side=r["side"], commit=r["commit"], **{"wall": f"{int(r['wall_s'] // 60)} min {r['wall_s'] % 60:.0f} s",
                                                         "critical path s": f"{r['critical_path_s']:.0f}",
                                                         f"job s / {r['cores']} cores": f"{r['work_bound_s']:.0f}",
                                                         "jobs": r["jobs"], "job s": f"{r['job_s']:.0f}",
                                                         "distillation job s": f"{r.get('distill_expert_s', 0):.0f}",
                                                         "load before / after": f"{r['load_before']:.2f} / "
                                                                                f"{r['load_after']:.2f}"})
             for r in rows]
    common.report(args.out, "table1_time", [f"Machine: {machine}.",
                                            f"`snakemake --cores {args.cores} results/table1.csv` from a fresh folder, "
                                            "each tree its own Snakefile and library."],
                  [("Table 1 wall time", common.markdown_table(shown, list(shown[0]))),
                   ("Critical path of each run (job wall seconds)",
                    "\n".join(f"- {r['side']} round {r['round']}: {r['critical_path']}" for r in rows))],
                  ["wall >= max(critical path, job seconds / cores): the critical path is the longest chain of "
                   "dependent jobs (inputs to outputs, from Snakemake's log), weighted by each job's wall seconds "
                   "from its benchmark file; no scheduler and no number of cores runs these jobs faster."])


if __name__ == "__main__":
    main()
