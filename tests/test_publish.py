"""ppap.tools.publish: a finished run becomes results/reference/, whole or not at all."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from ppap.tools import publish

REPO = Path(__file__).resolve().parents[1]

GUIDES = {"none": "ddim25_s0", "off_the_shelf": "ddim25_s1", "datafree_lora4_n5": "ddim25_s1"}


def fake_run(root: Path, with_benchmarks: bool = True) -> Path:
    results = root / "results"
    rows = [dict(method=guide, samples=f"results/samples/{guide}/{sampling}/seed0.npz")
            for guide, sampling in GUIDES.items()]
    for name in ("table1.csv", "table1_trainings.csv"):
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(results / name, index=False)
    for name in ("table1.md", "table1_trainings.md", "report/study.html", "report/summary.md",
                 "ablations/norm.csv", "ablations/norm.png", "figures/samples.png",
                 "models/guide.json", "models/evaluator.json", "models/guides/datafree_lora4_n5/manifest.json"):
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(name)
    for guide, sampling in GUIDES.items():
        grid = results / "samples" / guide / sampling / "grid.png"
        grid.parent.mkdir(parents=True, exist_ok=True)
        grid.write_text(guide)
    if with_benchmarks:
        tsv = root / "benchmarks" / "snakemake" / "sample" / "none" / "ddim25_s0.tsv"
        tsv.parent.mkdir(parents=True)
        tsv.write_text("s\tmax_rss\n1.5\t100\n")
    return root


def test_publish_copies_what_the_readme_quotes(tmp_path):
    run = fake_run(tmp_path / "run", with_benchmarks=False)
    timed = fake_run(tmp_path / "timed")
    copied = publish.publish(run, tmp_path / "reference", timed=timed)
    assert {"table1.csv", "table1_trainings.csv", "report/summary.md", "ablations/norm.png",
            "guides/off_the_shelf.json", "guides/evaluator.json", "guides/datafree_lora4_n5.json",
            "samples/none.png", "samples/datafree_lora4_n5.png",
            "benchmarks/timed/sample/none/ddim25_s0.tsv"} <= set(copied)
    assert not [name for name in copied if name.startswith("benchmarks/snakemake/")]  # the run had none
    assert "table1.preset.json" not in copied  # optional: an older run has no preset record
    assert (tmp_path / "reference" / "samples" / "off_the_shelf.png").read_text() == "off_the_shelf"
    summary = pd.read_csv(tmp_path / "reference" / "benchmarks" / "summary.csv")
    assert summary.to_dict("records") == [
        dict(run="timed", rule="sample", jobs=1, wall_s=1.5, median_s=1.5, max_rss_mb=100.0),
        dict(run="timed", rule="all rules", jobs=1, wall_s=1.5, median_s=1.5, max_rss_mb=100.0)]


def test_publish_takes_the_records_of_the_models_table1_was_made_from(tmp_path):
    """A run on the shipped models has no results/models/guide.json: its preset record names the
    shipped files, and those records are what the reference gets."""
    from ppap.io import write_json
    from ppap.public import shipped_model

    run = fake_run(tmp_path / "run")
    for name in ("guide.json", "evaluator.json"):
        (run / "results" / "models" / name).unlink()
    write_json(run / "results" / "table1.preset.json", dict(
        preset="smoke", config_sha256="0" * 64, config={},
        models={"guide_stats": {"source": "shipped", "path": "ppap/public/smoke/guide.json"},
                "evaluator_stats": {"source": "shipped", "path": "ppap/public/smoke/evaluator.json"}}))
    publish.publish(run, tmp_path / "reference")
    assert (tmp_path / "reference" / "guides" / "off_the_shelf.json").read_text() == \
        shipped_model("smoke", "guide.json").read_text()
    assert (tmp_path / "reference" / "table1.preset.json").is_file()


def test_benchmarks_are_summed_per_rule(tmp_path):
    root = tmp_path / "snakemake"
    for name, seconds in [("distill/a_n2/expert0.tsv", 10), ("distill/a_n2/expert1.tsv", 30),
                          ("distill/a_n2/manifest.tsv", 2), ("train_guide.tsv", 5),
                          ("tuning/guidance/none/ddim25_s0.tsv", 0), ("tuning/guidance.tsv", 0)]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"s\tmax_rss\n{seconds}\t{seconds * 10}\n")
    summary = publish.summarize_benchmarks({"study": root}).set_index("rule")
    assert summary.loc["distill_expert", "jobs"] == 2 and summary.loc["distill_expert", "wall_s"] == 40
    assert summary.loc["distill_expert", "median_s"] == 20 and summary.loc["expert_manifest", "jobs"] == 1
    assert summary.loc["all rules", "wall_s"] == 47 and summary.loc["all rules", "max_rss_mb"] == 300
    assert summary.loc["score_on_validation", "jobs"] == 1 and summary.loc["tune_guidance", "jobs"] == 1


def test_a_missing_file_leaves_the_old_reference(tmp_path):
    reference = tmp_path / "reference"
    publish.publish(fake_run(tmp_path / "good"), reference)
    broken = fake_run(tmp_path / "broken")
    (broken / "results" / "report" / "summary.md").unlink()
    with pytest.raises(FileNotFoundError, match="summary.md"):
        publish.publish(broken, reference)
    assert (reference / "report" / "summary.md").exists()
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]
    assert publish.main(["--run", str(broken), "--to", str(reference)]) == 2


def fake_guidance_run(root: Path, study: Path, accuracy_shift: float = 0.0) -> Path:
    """A quiet run of the guidance targets: the study's Table 1 plus compute columns."""
    results = root / "results"
    for name in ("table1.csv", "table1_trainings.csv"):
        table = pd.read_csv(study / "results" / name)
        table["accuracy"] = 0.5 + accuracy_shift
        table.to_csv(study / "results" / name, index=False) if accuracy_shift == 0 else None
        table["wall_s"] = 0.01
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(results / name, index=False)
    for name in ("table1.md", "table1_trainings.md", "guidance_methods.md", "guidance_sweeps.csv",
                 "guidance_fixed_fid.csv", "tuning/guidance.csv", "tuning/guidance.md", "guidance/x0_estimate_accuracy.json",
                 "figures/guidance_tradeoff.png"):
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(name)
    pd.DataFrame([dict(method="freedom", guide="trainingfree_freedom", sampling="ddim25_s0.5")]).to_csv(
        results / "guidance_methods.csv", index=False)
    grid = results / "samples" / "trainingfree_freedom" / "ddim25_s0.5" / "grid.png"
    grid.parent.mkdir(parents=True)
    grid.write_text("freedom")
    return root


def test_publish_adds_the_guidance_run_and_checks_it_matches_the_study(tmp_path):
    run = fake_run(tmp_path / "run")
    guidance = fake_guidance_run(tmp_path / "guidance", run)
    copied = publish.publish(run, tmp_path / "reference", guidance=guidance)
    assert {"guidance_methods.csv", "tuning/guidance.md", "figures/guidance_tradeoff.png",
            "guidance/x0_estimate_accuracy.json", "samples/guidance/trainingfree_freedom_ddim25_s0.5.png"} <= set(copied)
    assert "wall_s" in pd.read_csv(tmp_path / "reference" / "table1.csv").columns  # the guidance run's Table 1
    other = fake_guidance_run(tmp_path / "other", run, accuracy_shift=0.1)
    with pytest.raises(ValueError, match="differs"):
        publish.publish(run, tmp_path / "reference2", guidance=other)


def test_publish_adds_the_dense_run_and_names_its_rules(tmp_path):
    run = fake_run(tmp_path / "run")
    dense = tmp_path / "dense"
    for name in ("results/table_dense.csv", "results/table_dense.md", "results/tuning/dense.csv",
                 "results/tuning/dense.md", "results/figures/dense_segmentation.png",
                 "results/models/dense/segmentation/guide.json", "results/models/dense/segmentation/evaluator.json"):
        (dense / name).parent.mkdir(parents=True, exist_ok=True)
        (dense / name).write_text(name)
    for tsv in ("dense/segmentation/guide.tsv", "dense/segmentation/evaluator.tsv",
                "dense/segmentation/datafree_lora4_n5/expert3.tsv", "dense/segmentation/none/ddim25_s0.tsv",
                "tuning/dense/segmentation/none.tsv", "tuning/dense.tsv", "table_dense.tsv"):
        path = dense / "benchmarks" / "snakemake" / tsv
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("s\tmax_rss\n2.0\t100\n")
    copied = publish.publish(run, tmp_path / "reference", dense=dense)
    assert {"table_dense.csv", "tuning/dense.md", "figures/dense_segmentation.png",
            "guides/dense/segmentation_guide.json", "guides/dense/segmentation_evaluator.json"} <= set(copied)
    summary = pd.read_csv(tmp_path / "reference" / "benchmarks" / "summary.csv")
    rules = set(summary[summary["run"] == "dense"]["rule"])
    assert rules == {"train_dense_guide", "train_dense_evaluator", "distill_dense_expert", "dense_cell",
                     "dense_validation", "tune_dense", "table_dense", "all rules"}


SNAKEMAKE_LOG = """Building DAG of jobs...
Job stats:
job      count
total        5

[Fri Nov 27 05:11:59 2026]
localrule prepare_data:
    output: results/data/digits.npz
    log: logs/prepare_data.log
    jobid: 2
    benchmark: benchmarks/prepare_data.tsv
    reason: Missing output files: results/data/digits.npz
[Fri Nov 27 05:12:00 2026]
rule train_diffusion:
    input: results/data/digits.npz
    output: results/models/diffusion
    jobid: 3
    benchmark: benchmarks/train_diffusion.tsv
[Fri Nov 27 05:12:01 2026]
rule train_guide:
    input: results/data/digits.npz
    output: results/models/guide.pt, results/models/guide.json
    jobid: 4
    benchmark: benchmarks/train_guide.tsv
[Fri Nov 27 05:12:02 2026]
rule sample:
    input: results/models/diffusion/unet/config.json, results/models/guide.pt
    output: results/samples/a.npz
    jobid: 5
    benchmark: benchmarks/sample_a.tsv
    wildcards: guide=a
[Fri Nov 27 05:12:03 2026]
localrule table:
    input: results/samples/a.npz, results/data/digits.npz
    output: results/table.csv
    jobid: 0
    benchmark: benchmarks/table.tsv
Finished jobid: 0 (Rule: table)
"""


def test_the_critical_path_follows_inputs_into_output_folders(tmp_path):
    jobs = publish.snakemake_jobs(SNAKEMAKE_LOG)
    assert sorted(jobs) == [0, 2, 3, 4, 5]
    assert jobs[5]["input"] == ["results/models/diffusion/unet/config.json", "results/models/guide.pt"]
    assert jobs[5]["wildcards"] == "guide=a" and jobs[0]["rule"] == "table"
    seconds = {2: 1.0, 3: 10.0, 4: 4.0, 5: 2.0, 0: 0.5}
    assert publish.critical_path(jobs, seconds) == (13.5, [2, 3, 5, 0])  # through the diffusion folder
    seconds[4] = 12.0  # now the guide is the longer branch
    assert publish.critical_path(jobs, seconds) == (15.5, [2, 4, 5, 0])

    (tmp_path / ".snakemake" / "log").mkdir(parents=True)
    (tmp_path / ".snakemake" / "log" / "run.snakemake.log").write_text(SNAKEMAKE_LOG)
    (tmp_path / ".snakemake" / "log" / "dry.snakemake.log").write_text("Building DAG of jobs...\n")
    for job_id, name in ((2, "prepare_data"), (3, "train_diffusion"), (4, "train_guide"), (5, "sample_a"),
                         (0, "table")):
        path = tmp_path / "benchmarks" / f"{name}.tsv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds[job_id]}\t0:00:01\t10\n")
    run = publish.run_critical_path(tmp_path)
    assert run["seconds"] == 15.5 and run["jobs"] == 5 and run["job_s"] == 25.5
    assert run["chain"] == ["prepare_data", "train_guide", "sample[guide=a]", "table"]


def test_replace_dense_keeps_the_reference_but_its_dense_study(tmp_path):
    """--replace-dense: every file but the dense study's stays byte for byte; the dense files are the
    new run's (old ones gone, not merged); benchmarks/summary.csv is recomputed with the new dense rows."""
    reference = tmp_path / "reference"
    shutil.copytree(REPO / "results" / "reference", reference)
    (reference / "figures" / "dense_gone.png").write_bytes(b"old")
    dense_run = tmp_path / "dense"
    results = dense_run / "results"
    for name in publish.DENSE:
        target = results / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text('{"models": {}}\n' if name.endswith(".json") else f"new {name}\n")
    (results / "figures").mkdir()
    (results / "figures" / "dense_segmentation.png").write_bytes(b"new")
    bench = dense_run / "benchmarks" / "snakemake"
    shutil.copytree(reference / "benchmarks" / "dense", bench)
    for tsv in bench.rglob("*.tsv"):
        frame = pd.read_csv(tsv, sep="\t")
        frame["s"] = 1.0
        frame.to_csv(tsv, sep="\t", index=False)
    before = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert publish.main(["--replace-dense", str(dense_run), "--to", str(reference)]) == 0
    after = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    dense_files = {Path(name) for name in publish.DENSE}
    for path, content in before.items():
        is_dense = (path in dense_files or path.name.startswith("dense_")
                    or path.parts[:2] in (("guides", "dense"), ("benchmarks", "dense")))
        if not is_dense and path != Path("benchmarks/summary.csv"):
            assert after[path] == content, path
    assert Path("figures/dense_gone.png") not in after and after[Path("figures/dense_segmentation.png")] == b"new"
    assert after[Path("table_dense.csv")] == b"new table_dense.csv\n"
    summary = pd.read_csv(reference / "benchmarks" / "summary.csv")
    old = pd.read_csv(REPO / "results" / "reference" / "benchmarks" / "summary.csv")
    dense_rows = summary[summary["run"] == "dense"].set_index("rule")
    assert (dense_rows.loc[dense_rows.index != "all rules", "median_s"] == 1.0).all()
    assert summary[summary["run"] != "dense"].reset_index(drop=True).equals(old[old["run"] != "dense"].reset_index(drop=True))


def test_a_staged_study_publishes_its_guidance_table_without_table1_trainings(tmp_path):
    run = fake_run(tmp_path / "run")
    for name in ("table1_trainings.csv", "table1_trainings.md", "report/study.html", "report/summary.md"):
        (run / "results" / name).unlink()
    results = run / "results"
    pd.DataFrame([dict(guide="none", sampling="ddim25_s0")]).to_csv(results / "guidance_methods.csv", index=False)
    for name in publish.GUIDANCE[1:]:
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(name)
    (results / "samples" / "none" / "ddim25_s0" / "grid.png").write_text("none")
    copied = publish.publish(run, tmp_path / "reference", guidance=run, staged=True)
    assert {"guidance_methods.csv", "tuning/guidance.md", "table1.csv"} <= set(copied)
    assert "table1_trainings.csv" not in copied


def test_a_staged_study_publishes_what_has_landed_but_needs_table1(tmp_path):
    run = fake_run(tmp_path / "run")
    for name in ("report/study.html", "report/summary.md", "table1_trainings.csv", "table1_trainings.md"):
        (run / "results" / name).unlink()
    with pytest.raises(FileNotFoundError, match="table1_trainings.csv"):
        publish.publish(run, tmp_path / "reference")
    copied = publish.publish(run, tmp_path / "reference", staged=True)
    assert "table1.csv" in copied and not [name for name in copied if name.startswith(("report/", "table1_t"))]
    (run / "results" / "table1.csv").unlink()
    assert publish.main(["--run", str(run), "--staged", "--to", str(tmp_path / "reference")]) == 2
    assert (tmp_path / "reference" / "table1.csv").exists()  # the last stage's reference stays


STAGE_FILES = ("tuning/training_budget.csv", "tuning/stage_probe.md", "ablations/stage_probe.csv",
               "ablations/training_budget.png")  # two replace published files, two are new


def _stage_run(root: Path, reference: Path, shift: float = 0.0) -> Path:
    """A stage run that scored the published Table 1's PPAP cell (its accuracy shifted by ``shift``)
    and made one tuning and one ablation table."""
    from ppap.io import write_json

    row = pd.read_csv(reference / "table1.csv").set_index("method").loc["ppap"]
    guide, sampling = Path(row["samples"]).parts[-3:-1]
    mean = {name: float(row[name]) for name in ("fid", "is", "precision", "recall", "accuracy")}
    mean["accuracy"] += shift
    write_json(root / "results" / "metrics" / guide / f"{sampling}.json", dict(mean=mean, sd={}))
    for name in STAGE_FILES:
        (root / "results" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "results" / name).write_text(f"stage {name}\n")
    tsv = root / "benchmarks" / "snakemake" / "tuning" / "training_budget.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("s\tmax_rss\n2.0\t50\n")
    return root


def test_add_stage_keeps_the_reference_and_adds_the_stages_tables(tmp_path):
    """--add-stage: every published file stays byte for byte (summary.csv aside, which gains the
    stage's rows); the stage's tuning and ablation tables and benchmark files are added."""
    reference = tmp_path / "reference"
    shutil.copytree(REPO / "results" / "reference", reference)
    stage = _stage_run(tmp_path / "budget", reference)
    before = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert publish.main(["--add-stage", str(stage), "--to", str(reference)]) == 0
    after = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    for path, content in before.items():
        if path != Path("benchmarks/summary.csv") and str(path) not in STAGE_FILES:
            assert after[path] == content, path
    for name in STAGE_FILES:
        assert after[Path(name)] == f"stage {name}\n".encode()
    assert Path("benchmarks/budget/tuning/training_budget.tsv") in after
    summary = pd.read_csv(reference / "benchmarks" / "summary.csv")
    old = pd.read_csv(REPO / "results" / "reference" / "benchmarks" / "summary.csv")
    assert summary[summary["run"] != "budget"].reset_index(drop=True).equals(old)
    assert summary[summary["run"] == "budget"]["rule"].tolist() == ["tune_training_budget", "all rules"]


def test_add_stage_adds_a_guidance_tables_test_stage(tmp_path):
    """A stage that made the guidance methods' table (the fair race's test stage): its table, sweeps,
    fixed-FID reading, figures and each row's sample grid replace the published ones; the rest stays."""
    reference = tmp_path / "reference"
    shutil.copytree(REPO / "results" / "reference" / "fair_race", reference)
    stage = _stage_run(tmp_path / "race", reference)
    results = stage / "results"
    for name in ("guidance_methods.md", "guidance_sweeps.csv", "guidance_fixed_fid.csv",
                 "figures/guidance_fixed_fid.png"):
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(f"race {name}\n")
    published = pd.read_csv(reference / "guidance_methods.csv")[["method", "guide", "sampling"]]
    new_row = pd.DataFrame([dict(method="freedom_eta1", guide="trainingfree_freedom", sampling="ddim25_s0.5_eta1")])
    pd.concat([published[published["method"] != "freedom_eta1"], new_row]).to_csv(
        results / "guidance_methods.csv", index=False)  # every published row: the whole table again
    grid = results / "samples" / "trainingfree_freedom" / "ddim25_s0.5_eta1" / "grid.png"
    grid.parent.mkdir(parents=True)
    grid.write_text("grid")
    before = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    copied = publish.add_stage(stage, reference)
    assert {"guidance_methods.csv", "guidance_fixed_fid.csv", "figures/guidance_fixed_fid.png",
            "samples/guidance/trainingfree_freedom_ddim25_s0.5_eta1.png"} <= set(copied)
    assert (reference / "guidance_sweeps.csv").read_text() == "race guidance_sweeps.csv\n"
    after = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    replaced = {Path(name) for name in (*STAGE_FILES, "guidance_methods.csv", "guidance_methods.md", "guidance_sweeps.csv",
                                        "guidance_fixed_fid.csv", "figures/guidance_fixed_fid.png",
                                        "samples/guidance/trainingfree_freedom_ddim25_s0.5_eta1.png",
                                        "benchmarks/summary.csv")}
    assert [str(p) for p, content in before.items() if p not in replaced and after[p] != content] == []


def _partial_guidance_stage(root: Path, reference: Path, shift: float = 0.0) -> Path:
    """A guidance stage with two new rows beside one published row (its anchor, its accuracy shifted by
    ``shift``), each with a sample grid, and the figure, sweeps and validation table its rule writes."""
    stage = _stage_run(root, reference)
    results = stage / "results"
    anchor = pd.read_csv(reference / "guidance_methods.csv").set_index("method").loc[["ppap_eta1"]]
    anchor["accuracy"] += shift
    new = anchor.rename(index={"ppap_eta1": "ppap_rec2_eta1"}).assign(sampling="ddim25_s4_eta1_rec2")
    table = pd.concat([anchor, new]).reset_index()
    table.to_csv(results / "guidance_methods.csv", index=False)
    for name in ("guidance_methods.md", "guidance_sweeps.csv", "guidance_fixed_fid.csv", "tuning/guidance.csv",
                 "tuning/guidance.md", "guidance/x0_estimate_accuracy.json", "figures/guidance_tradeoff.png"):
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(f"stage {name}\n")
    for guide, sampling in zip(table["guide"], table["sampling"]):
        grid = results / "samples" / guide / sampling / "grid.png"
        grid.parent.mkdir(parents=True, exist_ok=True)
        grid.write_text(sampling)
    return stage


def test_add_stage_puts_a_partial_guidance_stage_beside_the_published_table(tmp_path):
    """A guidance stage with only some of the published rows replaces nothing: its tables, figures and
    grids go to stages/<folder>/ once its anchor row is found alike; one whose anchor differs is refused."""
    reference = tmp_path / "reference"
    shutil.copytree(REPO / "results" / "reference" / "fair_race", reference)
    before = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    other = _partial_guidance_stage(tmp_path / "other", reference, shift=0.2)
    with pytest.raises(ValueError, match="ppap_eta1 accuracy"):
        publish.add_stage(other, reference)
    stage = _partial_guidance_stage(tmp_path / "matched", reference)
    copied = publish.add_stage(stage, reference)
    after = {p.relative_to(reference): p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert [str(p) for p, content in before.items()
            if p != Path("benchmarks/summary.csv") and after[p] != content] == []
    home = Path("stages/matched")
    assert {str(home / name) for name in ("guidance_methods.csv", "guidance_sweeps.csv", "tuning/guidance.csv",
                                          "tuning/training_budget.csv", "figures/guidance_tradeoff.png",
                                          "samples/guidance/datafree_lora4_n5_ddim25_s4_eta1_rec2.png")} <= set(copied)
    assert pd.read_csv(reference / home / "guidance_methods.csv")["method"].tolist() == ["ppap_eta1", "ppap_rec2_eta1"]
    assert Path("benchmarks/matched/tuning/training_budget.tsv") in after


def test_add_stage_refuses_a_run_of_another_setup(tmp_path):
    """A stage whose shared Table 1 cell differs beyond the reference check's tolerance, or that
    shares none, is not added; the reference stays as it was."""
    reference = tmp_path / "reference"
    shutil.copytree(REPO / "results" / "reference", reference)
    before = (reference / "benchmarks" / "summary.csv").read_bytes()
    other = _stage_run(tmp_path / "other", reference, shift=0.2)
    with pytest.raises(ValueError, match="ppap accuracy"):
        publish.add_stage(other, reference)
    shutil.rmtree(other / "results" / "metrics")
    assert publish.main(["--add-stage", str(other), "--to", str(reference)]) == 2
    assert not (reference / "ablations" / "stage_probe.csv").exists()
    assert (reference / "benchmarks" / "summary.csv").read_bytes() == before
