"""Devices and precision: autocast helper, per-device batch sizes, bf16 sampling and distillation on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import expert_training
from ppap.devices import autocast_context, batch_size_for, resolve_precision
from ppap.experts import SingleGuide
from ppap.experts.sets import TrainingPool, train_expert
from ppap.generate import Guidance, generate_samples
from ppap.guidance import ClassifierGuidance
from ppap.models import classifiers
from ppap.models.unet import EpsilonModel, build_unet
from ppap.sampling import Denoiser
from ppap.specs import SamplingSpec

CPU = torch.device("cpu")


def test_auto_precision_is_bf16_on_cuda_and_fp32_on_cpu():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"  # no GPU needed to decide
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cuda") == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", "cpu")


def test_fp32_autocast_is_a_no_op_and_bf16_autocasts_on_cpu():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast_context(CPU, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        assert layer(x).dtype == torch.float32
    with autocast_context(CPU, "auto"):
        assert layer(x).dtype == torch.float32
    with autocast_context(CPU, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # nothing is cast in place


def test_batch_size_by_device_overrides_the_batch_size():
    section = {"batch_size": 500, "batch_size_by_device": {"cuda": 64}}
    assert batch_size_for(section, torch.device("cuda")) == 64
    assert batch_size_for(section, CPU) == 500
    assert batch_size_for({"batch_size": 7}, "cuda") == 7


@pytest.fixture
def tiny_eps(alphas_cumprod):
    unet = build_unet(8, 1, [8, 16], 1, [False, False], 4, seed=0).eval()
    return EpsilonModel(unet, alphas_cumprod.float()).eval().requires_grad_(False)


def test_bf16_sampling_on_cpu_is_close_to_fp32_and_fp32_is_unchanged(tiny_eps, alphas_cumprod, make_guide, one_thread):
    guide = SingleGuide(make_guide(seed=1)).requires_grad_(False)

    def draw(**kwargs):
        guidance = Guidance(Denoiser(tiny_eps, alphas_cumprod.float(), (1, 8, 8)), ClassifierGuidance(guide))
        return generate_samples(guidance, SamplingSpec(steps=4, scale=1.0, batch_size=4, **kwargs), 8, 0, CPU,
                                show_progress=False)

    default, fp32, auto, bf16 = draw(), draw(precision="fp32"), draw(precision="auto"), draw(precision="bf16")
    assert np.array_equal(default[0], fp32[0]) and np.array_equal(default[0], auto[0])
    assert np.array_equal(default[1], bf16[1])  # same target classes
    diff = np.abs(default[0].astype(int) - bf16[0].astype(int))
    assert diff.mean() < 6 and not np.array_equal(default[0], bf16[0])  # close, and bf16 really ran


def test_bf16_distillation_on_cpu_trains_and_fp32_is_unchanged(tmp_path, alphas_cumprod, one_thread):
    spec = classifiers.guide_spec("resnet10t", 10, 1, 16, [0.5], [0.5], {"channels": [8, 16, 32, 64], "stem_width": 8})
    guide_path = tmp_path / "guide.pt"
    classifiers.save_guide(guide_path, classifiers.build_timm_guide(**spec, seed=0), spec)
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def train(precision="fp32"):
        settings = expert_training("datafree_lora2_n2", steps=4, batch_size=8, precision=precision,
                                   lora=dict(rank=2, alpha=2, layer_types=["conv"], include=None, exclude=None))
        _, stats, _ = train_expert(settings, 1, guide_path, alphas_cumprod.float(), TrainingPool(images),
                                   torch.Generator().manual_seed(5), show_progress=False)
        return stats

    fp32, auto, bf16 = train(), train(precision="auto"), train(precision="bf16")
    assert fp32 == auto
    assert np.isfinite(bf16["final_loss"])
    assert bf16["final_loss"] == pytest.approx(fp32["final_loss"], rel=0.1, abs=1e-3)
