"""Knowledge transfer: the KD loss, and fit_noise_aware for data-free and labeled training."""

from __future__ import annotations

import copy
from dataclasses import fields

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ppap.experts import adapters
from ppap.experts.distill import Fit, adapter_teacher, fit_noise_aware, kd_loss, module_teacher
from ppap.guidance import NonFiniteError

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits(seed: int, shape=(5, 10), scale: float = 3.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed)) * scale


def blobs(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth images in [-1, 1]: random 4x4 patterns upsampled to 8x8."""
    coarse = torch.rand((n, 1, 4, 4), generator=gen(seed)) * 2 - 1
    return F.interpolate(coarse, size=(8, 8), mode="nearest")


# ------------------------------------------------------------------------------------ kd_loss ----

def test_kd_loss_is_zero_for_identical_logits_at_temperature_one():
    z = logits(0)
    loss = kd_loss(z, z, 1.0)
    assert loss.shape == (5,)
    assert torch.allclose(loss, torch.zeros(5), atol=1e-6)
    # A constant shift of the student's logits is the same distribution.
    assert torch.allclose(kd_loss(z + 4.0, z, 1.0), torch.zeros(5), atol=1e-5)


def test_kd_loss_is_positive_otherwise_and_is_the_kl():
    teacher, student = logits(0), logits(1)
    loss = kd_loss(student, teacher, 1.0)
    assert (loss > 1e-3).all()
    reference = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True,
                         reduction="none").sum(-1)
    assert torch.allclose(loss, reference, atol=1e-5)


@pytest.mark.parametrize("tau", [0.25, 0.5, 2.0])
def test_kd_loss_at_temperature_is_minimised_at_teacher_over_tau(tau):
    teacher = logits(2, scale=0.5)  # moderate logits: a sharpened teacher stays away from one-hot in float32
    optimum = teacher / tau
    assert torch.allclose(kd_loss(optimum, teacher, tau), torch.zeros(5), atol=1e-5)
    assert (kd_loss(teacher, teacher, tau) > 1e-3).all()  # the temperature acts on the teacher only
    for seed in range(5):
        nudged = optimum + 0.3 * torch.randn(optimum.shape, generator=gen(10 + seed))
        assert (kd_loss(nudged, teacher, tau) > kd_loss(optimum, teacher, tau)).all()
    # The gradient with respect to the student vanishes at the optimum.
    student = optimum.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(kd_loss(student, teacher, tau).sum(), student)
    assert grad.abs().max() < 1e-5


def test_kd_loss_on_clean_input_with_a_fresh_adapter_is_zero(make_guide):
    model = adapters.attach_lora_experts(make_guide(0), ["e0"], 2, 4.0, ["backbone.0", "backbone.2"]).eval()
    x = blobs(8)
    with torch.no_grad():
        loss = kd_loss(model(x, None), adapter_teacher(model)(x), 1.0)
    assert torch.allclose(loss, torch.zeros(8), atol=1e-6)


# ---------------------------------------------------------------------------- fit_noise_aware ----

def fit_kwargs(alphas_cumprod, **overrides):
    """fit_noise_aware's arguments: the training (Fit) fields among ``overrides`` go into ``fit``."""
    training = dict(steps=40, batch_size=32, lr=3e-2, weight_decay=0.0)
    training.update({key: overrides.pop(key) for key in list(overrides) if key in {f.name for f in fields(Fit)}})
    kwargs = dict(clean_images=blobs(64), t_range=(0, 100), alphas_cumprod=alphas_cumprod, fit=Fit(**training),
                  generator=gen(0), show_progress=False)
    kwargs.update(overrides)
    return kwargs


def mean(values):
    return sum(values) / len(values)


def test_fit_noise_aware_with_a_teacher_reduces_the_loss(make_guide, alphas_cumprod):
    teacher = module_teacher(make_guide(0, scale=1.0))
    student = make_guide(1).train()
    losses = fit_noise_aware(student, list(student.parameters()), teacher=teacher, **fit_kwargs(alphas_cumprod))
    assert len(losses) == 40 and all(loss >= 0 for loss in losses)
    assert mean(losses[-5:]) < 0.5 * mean(losses[:5]), (losses[:5], losses[-5:])


def test_fit_noise_aware_trains_only_the_adapter(make_guide, alphas_cumprod):
    model = adapters.attach_lora_experts(make_guide(0, scale=1.0), ["e0"], 2, 4.0, ["backbone.0", "backbone.2"])
    params = adapters.train_only_adapter(model, "e0")
    model.eval()
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    x = blobs(8, seed=5)
    with torch.no_grad():
        base_out = adapter_teacher(model)(x)
    losses = fit_noise_aware(model, params, teacher=adapter_teacher(model),
                             **fit_kwargs(alphas_cumprod, t_range=(200, 400), steps=30))
    assert mean(losses[-5:]) < mean(losses[:5])
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base_before[name]), name
    with torch.no_grad():
        assert torch.equal(adapter_teacher(model)(x), base_out)  # the off-the-shelf guide is intact
        assert not torch.allclose(model(x, None), base_out)      # the expert has learned something


def test_fit_noise_aware_with_labels_reduces_cross_entropy(make_guide, alphas_cumprod):
    images = blobs(64)
    labels = (images.mean((1, 2, 3)) > 0).long()  # a learnable rule: bright vs dark
    student = make_guide(1, num_classes=2).train()
    losses = fit_noise_aware(student, list(student.parameters()), labels=labels,
                             **fit_kwargs(alphas_cumprod, clean_images=images))
    assert mean(losses[-5:]) < 0.7 * mean(losses[:5]), (losses[:5], losses[-5:])


def test_fit_noise_aware_is_reproducible_and_uses_its_range(make_guide, alphas_cumprod):
    teacher = module_teacher(make_guide(0, scale=1.0))
    runs = []
    for _ in range(2):
        seen = []
        student = make_guide(1)

        def record(x, t, student=student, seen=seen):
            seen.append(t.clone())
            return student(x, t)

        losses = fit_noise_aware(record, list(student.parameters()), teacher=teacher,
                                 **fit_kwargs(alphas_cumprod, t_range=(300, 310), steps=5, generator=gen(42)))
        runs.append((losses, torch.cat(seen)))
    assert runs[0][0] == runs[1][0]
    t = runs[0][1]
    assert t.min() >= 300 and t.max() < 310 and len(t.unique()) > 1


def test_an_image_pool_trains_exactly_like_the_pool_loaded_whole(make_guide, alphas_cumprod, tmp_path):
    from ppap.data import ImagePool, load_samples, open_samples, save_samples, to_float, to_uint8
    from ppap.experts.distill import precompute_teacher_logits

    save_samples(tmp_path / "shard0.npz", to_uint8(blobs(20)))       # a synthetic pool in two shards
    save_samples(tmp_path / "shard1.npz", to_uint8(blobs(28, seed=1)))
    whole = to_float(np.concatenate([load_samples(tmp_path / f"shard{k}.npz")[0] for k in (0, 1)]))
    pool = ImagePool([open_samples(tmp_path / f"shard{k}.npz") for k in (0, 1)])  # memory-mapped
    teacher = module_teacher(make_guide(0, scale=1.0))
    runs = []
    for images in (whole, pool):
        student = make_guide(1)
        targets = precompute_teacher_logits(teacher, images, batch_size=16)
        losses = fit_noise_aware(student, list(student.parameters()), teacher_logits=targets,
                                 **fit_kwargs(alphas_cumprod, clean_images=images, steps=6, generator=gen(3)))
        runs.append((targets, losses, [p.detach().clone() for p in student.parameters()]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][2], runs[1][2]))


def test_fit_noise_aware_needs_exactly_one_target(make_guide, alphas_cumprod):
    student = make_guide(1)
    kwargs = fit_kwargs(alphas_cumprod, steps=1)
    with pytest.raises(ValueError, match="exactly one"):
        fit_noise_aware(student, list(student.parameters()), **kwargs)
    with pytest.raises(ValueError, match="exactly one"):
        fit_noise_aware(student, list(student.parameters()), labels=torch.zeros(64, dtype=torch.long),
                        teacher=module_teacher(make_guide(0)), **kwargs)


def test_fit_noise_aware_stops_on_a_nan_teacher(make_guide, alphas_cumprod):
    student = make_guide(1)
    before = copy.deepcopy(student.state_dict())

    def nan_teacher(x0):
        return torch.full((x0.shape[0], 10), float("nan"))

    with pytest.raises(NonFiniteError, match="step 0"):
        fit_noise_aware(student, list(student.parameters()), teacher=nan_teacher, **fit_kwargs(alphas_cumprod))
    # Stopped before the optimiser step: no NaN leaked into the weights.
    for key, value in student.state_dict().items():
        assert torch.equal(value, before[key]), key
