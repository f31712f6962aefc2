"""Rule render_report: the executed report notebook (report_notebook's log, which papermill writes
cell by cell) published whole to results/report/study.ipynb, and as a self-contained HTML page."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import nbformat
from nbconvert import HTMLExporter

from harness import rule_session
from ppap.io import write_text

with rule_session(snakemake.log[0], snakemake.threads, "render_report") as log:
    notebook = nbformat.read(snakemake.params.executed, as_version=4)
    html, _ = HTMLExporter(embed_images=True).from_notebook_node(notebook)
    write_text(snakemake.output.notebook, nbformat.writes(notebook))
    write_text(snakemake.output.html, html)
    log.info("published %s and %s (%d bytes) from %s", snakemake.output.notebook, snakemake.output.html,
             len(html), snakemake.params.executed)
