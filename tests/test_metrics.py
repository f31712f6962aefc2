"""Metrics through torch-fidelity with our own evaluator: tiny sets, a tiny random evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppap import metrics
from ppap.metrics import compute_metrics, frechet_distance, images_dataset, register_evaluator_extractor
from ppap.models.classifiers import build_evaluator, load_evaluator, save_evaluator

N = 200
SIDE = 8


def make_images(seed: int, n: int = N, shift: float = 0.0, noise: float = 0.0, spread: float = 1.0,
                channels: int = 1) -> np.ndarray:
    """Smooth random 8x8 images: a random low-frequency pattern per image, optionally distorted."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 1.0, size=(n, SIDE // 2, SIDE // 2, channels))
    x = coarse.repeat(2, axis=1).repeat(2, axis=2)             # 4x4 blocks -> 8x8
    x = 128 + 45 * spread * x + shift + noise * rng.normal(0.0, 1.0, size=x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def evaluator_path(tmp_path_factory):
    """A tiny random evaluator, made less degenerate than its raw initialisation.

    Freshly initialised, its features and logits are nearly constant (FID ~1e-8, IS ~1.000), which
    would make every comparison below vacuous: set the BatchNorm statistics from sample images and
    scale up the last two linear layers so that features and logits spread out.
    """
    evaluator = build_evaluator(seed=0, width=8, feature_dim=16)
    for module in evaluator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batch
    x = torch.from_numpy(make_images(99, n=400)).permute(0, 3, 1, 2).float() / 127.5 - 1
    evaluator.train()
    with torch.no_grad():
        evaluator(x)
        evaluator.embed[0].weight.mul_(10)
        evaluator.head.weight.mul_(10)
    evaluator.eval()
    path = tmp_path_factory.mktemp("evaluator") / "evaluator.pt"
    save_evaluator(path, evaluator)
    return path


def hand_outputs(path, images: np.ndarray):
    evaluator = load_evaluator(path)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        return evaluator.features(x).numpy(), evaluator(x).numpy()


@pytest.fixture(scope="module")
def labelled_run(evaluator_path):
    fake, real = make_images(1), make_images(2)
    _, logits = hand_outputs(evaluator_path, fake)
    labels = logits.argmax(1)
    labels[::2] = (labels[::2] + 1) % 10  # every other target is wrong: accuracy exactly 0.5
    return fake, real, labels, compute_metrics(fake, real, evaluator_path, target_labels=labels)


def test_images_dataset_items_are_uint8_chw():
    images = make_images(0, n=5)
    ds = images_dataset(images)
    assert len(ds) == 5
    item = ds[3]
    assert torch.is_tensor(item) and item.dtype == torch.uint8 and item.shape == (1, SIDE, SIDE)
    np.testing.assert_array_equal(item.numpy(), images[3].transpose(2, 0, 1))


def test_register_is_idempotent():
    register_evaluator_extractor()
    register_evaluator_extractor()
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    assert FEATURE_EXTRACTORS_REGISTRY["ppap-evaluator"] is metrics.EvaluatorFeatureExtractor


def test_extractor_matches_evaluator(evaluator_path):
    images = make_images(0, n=6)
    extractor = metrics.EvaluatorFeatureExtractor(
        "ppap-evaluator", ["logits", "features"], feature_extractor_weights_path=str(evaluator_path)).eval()
    with torch.no_grad():
        logits, feats = extractor(images_dataset(images).data)
    want_feats, want_logits = hand_outputs(evaluator_path, images)
    assert feats.shape == (6, 16) and logits.shape == (6, 10)
    np.testing.assert_allclose(feats.numpy(), want_feats, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits.numpy(), want_logits, rtol=1e-5, atol=1e-5)


def test_fid_of_a_set_against_itself_is_zero(evaluator_path):
    images = make_images(5)
    out = compute_metrics(images, images, evaluator_path)
    assert abs(out["fid"]) < 1e-3
    assert out["precision"] == 1.0 and out["recall"] == 1.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid calls scipy's sqrtm(disp=False)
def test_frechet_distance_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(7)
    a = rng.normal(0.0, 1.0, size=(300, 16))
    b = rng.normal(0.3, 1.2, size=(250, 16)) @ rng.normal(0.0, 0.4, size=(16, 16))
    want = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-5)
    assert frechet_distance(torch.from_numpy(a), b) == pytest.approx(want, rel=1e-5)
    assert abs(frechet_distance(a, a)) < 1e-8


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # dead ReLU units: singular covariances
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_frechet_distance_matches_pytorch_fid_on_evaluator_features(evaluator_path):
    from pytorch_fid.fid_score import calculate_frechet_distance

    fa, _ = hand_outputs(evaluator_path, make_images(1))
    fb, _ = hand_outputs(evaluator_path, make_images(2, shift=30.0))
    fa, fb = fa.astype(np.float64), fb.astype(np.float64)
    want = calculate_frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0), np.cov(fb, rowvar=False))
    assert frechet_distance(fa, fb) == pytest.approx(want, rel=1e-5)


def test_compute_metrics_keys_and_ranges(labelled_run):
    *_, out = labelled_run
    assert set(out) == {"fid", "is", "is_std", "precision", "recall", "f_score", "density", "coverage",
                        "accuracy", "num_fake", "num_real"}
    assert out["num_fake"] == N and out["num_real"] == N
    for key, value in out.items():
        assert type(value) in (float, int), key
        assert math.isfinite(value), key
    for key in ("precision", "recall", "f_score", "coverage", "accuracy"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["density"] >= 0.0
    assert 1.0 <= out["is"] <= 10.0
    assert out["is_std"] >= 0.0
    assert out["fid"] >= 0.0


def test_compute_metrics_agrees_with_features_computed_by_hand(evaluator_path, labelled_run):
    import prdc
    from torch_fidelity.metric_isc import isc_features_to_metric

    fake, real, labels, out = labelled_run
    ff, fake_logits = hand_outputs(evaluator_path, fake)
    rf, _ = hand_outputs(evaluator_path, real)
    assert out["accuracy"] == pytest.approx(float(np.mean(fake_logits.argmax(1) == labels)), abs=1e-12)
    assert out["accuracy"] == 0.5
    # IS from raw logits (torch-fidelity applies the softmax itself), 10 splits, its default shuffle
    want_is = isc_features_to_metric(torch.from_numpy(fake_logits), splits=10)
    assert out["is"] == pytest.approx(want_is["inception_score_mean"], rel=1e-5)
    assert out["is_std"] == pytest.approx(want_is["inception_score_std"], rel=1e-4, abs=1e-9)
    assert out["is"] > 1.1  # probabilities fed as logits would give ~1.00
    assert out["fid"] == pytest.approx(frechet_distance(ff, rf), rel=1e-3)
    want = prdc.compute_prdc(real_features=rf, fake_features=ff, nearest_k=3)
    assert out["density"] == pytest.approx(want["density"], abs=1e-9)
    assert out["coverage"] == pytest.approx(want["coverage"], abs=1e-9)


def test_precision_and_recall_are_not_swapped(evaluator_path):
    # A narrow fake set inside a broad real one: high precision, low recall.
    fake, real = make_images(11, spread=0.15), make_images(12)
    out = compute_metrics(fake, real, evaluator_path)
    assert out["precision"] > out["recall"] + 0.3


def test_accuracy_absent_without_labels_and_nothing_printed(evaluator_path, capfd):
    out = compute_metrics(make_images(1, n=40), make_images(2, n=40), evaluator_path, isc_splits=4)
    assert "accuracy" not in out
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_distorted_set_has_larger_fid_than_resampled_set(evaluator_path):
    real = make_images(20)
    resampled = make_images(21)
    distorted = make_images(22, shift=40.0, noise=25.0)
    fid_resampled = compute_metrics(resampled, real, evaluator_path)["fid"]
    fid_distorted = compute_metrics(distorted, real, evaluator_path)["fid"]
    assert fid_distorted > 2 * fid_resampled


def test_global_rng_and_threads_untouched(evaluator_path):
    torch.manual_seed(123)
    np.random.seed(123)
    threads = torch.get_num_threads()
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    compute_metrics(make_images(1, n=30), make_images(2, n=30), evaluator_path, isc_splits=3)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert torch.get_num_threads() == threads


def test_bad_inputs_raise(evaluator_path):
    good = make_images(1, n=20)
    cases = [
        (dict(fake=good.astype(np.float32)), "uint8"),
        (dict(fake=good.transpose(0, 3, 1, 2)), "NCHW"),
        (dict(fake=good[..., 0]), "4 dimensions"),
        (dict(fake=np.zeros((20, 8, 8, 5), np.uint8)), "NHWC"),
        (dict(fake=good[:1]), "at least 2"),
        (dict(real=np.repeat(good, 3, axis=3)), "channel counts differ"),
        (dict(fake=np.repeat(good, 3, axis=3), real=np.repeat(good, 3, axis=3)), "evaluator"),
        (dict(real=make_images(1, n=20)[:, :4, :4]), "image sizes differ"),
        (dict(fake=good[:3]), "nearest_k"),
        (dict(isc_splits=21), "isc_splits"),
        (dict(target_labels=np.zeros(19, np.int64)), "target_labels"),
        (dict(target_labels=np.full(20, 10)), "target_labels"),
        (dict(target_labels=np.zeros(20, np.float32)), "target_labels"),
        (dict(nearest_k=0), "nearest_k"),
    ]
    for override, match in cases:
        kwargs = dict(fake=good, real=good, evaluator_path=evaluator_path, isc_splits=2)
        kwargs.update(override)
        with pytest.raises(ValueError, match=match):
            compute_metrics(**kwargs)
    with pytest.raises(ValueError, match="uint8"):
        images_dataset(good.astype(np.int16))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros((5, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="2-d"):
        frechet_distance(np.zeros(5), np.zeros((5, 3)))


def test_both_scorers_satisfy_the_scorer_interface(evaluator_path):
    """One interface: score(fake, target_labels=..., nearest_k=..., isc_splits=...) on a held real set."""
    import inspect

    for cls in (metrics.EvaluatorScorer, metrics.InceptionScorer):
        assert issubclass(cls, metrics.Scorer), cls
        parameters = inspect.signature(cls.score).parameters
        assert list(parameters)[:2] == ["self", "fake"], cls
        for name in ("target_labels", "nearest_k", "isc_splits"):
            assert parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        assert parameters["target_labels"].default is None, cls
    fake, real = make_images(1, n=40), make_images(2, n=40)
    labels = np.arange(40) % 10
    for kind in (None, "evaluator"):
        scorer = metrics.make_scorer(kind, real, evaluator=evaluator_path)
        assert isinstance(scorer, metrics.EvaluatorScorer) and isinstance(scorer, metrics.Scorer)
        # the same numbers as compute_metrics, to the bit
        assert scorer.score(fake, target_labels=labels, nearest_k=3, isc_splits=4) == compute_metrics(
            fake, real, evaluator_path, nearest_k=3, target_labels=labels, isc_splits=4)
    with pytest.raises(ValueError, match="Inception weights"):
        metrics.make_scorer("inception", real, evaluator=evaluator_path)
    with pytest.raises(ValueError, match="evaluator checkpoint"):
        metrics.make_scorer("evaluator", real)
    with pytest.raises(ValueError, match="unknown feature_extractor"):
        metrics.make_scorer("clip", real, evaluator=evaluator_path)


def test_inception_scorer_holding_the_real_set_scores_as_with_its_pool(random_inception_weights, one_thread):
    """make_scorer("inception") computes the real set's features once; score() then equals the
    call with those features passed (the scripts' former form)."""
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    fake = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    scorer = metrics.make_scorer("inception", real, inception=random_inception_weights)
    assert isinstance(scorer, metrics.InceptionScorer) and isinstance(scorer, metrics.Scorer)
    pool, _ = scorer.features(real, "real")
    assert torch.equal(scorer.real_pool, pool)
    held = scorer.score(fake, target_labels=np.arange(6), nearest_k=2, isc_splits=2)
    assert held == scorer.score(fake, pool, nearest_k=2, isc_splits=2, target_labels=np.arange(6))
    assert "accuracy" not in held and (held["num_fake"], held["num_real"]) == (6, 8)
