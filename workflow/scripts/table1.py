"""Rule table1: results/table1.csv and its Markdown copy, from the metric files."""
import io
from pathlib import Path

from ppap import report
from ppap.io import read_json, write_text
from ppap.models import classifiers
from ppap.runtime import rule_session

with rule_session(snakemake.log[0], snakemake.threads, "table1") as log:
    runs = [read_json(path) for path in snakemake.input.metrics]
    manifests = {m["guide_set"]: m for m in map(read_json, snakemake.input.manifests)}
    base_params = sum(p.numel() for p in classifiers.load_guide(snakemake.input.guide).parameters())
    rows = [report.method_row(method, guide, [r for r in runs if r["method"] == method], base_params,
                              manifests.get(guide))
            for method, guide in snakemake.params.methods.items()]
    frame = report.table1(rows)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    write_text(snakemake.output.csv, buffer.getvalue())
    write_text(snakemake.output.markdown, report.to_markdown(frame))
    log.info("\n%s", frame.to_string())
