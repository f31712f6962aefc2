"""Robustness: bad configs and damaged named files fail naming the key; a killed job, and a killed
Snakemake, resume to the same bytes as an uninterrupted run (determinism); non-finite values stop a
rule; checkpoint loaders refuse bad files; reference image sets; the reference-results check
(``python -m ppap.tools.reference``) and the preset it records."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from PIL import Image
from pretrained_files import write_diffusion_dir, write_guide

from conftest import expert_training
from ppap import data
from ppap.data import load_digits_npz
from ppap.experts import adapters
from ppap.experts.sets import TrainingPool, load_expert_set, save_expert, train_expert
from ppap.generate import Guidance, generate_samples
from ppap.guidance import ClassifierGuidance, NonFiniteError
from ppap.models import classifiers
from ppap.models.checkpoints import CheckpointError
from ppap.models.unet import EpsilonModel, build_unet, load_diffusion_model, save_diffusion_model
from ppap.sampling import Denoiser
from ppap.schedules import make_ddpm_scheduler
from ppap.specs import SamplingSpec
from ppap.tools import reference

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "config" / "smoke.yaml")
TABLE1 = "results/table1.csv"


def snakemake_cmd(workdir: Path, target: str, *options: str) -> list[str]:
    # The target goes first: --configfile takes several values and would swallow it.
    return [sys.executable, "-m", "snakemake", target, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            *options]


def run_snakemake(workdir: Path, target: str, *options: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, target, *options), capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONHASHSEED": "0"})


def job_logs(workdir: Path) -> str:
    return "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))


def without_measured_columns(path: Path, methods: tuple[str, ...] | None = None) -> bytes:
    """A table's bytes without its wall-seconds column: a measurement, not a result of the
    computation (the pass counts beside it are exact and stay); with `methods`, only their rows."""
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)  # cells as written, whichever rows remain
        assert "wall_s" in frame.columns
        if methods is not None:
            frame = frame[frame["method"].isin(methods)]
        return frame.drop(columns="wall_s").to_csv(index=False).encode()
    lines = path.read_text().splitlines()
    column = [cell.strip() for cell in lines[0].split("|")].index("wall_s")
    if methods is not None:  # the header, its rule, and the rows of `methods`
        lines = [line for i, line in enumerate(lines) if not line.startswith("|") or i < 2
                 or line.split("|")[1].strip() in methods]
    return "\n".join("|".join(c for i, c in enumerate(line.split("|")) if i != column) if line.startswith("|")
                     else line for line in lines).encode()


def run_outputs(workdir: Path, methods: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """The bytes of what a run reports: Table 1 (csv, md; wall-seconds left out; with `methods`,
    their rows), metric files and every sample .npz."""
    results = workdir / "results"
    paths = [*sorted(results.glob("metrics/**/*.json")), *sorted(results.glob("samples/**/*.npz"))]
    outputs = {p.relative_to(workdir).as_posix(): p.read_bytes() for p in paths}
    for table in (results / "table1.csv", results / "table1.md"):
        outputs[table.relative_to(workdir).as_posix()] = without_measured_columns(table, methods)
    return outputs


# ------------------------------------------------------------------------- config validation ----

BAD_CONFIGS = {
    # name: (extra config on top of smoke.yaml, what the one error line must name)
    "wrong-type": ("sampling: {steps: many}", ["config key sampling.steps", "not of type 'integer'"]),
    "unknown-key": ("sampling: {stepz: 4}", ["config key sampling", "'stepz' was unexpected"]),
    "zero-experts": ("methods: {ppap: datafree_lora4_n0}", ["methods.ppap: ", "number of experts"]),
    "lora-rank-0": ("methods: {ppap: datafree_lora0_n2}", ["methods.ppap: ", "LoRA rank"]),
    "unknown-method": ("table1: [unguided, ppap, ppap_typo]", ["table1 lists 'ppap_typo'", "not a key of methods"]),
    "ranges-short": ("experts: {custom_ranges: {datafree_lora2_n2: [[0, 300], [300, 900]]}}",
                     ["experts.custom_ranges.datafree_lora2_n2", "end at 900"]),
    "ranges-overlap": ("experts: {custom_ranges: {datafree_lora2_n2: [[0, 600], [500, 1000]]}}",
                       ["experts.custom_ranges.datafree_lora2_n2", "[500, 1000)"]),
    "missing-guide": ("guide: {pretrained: /nonexistent/guide.pt}", ["guide.pretrained", "/nonexistent/guide.pt"]),
    "missing-reference": ("evaluation: {reference: /nonexistent/reference}",
                          ["evaluation.reference", "/nonexistent/reference"]),
    "too-many-shards": ("synthetic: {shards: 1000}", ["synthetic.shards", "1000 shards for 128 images"]),
    "shard-seed-clash": ("sampling: {seeds: [0, 41]}", ["sampling.seeds [41]", "synthetic shards"]),
    "unknown-resource-rule": ("resources: {distil_expert: {mem_mb: 100}}", ["resources.distil_expert", "not a rule"]),
    # an empty mapping in an overlay cannot empty the preset's (Snakemake merges key by key)
    "empty-methods": ("methods: {}", ["methods: the empty mapping in", "changes nothing", "table1: [names]"]),
    "empty-ablations": ("ablations: {}", ["ablations: the empty mapping in", "study: {ablations: []}"]),
    "unknown-study-ablation": ("study: {ablations: [sampler, samplr]}", ["study.ablations: ['samplr']"]),
    "empty-table1": ("table1: []", ["config key table1", "should be non-empty"]),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_fails_with_one_message_naming_the_key(tmp_path, name):
    extra, expected = BAD_CONFIGS[name]
    workdir = tmp_path / "work"
    workdir.mkdir()
    bad = tmp_path / f"{name}.yaml"
    bad.write_text(extra + "\n")
    result = run_snakemake(workdir, TABLE1, "-n", "--cores", "1", "--configfile", SMOKE, str(bad))
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    message = one_error_line(result)  # one error, raised while parsing, before any job
    for text in expected:
        assert text in message, out
    assert "Failed validating" not in out, out  # no schema dump
    assert not (workdir / "results").exists()


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The message of the one error printed while parsing: one line ``ConfigError: <key>: <what>``,
    without Snakemake's "<Error> in file ..., line N" header, its frames or a traceback."""
    out = result.stdout + result.stderr
    errors = [line for line in out.splitlines() if line.startswith("ConfigError: ")]
    assert len(errors) == 1, out
    assert "Traceback" not in out and "Error in file" not in out and '  File "' not in out, out
    return errors[0][len("ConfigError: "):]


@pytest.mark.parametrize("text, expected", [
    ("sampling:\n  steps: 4\n   seeds: [0]\n", ":3:9: mapping values are not allowed here"),
    ("sampling: {steps: 4\n", ":2:1: "),
    ("- steps\n", ": the top level is a list, not a mapping"),
    # YAML keeps the last of two equal keys silently: the first is a setting nobody uses
    ("sampling:\n  steps: 4\n  eta: 1\n  steps: 8\n", ":4:3: in the mapping at line 2: key 'steps' given twice"),
])
def test_a_yaml_error_in_an_overlay_is_named_with_its_file_and_line(tmp_path, capsys, text, expected):
    """Snakemake says only "Config file is not valid JSON or YAML" (it reads --configfile before
    the Snakefile); python -m ppap.tools.check_config names the file and line, in one line."""
    from ppap.tools import check_config

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    assert check_config.main([str(overlay), SMOKE]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{overlay}{expected}"), lines
    assert check_config.main([SMOKE, *map(str, sorted((REPO / "config").glob("*.yaml")))]) == 0  # every shipped one

def test_an_empty_mapping_in_config_is_named_too(tmp_path):
    result = run_snakemake(tmp_path, TABLE1, "-n", "--cores", "1", "--configfile", SMOKE, "--config", "ablations={}")
    assert result.returncode != 0
    assert one_error_line(result).startswith("ablations: the empty mapping in --config changes nothing")
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def damaged_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    model = write_diffusion_dir(root / "model")
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    guide = write_guide(root / "guide.pt")
    (root / "truncated_guide.pt").write_bytes(guide.read_bytes()[:1000])
    return dict(guide1000=write_guide(root / "guide1000.pt", num_classes=1000),
                truncated_guide=root / "truncated_guide.pt", model=model)


@pytest.mark.parametrize("case, overlay, expected", [
    # a 1000-class guide on the 10-class digits: once found only at evaluate, minutes later
    ("guide1000", "guide: {{pretrained: {guide1000}}}", ["guide.pretrained: ", "1000-class", "has 10 classes"]),
    ("truncated-guide", "guide: {{pretrained: {truncated_guide}}}", ["guide.pretrained: ", "cannot read checkpoint"]),
    ("truncated-unet", "diffusion: {{pretrained: {model}}}", ["diffusion.pretrained: ", "truncated or damaged"]),
])
def test_a_damaged_or_mismatched_named_file_fails_before_any_job(tmp_path, damaged_files, case, overlay, expected):
    config = tmp_path / f"{case}.yaml"
    config.write_text(overlay.format(**damaged_files) + "\n")
    result = run_snakemake(tmp_path, TABLE1, "-n", "--cores", "1", "--configfile", SMOKE, str(config))
    assert result.returncode != 0
    message = one_error_line(result)
    for text in expected:
        assert text in message, message
    assert not (tmp_path / "results").exists()


def test_reference_images_are_an_input_of_evaluate(tmp_path):
    folder = tmp_path / "reference"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "0.png")
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = tmp_path / "reference.yaml"
    config.write_text(f"evaluation: {{reference: {folder}}}\n")
    result = run_snakemake(workdir, TABLE1, "-n", "--cores", "1", "--configfile", SMOKE, str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    blocks = [b for b in result.stdout.split("rule ")[1:] if b.startswith("evaluate:")]
    assert len(blocks) == 5  # one per Table 1 row
    for block in blocks:
        inputs = block.split("input:", 1)[1].splitlines()[0]
        assert str(folder) in inputs and "digits.npz" not in inputs, block
    assert not (workdir / "results").exists()


# ---------------------------------------------------------------- determinism, kill and resume ----

def ctrl_c_when(command: list[str], console: Path, ready, env: dict | None = None):
    """Runs the command in a session of its own (console to a file), waits for ready(process), then
    sends SIGINT to the whole group as Ctrl-C in a terminal does: (what ready returned, exit status).
    Whatever is still running afterwards is killed."""
    with open(console, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            found = ready(process)
            os.killpg(process.pid, signal.SIGINT)
            return found, process.wait(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


def wait_for_job(process: subprocess.Popen, scripts: str | tuple[str, ...], ready,
                 timeout: float = 600) -> psutil.Process:
    """The first job process of `process` (a Snakemake run) that runs one of `scripts` and for which
    ``ready(job)`` holds; polled every 20 ms."""
    scripts = (scripts,) if isinstance(scripts, str) else scripts
    snakemake = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"snakemake exited ({process.returncode}) before a {scripts} job was ready")
        for child in snakemake.children(recursive=True):
            try:
                if any(script in " ".join(child.cmdline()) for script in scripts) and ready(child):
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, FileNotFoundError):
                continue  # it ended meanwhile: wait for the next one
        time.sleep(0.02)
    raise AssertionError(f"no {scripts} job was ready within {timeout} s")


def job_log(job: psutil.Process) -> Path | None:
    logs = [Path(f.path) for f in job.open_files() if "/logs/" in f.path]
    return logs[0] if logs else None


def in_session(job: psutil.Process) -> bool:
    """Past start-up: the job has opened its log (harness.rule_session) and not finished."""
    log = job_log(job)
    return log is not None and "done in" not in log.read_text()


def kill_a_running_job(process: subprocess.Popen, script_names: tuple[str, ...], timeout: float,
                       everything: bool = False) -> Path:
    """SIGKILL a job process of `process` (a Snakemake run) whose command line runs one of the
    scripts, once it has opened its log (it is past start-up, in the rule's own code) and before
    it has finished; returns the job's log file. ``everything``: SIGKILL Snakemake itself first,
    then every process it started (as a crash or ``kill -9`` of the whole run would)."""
    logs = {}

    def ready(job: psutil.Process) -> bool:
        logs[job.pid] = job_log(job)
        return in_session(job)

    child = wait_for_job(process, script_names, ready, timeout)
    snakemake = psutil.Process(process.pid)
    victims = [snakemake, *snakemake.children(recursive=True)] if everything else [child]
    for victim in victims:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return logs[child.pid]


def processes_in(workdir: Path) -> list[psutil.Process]:
    """Live processes working in `workdir` (every job runs there)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and Path(process.cwd()) == workdir:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, FileNotFoundError):
            continue
    return found


def assert_one_line_per_job_and_no_traceback(console: str, pattern: str) -> list[str]:
    lines = re.findall(pattern, console)
    assert lines, console
    for noise in ("Traceback", "KeyboardInterrupt", "RuleException", "CalledProcessError", "Error in rule",
                  "Terminating processes"):
        assert noise not in console, console
    return lines


def importing_torch(job: psutil.Process) -> bool:
    """Still starting: torch's libraries are being mapped, the log is not open yet."""
    return any("/torch/" in m.path for m in job.memory_maps()) and job_log(job) is None


@pytest.mark.slow
def test_sigint_to_snakemake_alone_ends_its_jobs_first_and_the_same_command_resumes(smoke_run, tmp_path):
    """kill -INT of the Snakemake process (not its group, as a supervisor does) during distillation:
    its jobs are interrupted and have ended when it exits (nothing is written after), one line per
    job and no traceback on the console; the same command, without --rerun-incomplete, then makes
    the expert byte for byte as an uninterrupted run did."""
    workdir = tmp_path / "interrupted"
    workdir.mkdir()
    expert = "results/models/guides/datafree_lora2_n2/expert0.pt"
    command = snakemake_cmd(workdir, expert, "--cores", "2", "--configfile", SMOKE)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with open(tmp_path / "first.out", "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_job(process, "distill_expert.py", in_session)
            process.send_signal(signal.SIGINT)
            returncode = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    left = processes_in(workdir)
    first = (tmp_path / "first.out").read_text()
    assert not left, f"jobs outlived Snakemake: {[p.cmdline() for p in left]}"
    assert returncode != 0, first
    assert "Interrupted: stopping" in first, first
    lines = assert_one_line_per_job_and_no_traceback(first, r"(\w+) interrupted (?:after|while starting)")
    assert "distill_expert" in lines and len(lines) == len(set(lines)), first
    assert not (workdir / expert).exists()
    assert not list((workdir / ".snakemake" / "locks").glob("*.lock"))

    second = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert second.returncode == 0, second.stderr[-4000:] + job_logs(workdir)
    # torch.save names the archive after its (temporary) file: compare what it holds, exactly
    ours, theirs = (torch.load(run / expert, weights_only=True) for run in (workdir, smoke_run))
    assert_same_payload(ours, theirs)


@pytest.mark.slow
def test_ctrl_c_before_a_jobs_first_line_waits_for_it_and_is_one_line(tmp_path):
    """SIGINT to the process group while a job's Python is still starting, before Snakemake's
    preamble and the script's first line (held there 3 s by a sitecustomize): the job started with
    SIGINT blocked, so the interrupt waits for job_start and is its one line; no traceback anywhere."""
    from ppap.study import paths

    workdir, hold, started = tmp_path / "early", tmp_path / "hold", tmp_path / "job-started"
    workdir.mkdir()
    hold.mkdir()
    # runs in every Python of the run at its start: in a job's (a script under .snakemake/), says so and waits
    (hold / "sitecustomize.py").write_text(
        "import sys, time\n"
        "if '.snakemake' in sys.argv[0] and sys.argv[0].endswith('.py'):\n"
        f"    open({str(started)!r}, 'w').close()\n"
        "    time.sleep(3)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hold), os.environ.get("PYTHONPATH", "")])}
    command = snakemake_cmd(workdir, paths.real_data("digits"), "--cores", "1", "--configfile", SMOKE)

    def job_started(process):
        deadline = time.time() + 300
        while not started.exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert started.exists(), (tmp_path / "out").read_text()

    _, returncode = ctrl_c_when(command, tmp_path / "out", job_started, env=env)
    console = (tmp_path / "out").read_text()
    assert returncode != 0, console
    assert not processes_in(workdir)
    assert assert_one_line_per_job_and_no_traceback(console, r"(\w+) interrupted while starting") == ["prepare_data"]
    assert not (workdir / paths.real_data("digits")).exists()


def assert_same_payload(ours, theirs, where: str = "") -> None:
    if isinstance(ours, torch.Tensor):
        assert isinstance(theirs, torch.Tensor) and torch.equal(ours, theirs), where
    elif isinstance(ours, dict):
        assert isinstance(theirs, dict) and ours.keys() == theirs.keys(), where
        for key in ours:
            if key not in ("wall_s", "seconds", "machine"):
                assert_same_payload(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(ours, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_payload(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, where


@pytest.mark.slow
def test_ctrl_c_during_a_jobs_imports_is_one_line_and_no_traceback(tmp_path):
    """SIGINT to the whole process group (Ctrl-C in a terminal) while the first job still imports
    torch: one line for it, no traceback (its own or Snakemake's), no process left, and a log
    that says so."""
    from ppap.study import paths

    workdir = tmp_path / "starting"
    workdir.mkdir()
    # the split alone: prepare_data is the first and only job
    command = snakemake_cmd(workdir, paths.real_data("digits"), "--cores", "1", "--configfile", SMOKE)
    job, returncode = ctrl_c_when(command, tmp_path / "out",
                                  lambda run: wait_for_job(run, "prepare_data.py", importing_torch, timeout=300))
    console = (tmp_path / "out").read_text()
    assert returncode != 0 and not job.is_running(), console
    assert not processes_in(workdir)
    assert assert_one_line_per_job_and_no_traceback(console, r"(\w+) interrupted while starting") == ["prepare_data"]
    assert (workdir / "logs" / "prepare_data.log").read_text().startswith("interrupted (SIGINT) while starting")
    assert not (workdir / paths.real_data("digits")).exists()


def test_a_job_ended_on_sigint_drops_snakemakes_error_block_even_before_its_handler_ran(monkeypatch):
    """The race CI hit: in a terminal the job gets the same SIGINT and its exit can be reported
    before Snakemake's (main-thread) handler has run. Its exception and "Error in rule" are still
    dropped, by its exit status; a genuine failure beside it is printed whole."""
    import logging

    monkeypatch.syspath_prepend(str(REPO / "workflow" / "scripts"))
    import interrupts

    interrupted = __import__("threading").Event()
    errors = interrupts._InterruptedJobErrors(interrupted)

    def record(message: str, event: str, thread: int) -> logging.LogRecord:
        rec = logging.LogRecord("snakemake.logging", logging.ERROR, __file__, 1, message, None, None)
        rec.event, rec.thread = event, thread
        return rec

    ended_on_sigint = "CalledProcessError in file data.smk, line 14:\nCommand '...' returned non-zero exit status 130."
    failed = "CalledProcessError in file data.smk, line 14:\nCommand '...' returned non-zero exit status 1."
    assert not errors.filter(record(ended_on_sigint, "error", thread=1))
    assert errors.filter(record(failed, "error", thread=2))  # another job, failing on its own
    assert errors.filter(record("Error in rule score, jobid: 3", "job_error", thread=2))
    assert not errors.filter(record("Error in rule prepare_data, jobid: 0", "job_error", thread=1))
    assert errors.filter(record("Error in rule prepare_data, jobid: 0", "job_error", thread=1))  # once only
    assert not errors.filter(record("died with <Signals.SIGINT: 2>.", "error", thread=4))
    interrupted.set()  # after the handler: every job error is one it caused
    assert not errors.filter(record(failed, "error", thread=2))
    assert not errors.filter(record("Error in rule score, jobid: 3", "job_error", thread=2))


def test_a_table_whose_inputs_are_missing_is_not_up_to_date(smoke_run, tmp_path):
    """Snakemake alone says "Nothing to be done" for an existing Table 1 whose metrics file a failed
    job removed. Here: one line naming both and the command that remakes them; that command (with
    --forcerun of the table) plans the missing file's job and the table, nothing else."""
    workdir = tmp_path / "stale"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    metrics = sorted((workdir / "results" / "metrics").rglob("*.json"))[0]
    metrics.unlink()
    missing = metrics.relative_to(workdir).as_posix()
    for target in (TABLE1, "all"):
        result = run_snakemake(workdir, target, "-n", "--cores", "1", "--configfile", SMOKE)
        assert result.returncode == 1, result.stdout + result.stderr
        errors = [line for line in result.stderr.splitlines() if "StaleOutput" in line]
        assert len(errors) == 1 and f"{TABLE1} exists but {missing}" in errors[0], result.stderr
        assert f"--forcerun {TABLE1}" in errors[0] and "Traceback" not in result.stderr
        assert "Nothing to be done" not in result.stdout + result.stderr
    remake = run_snakemake(workdir, TABLE1, "-n", "--cores", "1", "--configfile", SMOKE, "--forcerun", TABLE1)
    assert remake.returncode == 0, remake.stdout + remake.stderr
    planned = sorted(set(re.findall(r"^rule (\w+):", remake.stdout, flags=re.M)))
    assert planned == ["evaluate", "table1"], remake.stdout
    assert f"output: {missing}" in remake.stdout

@pytest.mark.slow
def test_killed_job_and_killed_snakemake_resume_to_the_same_bytes_as_an_uninterrupted_run(smoke_run, tmp_path):
    """1. SIGKILL one job (not Snakemake) mid-run; Snakemake fails the job and stops.
    2. Rerun the same command: no flag is needed (Snakemake itself was not killed, so it removed the
       failed job's output and incomplete marker). Mid-run, SIGKILL Snakemake itself and its jobs:
       its lock and incomplete markers stay behind.
    3. Rerun the same command with the one documented flag, --rerun-incomplete (the local profile
       sets it): the lock of the dead Snakemake is removed by the Snakefile (locks), the DAG
       completes, and Table 1, the metric files and every sample .npz are byte-identical to the
       uninterrupted run's: the workflow is deterministic and a killed job leaves nothing that a
       rerun could mistake for a finished output."""
    workdir = tmp_path / "killed"
    workdir.mkdir()
    # Another hash seed than the uninterrupted run: nothing may depend on Python's hash order.
    env = {**os.environ, "PYTHONHASHSEED": "1"}
    # Two of Table 1's rows keep it short; every kind of job of the others (a distillation, its
    # manifest, sampling, scoring, the table) is in them, and is compared with the full run's.
    rows = ("unguided", "ppap")
    options = ["--cores", "2", "--configfile", SMOKE, "--config", f"table1={list(rows)}"]

    def start(name: str, *extra: str) -> subprocess.Popen:
        out = open(tmp_path / f"{name}.out", "w")
        return subprocess.Popen(snakemake_cmd(workdir, TABLE1, *options, *extra), stdout=out,
                                stderr=subprocess.STDOUT, env=env)

    process = start("first")
    try:
        victim = kill_a_running_job(process, ("distill_expert.py", "sample.py"), timeout=600)
        returncode = process.wait(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
    first = (tmp_path / "first.out").read_text()
    assert returncode != 0, first
    assert re.search(r"Error in rule (distill_expert|sample)", first), first
    killed_log = victim.relative_to(workdir).as_posix()  # logs/distill/<set>/expert<i>.log or logs/sample/...
    rule = "distill_expert" if killed_log.startswith("logs/distill/") else "sample"
    assert "done in" not in victim.read_text()
    assert not (workdir / TABLE1).exists()

    process = start("second")
    try:
        crashed = kill_a_running_job(process, ("sample.py", "evaluate.py"), timeout=600, everything=True)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    second = (tmp_path / "second.out").read_text()
    assert returncode == -signal.SIGKILL, second
    assert list((workdir / ".snakemake" / "locks").glob("*.lock")), "the killed Snakemake left no lock"
    assert "done in" not in crashed.read_text()

    third = subprocess.run(snakemake_cmd(workdir, TABLE1, *options, "--rerun-incomplete"), capture_output=True,
                           text=True, timeout=900, env=env)
    assert third.returncode == 0, third.stderr[-4000:] + job_logs(workdir)
    third_out = third.stdout + third.stderr
    assert "Removed the lock left by a Snakemake run that was killed" in third_out, third_out
    assert f"rule {rule}:" in second + third_out and f"log: {killed_log}" in second + third_out  # ran again
    assert "done in" in victim.read_text() and "done in" in crashed.read_text()
    assert not list((workdir / ".snakemake" / "locks").glob("*.lock"))

    ours, theirs = run_outputs(workdir, rows), run_outputs(smoke_run, rows)
    # the shared smoke run holds more than these rows' files (its other rows; tests that ran on it)
    assert set(ours) <= set(theirs), sorted(set(ours) - set(theirs))
    assert len([p for p in ours if p.endswith(".npz")]) == 4  # 2 methods x 2 seeds
    assert len(pd.read_csv(workdir / TABLE1)) == len(rows)
    different = [path for path in ours if ours[path] != theirs[path]]
    assert not different, f"differ from the uninterrupted run: {different}"
    assert not list((workdir / "results").rglob("*.tmp*")), "temporary files left behind"


def test_sampling_seed_changes_the_samples_and_the_same_seed_repeats_them(alphas_cumprod):
    unet = build_unet(8, 1, [8, 16], 1, [False, False], 4, seed=0).eval()
    eps = EpsilonModel(unet, alphas_cumprod.float()).eval().requires_grad_(False)

    def draw(seed):
        return generate_samples(Guidance(Denoiser(eps, alphas_cumprod.float(), (1, 8, 8))),
                                SamplingSpec(steps=3, batch_size=4), 6, seed, show_progress=False)[0]

    first, again, other = draw(0), draw(0), draw(1)
    assert np.array_equal(first, again)
    assert all(not np.array_equal(a, b) for a, b in zip(first, other))  # every image, both batches


def test_lora_expert_training_does_not_depend_on_the_global_rng(tmp_path, alphas_cumprod):
    """The cause of a nondeterminism found here: peft initialises each adapter's A from torch's global
    RNG, whose seed differs in every process, so data-free LoRA experts (and the PPAP row) changed
    from run to run. The expert's own seed now fixes the initialisation."""
    spec_ = tiny_guide_spec()
    guide_path = tmp_path / "guide.pt"
    classifiers.save_guide(guide_path, classifiers.build_timm_guide(**spec_, seed=1), spec_)
    images = torch.rand((16, 1, 8, 8), generator=torch.Generator().manual_seed(0)) * 2 - 1

    def train(global_seed):
        torch.manual_seed(global_seed)  # what a fresh process would have: any state at all
        model, stats, _ = train_expert(
            expert_training("datafree_lora2_n2"), 1, guide_path, alphas_cumprod.float(), TrainingPool(images),
            torch.Generator().manual_seed(7), show_progress=False)
        return adapters.adapter_state_dict(model, "expert1"), stats

    (first, stats1), (second, stats2) = train(1), train(2)
    assert stats1 == stats2
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# ----------------------------------------------------------------------- non-finite values ----

@pytest.mark.slow
def test_non_finite_training_loss_stops_the_rule(smoke_run, tmp_path):
    """An absurd learning rate makes the labeled expert's loss non-finite: the job fails, says so
    in its log, and writes no expert file. Starts from a copy of the smoke run (its guide is
    reused), with the expert's outputs and log removed."""
    workdir = tmp_path / "nan"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    shutil.rmtree(workdir / "results" / "models" / "guides" / "labeled_full_n1")
    log = workdir / "logs" / "distill" / "labeled_full_n1" / "expert0.log"
    log.unlink()
    absurd = tmp_path / "absurd.yaml"
    absurd.write_text("experts: {train: {full_lr: 1.0e+30}}\n")
    target = "results/models/guides/labeled_full_n1/expert0.pt"
    result = run_snakemake(workdir, target, "--cores", "1", "--configfile", SMOKE, str(absurd))
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Error in rule distill_expert" in out
    assert "rule train_guide:" not in out  # only the expert ran: the guide came from the copy
    text = log.read_text()
    assert "NonFiniteError" in text and "non-finite loss" in text, text
    expert_dir = workdir / "results" / "models" / "guides" / "labeled_full_n1"
    assert not expert_dir.exists() or not list(expert_dir.iterdir()), list(expert_dir.iterdir())


def test_non_finite_guidance_gradient_stops_sampling(alphas_cumprod):
    unet = build_unet(8, 1, [8, 16], 1, [False, False], 4, seed=0).eval()
    eps = EpsilonModel(unet, alphas_cumprod.float()).eval().requires_grad_(False)

    def nan_guide(x, t):
        return x.flatten(1)[:, :10] * float("nan")

    for sampler in ("ddim", "ddpm"):
        with pytest.raises(NonFiniteError, match="non-finite guidance gradient"):
            generate_samples(Guidance(Denoiser(eps, alphas_cumprod.float(), (1, 8, 8)), ClassifierGuidance(nan_guide)),
                             SamplingSpec(sampler=sampler, steps=3, scale=1.0, batch_size=4), 4, 0, show_progress=False)


# ------------------------------------------------------------------------------ checkpoints ----

def tiny_guide_spec():
    return classifiers.guide_spec("test_resnet", 10, 1, None, [0.5], [0.5])


@pytest.fixture
def guide_file(tmp_path):
    path = tmp_path / "guide.pt"
    spec = tiny_guide_spec()
    classifiers.save_guide(path, classifiers.build_timm_guide(**spec, seed=1), spec)
    return path


@pytest.fixture
def evaluator_file(tmp_path):
    path = tmp_path / "evaluator.pt"
    classifiers.save_evaluator(path, classifiers.build_evaluator(seed=1, width=4, feature_dim=8))
    return path


def write_adapter(path: Path, guide_path: Path, guide_id: str, index: int, t_range, rank: int = 2) -> Path:
    """An expert file as the distill rule writes it (fresh adapter; what matters is the metadata)."""
    guide = classifiers.load_guide(guide_path)
    targets = adapters.lora_target_modules(guide, ["conv"])
    model = adapters.attach_lora_experts(guide, [f"expert{index}"], rank, 4.0, targets)
    save_expert(path, model, expert_training(guide_id), index, dict(t_range=list(t_range)), guide_path)
    return path


def corrupt(kind: str, path: Path, guide_path: Path, evaluator_path: Path) -> Path:
    if kind == "truncated":
        data_ = guide_path.read_bytes()
        path.write_bytes(data_[: len(data_) // 2])
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(2048))
    elif kind == "guide":
        shutil.copy(guide_path, path)
    elif kind == "evaluator":
        shutil.copy(evaluator_path, path)
    return path


LOADERS = {
    "guide": lambda p: classifiers.load_guide(p),
    "evaluator": lambda p: classifiers.load_evaluator(p),
    "adapter": lambda p: adapters.read_adapter(p),
}


@pytest.mark.parametrize("loader, kind", [
    (loader, kind) for loader in LOADERS for kind in ("truncated", "list", "random-bytes", "guide", "evaluator")
    if kind != loader  # a file of the loader's own kind is a good file
])
def test_every_loader_refuses_a_bad_file_naming_it(tmp_path, guide_file, evaluator_file, loader, kind):
    bad = corrupt(kind, tmp_path / "bad_file.pt", guide_file, evaluator_file)
    with pytest.raises(CheckpointError, match="bad_file.pt"):
        LOADERS[loader](bad)


@pytest.mark.parametrize("case", ["other-range", "other-set", "other-index", "full-as-adapter", "truncated"])
def test_load_expert_set_refuses_a_file_of_another_expert(tmp_path, guide_file, evaluator_file, case):
    guide_set = "datafree_lora2_n2"
    ranges = [(0, 500), (500, 1000)]
    good = [write_adapter(tmp_path / f"expert{i}.pt", guide_file, guide_set, i, ranges[i]) for i in range(2)]
    routed = load_expert_set(guide_set, 2, guide_file, good, 1000)
    assert routed.ranges == ranges
    bad = tmp_path / "bad_expert.pt"
    if case == "other-range":      # expert 1 of a set whose ranges are cut elsewhere
        write_adapter(bad, guide_file, guide_set, 1, (300, 1000))
        match = r"bad_expert.pt was trained on timesteps \[300, 1000\]"
    elif case == "other-set":      # same index and range, but trained for the labeled set
        write_adapter(bad, guide_file, "labeled_lora2_n2", 1, ranges[1])
        match = "bad_expert.pt is an expert of labeled_lora2_n2, not of datafree_lora2_n2"
    elif case == "other-index":    # expert 0's file routed as expert 1
        shutil.copy(good[0], bad)
        match = "bad_expert.pt is expert 0, not expert 1"
    elif case == "full-as-adapter":
        shutil.copy(guide_file, bad)
        match = "bad_expert.pt holds a 'ppap-guide' checkpoint, expected 'ppap-lora-adapter'"
    else:
        corrupt("truncated", bad, good[1], evaluator_file)
        match = "cannot read checkpoint .*bad_expert.pt"
    with pytest.raises(CheckpointError, match=match):
        load_expert_set(guide_set, 2, guide_file, [good[0], bad], 1000)


def test_load_expert_set_refuses_an_adapter_of_another_rank(tmp_path, guide_file):
    path = write_adapter(tmp_path / "expert0.pt", guide_file, "datafree_lora4_n1", 0, (0, 1000), rank=2)
    with pytest.raises(CheckpointError, match="expert0.pt holds a rank-2 adapter, datafree_lora4_n1 has rank 4"):
        load_expert_set("datafree_lora4_n1", 4, guide_file, [path], 1000)


@pytest.fixture
def model_dir(tmp_path):
    directory = tmp_path / "model"
    save_diffusion_model(directory, build_unet(8, 1, [8, 16], 1, [False, False], 4, seed=0), make_ddpm_scheduler())
    return directory


@pytest.mark.parametrize("damage", ["truncated", "random-bytes", "missing-key", "extra-key"])
def test_corrupt_diffusion_weights_name_the_file(model_dir, damage):
    from safetensors.torch import load_file, save_file

    weights = model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    raw = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(raw[: len(raw) // 2])
    elif damage == "random-bytes":
        weights.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    else:
        state = load_file(weights)
        if damage == "missing-key":
            del state["conv_in.bias"]  # diffusers alone would initialise it randomly and only warn
        else:
            state["extra.weight"] = torch.zeros(3)
        save_file(state, weights)
    with pytest.raises(CheckpointError, match=re.escape(str(model_dir / "unet"))):
        load_diffusion_model(model_dir)


def test_corrupt_scheduler_config_names_the_file(model_dir):
    (model_dir / "scheduler" / "scheduler_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=re.escape(str(model_dir / "scheduler"))):
        load_diffusion_model(model_dir)


# ------------------------------------------------------------------------- reference images ----

def png_folder(folder: Path, count: int = 3, size: int = 8, mode: str = "L") -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (count, size, size) if mode == "L" else (count, size, size, 3)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image, mode).save(folder / f"img{i:03d}.png")
    return images


def test_reference_png_folder_loads_sorted_uint8_nhwc(tmp_path):
    images = png_folder(tmp_path / "ref", count=12)
    (tmp_path / "ref" / "notes.txt").write_text("not an image")       # ignored
    png_folder(tmp_path / "ref" / "nested", count=2)                   # not searched
    loaded = data.load_reference_images(tmp_path / "ref", 8, 1)
    assert loaded.dtype == np.uint8 and loaded.shape == (12, 8, 8, 1)
    assert np.array_equal(loaded[..., 0], images)  # img000, img001, ..., img011: name order
    rgb = png_folder(tmp_path / "rgb", count=2, mode="RGB")
    assert np.array_equal(data.load_reference_images(tmp_path / "rgb", 8, 3), rgb)


@pytest.mark.parametrize("problem, match", [
    ("corrupt", "cannot read reference image .*img001.png"),
    ("truncated", "cannot read reference image .*img001.png"),
    ("wrong-size", r"img001.png is 9x9, expected 8x8"),
    ("wrong-mode", r"img001.png has mode RGB, expected L"),
    ("not-png", r"cannot read reference image .*img001.png: format JPEG"),
])
def test_bad_reference_image_names_the_file(tmp_path, problem, match):
    folder = tmp_path / "ref"
    png_folder(folder)
    bad = folder / "img001.png"
    if problem == "corrupt":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    elif problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:-20])
    elif problem == "wrong-size":
        Image.fromarray(np.zeros((9, 9), np.uint8)).save(bad)
    elif problem == "wrong-mode":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad)
    else:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad, format="JPEG")
    with pytest.raises(ValueError, match=match):
        data.load_reference_images(folder, 8, 1)


def test_empty_or_missing_reference_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty holds no .png files"):
        data.load_reference_images(tmp_path / "empty", 8, 1)
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        data.load_reference_images(tmp_path / "nothing_here", 8, 1)


def test_reference_npz_adm_batch(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", arr_0=images, arr_1=np.arange(5))
    assert np.array_equal(data.load_reference_images(tmp_path / "ref.npz", 8, 1), images)
    with pytest.raises(ValueError, match=r"ref.npz: arr_0 must be uint8 NHWC \[N, 16, 16, 1\]"):
        data.load_reference_images(tmp_path / "ref.npz", 16, 1)
    np.savez(tmp_path / "float.npz", arr_0=images.astype(np.float32))
    with pytest.raises(ValueError, match="float.npz: arr_0 must be uint8"):
        data.load_reference_images(tmp_path / "float.npz", 8, 1)
    np.savez(tmp_path / "other.npz", images=images)
    with pytest.raises(ValueError, match="cannot read reference images from .*other.npz"):
        data.load_reference_images(tmp_path / "other.npz", 8, 1)
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        data.load_reference_images(tmp_path / "broken.npz", 8, 1)


def test_samples_npz_bytes_depend_on_the_arrays_only(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    data.save_samples(tmp_path / "a.npz", images, np.arange(4))
    os.utime(tmp_path / "a.npz", (0, 0))
    time.sleep(2.1)  # zip timestamps have a 2 s resolution
    data.save_samples(tmp_path / "b.npz", images, np.arange(4))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded, labels = data.load_samples(tmp_path / "b.npz")
    assert np.array_equal(loaded, images) and labels.tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_evaluate_scores_against_the_reference_images(smoke_run, tmp_path):
    """The test digits written out as PNGs and set as evaluation.reference: the evaluate rule reruns
    (its input changed) and gives the same metrics as scoring against the digits themselves."""
    workdir = tmp_path / "with_reference"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    digits = load_digits_npz(workdir / "results" / "data" / "digits.npz")["test_images"]
    folder = tmp_path / "test_digits"
    folder.mkdir()
    for i, image in enumerate(digits):
        Image.fromarray(image[..., 0]).save(folder / f"{i:04d}.png")
    config = tmp_path / "reference.yaml"
    config.write_text(f"evaluation: {{reference: {folder}}}\n")
    target = "results/metrics/none/ddim4_s0.json"
    before = pd.read_json(workdir / target, typ="series")
    result = run_snakemake(workdir, target, "--cores", "1", "--configfile", SMOKE, str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule evaluate:" in result.stdout + result.stderr
    assert f"{len(digits)} reference images from {folder}" in (workdir / "logs/evaluate/none/ddim4_s0.log").read_text()
    after = pd.read_json(workdir / target, typ="series")
    for metric in ("fid", "is", "precision", "recall", "density", "coverage"):
        assert after["mean"][metric] == pytest.approx(before["mean"][metric], rel=1e-5, abs=1e-6), metric


# ------------------------------------------------------------------------ reference results ----

@pytest.mark.slow
def test_reference_check_passes_on_an_identical_table(smoke_run, capsys):
    table = smoke_run / TABLE1
    assert reference.main(["--results", str(smoke_run), "--reference", str(table)]) == 0
    out = capsys.readouterr().out
    assert "method" in out and "tolerance" in out and "OK: all" in out
    assert "FAIL" not in out


@pytest.mark.slow
def test_reference_check_fails_naming_the_metric_out_of_tolerance(smoke_run, tmp_path, capsys):
    table = pd.read_csv(smoke_run / TABLE1)
    perturbed = table.copy()
    row = perturbed.index[perturbed["method"] == "ppap"][0]
    perturbed.loc[row, "fid"] *= 1.5                        # beyond max(15%, 3 sd)
    perturbed.loc[row, "precision"] += 0.03                 # within 0.05: still fine
    (tmp_path / "table1.csv").write_text(perturbed.to_csv(index=False))
    assert reference.main(["--results", str(tmp_path), "--reference", str(smoke_run / TABLE1)]) == 1
    out = capsys.readouterr().out
    failing = [line.split() for line in out.splitlines() if line.rstrip().endswith("FAIL")]
    assert [line[:2] for line in failing] == [["ppap", "fid"]], out
    assert "FAILED: 1 of" in out and "ppap.fid" in out


@pytest.mark.slow
def test_reference_check_flags_a_missing_method_and_another_preset(smoke_run, tmp_path, capsys):
    table = pd.read_csv(smoke_run / TABLE1)
    other = table[table["method"] != "ppap"].copy()
    other.loc[other["method"] == "multi_expert_labeled", "n_experts"] = 5
    (tmp_path / "table1.csv").write_text(other.to_csv(index=False))
    assert reference.main(["--results", str(tmp_path / "table1.csv"), "--reference", str(smoke_run / TABLE1)]) == 1
    out = capsys.readouterr().out
    assert "ppap.(row)" in out and "multi_expert_labeled.n_experts" in out


@pytest.mark.slow
def test_reference_check_run_option_runs_the_workflow_first(smoke_run, tmp_path):
    """--run with --scratch on a finished copy of the smoke run: Snakemake has nothing to do, and the
    check compares its table with the reference (here the same table: exit 0)."""
    scratch = tmp_path / "scratch"
    shutil.copytree(smoke_run, scratch, symlinks=True)
    result = subprocess.run([sys.executable, "-m", "ppap.tools.reference", "--run", "--cores", "1", "--scratch", str(scratch),
                             "--configfile", SMOKE, "--reference", str(smoke_run / TABLE1)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr
    assert f"measured:  {scratch / TABLE1}" in result.stdout


# -------------------------------------------------------------------- the preset of a table ----

@pytest.mark.slow
def test_table1_records_its_preset(smoke_run):
    record = reference.read_preset_record(smoke_run / TABLE1)
    assert record["preset"] == "smoke" and re.fullmatch(r"[0-9a-f]{64}", record["config_sha256"])
    assert record["config"]["sampling"]["num_samples"] == 40
    assert not set(reference.NOT_TABLE1) & set(record["config"])  # threads, ablations, ...: not Table 1's


def preset_table(folder: Path, preset: str, **sampling) -> Path:
    """A Table 1 CSV and its preset record, as the table1 rule writes them (config: the smoke preset's)."""
    import yaml
    from test_checks import merged

    config = merged(yaml.safe_load(Path(SMOKE).read_text()), {"sampling": sampling, "preset": preset})
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "table1.csv"
    table.write_text("method,fid,accuracy\nunguided,5.0,\nppap,9.0,0.3\n")
    reference.write_preset_record(table, config)
    return table


def test_reference_check_refuses_another_preset_in_one_line(tmp_path, capsys):
    measured = preset_table(tmp_path / "run", "smoke")
    other = preset_table(tmp_path / "ref", "default", num_samples=500, steps=25)
    assert reference.main(["--results", str(measured), "--reference", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "preset 'smoke'" in err[0] and "preset 'default'" in err[0], err
    assert "sampling.num_samples" in err[0] and "sampling.steps" in err[0] and "--any-preset" in err[0]
    assert reference.main(["--results", str(measured), "--reference", str(other), "--any-preset"]) == 0
    same = preset_table(tmp_path / "same", "smoke")
    assert reference.main(["--results", str(measured), "--reference", str(same)]) == 0
    assert "OK: all" in capsys.readouterr().out


def test_reference_without_a_record_is_compared_with_one_note(tmp_path, capsys):
    measured = preset_table(tmp_path / "run", "smoke")
    old = tmp_path / "old" / "table1.csv"
    old.parent.mkdir()
    shutil.copy(measured, old)  # made before tables recorded their preset
    assert reference.main(["--results", str(measured), "--reference", str(old)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "table1.preset.json" in notes[0] and "not checked" in notes[0]


def test_reference_run_of_another_preset_is_refused_before_it_runs(tmp_path, capsys):
    default = preset_table(tmp_path / "ref", "default")
    scratch = tmp_path / "scratch"
    assert reference.main(["--run", "--scratch", str(scratch), "--configfile", SMOKE, "--reference", str(default)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is preset 'smoke'" in err[0] and "preset 'default'" in err[0], err
    assert not scratch.exists() or not any(scratch.iterdir())


# ------------------------------------------------------------------- the report notebook ----

def rule_bodies() -> dict[str, str]:
    bodies = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for match in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", path.read_text(), flags=re.M):
            bodies[match.group(1)] = match.group(2)
    return bodies


def test_every_rule_has_a_benchmark_and_the_notebook_is_published_whole():
    bodies = rule_bodies()
    assert {"report_notebook", "render_report"} <= set(bodies)
    assert [name for name, body in bodies.items() if "benchmark:" not in body] == []
    from ppap.study import paths

    # papermill writes the executed notebook cell by cell: into logs/, never into results/ ...
    notebook_log = re.search(r"log:\n(?:\s*#.*\n)*\s*notebook=paths\.(\w+)", bodies["report_notebook"]).group(1)
    assert getattr(paths, notebook_log) == paths.EXECUTED_NOTEBOOK and paths.EXECUTED_NOTEBOOK.startswith("logs/")
    # ... and render_report publishes it whole (ppap.io.write_text: a temporary file, then a rename).
    assert "notebook=paths.REPORT_NOTEBOOK" in bodies["render_report"].split("log:")[0]
    assert paths.REPORT_NOTEBOOK == "results/report/study.ipynb"
    assert f"executed=paths.{notebook_log}" in bodies["render_report"]
    script = (REPO / "workflow" / "scripts" / "render_report.py").read_text()
    assert "write_text(snakemake.output.notebook" in script and "snakemake.params.executed" in script


def test_reference_records_that_differ_only_in_a_key_one_lacks_are_compared_with_a_note(tmp_path, capsys):
    measured = preset_table(tmp_path / "run", "smoke")
    older = preset_table(tmp_path / "ref", "smoke")
    record = reference.read_preset_record(older)
    del record["config"]["sampling"]["routing"]  # a key the schema did not have when the reference was made
    record["config_sha256"] = "0" * 64
    reference.record_path(older).write_text(json.dumps(record))
    assert reference.main(["--results", str(measured), "--reference", str(older)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "sampling.routing" in notes[0], notes
