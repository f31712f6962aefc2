"""Rule tune_guidance: each guided method's variant and scale, chosen on the validation split."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import io

import pandas as pd

from harness import rule_session
from ppap.io import read_json, write_text
from ppap.study import comparison, paths

with rule_session(snakemake.log[0], snakemake.threads, "tune_guidance") as log:
    cells = {path: read_json(path) for path in snakemake.input.cells}  # the rule's inputs, by path
    rows = []
    for run in snakemake.params.runs:
        cell = cells[paths.tuning_metrics(run["guides"][0], run["sampling"])]
        rows.append(dict(method=run["method"], guide=run["guides"][0], scale=float(run["value"]),
                         sampling=run["sampling"], **comparison.validation_row(cell)))
    tie_break = snakemake.params.get("tie_break") or "accuracy"
    spread = snakemake.params.get("spread") or "seeds"
    cells = comparison.choose_on_validation(pd.DataFrame(rows), snakemake.params.max_fid_ratio, tie_break, spread)
    configured = snakemake.params.configured
    cells["configured"] = [m in configured and configured[m]["guide"] == g and abs(configured[m]["scale"] - s) < 1e-9
                           for m, g, s in zip(cells["method"], cells["guide"], cells["scale"])]
    buffer = io.StringIO()
    cells.to_csv(buffer, index=False, float_format="%.6g")
    write_text(snakemake.output.csv, buffer.getvalue())
    chosen = comparison.chosen_settings(cells)
    columns = ["method", "guide", "scale", "fid", "accuracy", "precision", "recall", "chosen", "at_edge", "margin",
               "margin_over_spread", "configured"]
    criterion = comparison.CRITERION + (comparison.FID_TIE_BREAK if tie_break == "fid" else "")
    lines = [f"Criterion: {criterion}; max_fid_ratio {snakemake.params.max_fid_ratio:g}, "
             f"bound {cells['fid_bound'].iloc[0]:.3f}; {int(cells['seeds'].max())} seed(s) per cell. "
             "at_edge: the chosen scale is its grid's smallest or largest (the grid should grow); margin: "
             "its accuracy over the method's next-best qualifying cell, margin_over_spread: whether that "
             f"exceeds their combined spread; a cell's spread: {comparison.SPREADS[spread]}.", "",
             "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]

    def cell_text(value, fmt):
        return "" if pd.isna(value) else format(value, fmt)

    def flag(value):
        return "" if pd.isna(value) else ("yes" if value else "no")

    for row in cells.itertuples():
        lines.append(f"| {row.method} | {row.guide} | {row.scale:g} | {row.fid:.3f} | {row.accuracy:.3f} | "
                     f"{row.precision:.3f} | {row.recall:.3f} | {'yes' if row.chosen else ''} | "
                     f"{'yes' if row.at_edge is True else ''} | {cell_text(row.margin, '.3f')} | "
                     f"{flag(row.margin_over_spread) if row.chosen else ''} | {'yes' if row.configured else ''} |")
    budget = comparison.tuning_budget(cells)
    lines += ["", "Each method's search (its tuning budget: variants x scales, each cell over the seeds):", "",
              "| method | variants | scales | cells | samples |", "|---|---|---|---|---|"]
    lines += [f"| {b.method} | {b.variants} | {b.scales} | {b.cells} | {b.samples:,} |" for b in budget.itertuples()]
    write_text(snakemake.output.markdown, "\n".join(lines) + "\n")
    log.info("\n%s\nchosen: %s", cells.to_string(), chosen)
    mismatched = {m: c for m, c in chosen.items() if m in configured and not
                  cells[(cells.method == m) & cells.chosen].configured.all()}
    if mismatched:
        log.warning("the config does not use the chosen setting(s) %s: update guidance_methods.scales and "
                    "training_free", mismatched)
