"""Paper-scale inputs on CPU: ImageFolder trees of real labeled images, Inception metrics from a local file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ppap import data, metrics


def write_tree(root, classes, per_class, size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"img{i:02d}.png" if i % 2 else root / name / f"img{i:02d}.jpg")
    (root / "README.txt").write_text("not a class")  # files beside the class folders are ignored


def test_image_folder_labels_follow_sorted_class_folders(tmp_path):
    write_tree(tmp_path / "train", ["n02", "n01", "n03"], per_class=3)
    images, labels, classes = data.load_image_folder(tmp_path / "train", 16, per_class=2)
    assert classes == ["n01", "n02", "n03"]
    assert images.shape == (6, 16, 16, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_center_crop_keeps_the_middle_of_the_short_side():
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, 20:40] = 255                                   # the centre square is white
    crop = data.center_crop_arr(Image.fromarray(pixels), 10)
    assert crop.shape == (10, 10, 3) and crop.min() > 200


def test_folder_split_uses_the_train_classes_and_names_missing_ones(tmp_path):
    write_tree(tmp_path / "train", ["a", "b"], per_class=4)
    write_tree(tmp_path / "val", ["a", "b"], per_class=2, seed=1)
    split = data.load_folder_split(tmp_path / "train", 8, tmp_path / "val", train_per_class=3)
    assert split["train_images"].shape == (6, 8, 8, 3) and split["test_images"].shape == (4, 8, 8, 3)
    assert split["class_names"].tolist() == ["a", "b"]
    no_val = data.load_folder_split(tmp_path / "train", 8, None, test_fraction=0.5, seed=0)
    assert len(no_val["train_images"]) == 4 and sorted(no_val["test_labels"].tolist()) == [0, 0, 1, 1]
    write_tree(tmp_path / "val2", ["a"], per_class=1)
    with pytest.raises(ValueError, match=r"lacks class folders \['b'\]"):
        data.load_folder_split(tmp_path / "train", 8, tmp_path / "val2")
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no images"):
        data.load_image_folder(tmp_path / "train", 8)


def test_inception_scorer_runs_from_a_local_file(random_inception_weights, tmp_path, one_thread):
    """One score call (FID's 2048-d eigendecomposition takes seconds) of one random set against another."""
    from ppap.models import classifiers

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    fake = rng.integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)   # 1 channel: repeated to RGB
    scorer = metrics.InceptionScorer(random_inception_weights, batch_size=4)
    real_pool, logits = scorer.features(real)
    assert real_pool.shape == (8, 2048) and logits.shape == (8, 1008)
    assert real_pool.std(0).mean() > 1e-3  # the features tell the images apart
    spec = classifiers.guide_spec("resnet10t", 10, 1, None, [0.5], [0.5], {"channels": [8, 8, 8, 8], "stem_width": 8})
    classifier = tmp_path / "classifier.pt"
    classifiers.save_guide(classifier, classifiers.build_timm_guide(**spec), spec)
    out = scorer.score(fake, real_pool, nearest_k=2, isc_splits=2, target_labels=np.arange(6) % 10,
                       classifier_path=classifier)
    assert out["fid"] > 0 and out["is"] > 1 and 0 <= out["precision"] <= 1 and 0 <= out["accuracy"] <= 1
    assert set(out) >= {"recall", "density", "coverage"} and (out["num_fake"], out["num_real"]) == (6, 8)


def test_inception_weights_are_checked_before_unpickling(tmp_path):
    with pytest.raises(ValueError, match="not found: .*missing.pth"):
        metrics.check_inception_weights(tmp_path / "missing.pth")
    foreign = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(10, 4)}, foreign)
    with pytest.raises(ValueError, match="not torch-fidelity's InceptionV3"):
        metrics.check_inception_weights(foreign)
