"""Table 1 of several presets from fresh folders, in one run of this checkout: job-seconds, wall
time and critical path of each, and each preset's ratio to the first (issue 21's budget: MNIST's
Table 1 at most 3x the digits').

    python benchmarks/preset_time.py [--presets default mnist] [--cores 2] [--repeats 1]

A preset is ``default`` (config/default.yaml alone) or the name of an overlay in config/ (``mnist``,
``vit``, ``mnist_vit`` with the overlays it layers on). Each runs ``snakemake results/table1.csv`` in a
new folder with this checkout's committed HEAD (exported with ``git archive``, as table1_time.py does);
the presets alternate between rounds. Writes ``benchmarks/results/preset_time.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _common as common
from table1_time import time_run

# overlays a preset layers on, in order (config/<name>.yaml's header says how it is run)
LAYERS = {"default": (), "mnist": ("mnist",), "vit": ("vit",), "mnist_vit": ("mnist", "vit", "mnist_vit")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["default", "mnist"], choices=sorted(LAYERS))
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=int, default=7200)
    p.add_argument("--out", type=Path, default=common.RESULTS)
    args = p.parse_args()
    machine = common.machine(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="preset-time-") as tmp:
        tree = Path(tmp) / "tree"
        commit = common.export_commit("HEAD", tree)
        for r in range(args.repeats):
            for preset in (args.presets if r % 2 == 0 else args.presets[::-1]):
                files = tuple(tree / "config" / f"{name}.yaml" for name in LAYERS[preset])
                row = dict(preset=preset, commit=commit, cores=args.cores, round=r + 1,
                           **time_run(tree, args.cores, args.timeout, files))
                rows.append(row)
                print(f"{preset}: {row['wall_s']:.0f} s wall, {row['jobs']} jobs, {row['job_s']:.0f} job-s "
                      f"(load {row['load_before']:.2f} -> {row['load_after']:.2f})", flush=True)
    first = args.presets[0]
    base = {r["round"]: r for r in rows if r["preset"] == first}
    for row in rows:
        row["job_s_vs_first"] = row["job_s"] / base[row["round"]]["job_s"]
        row["wall_vs_first"] = row["wall_s"] / base[row["round"]]["wall_s"]
    columns = ["preset", "commit", "cores", "round", "wall_s", "job_s", "job_s_vs_first", "wall_vs_first", "jobs",
               "critical_path_s", "work_bound_s", "load_before", "load_after", "critical_path"]
    columns += sorted({k for row in rows for k in row} - set(columns))
    common.write_csv(args.out / "preset_time.csv", rows, columns)
    shown = [dict(preset=r["preset"], round=r["round"], wall=f"{r['wall_s']:.0f} s", jobs=r["jobs"],
                  **{"job s": f"{r['job_s']:.0f}", f"job s vs {first}": f"{r['job_s_vs_first']:.2f}x",
                     f"wall vs {first}": f"{r['wall_vs_first']:.2f}x",
                     "critical path s": f"{r['critical_path_s']:.0f}",
                     "load before / after": f"{r['load_before']:.2f} / {r['load_after']:.2f}"}) for r in rows]
    common.report(args.out, "preset_time", [f"Machine: {machine}.",
                                             f"`snakemake --cores {args.cores} results/table1.csv` from a fresh folder "
                                             f"per preset, commit {commit}, in one run."],
                  [("Table 1 per preset", common.markdown_table(shown, list(shown[0]))),
                   ("Critical path of each run (job wall seconds)",
                    "\n".join(f"- {r['preset']} round {r['round']}: {r['critical_path']}" for r in rows))],
                  ["Each preset starts from the public models shipped for its config where there are any "
                   "(ppap/public/), and trains the rest in its folder: the table's job seconds include that."])


if __name__ == "__main__":
    main()
