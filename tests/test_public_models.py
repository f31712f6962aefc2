"""Shipped public models: safetensors checkpoints, model records checked at load, and the study's
choice of shipped or trained model per role (ppap.study.public_models)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO, merged_config, run_models
from ppap.models import classifiers
from ppap.models.checkpoints import ModelRecordMismatch, load_checkpoint
from ppap.models.records import read_record, record_path, verify_record, write_record
from ppap.public import PUBLIC_DIR, shipped_model, shipped_sets
from ppap.study import public_models


def tiny_guide(path, seed=0):
    spec = classifiers.guide_spec("resnet10t", 10, 1, 16, [0.5], [0.5], {"channels": [4, 8, 8, 8], "stem_width": 4})
    guide = classifiers.build_timm_guide(**spec, seed=seed)
    classifiers.save_guide(path, guide, spec, clean_test_accuracy=0.5)
    return guide


def test_a_safetensors_checkpoint_holds_what_a_torch_one_holds(tmp_path):
    tiny_guide(tmp_path / "g.pt")
    tiny_guide(tmp_path / "g.safetensors")
    old, new = load_checkpoint(tmp_path / "g.pt"), load_checkpoint(tmp_path / "g.safetensors")
    assert old.keys() == new.keys() and old["spec"] == new["spec"] and old["kind"] == new["kind"]
    assert all(torch.equal(old["state_dict"][k], new["state_dict"][k]) for k in old["state_dict"])
    tiny_guide(tmp_path / "again.safetensors")  # the same weights and metadata: the same bytes
    assert (tmp_path / "g.safetensors").read_bytes() == (tmp_path / "again.safetensors").read_bytes()


def test_a_file_that_differs_from_its_record_fails_to_load_in_one_line_naming_it(tmp_path):
    path = tmp_path / "guide.safetensors"
    tiny_guide(path)
    record = write_record(path, {"guide": "tiny"})
    assert record == tmp_path / "guide.record.json" == record_path(path)
    assert load_checkpoint(path)["kind"] == classifiers.GUIDE_KIND
    tiny_guide(path, seed=1)  # retrained in place: other bytes
    with pytest.raises(ModelRecordMismatch) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: sha256 ") and "guide.record.json" in message


def test_a_folder_record_names_a_changed_a_missing_and_an_added_file(tmp_path):
    model = tmp_path / "diffusion"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "config.json").write_text("{}")
    (model / "weights.bin").write_bytes(b"abc")
    write_record(model, {})
    assert read_record(model)["sha256"].keys() == {"unet/config.json", "weights.bin"}
    assert verify_record(model, required=True)["model"] == "diffusion"
    (model / "extra.txt").write_text("x")
    with pytest.raises(ValueError, match=r"extra.txt: not in the model record"):
        verify_record(model)
    (model / "extra.txt").unlink()
    (model / "weights.bin").unlink()
    with pytest.raises(ValueError, match=r"weights.bin: missing, but listed"):
        verify_record(model)
    with pytest.raises(ValueError, match="no model record"):
        verify_record(tmp_path / "other.safetensors", required=True)


def test_a_users_own_model_gets_a_record_from_the_command_line(tmp_path):
    path = tmp_path / "mine.safetensors"
    tiny_guide(path)
    command = [sys.executable, "-m", "ppap.models.records"]
    done = subprocess.run([*command, "write", str(path), "--made-with", '{"source": "my lab"}'],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert read_record(path)["made_with"] == {"source": "my lab"}
    done = subprocess.run([*command, "verify", str(path)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and "1 file(s) match" in done.stdout


def test_every_shipped_model_is_its_recorded_bytes():
    models = [p for p in PUBLIC_DIR.rglob("*.record.json")]
    assert {"default", "smoke", "tiny_guided", "vit", "mnist", "mnist_vit"} <= set(shipped_sets())
    for record_file in models:
        record = json.loads(record_file.read_text())
        model = record_file.with_name(record["model"])
        verify_record(model, required=True)
        # what a record must say: the sections that made it, seeds and steps, versions, machine
        assert record["made_with"]["data"] and {"seed", "steps"} <= record["training"].keys()
        assert record["versions"]["torch"] and record["machine"]["system"]


@pytest.mark.parametrize("preset", ["default", "smoke", "tiny_guided"])
def test_each_embedded_preset_starts_from_its_shipped_models(preset):
    files = [] if preset == "default" else [REPO / "config" / f"{preset}.yaml"]
    models = run_models(*files)
    assert set(models.sources.values()) == {"shipped"}, models.sources
    assert models.diffusion == str(shipped_model(preset, "diffusion"))
    assert models.scheduler == str(shipped_model(preset, "diffusion") / "scheduler")
    assert models.evaluator == str(shipped_model(preset, "evaluator.safetensors"))
    assert models.guide_stats == str(shipped_model(preset, "guide.json"))


def test_the_mnist_and_vit_presets_start_table1_from_their_shipped_models():
    """MNIST's base model, ResNet guide and evaluator are shipped (set mnist), and the ViT guides of the
    MNIST-ViT pair (set mnist_vit) and of the digits (set vit): their Table 1 trains nothing."""
    pair = run_models(*(REPO / "config" / f"{name}.yaml" for name in ("mnist", "vit", "mnist_vit")))
    assert {role: pair.sources[role] for role in ("diffusion", "guide", "evaluator")} == dict.fromkeys(
        ("diffusion", "guide", "evaluator"), "shipped")
    assert pair.diffusion == str(shipped_model("mnist", "diffusion"))
    assert pair.evaluator == str(shipped_model("mnist", "evaluator.safetensors"))
    assert pair.guide_stats == str(shipped_model("mnist_vit", "guide.json"))
    resnet = run_models(REPO / "config" / "mnist.yaml")
    assert {role: resnet.sources[role] for role in ("diffusion", "guide", "evaluator")} == dict.fromkeys(
        ("diffusion", "guide", "evaluator"), "shipped")
    assert resnet.diffusion == pair.diffusion and resnet.guide == str(shipped_model("mnist", "guide.safetensors"))
    digits_vit = run_models(REPO / "config" / "vit.yaml")  # the digits' ViT guide (set vit), the rest default's
    assert set(digits_vit.sources.values()) == {"shipped"}
    assert digits_vit.guide == str(shipped_model("vit", "guide.safetensors"))
    assert digits_vit.diffusion == str(shipped_model("default", "diffusion"))


def test_a_changed_section_trains_that_role_and_public_models_train_trains_all(tmp_path):
    smoke = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    other_guide = dict(smoke, guide={**smoke["guide"], "train": {**smoke["guide"]["train"], "steps": 31}})
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(other_guide))
    models = run_models(overlay)
    assert models.sources["guide"] == "trained" and models.guide == "results/models/guide.safetensors"
    assert models.sources["evaluator"] == models.sources["diffusion"] == "shipped"
    overlay.write_text(yaml.safe_dump({**smoke, "public_models": "train"}))
    assert set(run_models(overlay).sources.values()) == {"trained"}
    overlay.write_text(yaml.safe_dump({**smoke, "public_models": {"evaluator": "train"}}))
    sources = run_models(overlay).sources
    assert sources["evaluator"] == "trained" and sources["guide"] == "shipped"


def test_a_tables_record_lists_its_models_portably_with_the_shipped_hashes(tmp_path):
    """models_used: a shipped model by its place in the package (the same on every machine) and its
    recorded sha256; a trained one by its path in the run; locate finds both again."""
    smoke = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({**smoke, "public_models": {"evaluator": "train"}}))
    used = public_models.models_used(run_models(overlay))
    assert used["guide"] == {"source": "shipped", "path": "ppap/public/smoke/guide.safetensors",
                             "sha256": read_record(shipped_model("smoke", "guide.safetensors"))["sha256"]}
    assert used["scheduler"]["path"] == "ppap/public/smoke/diffusion/scheduler" and "sha256" not in used["scheduler"]
    assert used["evaluator"] == {"source": "trained", "path": "results/models/evaluator.safetensors"}
    assert used["dense_guide_stats.segmentation"]["path"] == "ppap/public/smoke/dense/segmentation/guide.json"
    assert public_models.locate(used["guide"]["path"], tmp_path) == shipped_model("smoke", "guide.safetensors")
    assert public_models.locate(used["evaluator"]["path"], tmp_path) == tmp_path / "results/models/evaluator.safetensors"


def test_made_with_is_what_the_rules_read():
    config = merged_config()
    assert public_models.made_with("guide", config)["guide"] == {k: v for k, v in config["guide"].items()
                                                                  if k != "pretrained"}
    changed = merged_config({"sampling": {"steps": 10}, "experts": {"train": {"lr": 1.0}}})
    for role in ("diffusion", "guide", "evaluator", "conditional_diffusion"):  # sampling and experts make none
        assert public_models.made_with(role, changed) == public_models.made_with(role, config)


def test_a_damaged_shipped_model_stops_the_run_before_any_job(tmp_path):
    copy = tmp_path / "public" / "smoke"
    shutil.copytree(PUBLIC_DIR / "smoke", copy)
    guide = copy / "guide.safetensors"
    data = bytearray(guide.read_bytes())
    data[-1] ^= 0xFF
    guide.write_bytes(bytes(data))
    files = public_models.ModelFiles(**{**run_models(REPO / "config" / "smoke.yaml").__dict__, "guide": str(guide)})
    with pytest.raises(ModelRecordMismatch, match=f"^{guide}: sha256 "):
        load_checkpoint(guide)
    public_models.check_shipped(files)  # only files inside the package are shipped ones: a copy is not checked
    with pytest.raises(ValueError, match="differs from its model record"):
        verify_record(guide)


def test_the_default_table1_dag_trains_no_base_model_guide_or_evaluator(tmp_path):
    done = subprocess.run([sys.executable, "-m", "snakemake", "results/table1.csv", "-n", "--cores", "2", "-q", "rules",
                           "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "synthesize" in done.stdout and "distill_expert" in done.stdout
    for rule in ("train_diffusion", "train_guide", "train_evaluator", "noise_schedule"):
        assert rule not in done.stdout, done.stdout
