"""Check a run's Table 1 against the committed reference, metric by metric.

    python -m ppap.tools.reference --results DIR [--reference FILE] [--rtol 0.15] [--atol 0.05] [--sd-factor 3]
    python -m ppap.tools.reference --run [--cores N] [--scratch DIR] [--configfile FILE ...] [...]
    [--any-preset]

``--results DIR`` reads ``DIR/results/table1.csv`` (a workflow directory) or ``DIR/table1.csv``
(or DIR itself if it is a CSV file). ``--run`` first runs ``snakemake results/table1.csv --cores N``
with this repository's Snakefile in ``--scratch DIR`` (default: a new temporary directory), then
checks that directory. The reference defaults to ``results/reference/table1.csv`` of this
repository (the default preset's Table 1).

Tolerances, for every method (row) of the reference:

* ``fid``, ``is``: |measured - reference| <= max(rtol * |reference|, sd_factor * sd), with
  rtol = 0.15 and sd_factor = 3; ``sd`` is the reference's standard deviation over sampling seeds
  (its ``<metric>_sd`` column; 0 where the reference has none).
* ``precision``, ``recall``, ``accuracy`` (fractions in [0, 1]): |measured - reference| <=
  max(atol, sd_factor * sd), with atol = 0.05.
* A metric that is NaN in the reference (the unguided row's accuracy) must be NaN in the run.
* The descriptive columns (``n_experts``, ``adapter_rank``, ``supervision``, ``trainable_params``,
  ``stored_params``, and ``seeds`` / ``samples_per_seed`` / ``trainings`` and the passes per sample
  (``denoiser_forward`` ...) where both tables have them; never ``wall_s``, a timing) must match
  exactly: a difference means another preset or config was run, and its metrics are not comparable.
* A reference method missing from the run fails; extra methods in the run are listed, not checked.

Presets: the table1 rule writes ``table1.preset.json`` beside ``table1.csv``: the preset's name
(the ``--configfile`` names, or the ``preset`` key) and a SHA-256 of the config that can change
Table 1 (everything but ``threads``, ``resources``, ``device``, ``ablations``, ``ablation_center``,
``tuning``, ``table1_trainings``, ``study``, ``preset``, ``training_free``, ``guidance_methods``,
``conditional_diffusion`` and ``dense``), with that config. When both tables have
this record and the presets' names differ, or a key both configs have differs, the check refuses
in one line naming the presets and the first differing keys (exit 2; ``--any-preset`` compares
anyway); keys only one of them has (a schema key added since) are noted, not refused. A table
without the record is compared as before, with one line saying that its preset is not known.

Why these widths: the same code, config and seeds on the same machine reproduce Table 1 bit for
bit (the tests check this), so a same-machine rerun passes with zero difference. Another CPU, BLAS,
torch build or a GPU changes the trained networks by rounding, which acts like a different training
seed: differences of a few seed standard deviations, or ~10% of FID / IS, are expected then; a
broken sampler, guide or metric moves a metric by much more.

Prints one line per check (method, metric, reference, measured, tolerance, ok) and exits 0 when
every check passes, 1 when any is out of tolerance or missing, 2 on bad input, a failed run or a
run of another preset.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
DEFAULT_REFERENCE = REPO / "results" / "reference" / "table1.csv"
RELATIVE_METRICS = ("fid", "is")                         # unbounded scores: relative tolerance
ABSOLUTE_METRICS = ("precision", "recall", "accuracy")   # fractions: absolute tolerance
EXACT_COLUMNS = ("n_experts", "adapter_rank", "supervision", "trainable_params", "stored_params",
                 "seeds", "samples_per_seed", "trainings",
                 # passes per sample are counted, not timed (wall_s is a measurement: not checked)
                 "denoiser_forward", "denoiser_backward", "guide_forward", "guide_backward")
RTOL, ATOL, SD_FACTOR = 0.15, 0.05, 3.0
# Config sections that cannot change Table 1 beyond rounding (where and how it is scheduled), the
# rest of the study, and the record itself.
NOT_TABLE1 = ("threads", "resources", "device", "ablations", "ablation_center", "tuning", "table1_trainings", "study",
              "preset", "training_free", "guidance_methods", "conditional_diffusion", "dense")
RECORD_SUFFIX = ".preset.json"


def record_path(table: str | os.PathLike) -> Path:
    """``table1.csv`` -> ``table1.preset.json`` (the same folder)."""
    table = Path(table)
    return table.with_name(table.stem + RECORD_SUFFIX)


def preset_record(config: dict) -> dict:
    """The preset's name and a SHA-256 of the config sections that can change Table 1 (and the
    sections themselves, so that a refusal can name the keys that differ)."""
    relevant = {key: value for key, value in config.items() if key not in NOT_TABLE1}
    text = json.dumps(relevant, sort_keys=True, separators=(",", ":"), default=str)
    return dict(preset=config.get("preset", "default"), config_sha256=hashlib.sha256(text.encode()).hexdigest(),
                config=json.loads(text))


def write_preset_record(table: str | os.PathLike, config: dict) -> dict:
    """Write ``<table>.preset.json`` beside a Table 1 CSV (atomically): the preset record and the models
    the table was made from (:func:`ppap.study.public_models.models_used`); returns the record."""
    from ppap.io import write_json
    from ppap.study.public_models import model_files, models_used

    record = dict(preset_record(config), models=models_used(model_files(config)))
    write_json(record_path(table), record)
    return record


def read_preset_record(table: str | os.PathLike) -> dict | None:
    path = record_path(table)
    if not path.is_file():
        return None
    with open(path) as f:
        record = json.load(f)
    if not isinstance(record, dict) or "config_sha256" not in record:
        raise ValueError(f"{path}: not a preset record (no config_sha256)")
    return record


def _flat(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flat(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def compare_records(measured: dict, reference: dict) -> tuple[str | None, str | None]:
    """(refusal, note) for two preset records: a refusal when the presets' names differ or a config
    key both records have differs; only a note when they differ only in keys one of them lacks (a
    config key added to or removed from the schema since one of them was made)."""
    if measured["config_sha256"] == reference["config_sha256"]:
        return None, None
    ours, theirs = dict(_flat(measured.get("config", {}))), dict(_flat(reference.get("config", {})))
    differ = sorted(key for key in set(ours) & set(theirs) if ours[key] != theirs[key])
    lacking = sorted(set(ours) ^ set(theirs))

    def listed(keys):
        return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")

    if differ or measured.get("preset") != reference.get("preset"):
        return (f"the run used preset {measured.get('preset')!r} (config sha256 {measured['config_sha256'][:12]}), "
                f"the reference preset {reference.get('preset')!r} ({reference['config_sha256'][:12]})"
                + (f"; they differ in {listed(differ)}" if differ else "")
                + ": not comparable (--any-preset compares anyway)"), None
    return None, (f"the preset records differ only in keys one of them lacks ({listed(lacking)}): a config key "
                  "added or removed since one was made; compared as the same preset")


def find_table(results: str | os.PathLike) -> Path:
    """DIR/results/table1.csv, DIR/table1.csv, or DIR itself if it is a file."""
    results = Path(results)
    for candidate in (results / "results" / "table1.csv", results / "table1.csv"):
        if candidate.is_file():
            return candidate
    if results.is_file():
        return results
    raise FileNotFoundError(f"no table1.csv in {results} (looked for results/table1.csv and table1.csv)")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    # keep_default_na=False: an empty adapter_rank stays "", while an empty metric becomes NaN.
    frame = pd.read_csv(path, dtype={"adapter_rank": str}, keep_default_na=False, na_values={
        column: [""] for column in (*RELATIVE_METRICS, *ABSOLUTE_METRICS)
        + tuple(f"{m}_sd" for m in (*RELATIVE_METRICS, *ABSOLUTE_METRICS))})
    if "method" not in frame.columns:
        raise ValueError(f"{path}: no 'method' column")
    if frame["method"].duplicated().any():
        raise ValueError(f"{path}: duplicate methods {sorted(frame['method'][frame['method'].duplicated()])}")
    return frame.set_index("method")


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    return float(a) == float(b)


def compare_tables(reference: pd.DataFrame, measured: pd.DataFrame, rtol: float = RTOL, atol: float = ATOL,
                   sd_factor: float = SD_FACTOR) -> pd.DataFrame:
    """One row per (method, metric) check: reference, measured, tolerance, ok (see the module docstring)."""
    rows = []
    for method, ref in reference.iterrows():
        if method not in measured.index:
            rows.append(dict(method=method, metric="(row)", reference="present", measured="missing",
                             tolerance="", ok=False))
            continue
        got = measured.loc[method]
        for column in EXACT_COLUMNS:
            if column in reference.columns and column in measured.columns:
                rows.append(dict(method=method, metric=column, reference=ref[column], measured=got[column],
                                 tolerance="exact", ok=_same(ref[column], got[column])))
        for metric in (*RELATIVE_METRICS, *ABSOLUTE_METRICS):
            if metric not in reference.columns:
                continue
            expected = float(ref[metric])
            value = float(got[metric]) if metric in measured.columns else math.nan
            sd = float(ref.get(f"{metric}_sd", math.nan))
            sd = 0.0 if math.isnan(sd) else sd
            if metric in RELATIVE_METRICS:
                tolerance = max(rtol * abs(expected), sd_factor * sd)
            else:
                tolerance = max(atol, sd_factor * sd)
            if math.isnan(expected):
                ok = math.isnan(value)
                tolerance_text = "both NaN"
            else:
                ok = not math.isnan(value) and abs(value - expected) <= tolerance * (1 + 1e-9)
                tolerance_text = f"{tolerance:.4g}"
            rows.append(dict(method=method, metric=metric, reference=expected, measured=value,
                             tolerance=tolerance_text, ok=bool(ok)))
    return pd.DataFrame(rows, columns=["method", "metric", "reference", "measured", "tolerance", "ok"])


def run_workflow(scratch: Path, cores: int, configfiles: Sequence[str] = ()) -> int:
    """``snakemake results/table1.csv`` with this repository's Snakefile in `scratch`."""
    snakefile = REPO / "Snakefile"
    if not snakefile.is_file():
        raise FileNotFoundError(f"--run needs the repository checkout: no Snakefile at {snakefile}")
    # The target first: --configfile takes several values and would swallow a target after it.
    cmd = [sys.executable, "-m", "snakemake", "results/table1.csv", "--cores", str(cores), "-s", str(snakefile),
           "--directory", str(scratch)]
    if configfiles:
        cmd += ["--configfile", *[str(Path(f).resolve()) for f in configfiles]]
    print("running:", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppap.tools.reference", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", help="a workflow directory (with results/table1.csv) or a table1.csv")
    source.add_argument("--run", action="store_true", help="run the workflow in --scratch first, then check it")
    parser.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="reference table1.csv")
    parser.add_argument("--rtol", type=float, default=RTOL, help="relative tolerance of fid and is")
    parser.add_argument("--atol", type=float, default=ATOL, help="absolute tolerance of precision, recall, accuracy")
    parser.add_argument("--sd-factor", type=float, default=SD_FACTOR,
                        help="tolerance is at least this many reference seed standard deviations")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="--run: snakemake --cores")
    parser.add_argument("--scratch", help="--run: workflow directory (default: a new temporary directory)")
    parser.add_argument("--configfile", nargs="+", default=[], help="--run: extra config files (e.g. a preset)")
    parser.add_argument("--any-preset", action="store_true",
                        help="compare even if the run and the reference record different presets")
    args = parser.parse_args(argv)

    try:
        reference_record = read_preset_record(args.reference)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.run and reference_record is not None and not args.any_preset:
        from ppap.study.checks import preset_name

        name = preset_name(args.configfile)
        if name != reference_record.get("preset"):
            print(f"error: --configfile {' '.join(args.configfile) or '(none)'} is preset {name!r}, the reference "
                  f"{args.reference} was made with preset {reference_record.get('preset')!r}: not comparable "
                  "(--any-preset runs and compares anyway)", file=sys.stderr)
            return 2

    if args.run:
        scratch = Path(args.scratch or tempfile.mkdtemp(prefix="ppap-reference-")).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            returncode = run_workflow(scratch, args.cores, args.configfile)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if returncode != 0:
            print(f"error: the workflow failed in {scratch} (exit {returncode}); see its logs/", file=sys.stderr)
            return 2
        args.results = str(scratch)
    try:
        measured_path = find_table(args.results)
        reference = read_table(args.reference)
        measured = read_table(measured_path)
        measured_record = read_preset_record(measured_path)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if reference_record is None:
        print(f"note: {args.reference} has no {record_path(args.reference).name} beside it: which preset made the "
              "reference is not recorded, so the preset is not checked")
    elif measured_record is None:
        print(f"note: {measured_path} has no {record_path(measured_path).name} beside it (made before presets were "
              "recorded): the preset is not checked")
    elif not args.any_preset:
        refusal, note = compare_records(measured_record, reference_record)
        if refusal:
            print(f"error: {refusal}", file=sys.stderr)
            return 2
        if note:
            print(f"note: {note}")

    checks = compare_tables(reference, measured, args.rtol, args.atol, args.sd_factor)
    print(f"reference: {args.reference}\nmeasured:  {measured_path}\n")
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.float_format", "{:.6g}".format):
        print(checks.assign(ok=checks["ok"].map({True: "ok", False: "FAIL"})).to_string(index=False))
    extra = sorted(set(measured.index) - set(reference.index))
    if extra:
        print(f"\nnot in the reference (not checked): {', '.join(extra)}")
    failed = checks[~checks["ok"]]
    if len(failed):
        names = ", ".join(f"{m}.{k}" for m, k in zip(failed["method"], failed["metric"]))
        print(f"\nFAILED: {len(failed)} of {len(checks)} checks out of tolerance: {names}")
        return 1
    print(f"\nOK: all {len(checks)} checks within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
