"""The Snakemake DAG: planning the default target, and a smoke run of the whole study."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, merged_config, run_models
from conftest import run_workflow as run_snakemake
from ppap.study import grammar


def test_dry_run_plans_default_target(tmp_path):
    result = run_snakemake(tmp_path, "results/table1.csv", "-n", "--cores", "8")
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    for rule in ("prepare_data", "synthesize", "distill_expert", "expert_manifest", "sample", "evaluate", "table1"):
        assert rule in out, f"rule {rule} missing from the plan"
    jobs = planned_jobs(out)
    for rule in ("train_diffusion", "train_guide", "train_evaluator", "noise_schedule"):
        assert rule not in jobs, f"{rule} planned: the default starts from the shipped public models"
    # 5 data-free + 5 labeled experts + 1 noise-aware guide
    assert any(line.split()[:2] == ["distill_expert", "11"] for line in out.splitlines()), out
    assert not (tmp_path / "results").exists(), "a dry run must not write results"


# The shipped overlays that need no file of the user's (the paper-scale ones name local weights and data)
SELF_CONTAINED_OVERLAYS = [("smoke",), ("tiny_guided",), ("mnist",), ("vit",), ("mnist", "vit", "mnist_vit"),
                           ("fair_race",), ("legacy_protocol",), ("legacy_probe",)]


@pytest.mark.parametrize("overlays", SELF_CONTAINED_OVERLAYS, ids="+".join)
def test_every_self_contained_overlay_plans_the_whole_study(tmp_path, overlays):
    """`all` and `tune` plan under each shipped overlay, as its header's commands use it."""
    files = [str(REPO / "config" / f"{name}.yaml") for name in overlays]
    result = run_snakemake(tmp_path, ("all", "tune"), "-n", "--cores", "2", "--configfile", *files)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "table1" in planned_jobs(result.stdout)


def test_dry_run_plans_the_conditional_diffusion_model(tmp_path):
    """The labeled upper bound's model has its own rule, independent of the unconditional one: asked for
    by path it is rebuilt, on the shipped model's noise schedule (no noise_schedule job)."""
    result = run_snakemake(tmp_path, "results/models/conditional_diffusion", "-n", "--cores", "1")
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = planned_jobs(result.stdout)
    assert jobs == {"prepare_data": 1, "train_conditional_diffusion": 1}, result.stdout
    assert not (tmp_path / "results").exists()


def test_bad_config_is_rejected_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experts:\n  train:\n    total_steps: 0\n")
    result = run_snakemake(tmp_path, "results/table1.csv", "-n", "--cores", "1", "--configfile", str(bad))
    assert result.returncode != 0
    assert "total_steps" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_smoke_workflow_produces_table1(smoke_run):
    table = pd.read_csv(smoke_run / "results" / "table1.csv")
    table1_columns = ["method", "n_experts", "adapter_rank", "supervision", "trainable_params",
                      "stored_params", "fid", "is", "precision", "recall", "accuracy", "samples"]
    assert list(table.columns[:12]) == table1_columns
    # then a standard deviation over sampling seeds for every metric
    assert list(table.columns[12:19]) == ["fid_sd", "is_sd", "precision_sd", "recall_sd", "accuracy_sd",
                                          "seeds", "samples_per_seed"]
    # then the number of independent trainings (one in the quick Table 1) and the spread over them
    assert list(table.columns[19:25]) == ["trainings", "fid_sd_train", "is_sd_train", "precision_sd_train",
                                          "recall_sd_train", "accuracy_sd_train"]
    # then what each row cost per sample: counted passes, seconds, and where they were measured
    assert list(table.columns[25:]) == ["denoiser_forward", "denoiser_backward", "guide_forward", "guide_backward",
                                        "wall_s", "threads", "machine"]
    steps = 4  # the smoke preset's DDIM-4
    passes = table.set_index("method")[["denoiser_forward", "denoiser_backward", "guide_forward", "guide_backward"]]
    assert passes.loc["unguided"].tolist() == [steps, 0, 0, 0]
    assert passes.loc["ppap"].tolist() == passes.loc["off_the_shelf"].tolist() == [steps, 0, steps, steps]
    assert (table["wall_s"] > 0).all()
    assert (table["trainings"] == 1).all() and table["accuracy_sd_train"].isna().all()
    assert (table["seeds"] == 2).all() and (table["samples_per_seed"] == 40).all()
    assert list(table["method"]) == ["unguided", "off_the_shelf", "noise_aware_single", "multi_expert_labeled", "ppap"]
    rows = table.set_index("method")
    for metric in ("fid", "is", "precision", "recall"):
        assert np.isfinite(rows[metric]).all(), metric
    assert math.isnan(rows.loc["unguided", "accuracy"])
    assert rows.drop("unguided")["accuracy"].between(0, 1).all()
    assert rows[["precision", "recall"]].stack().between(0, 1).all()
    # LoRA experts train a small fraction of what full fine-tuning trains.
    assert rows.loc["ppap", "trainable_params"] < 0.2 * rows.loc["multi_expert_labeled", "trainable_params"]
    assert rows.loc["ppap", "supervision"] == "data-free" and rows.loc["multi_expert_labeled", "supervision"] == "labeled"
    for method, path in rows["samples"].items():
        assert path.endswith("seed0.npz")
        for seed in (0, 1):
            with np.load(smoke_run / path.replace("seed0", f"seed{seed}")) as samples:
                assert samples["arr_0"].shape == (40, 8, 8, 1) and samples["arr_0"].dtype == np.uint8
                assert ("arr_1" in samples.files) == (method != "unguided")
                if method != "unguided":  # target classes balanced over the 10 digits
                    assert np.bincount(samples["arr_1"], minlength=10).tolist() == [4] * 10
    assert (smoke_run / "results" / "table1.md").read_text().startswith("| method |")


@pytest.mark.slow
def test_smoke_workflow_logs_and_benchmarks(smoke_run):
    logs = {p.relative_to(smoke_run / "logs").as_posix() for p in (smoke_run / "logs").rglob("*.log")}
    for expected in ("prepare_data.log", "synthesize/shard1.log", "distill/datafree_lora2_n2/expert1.log",
                     "sample/datafree_lora2_n2/ddim4_s1.log", "table1.log"):
        assert expected in logs
    assert "train_guide.log" not in logs  # the shipped public guide: nothing trained it here
    assert "done in" in (smoke_run / "logs" / "distill/datafree_lora2_n2/expert1.log").read_text()
    assert (smoke_run / "benchmarks" / "snakemake" / "synthesize" / "shard1.tsv").exists()
    leftovers = [p for p in (smoke_run / "results").rglob("*.tmp*")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


@pytest.mark.slow
def test_smoke_workflow_is_up_to_date_after_run(smoke_run):
    result = run_snakemake(smoke_run, "results/table1.csv", "-n", "--cores", "1",
                           "--configfile", str(REPO / "config" / "smoke.yaml"))
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


TOY_ABLATION = """
ablations:
  toy_rank:
    description: a toy ablation added the README's way, by one config entry
    guide: "datafree_lora{value}_n2"
    values: [1, 2]
"""


@pytest.mark.slow
def test_toy_ablation_added_by_one_config_entry(smoke_run, tmp_path):
    toy = tmp_path / "toy.yaml"
    toy.write_text(TOY_ABLATION)
    options = ["--cores", "2", "--configfile", str(REPO / "config" / "smoke.yaml"), str(toy)]
    plan = run_snakemake(smoke_run, "results/ablations/toy_rank.csv", "-n", *options)
    assert plan.returncode == 0, plan.stderr + plan.stdout
    assert "guide_set=datafree_lora1_n2" in plan.stdout  # the new guide set is planned...
    assert "guide_set=datafree_lora2_n2" not in plan.stdout  # ...and the centre's is reused
    result = run_snakemake(smoke_run, "results/ablations/toy_rank.csv", *options)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(smoke_run / "results" / "ablations" / "toy_rank.csv")
    assert list(table["value"]) == [1, 2]
    assert list(table["guide"]) == ["datafree_lora1_n2", "datafree_lora2_n2"]
    assert table["trainable_params"].iloc[0] < table["trainable_params"].iloc[1]
    assert np.isfinite(table[["fid", "accuracy", "fid_sd"]].to_numpy()).all()
    assert (smoke_run / "results" / "ablations" / "toy_rank.png").stat().st_size > 0


def test_rule_files_are_snakefmt_formatted():
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_snakemake_report_collects_table1_with_its_caption(smoke_run, tmp_path):
    report = tmp_path / "report.html"
    result = run_snakemake(smoke_run, "results/table1.csv", "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    assert "table1.csv" in html and "Table 1" in html  # the file, under its category
    assert "standard deviation over the sampling seeds" in html  # its caption (workflow/report/table.rst)


def planned_jobs(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[1].split("total")[0]
    return {parts[0]: int(parts[1]) for parts in (line.split() for line in table.splitlines())
            if len(parts) == 2 and parts[1].isdigit()}


def test_study_selects_ablations_from_an_overlay_or_the_command_line(tmp_path):
    smoke = str(REPO / "config" / "smoke.yaml")
    every = planned_jobs(run_snakemake(tmp_path, "all", "-n", "--cores", "1", "--configfile", smoke).stdout)
    assert every["ablation"] == len(merged_config(yaml.safe_load(Path(smoke).read_text()))["ablations"])
    none = tmp_path / "none.yaml"
    none.write_text("study: {ablations: []}\n")  # an empty list means none
    result = run_snakemake(tmp_path, "all", "-n", "--cores", "1", "--configfile", smoke, str(none))
    assert result.returncode == 0, result.stderr
    jobs = planned_jobs(result.stdout)
    assert "ablation" not in jobs and jobs["table1"] == 1 and jobs["render_report"] == 1
    result = run_snakemake(tmp_path, "all", "-n", "--cores", "1", "--configfile", smoke,
                           "--config", "study={ablations: [sampler, temperature]}")
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result.stdout)["ablation"] == 2
    assert "ablation=sampler" in result.stdout and "ablation=temperature" in result.stdout
    assert not (tmp_path / "results").exists()


def test_the_default_preset_plans_without_importing_torch(tmp_path):
    """No config key names a file: the pre-run checks stay light (torch only when one is set)."""
    cmd = [sys.executable, "-X", "importtime", "-m", "snakemake", "results/table1.csv", "-n", "--cores", "1",
           "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "ppap.study.checks" in imported and "torch" not in imported and "timm" not in imported


@pytest.mark.slow
def test_logs_say_what_was_loaded(smoke_run):
    logs = smoke_run / "logs"
    models = run_models(REPO / "config" / "smoke.yaml")
    assert models.sources["diffusion"] == models.sources["guide"] == "shipped"  # the smoke preset ships them
    model = f"diffusion model {models.diffusion}: UNet2DModel 1->1 channels at 8 px"
    schedule = "schedule DDPMScheduler linear beta 0.0001..0.02, T = 1000, prediction epsilon"
    guide = f"guide {models.guide}: resnet10t"
    for log in ("synthesize/shard0.log", "sample/none/ddim4_s0.log", "sample/datafree_lora2_n2/ddim4_s1.log"):
        text = (logs / log).read_text()
        assert model in text and schedule in text, log
    for log in ("sample/datafree_lora2_n2/ddim4_s1.log", "sample/off_the_shelf/ddim4_s1.log",
                "distill/datafree_lora2_n2/expert1.log", "distill/datafree_lora2_n2/manifest.log"):
        text = (logs / log).read_text()
        assert guide in text and "10 classes, 1 input channel(s), input size 16" in text, log
    for log in ("distill/labeled_full_n2/expert0.log", "distill/labeled_full_n2/manifest.log"):
        assert schedule in (logs / log).read_text(), log


def test_readme_shows_the_smoke_command_and_how_to_build_one_ablation():
    readme = (REPO / "README.md").read_text()
    assert "snakemake --cores 2 results/table1.csv --configfile config/smoke.yaml" in readme
    assert "snakemake --cores 8 results/ablations/<name>.csv --configfile my_ablation.yaml" in readme
    assert "study: {ablations: [" in readme and "table1: [" in readme


def test_routing_gradients_diagnostic_on_the_smoke_run(smoke_run, tmp_path):
    """benchmarks/routing_gradients.py: away from a boundary both routers pick the same expert (the
    same numbers exactly); at the boundary the original's router picks the expert below."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("routing_gradients", REPO / "benchmarks" / "routing_gradients.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "routing.csv"
    assert module.main(["--run", str(smoke_run), "--sets", "datafree_lora2_n2", "labeled_full_n2",
                        "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert sorted(set(table["t"])) == [499, 500, 501] and len(table) == 6
    away = table[~table["boundary"]]
    assert (away["grad_norm_lower"] == away["grad_norm_owner"]).all()
    assert (away["accuracy_lower"] == away["accuracy_owner"]).all()
    at_boundary = table[table["boundary"]]
    assert (at_boundary["grad_norm_lower"] != at_boundary["grad_norm_owner"]).all()


@pytest.mark.slow
def test_smoke_guidance_methods_table_and_validation_choices(smoke_run):
    """results/guidance_methods.csv on the smoke preset: every method at its scale, the counted
    passes per sample exact for each kind of guidance, the one-time costs of the trained rows; a
    validation cell scored on the validation split only, and the grid the config plans."""
    options = ["--cores", "2", "--configfile", str(REPO / "config" / "smoke.yaml")]
    # the table, and one validation cell of each kind (the choice itself: tests/test_training_free.py)
    cell = "results/tuning/guidance/classifier_free/ddim4_s1.json"
    for target in ("results/guidance_methods.csv", cell):
        result = run_snakemake(smoke_run, target, *options)
        assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(smoke_run / "results" / "guidance_methods.csv").set_index("method")
    steps = 4  # smoke sampling: ddim4
    # (MPGD, DPS and TFG pass counts: tests/test_training_free.py; kept out here for the suite's time)
    assert list(table.index) == ["unguided", "ppap", "freedom", "labeled_upper_bound"]
    passes = table[["denoiser_forward", "denoiser_backward", "guide_forward", "guide_backward"]]
    assert passes.loc["unguided"].tolist() == [steps, 0, 0, 0]
    assert passes.loc["ppap"].tolist() == [steps, 0, steps, steps]
    config = merged_config(yaml.safe_load((REPO / "config" / "smoke.yaml").read_text()))
    repeats = config["training_free"]["freedom"]["recurrence"]
    assert passes.loc["freedom"].tolist() == [repeats * steps] * 4  # every repeat through the denoiser
    assert passes.loc["labeled_upper_bound"].tolist() == [2 * steps, 0, 0, 0]  # conditional + unconditional
    assert (table["wall_s"] > 0).all()
    assert table.loc["ppap", "one_time_s"] > 0 and table.loc["labeled_upper_bound", "one_time_s"] > 0
    assert table.loc["freedom", "one_time_s"] == 0
    assert np.isfinite(table[["fid", "accuracy"]].drop(index="unguided").to_numpy()).all()
    for figure in ("guidance_tradeoff.png", "guidance_compute.png"):
        assert (smoke_run / "results" / "figures" / figure).stat().st_size > 0
    scored = json.loads((smoke_run / cell).read_text())
    assert scored["split"] == "val" and scored["seed"] == config["tuning"]["guidance"]["seed"]
    assert scored["compute"]["per_sample"]["denoiser_forward"] == 2 * steps
    assert 0 <= scored["metrics"]["accuracy"] <= 1
    logs = (smoke_run / "logs" / "tuning" / "guidance" / "classifier_free" / "ddim4_s1.log").read_text()
    assert "validation digits" in logs
    # the validation grid the config asks for: every variant, canonically named
    plan = run_snakemake(smoke_run, "results/tuning/guidance.csv", "-n", *options)
    assert plan.returncode == 0, plan.stderr[-3000:]
    for variant in config["tuning"]["guidance"]["variants"]["freedom"]:
        assert f"results/tuning/guidance/{grammar.canonical_guide(variant, config)}/ddim4_s0.5.json" in plan.stdout


def test_smoke_dense_table(smoke_run):
    """results/table_dense.csv on the smoke preset (both tasks, three rows: config/smoke.yaml drops the
    off-the-shelf and FreeDoM rows, whose guidance paths are tests/test_dense.py's), built in the same
    run as Table 1: targets are the off-the-shelf dense guide's maps of the test digits, segmentations
    are scored by the evaluator (another network, its own seed, trained apart from every guide),
    distances exactly from the samples' own strokes."""
    from ppap import data, dense
    from ppap.models import dense as dense_models
    from ppap.study import dense as dense_study

    # the smoke run built it (tests/conftest.py): nothing is left to do
    options = ["--cores", "2", "--configfile", str(REPO / "config" / "smoke.yaml")]
    plan = run_snakemake(smoke_run, "results/table_dense.csv", "-n", *options)
    assert plan.returncode == 0 and "Nothing to be done" in plan.stdout + plan.stderr, plan.stderr[-3000:]
    table = pd.read_csv(smoke_run / "results" / "table_dense.csv")
    assert list(zip(table["task"], table["method"])) == [
        (task, method) for task in ("segmentation", "distance") for method in ("unguided", "labeled_experts", "ppap")]
    steps = 4  # smoke sampling: ddim4
    guided = table["method"] != "unguided"
    assert (table.loc[guided, ["guide_forward", "guide_backward"]] == steps).all().all()
    assert (table.loc[~guided, ["guide_forward", "guide_backward"]] == 0).all().all()
    seg, dist = table[table["task"] == "segmentation"], table[table["task"] == "distance"]
    assert seg["miou"].between(0, 1).all() and seg["pixel_accuracy"].between(0, 1).all() and dist["rmse"].gt(0).all()
    assert np.isfinite(table["fid"]).all() and (table["seeds"] == 2).all() and (table["samples_per_seed"] == 20).all()
    assert table[["miou_sd", "fid_sd"]].notna().any().all()
    models = run_models(REPO / "config" / "smoke.yaml")
    split = np.load(smoke_run / "results" / "data" / "digits.npz")
    test_images = data.to_float(split["test_images"])
    # the evaluator is no guide: another architecture, its own seed, its own file
    evaluator, guide = (json.loads(Path(stats["segmentation"]).read_text())
                        for stats in (models.dense_evaluator_stats, models.dense_guide_stats))
    assert evaluator["family"] == "plain_unet" and guide["family"] == "timm_unet" and evaluator["seed"] != guide["seed"]
    cell = np.load(smoke_run / "results" / "dense" / "segmentation" / "datafree_lora2_n1" / "ddim4_s1.npz")
    off_the_shelf = dense_models.load_dense_guide(models.dense_guides["segmentation"])
    # (another process, maybe other thread counts: an argmax may flip on a float tie, hence >= 99%)
    # targets and the image-quality reference are disjoint halves of the test digits, class by class
    target_digits, reference_digits = dense_study.targets_and_reference(split["test_labels"])
    assert not set(target_digits) & set(reference_digits)
    assert len(target_digits) + len(reference_digits) == len(test_images)
    assert (cell["targets"] == dense.guide_maps(off_the_shelf, test_images[target_digits]).numpy()).mean() >= 0.99
    # sample i aims at target digit i (mod their number)
    assert list(cell["target_index"]) == list(np.arange(20) % len(target_digits))
    scorer = dense_models.load_dense_guide(models.dense_evaluators["segmentation"])
    assert (cell["predicted"] == dense.guide_maps(scorer, data.to_float(cell["samples"])).numpy()).mean() >= 0.99
    distance = np.load(smoke_run / "results" / "dense" / "distance" / "labeled_full_n1" / "ddim4_s1.npz")
    own = dense.stroke_distance_map(data.to_float(distance["samples"]), 0.5).numpy()
    assert np.array_equal(distance["predicted"], own)  # scored on the samples' own strokes, exactly
    for task in ("segmentation", "distance"):
        assert (smoke_run / "results" / "figures" / f"dense_{task}.png").stat().st_size > 0
    record = json.loads((smoke_run / "results" / "dense" / "segmentation" / "none" / "ddim4_s0.json").read_text())
    assert record["split"] == "test" and record["target"] == "off_the_shelf" and len(record["per_seed"]) == 2
    assert record["quality_reference"] == "disjoint" and record["reference_images"] == len(reference_digits)
