"""Dense guides on tiny models: the digit maps, the energies, the dense transfer losses, dense experts
and dense-guided sampling.

The properties: the 11-class map and the distance map of a known image are right; each energy's
gradient matches finite differences; zero scale is the unguided sample (classifier guidance and
training-free); the dense KD losses vanish exactly when the student matches the teacher; dense
experts (LoRA data-free, full labeled) train through the classifier path's code and load back.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import seeded_
from ppap import dense, guidance
from ppap.experts import distill
from ppap.experts.sets import TrainingPool, load_expert_set, save_expert, train_expert
from ppap.generate import Guidance, generate_samples
from ppap.guidance.training_free import TrainingFreeGuidance, TrainingFreeSettings, smoothed_log_prob
from ppap.models import dense as dense_models
from ppap.sampling import Denoiser
from ppap.schedules import alphas_cumprod_from_scheduler, make_ddpm_scheduler
from ppap.specs import ExpertTraining, SamplingSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_dense_guide(task: str = "segmentation", seed: int = 0, family: str = "plain_unet") -> dense_models.DenseGuide:
    outputs = dense.NUM_SEGMENTATION_CLASSES if task == "segmentation" else 1
    kind = dense.TASK_KINDS[task]
    if family == "plain_unet":
        spec = dense_models.dense_spec("plain_unet", kind, outputs, 1, None, [0.5], [0.5], width=4)
    else:
        spec = dense_models.dense_spec("timm_unet", kind, outputs, 1, 16, [0.5], [0.5], arch="resnet10t",
                                       decoder_width=8, model_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8})
    return dense_models.build_dense_guide(spec, seed=seed), spec


def digit_with_stroke(label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x8x8 image in [-1, 1]: a vertical bar (column 3, rows 1..6) at intensity 0.9, a faint
    pixel (0.3, below the threshold) at (0, 0); everything else 0."""
    unit = torch.zeros(1, 1, 8, 8)
    unit[0, 0, 1:7, 3] = 0.9
    unit[0, 0, 0, 0] = 0.3
    return unit * 2 - 1, torch.tensor([label])


def test_segmentation_map_of_a_known_digit():
    image, label = digit_with_stroke(7)
    seg = dense.segmentation_map(image, label, threshold=0.5)
    expected = torch.zeros(1, 8, 8, dtype=torch.long)
    expected[0, 1:7, 3] = 8  # class 1 + 7 on the stroke; the faint pixel stays background
    assert torch.equal(seg, expected)
    assert dense.NUM_SEGMENTATION_CLASSES == 11
    assert torch.equal(dense.ground_truth_maps("segmentation", image, label, 0.5), expected)


def test_distance_map_of_a_known_digit():
    image, _ = digit_with_stroke(0)
    dist = dense.stroke_distance_map(image, threshold=0.5)[0, 0]
    assert dist.shape == (8, 8)
    assert torch.all(dist[1:7, 3] == 0)
    assert dist[3, 5].item() == pytest.approx(2 / 8)                  # two columns right of the bar
    assert dist[0, 0].item() == pytest.approx(math.hypot(1, 3) / 8)   # nearest stroke pixel (1, 3)
    empty = torch.full((1, 1, 8, 8), -1.0)
    assert torch.all(dense.stroke_distance_map(empty) == dense.EMPTY_DISTANCE)


def test_segmentation_scores_on_a_known_confusion():
    target = torch.tensor([[0, 0, 1, 1]])
    predicted = torch.tensor([[0, 1, 1, 1]])
    scores = dense.segmentation_scores(predicted, target, 11)
    # class 0: TP 1, union 2 -> 0.5; class 1: TP 2, union 3 -> 2/3; absent classes do not count
    assert scores["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(0.75)
    assert scores["classes_present"] == 2
    assert dense.regression_rmse(torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 3.0)) == pytest.approx(3.0)


def finite_difference(fn, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(x).view(-1)
    for i in range(x.numel()):
        step = torch.zeros_like(x).view(-1)
        step[i] = eps
        grad[i] = (fn(x + step.view_as(x)) - fn(x - step.view_as(x))) / (2 * eps)
    return grad.view_as(x)


ENERGIES = {
    "segmentation": ("segmentation", {}),
    "gaussian": ("regression", dict(regression="gaussian", sigma=0.5)),
    "invariant": ("regression", dict(regression="scale_shift_invariant", sigma=0.5)),
}


@pytest.mark.parametrize("name", ENERGIES)
def test_energy_gradient_matches_finite_differences(name):
    kind, options = ENERGIES[name]
    task = "segmentation" if kind == "segmentation" else "distance"
    guide, _ = tiny_dense_guide(task, seed=1)
    guide = seeded_(guide, 1, 0.4).double().eval()
    energy = guidance.energy_for(kind, **options)
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5
    if kind == "segmentation":
        target = torch.randint(0, 11, (2, 6, 6), generator=torch.Generator().manual_seed(3))
    else:
        target = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def total(inputs):
        return energy(guide(inputs, None), target).sum()

    with torch.enable_grad():
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(total(xr), xr)
    with torch.no_grad():
        numeric = finite_difference(total, x)
    assert grad.abs().max() > 1e-3
    assert torch.allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_energies_are_the_log_likelihoods_they_claim():
    logits = torch.randn(2, 11, 3, 3, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 11, (2, 3, 3), generator=torch.Generator().manual_seed(1))
    by_hand = torch.log_softmax(logits, 1).gather(1, target.unsqueeze(1)).sum((1, 2, 3))
    assert torch.allclose(guidance.segmentation_energy(logits, target), by_hand)
    prediction, depth = torch.rand(2, 1, 3, 3), torch.rand(2, 1, 3, 3)
    gaussian = guidance.energy_for("regression", sigma=2.0)(prediction, depth)
    assert torch.allclose(gaussian, -((prediction - depth) ** 2).sum((1, 2, 3)) / 8)
    # invariant: any positive or negative scale and any shift of the target is a perfect fit
    invariant = guidance.energy_for("regression", regression="scale_shift_invariant")
    assert torch.allclose(invariant(-3 * depth + 0.7, depth), torch.zeros(2), atol=1e-10)
    assert (invariant(prediction, depth) < 0).all()
    with pytest.raises(ValueError, match="regression energy"):
        guidance.energy_for("regression", regression="l1")


def test_smoothed_dense_log_prob_is_the_log_mean_probability():
    guide, _ = tiny_dense_guide("segmentation", seed=4)
    guide = seeded_(guide, 4, 0.4).eval()
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    target = torch.randint(0, 11, (2, 8, 8), generator=torch.Generator().manual_seed(6))
    noise = torch.randn(3, 2, 1, 8, 8, generator=torch.Generator().manual_seed(7)) * 0.1
    smoothed = smoothed_log_prob(guide, x0, target, noise, guidance.segmentation_energy)
    per_noise = torch.stack([guidance.segmentation_energy(guide(x0 + n, None), target) for n in noise])
    assert torch.allclose(smoothed, torch.logsumexp(per_noise, 0) - math.log(3), atol=1e-5)


def test_dense_kd_losses_vanish_exactly_when_the_student_matches():
    teacher = torch.randn(3, 11, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.allclose(distill.pixel_kd_loss(teacher, teacher, 1.0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(distill.pixel_kd_loss(teacher / 0.25, teacher, 0.25), torch.zeros(3), atol=1e-5)
    other = torch.randn(3, 11, 4, 4, generator=torch.Generator().manual_seed(1))
    assert (distill.pixel_kd_loss(other, teacher, 0.25) > 1e-3).all()
    assert (distill.pixel_kd_loss(teacher, teacher, 0.25) > 1e-3).all()  # the teacher is sharpened
    depth = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(distill.transfer_loss("regression", depth, depth), torch.zeros(3))
    assert (distill.transfer_loss("regression", depth + 0.1, depth) > 0).all()
    ssi = distill.transfer_loss("regression", 2 * depth - 1, depth, regression_loss="scale_shift_invariant")
    assert torch.allclose(ssi, torch.zeros(3), atol=1e-10)
    assert (distill.transfer_loss("regression", depth.flip(-1), depth, regression_loss="scale_shift_invariant") > 0).all()
    labels = torch.randint(0, 11, (3, 4, 4), generator=torch.Generator().manual_seed(3))
    assert distill.supervised_loss("segmentation", other, labels).shape == (3,)


def tiny_eps():
    from test_training_free import TinyDenoiser

    return TinyDenoiser(seed=3).requires_grad_(False).eval()


@pytest.fixture
def abar():
    return alphas_cumprod_from_scheduler(make_ddpm_scheduler(1000))


@pytest.mark.parametrize("task", ["segmentation", "distance"])
@pytest.mark.parametrize("training_free", [False, True])
def test_zero_scale_dense_guidance_is_the_unguided_sample(task, training_free, abar):
    guide, _ = tiny_dense_guide(task, seed=2)
    guide = seeded_(guide, 2, 0.4).eval().requires_grad_(False)
    kind = dense.TASK_KINDS[task]
    targets = (torch.randint(0, 11, (6, 8, 8), generator=torch.Generator().manual_seed(0)) if kind == "segmentation"
               else torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    spec = SamplingSpec(steps=4, clip="guided_diffusion", batch_size=3)
    denoiser = Denoiser(tiny_eps(), abar, (1, 8, 8))
    plain, _ = generate_samples(Guidance(denoiser), spec, 6, 5, show_progress=False)
    energy = guidance.energy_for(kind)
    method = (TrainingFreeGuidance(guide, TrainingFreeSettings(variance=1.0, mean=0.0, recurrence=2), energy)
              if training_free else guidance.ClassifierGuidance(guide, energy))
    zero, returned = generate_samples(Guidance(denoiser, method), spec, 6, 5, targets=targets, show_progress=False)
    assert np.array_equal(plain, zero)
    assert np.array_equal(returned, targets.numpy())
    guided, _ = generate_samples(Guidance(denoiser, method), replace(spec, scale=50.0), 6, 5, targets=targets,
                                 show_progress=False)
    assert not np.array_equal(plain, guided)


def expert_settings(guide_set: str, steps: int = 4) -> ExpertTraining:
    from conftest import merged_config
    from ppap.study.config import expert_training

    config = merged_config({"experts": {"train": {"total_steps": steps * 2, "batch_size": 8, "synthetic_size": 16},
                                        "warm_start": "weights"}})
    return expert_training(guide_set, config)


@pytest.mark.parametrize("guide_set", ["datafree_lora2_n2", "labeled_full_n2"])
@pytest.mark.parametrize("task", ["segmentation", "distance"])
def test_dense_experts_train_and_load_as_a_routed_guide(guide_set, task, abar, tmp_path):
    guide, spec = tiny_dense_guide(task, seed=5, family="timm_unet")
    base = tmp_path / "guide.pt"
    dense_models.save_dense_guide(base, guide, spec)
    settings = expert_settings(guide_set)
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    classes = torch.arange(16) % 10
    labels = dense.ground_truth_maps(task, images, classes, 0.5) if settings.supervision == "labeled" else None
    paths = []
    for index in range(2):
        model, stats, moments = train_expert(settings, index, base, abar, TrainingPool(images, labels),
                                             torch.Generator().manual_seed(index),
                                             previous_expert=paths[-1] if index else None, show_progress=False)
        assert np.isfinite(stats["final_loss"]) and stats["final_loss"] >= 0
        paths.append(tmp_path / f"expert{index}.pt")
        save_expert(paths[-1], model.cpu(), settings, index, stats, base, moments)
    routed = load_expert_set(guide_set, settings.rank, base, paths, 1000)
    t = torch.tensor([0, 999])
    out = routed(images[:2], t)
    assert out.shape == guide(images[:2], None).shape
    # each sample went to its own expert: the same as running that expert alone
    alone = routed.run_expert(1, images[1:2], t[1:])
    assert torch.allclose(out[1:], alone, atol=1e-5)


def test_target_maps_from_a_file_are_checked(tmp_path):
    from ppap.study import dense as dense_study

    settings = dense_study.DenseSettings("segmentation")
    maps = np.random.default_rng(0).integers(0, 11, (5, 8, 8))
    np.savez(tmp_path / "maps.npz", maps=maps)
    loaded = dense_study.load_target_maps(tmp_path / "maps.npz", settings, 8)
    assert loaded.dtype == torch.long and torch.equal(loaded, torch.from_numpy(maps))
    np.savez(tmp_path / "big.npz", maps=maps + 11)
    with pytest.raises(ValueError, match="integer classes"):
        dense_study.load_target_maps(tmp_path / "big.npz", settings, 8)
    with pytest.raises(ValueError, match="H = W = 16"):
        dense_study.load_target_maps(tmp_path / "maps.npz", settings, 16)
    distances = dense_study.load_target_maps(tmp_path / "maps.npz", dense_study.DenseSettings("distance"), 8)
    assert distances.shape == (5, 1, 8, 8) and distances.dtype == torch.float32
    index, targets = dense_study.targets_for_samples(loaded, 7)
    assert list(index) == [0, 1, 2, 3, 4, 0, 1] and torch.equal(targets[5], loaded[0])


def test_dense_config_checks_name_the_key():
    import copy

    import yaml

    from conftest import REPO, merged_config
    from ppap.study.config import ConfigError, _check_dense, dense_runs

    glide = merged_config(*(yaml.safe_load((REPO / "config" / name).read_text())
                            for name in ("imagenet256.yaml", "glide64.yaml")))
    _check_dense(glide)
    assert [(r.task, r.method) for r in dense_runs(glide)][:4] == [
        ("segmentation", "unguided"), ("segmentation", "off_the_shelf"), ("segmentation", "ppap"),
        ("segmentation", "freedom")]  # the null row is dropped
    labeled = copy.deepcopy(glide)
    labeled["dense"]["methods"]["labeled_experts"] = "labeled_full_n5"
    for task in ("segmentation", "depth"):
        labeled["dense"]["scales"][task]["labeled_experts"] = 1
    with pytest.raises(ConfigError, match="labeled experts need ground-truth"):
        _check_dense(labeled)
    embedded = copy.deepcopy(glide)
    del embedded["dense"]["evaluator"]["pretrained"]["segmentation"]
    with pytest.raises(ConfigError, match="dense.evaluator.pretrained.segmentation"):
        _check_dense(embedded)
    default = merged_config()
    del default["dense"]["scales"]["distance"]["ppap"]
    with pytest.raises(ConfigError, match="dense.scales.distance: no scale for ppap"):
        _check_dense(default)


def test_distance_scores_come_from_the_samples_own_strokes():
    from ppap.study import dense as dense_study

    images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    settings = dense_study.DenseSettings("distance")
    shown = dense_study.predicted_maps(settings, images)  # no evaluator network at all
    assert torch.equal(shown, dense.stroke_distance_map(torch.from_numpy(images).permute(0, 3, 1, 2) / 127.5 - 1))
    assert dense_study.dense_scores(settings, shown, shown) == {"rmse": 0.0}
    with pytest.raises(ValueError, match="needs an evaluator"):
        dense_study.predicted_maps(dense_study.DenseSettings("segmentation"), images)


def test_dense_targets_and_quality_reference_are_disjoint_and_class_balanced():
    """No leak: sample i aims at target digit i, and FID & co. are computed against other digits
    of the split, each class split alternately; `targets` keeps the old protocol (both the same)."""
    from ppap.study.dense import targets_and_reference

    labels = np.array([3, 1, 3, 3, 1, 0, 3, 1, 0])
    targets, reference = targets_and_reference(labels)
    assert not set(targets) & set(reference) and sorted([*targets, *reference]) == list(range(len(labels)))
    assert list(targets) == [0, 1, 3, 5, 7] and list(reference) == [2, 4, 6, 8]  # each class: 1st, 3rd ... to targets
    for label in np.unique(labels):
        assert abs((labels[targets] == label).sum() - (labels[reference] == label).sum()) <= 1
    same, also = targets_and_reference(labels, "targets")
    assert list(same) == list(also) == list(range(len(labels)))
    with pytest.raises(ValueError, match="cannot be split"):
        targets_and_reference(np.array([4]))
