"""Rule table_dense: results/table_dense.csv (+ .md) and one figure per task (target map | sample |
what the sample shows, one row per method) from the test cells of the dense study."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import numpy as np

from harness import rule_session
from ppap.io import atomic_path, read_json, write_text
from ppap.study import dense as dense_study
from ppap.study import report
from ppap.tools.reference import write_preset_record

with rule_session(snakemake.log[0], snakemake.threads, "table_dense") as log:
    runs = snakemake.params.runs
    cells = [{**read_json(path), "method": run["method"]} for run, path in zip(runs, snakemake.input.cells)]
    table = dense_study.dense_table(cells)
    with atomic_path(snakemake.output.csv, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    sections = []
    for task, group in table.groupby("task", sort=False):
        metrics = [m for m in dense_study.METRICS if m in group and group[m].notna().any()]
        compute = [c for c in ("guide_forward", "guide_backward", "wall_s") if c in group]
        sections += [f"**{task}** (test split; mean ± sd over sampling seeds)", "", report.to_markdown(group, columns=["method", "guide", "scale", *metrics,
                                                                           *compute]), ""]
    sections.append("wall_s: seconds per sample of sampling on the machine and threads of each job "
                    "(results/dense/<task>/<guide>/<sampling>.json).")
    write_text(snakemake.output.markdown, "\n".join(sections) + "\n")
    for task in dict.fromkeys(run["task"] for run in runs):
        rows = []
        for run, path in zip(runs, snakemake.input.samples):
            if run["task"] != task:
                continue
            with np.load(path) as arrays:
                targets = arrays["targets"][arrays["target_index"]]
                rows.append((run["method"], targets, arrays["samples"], arrays["predicted"]))
        figure = dense_study.plot_dense_maps(task, rows)
        out = next(p for p in snakemake.output.figures if p.endswith(f"dense_{task}.png"))
        with atomic_path(out, suffix=".png") as tmp:
            figure.savefig(tmp, dpi=150)
        log.info("%s: %d rows, figure %s", task, len(rows), out)
    write_preset_record(snakemake.output.csv, snakemake.config)  # -> snakemake.output.preset
    log.info("table_dense: %d rows", len(table))
