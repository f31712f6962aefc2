"""Rule guidance_methods: results/guidance_methods.csv (+ .md), every sweep cell
(results/guidance_sweeps.csv), each row's accuracy at fixed FID bounds against its compute
(results/guidance_fixed_fid.csv) and the figures, from the metric and compute files."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import io
import math

import pandas as pd

from harness import rule_session
from ppap.io import atomic_path, read_json, write_text
from ppap.models import classifiers
from ppap.models.unet import load_diffusion_model
from ppap.study import comparison, paths, report

with rule_session(snakemake.log[0], snakemake.threads, "guidance_methods") as log:
    manifests = {m["guide_set"]: m for m in map(read_json, snakemake.input.manifests)}
    shards = [read_json(path) for path in snakemake.input.synthetic]
    conditional = None
    if "conditional_record" in snakemake.input.keys():
        conditional = read_json(snakemake.input.conditional_record)
        # the upper bound trains a whole diffusion model with labels: all of it is trainable
        unet, _ = load_diffusion_model(snakemake.input.conditional_model)
        conditional_params = sum(p.numel() for p in unet.parameters())
    base_params = sum(p.numel() for p in classifiers.load_guide(snakemake.input.guide).parameters())
    # the rule's inputs, by path: a cell's files are looked up there (KeyError: not an input of the rule)
    metric_files = {path: read_json(path) for path in snakemake.input.metrics}
    compute_files = {path: read_json(path) for path in snakemake.input.compute}

    def cell(run):
        guide, sampling = run["guides"][0], run["sampling"]
        record = compute_files[paths.compute(guide, sampling)]
        description = report.guide_description(guide, base_params, manifests.get(guide))
        return dict(method=run["method"], guide=guide, family=comparison.guide_family(guide),
                    scale=float(run["value"]) if guide != "none" else 0.0, sampling=sampling,
                    trainable_params=(conditional_params if guide == "classifier_free"
                                      else description["trainable_params"]),
                    **comparison.metric_columns(metric_files[paths.metrics(guide, sampling)]),
                    **comparison.compute_columns(record), threads=record["threads"], machine=record["machine"],
                    one_time_s=comparison.one_time_cost(guide, manifests.get(guide), shards, conditional,
                                                        snakemake.config))

    rows = pd.DataFrame([cell(run) for run in snakemake.params.rows])
    sweeps = pd.DataFrame([cell(run) for run in snakemake.params.sweeps])
    frame = comparison.guidance_table(rows.to_dict("records"))
    unguided = frame[frame["method"] == "unguided"]
    fixed = (comparison.fixed_fid_table(frame, sweeps, float(unguided["fid"].iloc[0]), snakemake.params.fid_bounds)
             if len(unguided) else pd.DataFrame())
    for path, table in ((snakemake.output.csv, frame), (snakemake.output.sweeps, sweeps),
                        (snakemake.output.fixed_fid, fixed)):
        buffer = io.StringIO()
        table.to_csv(buffer, index=False, float_format="%.6g")
        write_text(path, buffer.getvalue())
    amortised = snakemake.params.amortised
    lines = [report.to_markdown(frame, columns=["method", "family", "scale", "trainable_params", "fid", "precision",
                                                "recall", "accuracy", "denoiser_forward", "denoiser_backward",
                                                "guide_forward", "guide_backward", "wall_s", "one_time_s"]), ""]
    machine = f"{frame['machine'].iloc[0]}, {int(frame['threads'].iloc[0])} thread(s) per job"
    lines.append(f"Passes and wall-seconds are per sample; seconds on {machine}.")
    if amortised in set(frame["method"]):
        own = frame[frame["method"] == amortised].iloc[0]
        for other in frame.itertuples():
            if other.family.startswith("training-free"):
                n = comparison.break_even_samples(own["one_time_s"], own["wall_s"], other.wall_s)
                lines.append(f"- {amortised} against {other.method}: "
                             + (f"its one-time {own['one_time_s']:.0f} s pays for itself after {n:,.0f} samples"
                                if math.isfinite(n) else "never pays for itself in compute (it is not cheaper per sample)"))
    if len(fixed):
        lines += [""] + comparison.fixed_fid_markdown(fixed, amortised)
    write_text(snakemake.output.markdown, "\n".join(lines) + "\n")
    figure = comparison.plot_tradeoff(sweeps, frame, unguided.iloc[0] if len(unguided) else None)
    for key in ("png", "pdf"):
        with atomic_path(snakemake.output[f"tradeoff_{key}"]) as tmp:
            figure.savefig(tmp, format=key, dpi=150)
    figure = comparison.plot_compute(frame, amortised if amortised in set(frame["method"]) else None)
    for key in ("png", "pdf"):
        with atomic_path(snakemake.output[f"compute_{key}"]) as tmp:
            figure.savefig(tmp, format=key, dpi=150)
    figure = comparison.plot_fixed_fid(fixed)
    for key in ("png", "pdf"):
        with atomic_path(snakemake.output[f"fixed_fid_{key}"]) as tmp:
            figure.savefig(tmp, format=key, dpi=150)
    # where each kind of guide can read the class: on x_t (off the shelf, the trained sets of the
    # table) and on the denoiser's x0_hat (what training-free guidance asks of the same guide)
    curves = {"off the shelf on x_t": read_json(snakemake.input.guide_stats)["noisy_test_accuracy"]}
    estimate = read_json(snakemake.input.x0_estimate)
    curves["off the shelf on x0_hat(x_t) (training-free)"] = dict(timesteps=estimate["timesteps"],
                                                                   accuracy=estimate["test_accuracy"])
    boundaries = {}
    for run in snakemake.params.rows:
        manifest = manifests.get(run["guides"][0])
        if manifest is not None:
            curves[f"{run['method']} on x_t"] = manifest["noisy_test_accuracy"]
            boundaries[run["method"]] = [start for start, _ in manifest["ranges"][1:]]
    chance = 1.0 / classifiers.read_guide_spec(snakemake.input.guide)["num_classes"]
    figure = report.plot_noisy_accuracy(curves, boundaries, chance=chance)
    for key in ("png", "pdf"):
        with atomic_path(snakemake.output[f"noisy_{key}"]) as tmp:
            figure.savefig(tmp, format=key, dpi=150)
    log.info("\n%s", frame.to_string())
