"""What each table and ablation of `all` costs, from a finished run's Snakemake benchmark files.

    python benchmarks/study_cost.py --run DIR [--run DIR2 ...] [--configfile FILE ...]

For every target of `all` (Table 1, then the other tables, then each ablation, then the report)
the DAG is planned from scratch (``snakemake -n --forceall TARGET``) and the ``s`` column of each
job's benchmark file is summed:

- ``job_s``: every job the target needs, alone (what `snakemake TARGET` costs in a fresh folder);
- ``added_job_s``: the jobs no target before it in the list needs (what adding it to `all` costs);
- ``jobs`` / ``added_jobs``: the same as job counts, and ``missing``: jobs whose benchmark file no
  run folder has (not built there).

``--run`` may be given several times (say, the study's folder and the guidance methods' one); a
job's file is read from the first folder that has it. Seconds are job wall-seconds (each job's own
threads); the wall time of `--cores C` is at least the sum over C. Writes
``benchmarks/results/study_cost.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _common as common  # noqa: E402

BENCHMARK_LINE = re.compile(r"^\s+benchmark: (\S+)$")


def targets(config: dict) -> list[tuple[str, str]]:
    """(name, file) of every target of `all`, in the order their added cost is counted."""
    out = [("table1", "results/table1.csv"), ("table1_trainings", "results/table1_trainings.csv"),
           ("guidance_methods", "results/guidance_methods.csv")]
    if config.get("dense"):
        out.append(("table_dense", "results/table_dense.csv"))
    out += [(f"ablation {name}", f"results/ablations/{name}.csv") for name in config.get("ablations") or {}]
    out += [("figures", "results/figures/samples.png"), ("noisy accuracy figure", "results/figures/noisy_accuracy.png"),
            ("report", "results/report/study.html")]
    return out


def planned_benchmarks(target: str, workdir: Path, configfiles: list[Path]) -> list[str]:
    """The benchmark file of every job `snakemake TARGET` would run in an empty folder."""
    cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "-n", "--forceall", target, "-d", str(workdir)]
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"planning {target} failed:\n{done.stderr[-2000:]}")
    return [m.group(1) for line in (done.stdout + done.stderr).splitlines() if (m := BENCHMARK_LINE.match(line))]


def job_seconds(path: str, runs: list[Path]) -> float | None:
    for run in runs:
        tsv = run / path
        if tsv.is_file():
            with tsv.open() as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
            return float(rows[0]["s"])
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, action="append", required=True, help="a finished run's folder (-d)")
    p.add_argument("--configfile", type=Path, nargs="*", default=[], help="the run's overlays, if any")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    config = common.preset_config(*args.configfile)  # merged key by key, as Snakemake merges overlays
    seen: set[str] = set()
    rows = []
    for name, target in targets(config):
        planned = planned_benchmarks(target, args.run[0], args.configfile)
        seconds = {path: job_seconds(path, args.run) for path in planned}
        added = [path for path in planned if path not in seen]
        seen.update(planned)
        rows.append(dict(target=name, file=target, jobs=len(planned),
                         job_s=sum(s for s in seconds.values() if s is not None),
                         added_jobs=len(added), added_job_s=sum(seconds[p] for p in added if seconds[p] is not None),
                         missing=sum(s is None for s in seconds.values())))
        print(f"{name}: {rows[-1]['jobs']} jobs, {rows[-1]['job_s']:.0f} s; added {rows[-1]['added_jobs']} jobs, "
              f"{rows[-1]['added_job_s']:.0f} s; missing {rows[-1]['missing']}", flush=True)
    total = dict(target="all", file="(every target above)", jobs=len(seen), job_s=sum(r["added_job_s"] for r in rows),
                 added_jobs=len(seen), added_job_s=sum(r["added_job_s"] for r in rows),
                 missing=sum(r["missing"] for r in rows if r["added_jobs"]))
    rows.append(total)
    common.write_csv(args.out / "study_cost.csv", rows)
    shown = [dict(target=r["target"], jobs=r["jobs"], **{"job s (alone)": f"{r['job_s']:,.0f}",
                                                         "added jobs": r["added_jobs"],
                                                         "added job s": f"{r['added_job_s']:,.0f}",
                                                         ">= min at --cores 2": f"{r['added_job_s'] / 120:,.1f}",
                                                         "missing": r["missing"]}) for r in rows]
    common.report(args.out, "study_cost",
                  [f"Runs: {', '.join(str(r) for r in args.run)} (job wall-seconds from their "
                   "benchmarks/snakemake/*.tsv).",
                   "added = jobs no earlier target needs: what adding the target to `all` costs; "
                   ">= min at --cores 2 = added job seconds / 2 cores / 60."],
                  [("Cost of each target of `all`", common.markdown_table(shown, list(shown[0])))], [])


if __name__ == "__main__":
    main()
