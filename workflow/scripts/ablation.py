"""Rule ablation: results/ablations/<name>.csv, .md and a plot, from the metric files of its runs."""
import io

from ppap import report
from ppap.io import atomic_path, read_json, write_text
from ppap.models import classifiers
from ppap.runtime import rule_session

with rule_session(snakemake.log[0], snakemake.threads, "ablation") as log:
    name = snakemake.wildcards.ablation
    manifests = {m["guide_set"]: m for m in map(read_json, snakemake.input.manifests)}
    base_params = sum(p.numel() for p in classifiers.load_guide(snakemake.input.guide).parameters())
    rows = []
    for run in snakemake.params.runs:
        metrics = read_json(f"results/metrics/{run['guide']}/{run['sampling']}.json")
        rows.append(dict(ablation=name, value=run["value"], method=run["method"], guide=run["guide"],
                         sampling=run["sampling"],
                         **report.run_row(run["guide"], metrics, base_params, manifests.get(run["guide"]))))
    frame = report.ablation_table(rows)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    write_text(snakemake.output.csv, buffer.getvalue())
    write_text(snakemake.output.markdown, report.to_markdown(frame))
    figure = report.plot_ablation(frame, name, unguided=read_json(snakemake.input.unguided))
    for key in ("png", "pdf"):
        with atomic_path(snakemake.output[key]) as tmp:
            figure.savefig(tmp, format=key, dpi=150)
    log.info("\n%s", frame.to_string())
