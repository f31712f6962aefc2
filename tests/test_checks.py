"""Checks before any job (ppap.study.checks): overlay traps, the study selection, every named file opened
and compared with the data; stale locks of a killed Snakemake (locks); the console of a failed
or interrupted job (harness.rule_session)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pretrained_files import (
    write_class_folders,
    write_diffusion_dir,
    write_guide,
    write_inception_weights,
    write_reference_npz,
)

import locks
from conftest import merged_config
from ppap.study import checks
from ppap.study.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def merged(*overlays: dict) -> dict:
    """default.yaml with overlays merged key by key, as Snakemake merges config files."""
    return merged_config(*overlays)


# ------------------------------------------------------------------------ overlays, selection ----

@pytest.mark.parametrize("overlay, key, advice", [
    ({"methods": {}}, "methods: ", "table1: [names]"),
    ({"ablations": {}}, "ablations: ", "study: {ablations: []}"),
    ({"guide": {"model_kwargs": {}}}, "guide.model_kwargs: ", "cannot remove keys"),
    ({"tuning": {"learning_rates": {}}}, "tuning.learning_rates: ", "cannot remove keys"),
])
def test_an_empty_mapping_the_merge_ignores_is_an_error_naming_the_key(overlay, key, advice):
    with pytest.raises(ConfigError) as err:
        checks.check_overlays([("overlay.yaml", overlay)], merged(overlay))
    message = str(err.value)
    assert message.startswith(key) and "overlay.yaml changes nothing" in message and advice in message
    assert "\n" not in message


def test_an_empty_mapping_that_stays_empty_is_fine():
    overlay = {"experts": {"custom_ranges": {}}, "resources": {}}
    checks.check_overlays([("overlay.yaml", overlay)], merged(overlay))


def test_study_selects_ablations_and_an_empty_list_selects_none():
    config = merged()
    every = list(config["ablations"])
    checks.select_study(config)  # no study key: every ablation
    assert list(config["ablations"]) == every and len(every) > 2
    config = merged({"study": {"ablations": ["sampler", "n_experts"]}})
    checks.select_study(config)
    assert list(config["ablations"]) == ["n_experts", "sampler"]  # the config's order
    config = merged({"study": {"ablations": []}})
    checks.select_study(config)
    assert config["ablations"] == {}
    config = merged({"study": {"ablations": ["sampler", "samplr"]}})
    with pytest.raises(ConfigError, match=r"study.ablations: \['samplr'\] are not keys of ablations"):
        checks.select_study(config)


def test_preset_name_comes_from_the_config_files():
    assert checks.preset_name([]) == "default"
    assert checks.preset_name([REPO / "config" / "smoke.yaml"]) == "smoke"
    assert checks.preset_name(["config/default.yaml", "config/smoke.yaml", "/tmp/x/toy.yaml", "config/smoke.yaml"]) \
        == "smoke+toy"


# ------------------------------------------------------------------------------ named files ----

def test_no_named_file_imports_no_torch():
    """The default preset names no file: the Snakefile's checks stay light."""
    code = ("import sys, yaml; from ppap.study.checks import check_files; "
            f"config = yaml.safe_load(open({str(REPO / 'config' / 'default.yaml')!r})); "
            "assert check_files(config) == {}; print(sorted(m for m in ('torch', 'timm', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    return dict(
        guide=write_guide(root / "guide.pt"),
        guide1000=write_guide(root / "guide1000.pt", num_classes=1000),
        guide_rgb=write_guide(root / "guide_rgb.pt", in_chans=3),
        guide_rgb1000=write_guide(root / "guide_rgb1000.pt", num_classes=1000, in_chans=3),
        model=write_diffusion_dir(root / "model"),
        reference=write_reference_npz(root / "reference.npz"),
        root=root,
    )


def expect(config: dict, key: str, *texts: str) -> str:
    with pytest.raises(ConfigError) as err:
        checks.check_files(config)
    message = str(err.value)
    assert message.startswith(f"{key}: ") and "\n" not in message, message
    for text in texts:
        assert text in message, message
    return message


def test_good_files_pass_and_say_what_they_hold(files):
    config = merged({"guide": {"pretrained": str(files["guide"])}, "diffusion": {"pretrained": str(files["model"])},
                     "evaluation": {"reference": str(files["reference"])}})
    found = checks.check_files(config)
    assert found["guide.pretrained"]["num_classes"] == 10 and found["guide.pretrained"]["in_chans"] == 1
    assert found["diffusion.pretrained"]["prediction_type"] == "epsilon"
    assert found["diffusion.pretrained"]["num_train_timesteps"] == 1000
    assert found["evaluation.reference"]["shape"] == [2, 8, 8, 1]


def test_a_guide_of_another_class_count_or_channel_count_is_named(files):
    expect(merged({"guide": {"pretrained": str(files["guide1000"])}}), "guide.pretrained",
           "guide1000.pt is a 1000-class resnet10t", "the data (digits) has 10 classes")
    expect(merged({"guide": {"pretrained": str(files["guide_rgb"])}}), "guide.pretrained",
           "takes 3 channels", "has 1 channel")


def test_folder_data_counts_its_class_folders(files, tmp_path):
    train = write_class_folders(tmp_path / "train", 3)
    folder = {"data": {"source": "folder", "train_dir": str(train), "image_size": 8}}
    expect(merged(folder, {"guide": {"pretrained": str(files["guide_rgb1000"])}}), "guide.pretrained",
           "1000-class", f"folder {train}) has 3 classes")
    write_class_folders(train, 1000)
    found = checks.check_files(merged(folder, {"guide": {"pretrained": str(files["guide_rgb1000"])}}))
    assert found["guide.pretrained"]["num_classes"] == 1000
    empty = tmp_path / "empty"
    empty.mkdir()
    expect(merged({"data": {"source": "folder", "train_dir": str(empty)}, "guide": {"pretrained": str(files["guide"])}}),
           "data.train_dir", "has no class folders")


@pytest.mark.parametrize("damage, text", [
    ("truncated", "cannot read checkpoint"),
    ("random-bytes", "cannot read checkpoint"),
    ("evaluator", "holds a 'ppap-evaluator' checkpoint, expected 'ppap-guide'"),
    ("other-weights", "keys do not match the model"),
    ("missing", "no such file"),
])
def test_a_damaged_guide_file_is_named(files, tmp_path, damage, text):
    from torch import nn

    from ppap.models import classifiers

    bad = tmp_path / "bad_guide.pt"
    if damage == "truncated":
        raw = files["guide"].read_bytes()
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "random-bytes":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "evaluator":
        classifiers.save_evaluator(bad, classifiers.build_evaluator(width=4, feature_dim=8))
    elif damage == "other-weights":  # the spec of one network, the tensors of another
        spec = classifiers.read_guide_spec(files["guide"])
        classifiers.save_guide(bad, classifiers.ClassifierGuide(nn.Sequential(nn.Conv2d(1, 2, 3)), 16, [0.5], [0.5]),
                               spec)
    for key, config in (("guide.pretrained", {"guide": {"pretrained": str(bad)}}),
                        ("evaluation.accuracy_classifier",
                         {"evaluation": {"feature_extractor": "inception", "accuracy_classifier": str(bad),
                                         "inception_weights": None}})):
        expect(merged(config), key, "bad_guide.pt", text)


def test_an_accuracy_classifier_must_count_the_datas_classes(files, tmp_path):
    train = write_class_folders(tmp_path / "train", 10)
    config = merged({"data": {"source": "folder", "train_dir": str(train), "image_size": 8},
                     "guide": {"pretrained": str(write_guide(tmp_path / "g.pt", 10, 3))},
                     "evaluation": {"feature_extractor": "inception",
                                    "inception_weights": str(write_inception_weights(tmp_path / "inc.pth")),
                                    "accuracy_classifier": str(files["guide_rgb1000"])}})
    expect(config, "evaluation.accuracy_classifier", "1000-class", "has 10 classes")


def damaged_model(source: Path, target: Path, damage: str) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = target / "unet" / "diffusion_pytorch_model.safetensors"
    if damage == "truncated":
        raw = weights.read_bytes()
        weights.write_bytes(raw[: len(raw) - 100])
    elif damage == "missing-tensor":
        state = load_file(weights)
        del state["conv_in.bias"]
        save_file(state, weights)
    elif damage == "no-scheduler":
        shutil.rmtree(target / "scheduler")
    elif damage == "bad-json":
        (target / "unet" / "config.json").write_text("{not json")
    elif damage == "bin-weights":  # the older format: still fine
        from torch import save

        save(load_file(weights), target / "unet" / "diffusion_pytorch_model.bin")
        weights.unlink()
    return target


@pytest.mark.parametrize("damage, text", [
    ("truncated", "truncated or damaged"),
    ("missing-tensor", "missing 1: ['conv_in.bias']"),
    ("no-scheduler", "has no scheduler/scheduler_config.json"),
    ("bad-json", "cannot read the JSON configs"),
])
def test_a_damaged_diffusion_directory_is_named(files, tmp_path, damage, text):
    model = damaged_model(files["model"], tmp_path / "model", damage)
    expect(merged({"diffusion": {"pretrained": str(model)}}), "diffusion.pretrained", str(model), text)


def test_a_diffusion_model_must_fit_the_data_and_the_schedule(files, tmp_path):
    model = damaged_model(files["model"], tmp_path / "model", "bin-weights")
    assert checks.check_files(merged({"diffusion": {"pretrained": str(model)}}))["diffusion.pretrained"]
    config = merged({"diffusion": {"pretrained": str(files["model"]), "num_train_timesteps": 500}})
    expect(config, "diffusion.pretrained", "1000 training timesteps", "diffusion.num_train_timesteps says 500")
    expect(merged({"diffusion": {"pretrained": str(files["model"])}, "data": {"image_size": 16}}),
           "diffusion.pretrained", "makes 8 px images, data.image_size is 16")
    rgb = write_diffusion_dir(tmp_path / "rgb", channels=3, out_channels=6)  # learned variance: 2C outputs
    expect(merged({"diffusion": {"pretrained": str(rgb)}}), "diffusion.pretrained", "maps 3 to 6 channels",
           "has 1 channel")


def test_a_sharded_unet_is_read_shard_by_shard(files, tmp_path):
    import shutil

    from diffusers import UNet2DModel

    model = tmp_path / "sharded"
    shutil.copytree(files["model"], model)
    unet = UNet2DModel.from_pretrained(model / "unet")
    shutil.rmtree(model / "unet")
    unet.save_pretrained(model / "unet", max_shard_size="20KB")
    assert (model / "unet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert checks.check_files(merged({"diffusion": {"pretrained": str(model)}}))["diffusion.pretrained"]
    shard = sorted((model / "unet").glob("*-of-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-8])
    expect(merged({"diffusion": {"pretrained": str(model)}}), "diffusion.pretrained", shard.name,
           "truncated or damaged")


def png_folder(folder: Path, count: int = 3, size: int = 8) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((size, size), 10 * i, np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.parametrize("damage, text", [
    ("npz-shape", "holds uint8 [2, 16, 16, 1], expected uint8 [N, 8, 8, 1]"),
    ("npz-truncated", "cannot read"),
    ("npz-no-arr0", "has no arr_0"),
    ("png-truncated", "001.png is truncated"),
    ("png-size", "001.png is 9x9 L, expected 8x8 L"),
    ("png-rgb", "001.png is 8x8 RGB, expected 8x8 L"),
    ("png-empty", "holds no .png files"),
])
def test_a_bad_reference_is_named(files, tmp_path, damage, text):
    if damage.startswith("npz"):
        target = tmp_path / "ref.npz"
        if damage == "npz-shape":
            write_reference_npz(target, size=16)
        elif damage == "npz-truncated":
            raw = files["reference"].read_bytes()
            target.write_bytes(raw[: len(raw) // 2])
        else:
            np.savez(target, images=np.zeros((2, 8, 8, 1), np.uint8))
    else:
        target = png_folder(tmp_path / "ref", count=0 if damage == "png-empty" else 3)
        bad = target / "001.png"
        if damage == "png-truncated":
            bad.write_bytes(bad.read_bytes()[:-20])
        elif damage == "png-size":
            Image.fromarray(np.zeros((9, 9), np.uint8)).save(bad)
        elif damage == "png-rgb":
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad)
    expect(merged({"evaluation": {"reference": str(target)}}), "evaluation.reference", text)


def test_good_png_reference_passes(tmp_path):
    folder = png_folder(tmp_path / "ref")
    assert checks.check_files(merged({"evaluation": {"reference": str(folder)}}))["evaluation.reference"]["images"] == 3


def test_bad_inception_weights_are_named(tmp_path):
    import torch

    bad = tmp_path / "inception.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, bad)
    config = merged({"evaluation": {"feature_extractor": "inception", "inception_weights": str(bad)}})
    expect(config, "evaluation.inception_weights", "inception.pth is not torch-fidelity's InceptionV3")
    write_inception_weights(bad)
    assert checks.check_files(config)["evaluation.inception_weights"]


# ------------------------------------------------------------------------------ stale locks ----

def fake_lock(snakemake_dir: Path, name: str) -> Path:
    (snakemake_dir / "locks").mkdir(parents=True, exist_ok=True)
    lock = snakemake_dir / "locks" / name
    lock.write_text("/some/output\n")
    return lock


def record_in_child(snakemake_dir: Path, lock: Path, wait: bool = False) -> subprocess.Popen:
    """A process that records itself as the owner of `lock`, then exits (or waits for stdin)."""
    code = (f"import sys; from locks import record_owner; record_owner({str(snakemake_dir)!r}, [{str(lock)!r}]); "
            "print('recorded', flush=True); " + ("sys.stdin.read()" if wait else ""))
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'workflow' / 'scripts'}"})
    assert child.stdout.readline().strip() == "recorded"
    return child


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_the_lock_of_a_dead_snakemake_is_removed_and_a_live_ones_kept(tmp_path):
    smk = tmp_path / ".snakemake"
    dead_lock, live_lock = fake_lock(smk, "0.output.lock"), fake_lock(smk, "1.output.lock")
    dead = record_in_child(smk, dead_lock)
    dead.wait()
    live = record_in_child(smk, live_lock, wait=True)
    try:
        lines = []
        assert locks.clear_stale_locks(smk, lines.append) == [str(dead_lock)]
        assert not dead_lock.exists() and live_lock.exists()
        assert len(lines) == 1 and f"pid {dead.pid}" in lines[0] and "0.output.lock" in lines[0]
        assert sorted(p.name for p in (smk / locks.OWNERS).iterdir()) == [f"{live.pid}.json"]
    finally:
        live.communicate("")
    # The live one has exited without forgetting itself, and a later run wrote a lock of the same name:
    # that lock is another file (inode, mtime) and stays.
    live_lock.unlink()
    time.sleep(0.01)
    newer = fake_lock(smk, "1.output.lock")
    assert locks.clear_stale_locks(smk, lambda line: None) == []
    assert newer.exists() and not list((smk / locks.OWNERS).glob("*.json"))


def test_an_owner_on_another_host_is_never_touched(tmp_path):
    smk = tmp_path / ".snakemake"
    lock = fake_lock(smk, "0.input.lock")
    (smk / locks.OWNERS).mkdir(parents=True)
    stat = lock.stat()
    (smk / locks.OWNERS / "1.json").write_text(json.dumps(dict(
        pid=1, host="another-host", started="1", locks=[dict(path=str(lock), inode=stat.st_ino,
                                                             mtime_ns=stat.st_mtime_ns)])))
    assert locks.clear_stale_locks(smk, lambda line: None) == [] and lock.exists()


# --------------------------------------------------------------- failed and interrupted jobs ----

TOY = """
rule fails:
    output: "fails.txt"
    log: "logs/fails.log"
    script: "fails.py"

rule waits:
    output: "waits.txt"
    log: "logs/waits.log"
    script: "waits.py"
"""

FAILS = """
import sys
from harness import rule_session
with rule_session(snakemake.log[0], 1, "fails") as log:
    for i in range(100):
        sys.stderr.write(f"\\rtraining {i + 1}/100")  # a progress bar, as tqdm draws it
    sys.stderr.write("\\n")
    log.info("loaded the guide")
    raise ValueError("the guide has 1000 classes, the data 10")
"""

WAITS = """
import time
from harness import rule_session
with rule_session(snakemake.log[0], 1, "waits") as log:
    log.info("working")
    time.sleep(60)
"""


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "Snakefile").write_text(TOY)
    (tmp_path / "fails.py").write_text(FAILS)
    (tmp_path / "waits.py").write_text(WAITS)
    return tmp_path


def toy_cmd(toy: Path, target: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", target, "--cores", "1", "-s", str(toy / "Snakefile"), "-d", str(toy)]


def toy_env() -> dict:
    # the toy's scripts use the rule harness, which lives with the workflow (workflow/scripts/)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "workflow" / "scripts"),
                                                         os.environ.get("PYTHONPATH", "")]),
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}


def test_a_failed_job_shows_its_cause_and_the_last_lines_of_its_log(toy):
    result = subprocess.run(toy_cmd(toy, "fails.txt"), capture_output=True, text=True, timeout=120, env=toy_env())
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "fails failed after" in out and "ValueError: the guide has 1000 classes, the data 10" in out, out
    tail = out.split("last lines of logs/fails.log:\n", 1)[1].splitlines()
    shown = [line[len("    | "):] for line in tail if line.startswith("    | ")]
    assert shown[-1].endswith("ERROR failed after 0.0 s") or "failed after" in shown[-1], out
    assert "training 100/100" in shown and not any("training 99/100" in line for line in shown)  # the bar, once
    assert any("INFO loaded the guide" in line for line in shown)
    # The traceback is in the log, not on the console (except inside the quoted tail).
    assert not [line for line in out.splitlines() if line.startswith("Traceback")], out
    assert "Traceback (most recent call last)" in (toy / "logs" / "fails.log").read_text()


def test_ctrl_c_is_one_line_per_job_and_no_traceback(toy):
    process = subprocess.Popen(toy_cmd(toy, "waits.txt"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=toy_env(), start_new_session=True)
    log = toy / "logs" / "waits.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and "working" in log.read_text()):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()[0]
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    interrupted = [line for line in out.splitlines() if "interrupted" in line]
    assert interrupted == [interrupted[0]] and interrupted[0].startswith("waits interrupted after"), out
    assert "logs/waits.log" in interrupted[0]
    assert "ERROR interrupted (SIGINT)" in log.read_text() and "Traceback" not in log.read_text()
    assert not (toy / "waits.txt").exists()


def test_log_tail_shows_a_progress_bar_once(tmp_path):
    from harness import log_tail

    log = tmp_path / "x.log"
    log.write_text("start\n" + "".join(f"\rstep {i}" for i in range(50)) + "\n" + "\n".join(f"l{i}" for i in range(20)))
    assert log_tail(log, 22) == ["start", "step 49", *[f"l{i}" for i in range(20)]]
    assert log_tail(log, 3) == ["l17", "l18", "l19"]
    assert log_tail(tmp_path / "missing.log") == []


def test_nested_command_line_config_values_get_yaml_types():
    """``--config 'sampling={guidance_scale: 2, seeds: [0, 1]}'`` reaches the Snakefile as strings
    (Snakemake's BaseLoader); they are typed as a YAML overlay would type them."""
    overrides = {"sampling": {"guidance_scale": "2", "seeds": ["0", "1"], "clip": "none", "eta": "1e-3"},
                 "experts": {"train": {"lr": "0.5", "seed": "7"}}, "device": "cpu", "threads": {"sample": "2"}}
    config = {"sampling": {"guidance_scale": "2", "seeds": ["0", "1"], "clip": "none", "eta": "1e-3", "steps": 25},
              "experts": {"train": {"lr": "0.5", "seed": "7", "total_steps": 100}}, "device": "cpu",
              "threads": {"sample": "2"}}
    checks.retype_command_line_config(config, overrides)
    assert config["sampling"] == {"guidance_scale": 2, "seeds": [0, 1], "clip": "none", "eta": 0.001, "steps": 25}
    assert config["experts"]["train"] == {"lr": 0.5, "seed": 7, "total_steps": 100}
    assert config["device"] == "cpu" and config["threads"] == {"sample": 2}


# --------------------------------------------------------------------------- damaged files ----

DAMAGED_TOY = """
rule make_samples:
    output: "results/samples/toy/seed0.npz"
    log: "logs/make_samples.log"
    script: "make_samples.py"

rule score:
    input: "results/samples/toy/seed0.npz"
    output: "score.txt"
    log: "logs/score.log"
    script: "score.py"
"""

MAKE_SAMPLES = """
import numpy as np
from harness import rule_session
from ppap import data
with rule_session(snakemake.log[0], 1, "make_samples"):
    data.save_samples(snakemake.output[0], np.zeros((4, 8, 8, 1), np.uint8), np.arange(4))
"""

SCORE = """
from harness import rule_session
from ppap import data
with rule_session(snakemake.log[0], 1, "score"):
    images, _ = data.load_samples(snakemake.input[0])
    open(snakemake.output[0], "w").write(str(len(images)))
"""


def test_a_damaged_input_names_the_file_the_rule_that_makes_it_and_the_remedy(tmp_path):
    (tmp_path / "Snakefile").write_text(DAMAGED_TOY)
    (tmp_path / "make_samples.py").write_text(MAKE_SAMPLES)
    (tmp_path / "score.py").write_text(SCORE)
    command = [sys.executable, "-m", "snakemake", "score.txt", "--cores", "1", "-s", str(tmp_path / "Snakefile"),
               "-d", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=toy_env())
    assert done.returncode == 0 and (tmp_path / "score.txt").read_text() == "4", done.stderr
    samples = tmp_path / "results" / "samples" / "toy" / "seed0.npz"
    samples.write_bytes(samples.read_bytes()[:100])  # truncated
    done = subprocess.run([*command, "--forcerun", "score"], capture_output=True, text=True, timeout=120,
                          env=toy_env())
    assert done.returncode != 0
    line = next(line for line in done.stderr.splitlines() if line.startswith("score failed after"))
    assert ("results/samples/toy/seed0.npz is damaged: it should be an ADM-style samples .npz" in line
            and "rule make_samples makes it" in line
            and "remake it with `snakemake --force results/samples/toy/seed0.npz`" in line), line
    assert "Traceback" not in done.stderr.split("score failed after")[1].split("\n")[0]


def test_a_text_file_in_place_of_a_checkpoint_is_named_without_torchs_unsafe_advice(tmp_path):
    from harness import damaged_file_remedy
    from ppap.io import DamagedFileError
    from ppap.models.checkpoints import CheckpointError, load_checkpoint

    bad = tmp_path / "guide.pt"
    bad.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(bad, "ppap-guide")
    err = caught.value
    assert isinstance(err, DamagedFileError) and err.path == str(bad) and err.expected == "a 'ppap-guide' checkpoint"
    assert "weights_only=False" not in str(err) and "Re-running" not in str(err)
    remedy = damaged_file_remedy(err)
    assert remedy.startswith(f"{bad} is damaged: it should be a 'ppap-guide' checkpoint, but ")
    assert "not an output of this workflow" in remedy  # no Snakemake record of it in this directory
