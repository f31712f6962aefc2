"""Rule render_report: the executed report notebook as a self-contained HTML page."""
import nbformat
from nbconvert import HTMLExporter

from ppap.io import write_text
from ppap.runtime import rule_session

with rule_session(snakemake.log[0], snakemake.threads, "render_report") as log:
    notebook = nbformat.read(snakemake.params.notebook, as_version=4)
    html, _ = HTMLExporter(embed_images=True).from_notebook_node(notebook)
    write_text(snakemake.output.html, html)
    log.info("wrote %s (%d bytes)", snakemake.output.html, len(html))
