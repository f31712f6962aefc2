"""Devices, precision and threads: ``auto`` resolved to a device, bf16 autocast where asked, a
section's batch size for the device, and a thread budget that never oversubscribes the cores."""

from __future__ import annotations

import contextlib
import os

import torch

from ppap.vocab import PRECISIONS


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for device 'cuda' but torch sees no GPU; use 'cpu' or 'auto'")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device(name)




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


