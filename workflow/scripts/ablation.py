"""Rule ablation: results/ablations/<name>.csv, .md and a plot, from the metric files of its runs."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import io

from harness import rule_session
from ppap.io import atomic_path, read_json, write_text
from ppap.models import classifiers
from ppap.study import paths, report

with rule_session(snakemake.log[0], snakemake.threads, "ablation") as log:
    name = snakemake.wildcards.ablation
    manifests = {m["guide_set"]: m for m in map(read_json, snakemake.input.manifests)}
    base_params = sum(p.numel() for p in classifiers.load_guide(snakemake.input.guide).parameters())
    metric_files = {path: read_json(path) for path in snakemake.input.metrics}  # the rule's inputs, by path
    rows = []
    for run in snakemake.params.runs:
        metrics = [metric_files[paths.metrics(guide, run["sampling"])] for guide in run["guides"]]
        rows.append(dict(ablation=name, value=run["value"], method=run["method"], guide=run["guides"][0],
                         sampling=run["sampling"],
                         **report.run_row(run["guides"], metrics, base_params, manifests.get(run["guides"][0]))))
    frame = report.ablation_table(rows)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    write_text(snakemake.output.csv, buffer.getvalue())
    write_text(snakemake.output.markdown, report.to_markdown(frame))
    num_classes = classifiers.read_guide_spec(snakemake.input.guide)["num_classes"]
    figure = report.plot_ablation(frame, name, unguided=read_json(snakemake.input.unguided),
                                  factor=snakemake.params.factor, chance=1.0 / num_classes)
    for key in ("png", "pdf"):
        with atomic_path(snakemake.output[key]) as tmp:
            figure.savefig(tmp, format=key, dpi=150)
    log.info("\n%s", frame.to_string())
