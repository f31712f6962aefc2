"""What a Snakemake script needs around a library call: its log, its thread budget, its device."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import traceback
from typing import Iterator

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for device 'cuda' but torch sees no GPU; use 'cpu' or 'auto'")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device(name)


PRECISIONS = ("fp32", "bf16", "auto")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` is bf16 on CUDA and fp32 elsewhere; returns ``"fp32"`` or ``"bf16"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def autocast_context(device: torch.device | str, precision: str = "fp32"):
    """bf16 autocast for the networks' matmuls and convolutions on ``device``; fp32: no change.

    Parameters and the tensors the caller holds stay float32 (nothing is cast or moved here);
    losses, softmax and the sampler's update arithmetic stay float32 as autocast leaves them.
    """
    device = torch.device(device)
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def batch_size_for(section: dict, device: torch.device | str) -> int:
    """A config section's ``batch_size``, or its ``batch_size_by_device[<cpu|cuda>]`` override."""
    overrides = section.get("batch_size_by_device") or {}
    return int(overrides.get(torch.device(device).type, section["batch_size"]))


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int) -> None:
    """Honour the rule's ``threads`` so ``--cores`` is never oversubscribed.

    Capped at the CPUs this process may use: more torch threads than cores makes every op
    slower (threads spin waiting for each other), which ``--cores 8`` on a laptop would cause.
    """
    threads = max(1, min(int(threads), available_cpus()))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


@contextlib.contextmanager
def rule_session(log_path: str | os.PathLike, threads: int = 1, name: str = "") -> Iterator[logging.Logger]:
    """Send stdout, stderr and logging of a rule's script to its log file; set its threads.

    An exception is written to the log with its traceback and re-raised, so Snakemake fails the
    job and the reason is in ``logs/``.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    set_threads(threads)
    started = time.time()
    with open(log_path, "w", buffering=1) as log_file, \
            contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger = logging.getLogger(f"ppap.{name or 'rule'}")
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.info("start %s (threads=%d, torch %s)", name, threads, torch.__version__)
        if os.environ.get("SLURM_JOB_ID"):  # which cluster job ran it: the trail from logs/ to SLURM's
            logger.info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"],
                        os.environ.get("SLURMD_NODENAME") or socket.gethostname())
        try:
            yield logger
        except BaseException:
            traceback.print_exc(file=log_file)
            logger.error("failed after %.1f s", time.time() - started)
            raise
        logger.info("done in %.1f s", time.time() - started)
    sys.stderr.flush()
