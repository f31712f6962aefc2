"""Rule figures: the motivating noisy-accuracy figure and the sample grids of Table 1's methods."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

from harness import rule_session
from ppap import data
from ppap.io import atomic_path, read_json
from ppap.models import classifiers
from ppap.study import report


def save(figure, paths):
    for path in paths:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=str(path).rsplit(".", 1)[-1], dpi=150)


with rule_session(snakemake.log[0], snakemake.threads, "figures") as log:
    curves = {"off-the-shelf guide": read_json(snakemake.input.guide_stats)["noisy_test_accuracy"]}
    boundaries = {}
    for method, path in zip(snakemake.params.set_methods, snakemake.input.manifests):
        manifest = read_json(path)
        curves[f"{method} ({manifest['guide_set']})"] = manifest["noisy_test_accuracy"]
        boundaries[method] = [start for start, _ in manifest["ranges"][1:]]
    chance = 1.0 / classifiers.read_guide_spec(snakemake.input.guide)["num_classes"]
    save(report.plot_noisy_accuracy(curves, boundaries, chance=chance), [snakemake.output.accuracy_png, snakemake.output.accuracy_pdf])
    grids, layouts = {}, {}  # each grid PNG records its rows, columns and target classes
    for method, path in zip(snakemake.params.grid_methods, snakemake.input.grids):
        grids[method], layouts[method] = data.load_sample_grid(path)
    save(report.plot_sample_grids(grids, layouts), [snakemake.output.samples_png, snakemake.output.samples_pdf])
    log.info("figures written")
