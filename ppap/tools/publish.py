"""Copy a finished run into ``results/reference/``: the files the README and docs/ quote and the tests check.

    python -m ppap.tools.publish --run RUN_DIR [--timed TIMED_RUN_DIR] [--tuning TUNE_RUN_DIR]
                           [--legacy LEGACY_RUN_DIR] [--guidance GUIDANCE_RUN_DIR] [--dense DENSE_RUN_DIR]
                           [--staged] [--to results/reference]
    python -m ppap.tools.publish --replace-dense DENSE_RUN_DIR [--to results/reference]
    python -m ppap.tools.publish --add-stage STAGE_RUN_DIR [--to results/reference]

``RUN_DIR`` is a working directory of ``snakemake all`` (``-d``): its tables, ablations, figures,
report, tuning results, each Table 1 guide set's manifest (``guides/<set>.json``, with the noisy
accuracies), the off-the-shelf guide's and the evaluator's records and the Table 1 sample grids are
copied, with any diagnostics a script wrote into ``results/diagnostics/`` and Snakemake's per-rule
benchmark files (``benchmarks/snakemake/``). A long study often shares its machine, so ``--timed``
adds the benchmark files of a run timed on a quiet machine (e.g. a fresh ``results/table1.csv``)
under ``benchmarks/timed/``; ``benchmarks/summary.csv`` sums them per
rule (jobs, total and median wall seconds, peak memory), which the docs quote. The learning-rate
search (``snakemake tune``) is taken from ``--tuning`` (default ``RUN_DIR``). ``--legacy`` adds a
``legacy/`` folder with that run's Table 1 and ablations (the old-protocol overlay). ``--guidance``
adds ``guidance_methods.*``, its sweeps, validation choices (``tuning/guidance.*``), figures and
sample grids from a quiet run of those targets, with its Table 1 files (which carry the compute
columns; their results must equal RUN_DIR's) and its benchmark files under ``benchmarks/guidance/``.
``--dense`` adds the dense study (``table_dense.*``, ``tuning/dense.*``, ``figures/dense_*``, the dense
networks' records under ``guides/dense/``, benchmark files under ``benchmarks/dense/``).

The reference folder is rebuilt whole in a temporary sibling and renamed into place, so a failed
copy leaves the previous reference untouched. ``--staged`` publishes a study that runs in stages (the
MNIST preset's, ``--to results/reference/mnist``): Table 1 must be there, the rest is copied as far as it
has landed, so each stage can be committed. ``--add-stage`` adds to a published reference a later
stage run on its preset in a folder of its own (the training budget's tuning and ablation, for
instance): its tuning and ablation tables, its guidance methods' table with sweeps, fixed-FID reading,
figures and sample grids where it made one (the fair race's test stage), and its benchmark files
(``benchmarks/<folder name>/``), once the Table 1 cells it shares with the reference are found to have the
same results. A guidance stage that holds only some of the published guidance table's rows (new rows and a few
published ones as anchors) goes beside it, to ``stages/<folder name>/``, once its anchors are found alike.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from ppap.io import atomic_directory, read_json
from ppap.study import paths
from ppap.study.public_models import locate

TABLES = ("table1.csv", "table1.md", "table1.preset.json", "table1_trainings.csv", "table1_trainings.md")
REPORT = ("report/study.html", "report/summary.md")
TUNING = ("tuning/learning_rates.csv", "tuning/learning_rates.md")
# from --guidance: the guidance methods' tables, choices and figures, and Table 1 with its compute columns
GUIDANCE = ("guidance_methods.csv", "guidance_methods.md", "guidance_sweeps.csv", "guidance_fixed_fid.csv",
            "tuning/guidance.csv",
            "tuning/guidance.md", "guidance/x0_estimate_accuracy.json")
MEASURED = ("denoiser_forward", "denoiser_backward", "guide_forward", "guide_backward", "wall_s", "threads", "machine")


# from --dense: the dense study's table, its validation choices, figures and networks' records
DENSE = ("table_dense.csv", "table_dense.md", "table_dense.preset.json", "tuning/dense.csv", "tuning/dense.md")


def check_same_results(study_table: Path, guidance_table: Path) -> None:
    """The guidance run's Table 1 must be the study's (its compute columns aside): the same code,
    config and seeds give the same samples, so any difference means another setting was run."""
    study, guidance = pd.read_csv(study_table), pd.read_csv(guidance_table)
    shared = [c for c in study.columns if c in guidance.columns and c not in MEASURED]
    if len(study) != len(guidance) or not study[shared].equals(guidance[shared]):
        raise ValueError(f"{guidance_table} differs from {study_table} beyond its compute columns")


def table1_guides(table1_csv: Path) -> dict[str, str]:
    """Guide folder -> sample folder of every Table 1 row, from its ``samples`` column
    (``results/samples/<guide>/<sampling>/seed0.npz``)."""
    table = pd.read_csv(table1_csv)
    guides = {}
    for sample in table["samples"]:
        parts = Path(sample).parts
        guides[parts[-3]] = str(Path(*parts[:-1]))
    return guides


def _copy(source: Path, target: Path, required: bool = True) -> bool:
    if not source.exists():
        if required:
            raise FileNotFoundError(f"{source} is missing: is the run finished?")
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return True


def _copy_tree(source: Path, target: Path, pattern: str) -> int:
    count = 0
    for path in sorted(source.rglob(pattern)):
        if path.is_file():
            _copy(path, target / path.relative_to(source))
            count += 1
    return count


def rule_of(benchmark: Path, root: Path) -> str:
    """The rule a benchmark file belongs to, from its place under ``benchmarks/snakemake``."""
    parts = benchmark.relative_to(root).parts
    if len(parts) == 1:
        return benchmark.stem
    if parts[0] == "distill":
        return "expert_manifest" if benchmark.stem == "manifest" else "distill_expert"
    if parts[0] == "tuning":  # tuning/<name>.tsv: the choosing rule; tuning/guidance/...: its cells
        if len(parts) == 2:
            return f"tune_{benchmark.stem}"
        return "dense_validation" if parts[1] == "dense" else "score_on_validation"
    if parts[0] == "dense":  # dense/<task>/{guide,evaluator}.tsv, <task>/<set>/expert<i>.tsv, <task>/<guide>/<sampling>.tsv
        if len(parts) == 3:
            return f"train_dense_{benchmark.stem}"
        return "distill_dense_expert" if re.fullmatch(r"expert\d+", benchmark.stem) else "dense_cell"
    if parts[0] == "guidance":
        return benchmark.stem
    return parts[0]


def summarize_benchmarks(folders: dict[str, Path]) -> pd.DataFrame:
    """One row per (run, rule): jobs, total and median wall seconds, peak resident memory (MB)."""
    rows = []
    for run, root in folders.items():
        for path in sorted(root.rglob("*.tsv")):
            last = pd.read_csv(path, sep="\t").iloc[-1]
            rows.append(dict(run=run, rule=rule_of(path, root), s=float(last["s"]), max_rss=float(last["max_rss"])))
    if not rows:
        return pd.DataFrame(columns=["run", "rule", "jobs", "wall_s", "median_s", "max_rss_mb"])
    frame = pd.DataFrame(rows)
    per_rule = frame.groupby(["run", "rule"], sort=False).agg(jobs=("s", "size"), wall_s=("s", "sum"),
                                                              median_s=("s", "median"), max_rss_mb=("max_rss", "max"))
    totals = frame.groupby("run", sort=False).agg(jobs=("s", "size"), wall_s=("s", "sum"), median_s=("s", "median"),
                                                  max_rss_mb=("max_rss", "max"))
    totals.index = pd.MultiIndex.from_tuples([(run, "all rules") for run in totals.index], names=["run", "rule"])
    return pd.concat([per_rule, totals]).reset_index().round(1)


_JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")
_JOB_FIELD = re.compile(r"^    (input|output|jobid|benchmark|wildcards): (.*)$")


def snakemake_jobs(log_text: str) -> dict[int, dict]:
    """The jobs a Snakemake run started, from its log (``.snakemake/log/*.log``): per job id its
    rule, wildcards, input and output paths and benchmark file, as the log lists them."""
    jobs, current = {}, None
    for line in log_text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            current = dict(rule=header.group(1), input=[], output=[], benchmark=None, wildcards="")
            continue
        field = _JOB_FIELD.match(line) if current is not None else None
        if field is None:
            if current is not None and not line.startswith("    "):
                current = None  # the job's block ended before its jobid: not a started job
            continue
        key, value = field.groups()
        if key in ("input", "output"):
            current[key] = [path.strip() for path in value.split(",") if path.strip()]
        elif key == "jobid":
            jobs[int(value)] = current
        else:
            current[key] = value.strip()
    return jobs


def critical_path(jobs: dict[int, dict], seconds: dict[int, float]) -> tuple[float, list[int]]:
    """The longest chain of dependent jobs, weighted by each job's seconds: no number of cores runs
    the DAG faster. Job B depends on job A when one of B's inputs is an output of A or lies inside
    an output folder of A. ``jobs`` in the order they started (as :func:`snakemake_jobs` reads them:
    a job starts after every job it depends on). Returns (seconds, job ids from first to last)."""
    producer = {path.rstrip("/"): job_id for job_id, job in jobs.items() for path in job["output"]}
    finish: dict[int, tuple[float, list[int]]] = {}  # per job: the longest chain ending with it
    for job_id, job in jobs.items():
        longest = (0.0, [])
        for path in job["input"]:
            path = path.rstrip("/")
            while path and path not in producer:  # a file inside an output folder: its folder's job
                path = path.rpartition("/")[0]
            parent = producer.get(path)
            if parent is not None and parent != job_id:
                if parent not in finish:
                    raise ValueError(f"job {job_id} reads an output of job {parent}, which started after it")
                longest = max(longest, finish[parent], key=lambda chain: chain[0])
        finish[job_id] = (longest[0] + seconds.get(job_id, 0.0), longest[1] + [job_id])
    return max(finish.values(), default=(0.0, []), key=lambda chain: chain[0])


def run_critical_path(workdir: Path) -> dict:
    """A finished Snakemake run's critical path, from its largest log and the jobs' benchmark files
    (wall seconds of each job): ``seconds``, ``chain`` (rule[wildcards] per job, in order), ``job_s``
    (all jobs with a benchmark file) and ``jobs``."""
    workdir = Path(workdir)
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda path: path.stat().st_size)
    if not logs:
        raise FileNotFoundError(f"no Snakemake log under {workdir / '.snakemake' / 'log'}")
    jobs = snakemake_jobs(logs[-1].read_text())  # the largest log: the run itself, not a later dry run
    seconds = {}
    for job_id, job in jobs.items():
        if job["benchmark"] and (workdir / job["benchmark"]).is_file():
            seconds[job_id] = float(pd.read_csv(workdir / job["benchmark"], sep="\t").iloc[-1]["s"])
    total, chain = critical_path(jobs, seconds)
    names = [jobs[job_id]["rule"] + (f"[{jobs[job_id]['wildcards']}]" if jobs[job_id]["wildcards"] else "")
             for job_id in chain]
    return dict(seconds=total, chain=names, chain_s=[seconds.get(job_id, 0.0) for job_id in chain],
                job_s=sum(seconds.values()), jobs=len(jobs))


def models_of(run: Path, table: str) -> dict[str, Path]:
    """Role -> file of the models a table of the run was made from, as its preset record lists them
    (shipped ones inside the package); {} for a run from before the records listed models (its
    models are all below results/models/)."""
    record = Path(run) / paths.preset_record(table)
    models = read_json(record).get("models", {}) if record.is_file() else {}
    return {role: locate(entry["path"], run) for role, entry in models.items()}


def _publish_dense(dense: Path, out: Path) -> None:
    dense_results = dense / "results"
    for name in DENSE:
        _copy(dense_results / name, out / name, required=not name.endswith(".preset.json"))
    for path in sorted((dense_results / "figures").glob("dense_*")):
        _copy(path, out / "figures" / path.name)
    dense_stats = {path.parent.name + "_" + path.name: path
                   for path in sorted((dense_results / "models" / "dense").glob("*/*.json"))}
    for role, path in models_of(dense, "table_dense").items():  # shipped or trained
        kind, _, task = role.partition(".")
        if kind in ("dense_guide_stats", "dense_evaluator_stats"):
            dense_stats[f"{task}_{kind.split('_')[1]}.json"] = path
    for name, path in sorted(dense_stats.items()):
        _copy(path, out / "guides" / "dense" / name)
    _copy_tree(dense / "benchmarks" / "snakemake", out / "benchmarks" / "dense", "*.tsv")


# the published benchmark folders summarized in benchmarks/summary.csv, by run name
BENCHMARK_RUNS = {"study": "snakemake", "timed": "timed", "guidance": "guidance", "dense": "dense"}


def replace_dense(dense: Path, to: Path) -> list[str]:
    """Rebuild ``to`` as it is but for the dense study, taken from ``dense`` (a run of
    results/table_dense.csv and results/tuning/dense.csv); benchmarks/summary.csv is recomputed."""
    to = Path(to)
    if not (to / "table1.csv").is_file():
        raise FileNotFoundError(f"{to} is not a published reference (no table1.csv)")
    with atomic_directory(to) as out:
        shutil.copytree(to, out, dirs_exist_ok=True)
        for name in DENSE:
            (out / name).unlink(missing_ok=True)
        for path in (out / "figures").glob("dense_*"):
            path.unlink()
        for folder in (out / "guides" / "dense", out / "benchmarks" / "dense"):
            shutil.rmtree(folder, ignore_errors=True)
        _publish_dense(Path(dense), out)
        summarize_benchmarks(_published_benchmark_runs(out)).to_csv(out / "benchmarks" / "summary.csv", index=False)
        copied = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    return copied


def publish(run: Path, to: Path, timed: Path | None = None, tuning: Path | None = None,
            legacy: Path | None = None, guidance: Path | None = None, dense: Path | None = None,
            staged: bool = False) -> list[str]:
    """Rebuild ``to`` from the run folder(s); returns the copied paths relative to ``to``.
    ``staged``: a study still under way; only Table 1 is required, the rest is copied as far as it exists."""
    run, to = Path(run), Path(to)
    results = run / "results"
    if guidance is not None:
        for name in ("table1.csv", "table1_trainings.csv"):
            if staged and name != "table1.csv" and not (results / name).is_file():
                continue  # a staged study without its trainings yet
            check_same_results(results / name, Path(guidance) / "results" / name)
    with atomic_directory(to) as out:
        for name in TABLES:
            source = (Path(guidance) / "results") if guidance is not None else results
            _copy(source / name, out / name, required=name in ("table1.csv", "table1.md") or (
                not staged and name != "table1.preset.json"))
        for name in REPORT:
            _copy(results / name, out / name, required=not staged)
        for name in TUNING:
            _copy(Path(tuning or run) / "results" / name, out / name, required=tuning is not None)
        _copy_tree(results / "ablations", out / "ablations", "*")
        _copy_tree(results / "figures", out / "figures", "*")
        if (results / "diagnostics").is_dir():  # e.g. benchmarks/routing_gradients.py
            _copy_tree(results / "diagnostics", out / "diagnostics", "*.csv")
        models = models_of(run, "table1")
        _copy(models.get("guide_stats", results / "models" / "guide.json"), out / "guides" / "off_the_shelf.json")
        _copy(models.get("evaluator_stats", results / "models" / "evaluator.json"), out / "guides" / "evaluator.json")
        for guide, samples in table1_guides(results / "table1.csv").items():
            if guide not in ("none", "off_the_shelf"):
                _copy(results / "models" / "guides" / guide / "manifest.json", out / "guides" / f"{guide}.json")
            _copy(run / samples / "grid.png", out / "samples" / f"{guide}.png")
        _copy_tree(run / "benchmarks" / "snakemake", out / "benchmarks" / "snakemake", "*.tsv")
        folders = {"study": out / "benchmarks" / "snakemake"}
        if timed is not None:
            _copy_tree(Path(timed) / "benchmarks" / "snakemake", out / "benchmarks" / "timed", "*.tsv")
            folders["timed"] = out / "benchmarks" / "timed"
        summarize_benchmarks(folders).to_csv(out / "benchmarks" / "summary.csv", index=False)
        if guidance is not None:
            _copy_guidance_table(Path(guidance) / "results", out)
            _copy_tree(Path(guidance) / "benchmarks" / "snakemake", out / "benchmarks" / "guidance", "*.tsv")
            folders["guidance"] = out / "benchmarks" / "guidance"
            summarize_benchmarks(folders).to_csv(out / "benchmarks" / "summary.csv", index=False)
        if dense is not None:
            _publish_dense(Path(dense), out)
            folders["dense"] = out / "benchmarks" / "dense"
            summarize_benchmarks(folders).to_csv(out / "benchmarks" / "summary.csv", index=False)
        if legacy is not None:
            legacy_results = Path(legacy) / "results"
            for name in ("table1.csv", "table1.md"):
                _copy(legacy_results / name, out / "legacy" / name)
            _copy_tree(legacy_results / "ablations", out / "legacy" / "ablations", "*.csv")
            _copy_tree(legacy_results / "ablations", out / "legacy" / "ablations", "*.md")
        copied = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    return copied


def _copy_guidance_table(results: Path, out: Path, required: bool = True) -> list[Path]:
    """The guidance methods' table, sweeps, fixed-FID reading, validation choices and figures of a run's
    ``results/``, with each row's sample grid (``samples/guidance/<guide>_<sampling>.png``)."""
    pairs = [(results / name, out / name) for name in GUIDANCE]
    pairs += [(path, out / "figures" / path.name) for path in sorted((results / "figures").glob("guidance_*"))]
    rows = pd.read_csv(results / "guidance_methods.csv")
    pairs += [(results / "samples" / guide / sampling / "grid.png",
               out / "samples" / "guidance" / f"{guide}_{sampling}.png")
              for guide, sampling in zip(rows["guide"], rows["sampling"])]
    return [target for source, target in pairs if _copy(source, target, required=required)]


def _published_benchmark_runs(out: Path) -> dict[str, Path]:
    """Run name -> benchmark folder of every run published in ``out/benchmarks/`` (the named runs of
    BENCHMARK_RUNS, then each added stage under its own folder name)."""
    names = {folder: run for run, folder in BENCHMARK_RUNS.items()}
    folders = sorted(path for path in (out / "benchmarks").iterdir() if path.is_dir()) \
        if (out / "benchmarks").is_dir() else []
    known = {names[p.name]: p for p in folders if p.name in names}
    known = {run: known[run] for run in BENCHMARK_RUNS if run in known}  # the documented order
    return {**known, **{p.name: p for p in folders if p.name not in names}}


def _refuse_differences(checks: pd.DataFrame, measured: Path, reference: Path) -> pd.DataFrame:
    """``checks`` (ppap.tools.reference.compare_tables) as they are when every one passed; otherwise a
    ValueError naming each cell out of tolerance."""
    bad = checks[~checks["ok"]]
    if len(bad):
        cells = ", ".join(f"{r.method} {r.metric} {r.measured:.4g} (reference {r.reference:.4g})"
                          if isinstance(r.measured, float) and isinstance(r.reference, float)
                          else f"{r.method} {r.metric} {r.measured} (reference {r.reference})"
                          for r in bad.itertuples())
        raise ValueError(f"{measured} is not {reference}'s setup: {cells}")
    return checks


def check_shared_cells(run: Path, reference: Path) -> pd.DataFrame:
    """The published Table 1's rows whose sample cell the run also scored, compared with the run's
    metric files within the reference check's tolerance (``ppap.tools.reference``): a run added to a
    reference must be that reference's setup. Raises ValueError on any difference beyond it."""
    from ppap.tools.reference import ABSOLUTE_METRICS, RELATIVE_METRICS, compare_tables

    table = pd.read_csv(reference / "table1.csv").set_index("method")
    measured, shared = {}, []
    for method, row in table.iterrows():
        guide, sampling = Path(row["samples"]).parts[-3:-1]
        metrics_file = run / paths.metrics(guide, sampling)
        if metrics_file.is_file():
            record = read_json(metrics_file)
            measured[method] = {name: record["mean"].get(name, float("nan"))
                                for name in (*RELATIVE_METRICS, *ABSOLUTE_METRICS)}
            shared.append(method)
    if not shared:
        raise ValueError(f"{run} scored none of {reference / 'table1.csv'}'s cells: nothing shows it is the "
                         "reference's setup")
    checks = compare_tables(table.loc[shared], pd.DataFrame.from_dict(measured, orient="index"))
    return _refuse_differences(checks, run, reference)


def check_shared_guidance_rows(stage_table: Path, published_table: Path) -> pd.DataFrame:
    """The rows a guidance stage shares with the published guidance table (its anchors: same method),
    compared within the reference check's tolerance (counted passes exactly; wall-seconds are measurements
    and not compared). Raises ValueError when there is no anchor or one differs beyond it."""
    from ppap.tools.reference import compare_tables

    stage = pd.read_csv(stage_table).set_index("method")
    published = pd.read_csv(published_table).set_index("method")
    shared = [method for method in stage.index if method in published.index]
    if not shared:
        raise ValueError(f"{stage_table} shares no row with {published_table}: nothing shows it is its setup")
    mismatched = [m for m in shared if (stage.loc[m, "guide"], stage.loc[m, "sampling"])
                  != (published.loc[m, "guide"], published.loc[m, "sampling"])]
    if mismatched:
        raise ValueError(f"{stage_table}: {', '.join(mismatched)} sampled with another guide or setting than in "
                         f"{published_table}")
    return _refuse_differences(compare_tables(published.loc[shared], stage.loc[shared]), stage_table, published_table)


def add_stage(run: Path, to: Path) -> list[str]:
    """Rebuild ``to`` as it is plus a stage run on its preset after it was published (for instance
    the training budget's tuning and ablation): every file of the run's ``results/tuning/`` and
    ``results/ablations/`` is added, replacing a published one of the same name, and its guidance methods'
    table with its sweeps, fixed-FID reading, figures and sample grids where it made one; its benchmark files go
    to ``benchmarks/<run folder's name>/`` and benchmarks/summary.csv is recomputed. The run must have
    scored at least one of the published Table 1's cells, with the same results (check_shared_cells).

    A guidance stage that holds only some of the published guidance table's rows (new rows beside a few
    published ones, its anchors: the fair race's matched rows at eta = 1) replaces nothing: its tables,
    validation choices, figures and grids go to ``stages/<run folder's name>/``, where its wall-seconds are
    compared only with each other, once its anchors are found alike (check_shared_guidance_rows)."""
    run, to = Path(run), Path(to)
    if not (to / "table1.csv").is_file():
        raise FileNotFoundError(f"{to} is not a published reference (no table1.csv)")
    label = run.resolve().name
    if label in BENCHMARK_RUNS.values():
        raise ValueError(f"a stage's run folder may not be named {label!r}: its benchmarks would replace that run's")
    check_shared_cells(run, to)
    results = run / "results"
    stage_rows = results / "guidance_methods.csv"
    partial = (stage_rows.is_file() and (to / "guidance_methods.csv").is_file()
               and not set(pd.read_csv(to / "guidance_methods.csv")["method"])
               <= set(pd.read_csv(stage_rows)["method"]))
    if partial:
        check_shared_guidance_rows(stage_rows, to / "guidance_methods.csv")
    with atomic_directory(to) as out:
        shutil.copytree(to, out, dirs_exist_ok=True)
        home = out / "stages" / label if partial else out
        if partial:
            shutil.rmtree(home, ignore_errors=True)
        added = [path for folder in ("tuning", "ablations") for path in sorted((results / folder).glob("*"))
                 if path.is_file() and _copy(path, home / folder / path.name)]
        if stage_rows.is_file():  # a guidance table's test stage (the fair race's), whole or beside it
            added += _copy_guidance_table(results, home, required=partial)
        if not added:
            raise FileNotFoundError(f"{results} has no tuning, ablation or guidance tables to add")
        shutil.rmtree(out / "benchmarks" / label, ignore_errors=True)
        _copy_tree(run / "benchmarks" / "snakemake", out / "benchmarks" / label, "*.tsv")
        summarize_benchmarks(_published_benchmark_runs(out)).to_csv(out / "benchmarks" / "summary.csv", index=False)
        copied = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    return copied


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppap.tools.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="working directory of a finished `snakemake all`")
    parser.add_argument("--replace-dense", metavar="DENSE_DIR",
                        help="keep the published reference and replace only its dense study by DENSE_DIR's")
    parser.add_argument("--add-stage", metavar="STAGE_DIR",
                        help="keep the published reference and add STAGE_DIR's tuning and ablation tables (a run "
                             "on the same preset that scored some of its Table 1 cells alike)")
    parser.add_argument("--timed", help="working directory of a run timed on a quiet machine: its "
                                        "benchmark files go to benchmarks/timed/")
    parser.add_argument("--tuning", help="working directory of `snakemake tune` (default: --run)")
    parser.add_argument("--legacy", help="working directory of a run with config/legacy_protocol.yaml")
    parser.add_argument("--guidance", help="working directory of a quiet run of results/guidance_methods.csv, "
                                           "table1.csv and table1_trainings.csv: the guidance tables and figures, "
                                           "and Table 1 with its compute columns (its results must equal --run's)")
    parser.add_argument("--dense", help="working directory of a run of results/table_dense.csv and "
                                        "results/tuning/dense.csv: the dense study's tables, figures and records")
    parser.add_argument("--staged", action="store_true",
                        help="a study run in stages, still under way: Table 1 must be there, the rest is copied as "
                             "far as it exists (commit each stage's reference as it lands)")
    parser.add_argument("--to", default="results/reference", help="reference folder to rebuild")
    args = parser.parse_args(argv)
    if not args.run and not args.replace_dense and not args.add_stage:
        parser.error("--run, --replace-dense or --add-stage is required")
    try:
        if args.add_stage:
            copied = add_stage(Path(args.add_stage), Path(args.to))
            print(f"{args.to}: {len(copied)} files (stage {args.add_stage} added)")
            return 0
        if args.replace_dense:
            copied = replace_dense(Path(args.replace_dense), Path(args.to))
            print(f"{args.to}: {len(copied)} files (dense study from {args.replace_dense})")
            return 0
        copied = publish(Path(args.run), Path(args.to), args.timed and Path(args.timed),
                         args.tuning and Path(args.tuning), args.legacy and Path(args.legacy),
                         args.guidance and Path(args.guidance), args.dense and Path(args.dense), args.staged)
    except (FileNotFoundError, ValueError) as error:
        print(f"ppap.tools.publish: {error}", file=sys.stderr)
        return 2
    print(f"{args.to}: {len(copied)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
