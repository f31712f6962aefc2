"""The paper's GLIDE setting (config/glide64.yaml over config/imagenet256.yaml), planned on this machine
with placeholder files: a tiny GLIDE directory, tiny dense guides and evaluators of the right kinds."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_imagenet_preset import planned_jobs, snakemake

REPO = Path(__file__).resolve().parents[1]
PRESETS = [str(REPO / "config" / "imagenet256.yaml"), str(REPO / "config" / "glide64.yaml")]
DENSE_FILES = {"pretrained/deeplabv3_resnet50_seg.pt": ("segmentation", 21),
               "pretrained/fcn_resnet50_seg.pt": ("segmentation", 21),
               "pretrained/dpt_hybrid_midas_depth.pt": ("regression", 1),
               "pretrained/dpt_large_depth.pt": ("regression", 1)}


def placeholders(root: Path, dense_files: dict = DENSE_FILES) -> None:
    from pretrained_files import (
        write_class_folders,
        write_dense_guide,
        write_glide_dir,
        write_guide,
        write_inception_weights,
        write_reference_npz,
    )

    for d in ("data/imagenet/train", "data/imagenet/val"):
        write_class_folders(root / d, 1000)
    write_glide_dir(root / "pretrained/glide64")
    write_guide(root / "pretrained/resnet50_guide.pt", 1000, 3, 224)
    write_inception_weights(root / "pretrained/pt_inception-2015-12-05-6726825d.pth")
    write_reference_npz(root / "pretrained/VIRTUAL_imagenet64_labeled.npz", 1, 64, 3)
    for path, (kind, outputs) in dense_files.items():
        write_dense_guide(root / path, kind, outputs)


def test_glide_preset_plans_the_dense_table_from_public_models(tmp_path):
    placeholders(tmp_path)
    result = snakemake(tmp_path, "results/table_dense.csv", "-n", "--cores", "8", "--configfile", *PRESETS)
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = planned_jobs(result.stdout)
    # 2 tasks x (unguided, off the shelf, PPAP, FreeDoM); PPAP's 5 LoRA experts per task on the 100-shard pool
    assert jobs == {"prepare_data": 1, "synthesize": 100, "distill_dense_expert": 10, "dense_cell": 8,
                    "table_dense": 1}, jobs
    for absent in ("train_dense_guide", "train_dense_evaluator", "train_diffusion", "train_guide"):
        assert absent not in jobs  # every network comes from a file
    out = result.stdout
    assert "pretrained/deeplabv3_resnet50_seg.pt" in out and "pretrained/dpt_large_depth.pt" in out
    assert "results/models/dense/depth/datafree_lora16_n5/expert4.pt" in out
    assert "results/dense/segmentation/datafree_lora16_n5/ddim25_s1.json" in out
    assert "pretrained/pt_inception-2015-12-05-6726825d.pth" in out  # Inception features, as Table 1
    assert not (tmp_path / "results").exists()


def test_a_dense_file_of_the_wrong_kind_is_named(tmp_path):
    """What the pre-run checks say (ppap.study.checks.check_files) when a depth model is a segmenter."""
    from pretrained_files import write_dense_guide

    from ppap.study.checks import DataShape, check_dense_guide_file
    from ppap.study.config import ConfigError

    data = DataShape("folder", 1000, 3, 64)
    path = write_dense_guide(tmp_path / "depth.pt", "segmentation", 21)
    with pytest.raises(ConfigError, match="dense.pretrained.depth: .*depth.pt is a segmentation network; "
                                          "task depth needs regression"):
        check_dense_guide_file("dense.pretrained.depth", str(path), "depth", data)
    assert check_dense_guide_file("dense.pretrained.segmentation", str(path), "segmentation", data)["num_outputs"] == 21
    with pytest.raises(ConfigError, match="takes 3 channels"):
        check_dense_guide_file("dense.pretrained.segmentation", str(path), "segmentation", DataShape("digits", 10, 1, 8))
    with pytest.raises(ConfigError, match="no such file"):
        check_dense_guide_file("dense.pretrained.depth", str(tmp_path / "missing.pt"), "depth", data)
