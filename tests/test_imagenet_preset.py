"""The ImageNet-256 paper preset, planned on this machine with placeholder files; the profiles; the rules' resources."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import merged_config
from ppap.study.config import ConfigError, check_config

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "config" / "imagenet256.yaml"
PLACEHOLDER_DIRS = ["pretrained/adm256_uncond/unet", "pretrained/adm256_uncond/scheduler", "data/imagenet/train",
                    "data/imagenet/val"]
PLACEHOLDER_FILES = ["pretrained/resnet50_guide.pt", "pretrained/pt_inception-2015-12-05-6726825d.pth",
                     "pretrained/VIRTUAL_imagenet256_labeled.npz"]


def snakemake(workdir: Path, target: str, *options: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # The target first: --configfile and --config take several values and would swallow it.
    cmd = [sys.executable, "-m", "snakemake", target, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           *options]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def placeholders(root: Path, skip: str | None = None) -> None:
    """Tiny files of the kinds the preset names, valid enough for the checks before any job
    (ppap.study.checks opens every named file): a 256 px RGB UNet with a 6-channel output and a 1000-step
    schedule, a 1000-class RGB guide, 1000 class folders, a reference batch, Inception tensors."""
    from pretrained_files import (
        write_class_folders,
        write_diffusion_dir,
        write_guide,
        write_inception_weights,
        write_reference_npz,
    )

    for d in PLACEHOLDER_DIRS[2:]:
        write_class_folders(root / d, 1000)
    write_diffusion_dir(root / "pretrained/adm256_uncond", sample_size=256, channels=3, out_channels=6)
    writers = {"pretrained/resnet50_guide.pt": lambda p: write_guide(p, 1000, 3, 224),
               "pretrained/pt_inception-2015-12-05-6726825d.pth": write_inception_weights,
               "pretrained/VIRTUAL_imagenet256_labeled.npz": lambda p: write_reference_npz(p, 1, 256, 3)}
    for f in PLACEHOLDER_FILES:
        if f != skip:
            writers[f](root / f)


def planned_jobs(stdout: str) -> dict[str, int]:
    """The dry run's job-stats table: rule -> count."""
    table = stdout.split("Job stats:")[1].split("total")[0]
    return {parts[0]: int(parts[1]) for parts in (line.split() for line in table.splitlines())
            if len(parts) == 2 and parts[1].isdigit()}


def test_preset_plans_table1_from_pretrained_models(tmp_path):
    placeholders(tmp_path)
    result = snakemake(tmp_path, "results/table1.csv", "-n", "--cores", "8", "--configfile", str(PRESET))
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = planned_jobs(result.stdout)
    assert jobs == {"prepare_data": 1, "synthesize": 100, "distill_expert": 11, "expert_manifest": 3, "sample": 5,
                    "evaluate": 5, "table1": 1}, jobs
    # pretrained paths replace the trained networks; Inception replaces the evaluator
    for absent in ("train_diffusion", "train_guide", "train_evaluator", "noise_schedule"):
        assert absent not in jobs
    out = result.stdout
    assert "results/models/guides/datafree_lora16_n5/expert4.pt" in out
    assert "results/samples/datafree_lora16_n5/ddim25_s7.5/seed0.npz" in out
    assert "pretrained/pt_inception-2015-12-05-6726825d.pth" in out and "results/data/real.npz" in out
    # the 500k pool in 100 shards of 5,000, each its own job, all inputs of every data-free expert
    assert "results/data/synthetic/shard0.npz" in out and "results/data/synthetic/shard99.npz" in out
    # job sizes come from the preset's `resources:` section
    distill = re.search(r"rule distill_expert:(?:\n    .*)*?\n    resources: (.*)", out).group(1)
    assert "mem_mb=64000" in distill and "runtime=1440" in distill, distill
    assert "gpu=1" in out
    assert not (tmp_path / "results").exists()


def test_preset_paths_can_be_overridden_and_a_missing_one_is_named(tmp_path):
    placeholders(tmp_path, skip="pretrained/VIRTUAL_imagenet256_labeled.npz")
    result = snakemake(tmp_path, "results/table1.csv", "-n", "--cores", "1", "--configfile", str(PRESET))
    assert result.returncode != 0
    assert "evaluation.reference: no such file or directory: pretrained/VIRTUAL_imagenet256_labeled.npz" in (
        result.stderr + result.stdout)
    from pretrained_files import write_reference_npz

    elsewhere = write_reference_npz(tmp_path / "ref.npz", 1, 256, 3)
    result = snakemake(tmp_path, "results/table1.csv", "-n", "--cores", "1", "--configfile", str(PRESET),
                       "--config", f"evaluation={{reference: {elsewhere}}}")  # nested keys merge
    assert result.returncode == 0, result.stderr


def merged_preset(*extra: Path) -> dict:
    """default.yaml updated by the preset (Snakemake merges nested keys the same way)."""
    return merged_config(*(yaml.safe_load(path.read_text()) for path in (PRESET, *extra)))


@pytest.mark.parametrize("arch, overlay, expected", [
    # the stem conv and conv1/conv2 of each of the 16 bottlenecks
    ("resnet50", None, 1 + 16 * 2),
    # qkv and proj of each of the 12 blocks
    ("deit_small_patch16_224", REPO / "config" / "imagenet256_deit.yaml", 12 * 2),
])
def test_lora_targets_per_family_select_what_the_preset_says(arch, overlay, expected):
    import timm

    from ppap.experts.adapters import lora_target_modules
    from ppap.models.classifiers import ClassifierGuide

    lora = merged_preset(*([overlay] if overlay else []))["experts"]["lora"]
    guide = ClassifierGuide(timm.create_model(arch, pretrained=False, num_classes=1000), 224, [0.5] * 3, [0.5] * 3)
    targets = lora_target_modules(guide, lora["layer_types"], lora["include"], lora["exclude"])
    assert len(targets) == expected, targets
    if arch == "resnet50":
        assert "backbone.conv1" in targets and "backbone.layer4.2.conv2" in targets
        assert not any(t.endswith("conv3") or "downsample" in t for t in targets)
    else:
        assert all(re.search(r"blocks\.\d+\.attn\.(qkv|proj)$", t) for t in targets)


def test_preset_config_checks_name_the_key(tmp_path):
    config = merged_preset()
    for key in ("diffusion", "guide"):
        config[key]["pretrained"] = None
    config["evaluation"]["reference"] = None
    config["data"]["train_dir"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="data.train_dir: no such directory"):
        check_config(config)
    config["data"]["train_dir"] = config["data"]["test_dir"] = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="data.train_dir: .*empty has no class subfolders"):
        check_config(config)
    (tmp_path / "empty" / "n00000000").mkdir()
    with pytest.raises(ConfigError, match=r"data.train_dir: class folder\(s\) \['n00000000'\] .* hold no image"):
        check_config(config)
    (tmp_path / "empty" / "n00000000" / "0.JPEG").touch()
    config["evaluation"]["inception_weights"] = None
    with pytest.raises(ConfigError, match="evaluation.inception_weights: feature_extractor inception needs"):
        check_config(config)
    (tmp_path / "inception.pth").touch()
    config["evaluation"]["inception_weights"] = str(tmp_path / "inception.pth")
    check_config(config)
    config["data"]["source"] = "digits"
    with pytest.raises(ConfigError, match="data.image_size 256"):
        check_config(config)


GPU_RULES = {"train_diffusion", "train_conditional_diffusion", "train_guide", "synthesize", "distill_expert",
             "expert_manifest", "sample", "evaluate"}


def rule_blocks():
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        for match in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)+)", text, flags=re.M):
            yield match.group(1), match.group(2)


def test_every_rule_declares_memory_runtime_and_threads_and_gpu_rules_a_gpu():
    seen = set()
    for name, body in rule_blocks():
        seen.add(name)
        resources = body.split("resources:")[1] if "resources:" in body else ""
        assert "mem_mb=" in resources and "runtime=" in resources, f"rule {name} lacks mem_mb/runtime"
        assert "threads:" in body, f"rule {name} lacks threads"
        if name in GPU_RULES:
            assert "gpu=" in resources, f"rule {name} lacks a gpu resource"
    assert GPU_RULES <= seen


def test_resources_are_sized_by_rule_name_and_the_preset_names_only_real_rules():
    from ppap.study.config import RESOURCE_RULES

    names = set()
    for name, body in rule_blocks():
        if "resources:" in body:
            assert f'rule_resources(\n            "{name}",' in body or f'rule_resources("{name}",' in body, \
                f"rule {name} sizes its resources under another rule's name"
            names.add(name)
    assert names == set(RESOURCE_RULES)
    assert set(merged_preset()["resources"]) <= names
    config = merged_preset()
    config["resources"]["distil_expert"] = {"mem_mb": 1}
    with pytest.raises(ConfigError, match="resources.distil_expert: not a rule"):
        check_config(config)


def test_local_profile_plans_the_default(tmp_path):
    result = snakemake(tmp_path, "results/table1.csv", "-n", "--profile", str(REPO / "workflow/profiles/local"))
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result.stdout)["distill_expert"] == 11


def test_slurm_profile_plans_the_preset(tmp_path):
    plugin = pytest.importorskip("snakemake_executor_plugin_slurm",
                                 reason="snakemake-executor-plugin-slurm not installed")
    placeholders(tmp_path)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(plugin.__file__).parents[1]),
                                                          os.environ.get("PYTHONPATH")]))}
    result = snakemake(tmp_path, "results/table1.csv", "-n", "--profile", str(REPO / "workflow/profiles/slurm"),
                       "--configfile", str(PRESET), env=env)
    assert result.returncode == 0, result.stderr
    assert "slurm_partition=gpu" in result.stdout and "runtime=1440" in result.stdout
