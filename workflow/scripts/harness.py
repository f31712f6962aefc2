"""The rule harness: what a Snakemake script needs around a library call. Its log (stdout, stderr
and logging go to ``logs/``), its thread budget, one console line when it fails or is interrupted,
a fast exit, and one log line per model it loaded.

It lives with the workflow (``workflow/scripts/`` is on every rule script's ``sys.path``), not in
the library: :mod:`ppap` knows nothing of rules or logs.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator

import torch

import interrupts
from metadata import snakemake_record
from ppap.devices import set_threads
from ppap.io import DamagedFileError
from ppap.models.checkpoints import load_checkpoint
from ppap.models.classifiers import GUIDE_KIND
from ppap.study.checks import diffusion_info

TAIL_LINES = 15  # lines of a failed job's log shown on the console


def log_tail(log_path: str | os.PathLike, lines: int = TAIL_LINES) -> list[str]:
    """The last non-empty lines of a log as a terminal shows them: a progress bar that redraws
    itself with carriage returns is one line, its last state."""
    try:
        with open(log_path, errors="replace", newline="") as f:  # keep carriage returns
            text = f.read()
    except OSError:
        return []
    shown = []
    for line in text.split("\n"):
        drawn = [part for part in line.split("\r") if part.strip()]
        if drawn:
            shown.append(drawn[-1])
    return shown[-lines:]


def _console(text: str) -> None:
    """Write to the console (the stderr the job was started with), whatever redirection is active."""
    stream = sys.__stderr__ or sys.stderr
    stream.write(text)
    stream.flush()


_REPORTED: set[int] = set()  # ids of exceptions rule_session has already reported on the console


def _quiet_excepthook(previous):
    def hook(kind, value, tb):
        if id(value) in _REPORTED:
            return  # its cause and the log's last lines are on the console; the traceback is in the log
        previous(kind, value, tb)

    return hook


_FAST_EXIT_REGISTERED = False


def skip_final_collection() -> bool:
    """At interpreter exit, freeze every object before the final garbage collection.

    A rule's process imports up to 4,200 modules (torch, peft, transformers, diffusers,
    torch-fidelity); tearing them down took 1.6-1.7 s per job here (``benchmarks/job_overhead.py``),
    most of it the final cyclic collection walking objects that are about to be freed anyway.
    ``gc.freeze`` moves them out of the collector's view; modules are still torn down and files
    still closed, and the job's outputs are written before the process exits. Registered once per process as an ``atexit``
    handler, so it runs when the job is over; returns whether this call registered it.
    """
    global _FAST_EXIT_REGISTERED
    if _FAST_EXIT_REGISTERED:
        return False
    atexit.register(gc.freeze)
    _FAST_EXIT_REGISTERED = True
    return True


@contextlib.contextmanager
def rule_session(log_path: str | os.PathLike, threads: int = 1, name: str = "") -> Iterator[logging.Logger]:
    """Send stdout, stderr and logging of a rule's script to its log file; set its threads.

    An exception is written to the log with its traceback and re-raised, so Snakemake fails the
    job; the console gets one line with its cause and the log's last lines (:data:`TAIL_LINES`),
    not the traceback. An interrupt (Ctrl-C sends SIGINT to every job, and Snakemake sends one more,
    :mod:`interrupts`) is one line on the console saying what was interrupted, and no traceback anywhere.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    # The first SIGINT is KeyboardInterrupt, a second one (a terminal's and Snakemake's) is ignored.
    signal.signal(signal.SIGINT, interrupts.session_handler)
    set_threads(threads)
    skip_final_collection()
    started = time.time()
    what = name or "rule"
    try:
        with open(log_path, "w", buffering=1) as log_file, \
                contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
            handler = logging.StreamHandler(log_file)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
            logger = logging.getLogger(f"ppap.{what}")
            logger.handlers[:] = [handler]
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logger.info("start %s (threads=%d, torch %s)", name, threads, torch.__version__)
            if os.environ.get("SLURM_JOB_ID"):  # which cluster job ran it: the trail from logs/ to SLURM's
                logger.info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"],
                            os.environ.get("SLURMD_NODENAME") or socket.gethostname())
            try:
                yield logger
            except KeyboardInterrupt:
                logger.error("interrupted (SIGINT) after %.1f s", time.time() - started)
                raise
            except SystemExit as err:
                if err.code not in (None, 0):
                    logger.error("exited with status %s after %.1f s", err.code, time.time() - started)
                raise
            except BaseException as err:
                if interrupts.received():  # a library turned the interrupt into another error
                    logger.error("interrupted (SIGINT) after %.1f s (raised as %s: %s)", time.time() - started,
                                 type(err).__name__, err)
                    raise KeyboardInterrupt from err
                traceback.print_exc(file=log_file)
                logger.error("failed after %.1f s", time.time() - started)
                raise
            logger.info("done in %.1f s", time.time() - started)
        # The work is done and written: an interrupt now lets the job finish.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt as err:
        _console(f"{what} interrupted after {time.time() - started:.1f} s (log: {log_path})\n")
        _REPORTED.add(id(err))
        sys.excepthook = _quiet_excepthook(sys.excepthook)
        raise
    except SystemExit:
        raise
    except DamagedFileError as err:
        _console(f"{what} failed after {time.time() - started:.1f} s: {damaged_file_remedy(err)} (log: {log_path})\n")
        _REPORTED.add(id(err))
        sys.excepthook = _quiet_excepthook(sys.excepthook)
        raise
    except BaseException as err:
        message = str(err).strip().splitlines()
        tail = "".join(f"    | {line}\n" for line in log_tail(log_path))
        _console(f"{what} failed after {time.time() - started:.1f} s: {type(err).__name__}: "
                 f"{message[0] if message else ''}\n  last lines of {log_path}:\n{tail}")
        _REPORTED.add(id(err))
        sys.excepthook = _quiet_excepthook(sys.excepthook)
        raise
    sys.stderr.flush()


def record_trained_model(model: str | os.PathLike, record: str | os.PathLike, made_with: dict, train: dict,
                         device) -> None:
    """The model record beside a model a rule trained (ppap.models.records): the config sections that
    made it, its seed and steps, the environment, its sha256. `record` is the rule's declared output."""
    from ppap.models.records import record_path, write_record

    if Path(record) != record_path(model):
        raise ValueError(f"record output {record} is not where the loaders look ({record_path(model)})")
    training = {key: train[key] for key in ("seed", "steps", "batch_size", "lr", "ema_decay") if key in train}
    write_record(model, made_with, {**training, "device": str(device), "threads": torch.get_num_threads()})


def describe_diffusion_model(model_dir: str | os.PathLike) -> str:
    """One log line: which diffusion model a job loaded, its schedule and prediction type."""
    info = diffusion_info(model_dir)
    return (f"diffusion model {os.path.abspath(model_dir)}: {info['unet_class'] or 'UNet2DModel'} "
            f"{info['in_channels']}->{info['out_channels']} channels at {info['sample_size']} px, blocks "
            f"{info['block_out_channels']}; {describe_schedule(model_dir)}")


def describe_schedule(directory: str | os.PathLike) -> str:
    """The training noise schedule of a scheduler directory (or a model directory's scheduler/)."""
    directory = Path(directory)
    if (directory / "scheduler").is_dir():
        directory = directory / "scheduler"
    config = json.loads((directory / "scheduler_config.json").read_text())
    return (f"schedule {config.get('_class_name')} {config.get('beta_schedule')} beta "
            f"{config.get('beta_start')}..{config.get('beta_end')}, T = {config.get('num_train_timesteps')}, "
            f"prediction {config.get('prediction_type', 'epsilon')} ({os.path.abspath(directory)})")


def describe_guide(path: str | os.PathLike) -> str:
    """One log line: which guide a job loaded (architecture, classes, input channels and size)."""
    payload = load_checkpoint(path)
    spec = dict(payload["spec"])
    if payload["kind"] != GUIDE_KIND:  # a dense guide
        return (f"dense guide {os.path.abspath(path)}: {spec['family']} {spec.get('arch', '')}, {spec['task']}, "
                f"{spec['num_outputs']} output(s), input size {spec['input_size'] or 'as given'}")
    kwargs = f" {spec['model_kwargs']}" if spec.get("model_kwargs") else ""
    return (f"guide {os.path.abspath(path)}: {spec['arch']}{kwargs}, {spec['num_classes']} classes, "
            f"{spec['in_chans']} input channel(s), input size {spec['input_size'] or 'as given'}, "
            f"mean {spec['mean']} std {spec['std']}")


def producing_rule(path: str | os.PathLike, persistence: str | os.PathLike = ".snakemake") -> str | None:
    """The rule that wrote ``path`` (relative to the working directory), from Snakemake's own record of
    its outputs (:func:`metadata.snakemake_record`); None for a file it did not write (a file the config names)."""
    return (snakemake_record(path, persistence) or {}).get("rule")


def damaged_file_remedy(err: DamagedFileError) -> str:
    """One line: the damaged file, what it should be and why it is not, the rule that makes it and
    the command that remakes it."""
    rule = producing_rule(err.path)
    if rule is None:
        return (f"{err.path} is damaged: it should be {err.expected}, but {err.cause}; it is not an output "
                "of this workflow (a file the config names): replace it")
    return (f"{err.path} is damaged: it should be {err.expected}, but {err.cause}; rule {rule} makes it: "
            f"remake it with `snakemake --force {err.path}` (and your usual --cores/--configfile), then rerun")
