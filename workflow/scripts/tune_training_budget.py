"""Rule tune_training_budget: each family's training budget (optimiser steps per guide set),
chosen on the validation split where a doubling stops paying more than a training's spread."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import io

from harness import rule_session
from ppap.io import read_json, write_text
from ppap.study import tuning

with rule_session(snakemake.log[0], snakemake.threads, "tune_training_budget") as log:
    manifests = {m["guide_set"]: m for m in map(read_json, snakemake.input.manifests)}
    configured = int(snakemake.params.configured)
    frame = tuning.training_budget_table(snakemake.params.runs, manifests, configured)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    write_text(snakemake.output.csv, buffer.getvalue())
    chosen = tuning.chosen_budgets(frame)
    header = (f"Criterion: {tuning.CRITERION}. Rule: {tuning.BUDGET_RULE}. Configured: {configured} steps. Chosen: "
              + ", ".join(f"{family} {steps}" + (" (grid edge)" if frame[(frame.family == family) & frame.chosen]
                                                 .at_edge.all() else "") for family, steps in chosen.items()) + ".")
    columns = ["family", "total_steps", "guide", "trainings", "val_accuracy", "val_sd", "gain_per_doubling",
               "spread", "chosen", "at_edge", "configured"]
    write_text(snakemake.output.markdown, tuning.markdown_table(frame, columns, header))
    log.info("\n%s\nchosen: %s", frame.to_string(), chosen)
    if any(steps != configured for steps in chosen.values()):
        log.warning("the config does not use the chosen budget(s) %s: update experts.train.total_steps", chosen)
