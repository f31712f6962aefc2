"""Rule table1: results/table1.csv and its Markdown copy, from the metric files; beside them
<table>.preset.json, the preset and config they were made with (``python -m ppap.tools.reference``)."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import io

from harness import rule_session
from ppap.io import read_json, write_text
from ppap.models import classifiers
from ppap.study import paths, report
from ppap.tools.reference import write_preset_record

with rule_session(snakemake.log[0], snakemake.threads, "table1") as log:
    manifests = {m["guide_set"]: m for m in map(read_json, snakemake.input.manifests)}
    base_params = sum(p.numel() for p in classifiers.load_guide(snakemake.input.guide).parameters())
    # the rule's inputs, by path: a run's files are looked up there (KeyError: not an input of the rule)
    metric_files = {path: read_json(path) for path in snakemake.input.metrics}
    compute_files = {path: read_json(path) for path in snakemake.input.compute}
    rows = []
    for run in snakemake.params.runs:
        metrics = [metric_files[paths.metrics(guide, run["sampling"])] for guide in run["guides"]]
        compute = [compute_files[paths.compute(guide, run["sampling"])] for guide in run["guides"]]
        rows.append(dict(method=run["label"], **report.run_row(run["guides"], metrics, base_params,
                                                                manifests.get(run["guides"][0]), compute)))
    frame = report.table1(rows)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    write_text(snakemake.output.csv, buffer.getvalue())
    shown = [c for c in frame.columns if c not in ("threads", "machine") and not c.endswith(("_sd", "_sd_train"))]
    write_text(snakemake.output.markdown, report.to_markdown(frame, columns=shown) + "\n"
               + report.compute_note(frame) + "\n")
    record = write_preset_record(snakemake.output.csv, snakemake.config)  # -> snakemake.output.preset
    log.info("preset %s, config sha256 %s", record["preset"], record["config_sha256"])
    log.info("\n%s", frame.to_string())
