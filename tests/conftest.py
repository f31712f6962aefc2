"""Shared tiny models for the unit tests: every weight comes from a seeded generator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ppap.models.classifiers import ClassifierGuide
from ppap.schedules import alphas_cumprod_from_scheduler, make_ddpm_scheduler


@pytest.fixture
def one_thread():
    """Run a test on one torch thread, then restore the count.

    The models here are tiny: one thread is fastest, and several threads spin against any other
    job on a small machine (a 40-step fit took 9 s with 2 threads beside a training job, 0.1 s
    with 1). Restored afterwards so that tests checking the thread count stay meaningful.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded_(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Overwrite every parameter with N(0, scale^2) from a seeded generator (no global seed)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return module


def conv_backbone(in_chans: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Conv(in, 4, 3) -> ReLU -> Conv(4, 6, 3) -> ReLU -> pool -> Linear(6, classes); no batch norm."""
    return nn.Sequential(
        nn.Conv2d(in_chans, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes),
    )


@pytest.fixture
def make_guide():
    """Factory: a tiny 2-conv classifier behind a ClassifierGuide, weights from `seed`."""

    def make(seed: int = 0, in_chans: int = 1, num_classes: int = 10, scale: float = 0.5) -> ClassifierGuide:
        with torch.random.fork_rng(devices=[]):  # nn layers draw their init from the global RNG
            backbone = seeded_(conv_backbone(in_chans, num_classes), seed, scale)
        return ClassifierGuide(backbone, None, [0.5] * in_chans, [0.5] * in_chans).eval()

    return make


@pytest.fixture(scope="session")
def alphas_cumprod() -> torch.Tensor:
    """The embedded preset's linear schedule (T = 1000), float64."""
    return alphas_cumprod_from_scheduler(make_ddpm_scheduler())
