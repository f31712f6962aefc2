"""Rule tune_learning_rates: each family's learning rate, chosen on the validation split."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import io

from harness import rule_session
from ppap.io import read_json, write_text
from ppap.study import tuning

with rule_session(snakemake.log[0], snakemake.threads, "tune_learning_rates") as log:
    manifests = {m["guide_set"]: m for m in map(read_json, snakemake.input.manifests)}
    frame = tuning.learning_rate_table(snakemake.params.runs, manifests, snakemake.params.configured)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    write_text(snakemake.output.csv, buffer.getvalue())
    chosen = tuning.chosen_rates(frame)
    columns = ["family", "lr", "guide", "val_accuracy", "chosen", "configured"]
    lines = [f"Criterion: {tuning.CRITERION}. Chosen: "
             + ", ".join(f"{family} {lr:g}" for family, lr in chosen.items()) + ".", "",
             "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in frame.itertuples():
        lines.append(f"| {row.family} | {row.lr:g} | {row.guide} | {row.val_accuracy:.4f} | "
                     f"{'yes' if row.chosen else ''} | {'yes' if row.configured else ''} |")
    write_text(snakemake.output.markdown, "\n".join(lines) + "\n")
    log.info("\n%s\nchosen: %s", frame.to_string(), chosen)
    mismatched = {f: lr for f, lr in chosen.items() if not frame[(frame.family == f) & frame.chosen].configured.all()}
    if mismatched:
        log.warning("the config does not use the chosen rate(s) %s: update experts.train.lr / full_lr", mismatched)
