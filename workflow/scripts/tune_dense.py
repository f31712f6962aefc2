"""Rule tune_dense: the dense study's validation grid, each method's chosen scale (highest mIoU, or
lowest RMSE, among cells whose validation FID is within tuning.dense.max_fid_ratio of the unguided
cell's) beside the scale the config holds (dense.scales)."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

from harness import rule_session
from ppap.io import atomic_path, read_json
from ppap.study import dense as dense_study

with rule_session(snakemake.log[0], snakemake.threads, "tune_dense") as log:
    method_of = {(run["task"], run["guide"]): run["method"] for run in snakemake.params.runs}
    results = []
    for path in snakemake.input.cells:
        for cell in read_json(path)["cells"]:
            results.append({**cell, "method": method_of[(cell["task"], cell["guide"])]})
    cells = dense_study.choose_scales(dense_study.validation_cells(results), snakemake.params.max_fid_ratio)
    configured = snakemake.params.configured or {}
    cells["configured"] = [
        method == "unguided" or float((configured.get(task) or {}).get(method, float("nan"))) == scale
        for task, method, scale in zip(cells["task"], cells["method"], cells["scale"])]
    cells = cells.sort_values(["task", "method", "scale"], kind="stable")
    with atomic_path(snakemake.output.csv, suffix=".csv") as tmp:
        cells.to_csv(tmp, index=False, float_format="%.6g")
    chosen = cells[cells["chosen"]]
    lines = ["# Dense study: scales chosen on the validation split", "",
             f"Criterion: the best task score (mIoU, or lowest RMSE) among cells whose validation FID is at most "
             f"{snakemake.params.max_fid_ratio} x the unguided cell's; ties to the smaller scale.", "",
             "| task | method | guide | chosen scale | score | fid | configured scale |", "|---|---|---|---|---|---|---|"]
    for row in chosen.itertuples():
        held = (configured.get(row.task) or {}).get(row.method)
        lines.append(f"| {row.task} | {row.method} | {row.guide} | {row.scale:g} | {row.value:.4f} | {row.fid:.3f} | "
                     f"{held if held is not None else 'none'} |")
    diverged = cells[cells["diverged"]]
    if len(diverged):
        lines += ["", "Diverged (a non-finite guidance gradient; not choosable): "
                  + ", ".join(f"{r.task} {r.method} s={r.scale:g}" for r in diverged.itertuples())]
    disagree = [(r.task, r.method) for r in chosen.itertuples() if not r.configured]
    lines += ["", "Config and validation agree." if not disagree else
              f"The config differs from the validation choice for: {disagree}"]
    with atomic_path(snakemake.output.markdown, suffix=".md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    log.info("chosen: %s; config disagrees for %s", chosen[["task", "method", "scale"]].values.tolist(), disagree)
