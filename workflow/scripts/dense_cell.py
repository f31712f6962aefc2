"""Rules dense_cell (a row of results/table_dense.csv, on the test split, every sampling seed) and
dense_validation (a method's sweep on the validation split, the tuning seed): samples guided towards
the held-out digits' maps, scored against them and, for image quality, against the split's other
digits (dense.quality_reference)."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import torch

from harness import rule_session
from ppap import data, metrics
from ppap.compute import cost_record
from ppap.data import load_digits_npz, save_npz_reproducible
from ppap.devices import resolve_device
from ppap.experts.sets import expert_ranges
from ppap.guidance import NonFiniteError
from ppap.io import write_json
from ppap.models import dense as dense_models
from ppap.models.denoisers import load_eps_model
from ppap.study import dense as dense_study
from ppap.study import grammar
from ppap.study.guides import GuideSource, load_guidance
from ppap.study.specs import sampling_spec

with rule_session(snakemake.log[0], snakemake.threads, f"dense_cell ({snakemake.params.split})") as log:
    device = resolve_device(snakemake.params.device)
    task, guide_name, split_name = snakemake.wildcards.task, snakemake.wildcards.guide, snakemake.params.split
    settings = dense_study.DenseSettings.from_config(task, snakemake.params.dense)
    denoiser = load_eps_model(snakemake.input.model, device)
    alphas_cumprod, image_shape = denoiser.alphas_cumprod, denoiser.image_shape
    split = load_digits_npz(snakemake.input.data)
    if f"{split_name}_images" not in split:
        raise ValueError(f"the dense study's {split_name} split is missing (data.val_fraction must be > 0)")
    real, labels = split[f"{split_name}_images"], split[f"{split_name}_labels"]
    off_the_shelf = dense_models.load_dense_guide(snakemake.input.dense_guide).to(device)
    num_classes = dense_models.read_dense_spec(snakemake.input.dense_guide)["num_outputs"]
    if "target_maps" in snakemake.input.keys():  # the table's targets given in a file (dense.target_maps)
        target_pool = dense_study.load_target_maps(snakemake.input.target_maps, settings, image_shape[-1], num_classes)
        log.info("targets: %d maps from %s", len(target_pool), snakemake.input.target_maps)
        quality_reference = real  # the maps are not the split's digits
    else:
        # targets and the quality reference are disjoint digits (dense.quality_reference)
        target_digits, reference_digits = dense_study.targets_and_reference(labels, settings.quality_reference)
        target_pool = dense_study.target_maps(settings, data.to_float(real[target_digits]).to(device),
                                              torch.as_tensor(labels[target_digits]), off_the_shelf).cpu()
        quality_reference = real[reference_digits]
        log.info("targets: the maps of %d %s digits; image quality against %d of its digits (%s)",
                 len(target_digits), split_name, len(reference_digits), settings.quality_reference)
    evaluator = (dense_models.load_dense_guide(snakemake.input.dense_evaluator).to(device)
                 if "dense_evaluator" in snakemake.input.keys() else None)
    manifest = None
    if grammar.guide_kind(guide_name) == "experts":
        ranges = snakemake.params.ranges or expert_ranges(
            guide_name, grammar.parse_guide_set(guide_name).n_experts, len(alphas_cumprod))
        manifest = dict(experts=list(snakemake.input.experts), ranges=[list(r) for r in ranges])
    evaluation = snakemake.params.evaluation
    kind = evaluation.get("feature_extractor") or "evaluator"
    scorer = metrics.make_scorer(kind, quality_reference, evaluator=snakemake.input.get("evaluator"),
                                 inception=snakemake.input.get("inception"), device=device)
    # IS splits: at most one per image with Inception, one per 25 images with the evaluator
    splits_per = 1 if kind == "inception" else 25

    def image_metrics(images):
        return scorer.score(images, nearest_k=evaluation["nearest_k"],
                            isc_splits=min(evaluation["isc_splits"], len(images) // splits_per or 1))
    cells, first = [], None
    for setting in snakemake.params.samplings:
        spec = sampling_spec(snakemake.params, device, setting)
        guidance = load_guidance(guide_name, denoiser, device, GuideSource(snakemake.input.dense_guide, manifest),
                                 snakemake.params.get("training_free"), setting["routing"], settings.energy(),
                                 snakemake.params.get("performance"))
        log.info("%s %s on the %s split, scale %s: %s", task, guide_name, split_name, setting["scale"],
                 guidance.description)
        try:
            cell = dense_study.sample_and_score(guidance, spec, settings, target_pool, evaluator, image_metrics,
                                                snakemake.params.seeds, snakemake.params.num_samples, device,
                                                num_classes)
        except NonFiniteError as err:
            if split_name != "val":
                raise
            # a sweep's largest scales may diverge: recorded as such (it cannot be chosen), the sweep goes on
            log.warning("%s %s scale %s diverged: %s", task, guide_name, setting["scale"], err)
            cells.append(dict(task=task, guide=guide_name, scale=setting["scale"], split=split_name,
                              seeds=list(snakemake.params.seeds), diverged=str(err),
                              metrics={"fid": float("inf"), dense_study.TASK_SCORE[task][0]: float("nan")}))
            continue
        summary = dense_study.summarise_seeds(cell.per_seed)
        log.info("%s %s scale %s: %s", task, guide_name, setting["scale"], summary)
        cells.append(dict(task=task, guide=guide_name, scale=setting["scale"], split=split_name,
                          seeds=list(snakemake.params.seeds), samples_per_seed=len(cell.target_index),
                          target=settings.target, quality_reference=settings.quality_reference,
                          reference_images=len(quality_reference), per_seed=cell.per_seed, metrics=summary,
                          compute=cost_record(cell.costs, snakemake.threads, device)))
        if first is None:
            first = cell
    if first is None:
        raise NonFiniteError(f"every scale of {guide_name} diverged on {task}")
    write_json(snakemake.output.cell, cells[0] if split_name == "test" else dict(cells=cells))
    # the first cell's first seed: what the figure shows
    save_npz_reproducible(snakemake.output.samples, samples=first.samples, predicted=first.predicted,
                          target_index=first.target_index, targets=target_pool.numpy())
