"""Public dense models from local files become ppap dense guides: torchvision segmentation, transformers DPT."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import segmentation

from ppap.models.checkpoints import CheckpointError, load_checkpoint
from ppap.models.dense import load_dense_guide, read_dense_spec
from ppap.models.dense_builders import build_torchvision_segmentation
from ppap.models.import_dense import import_dense, main

IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
HALF = dict(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])


def _x(batch=2, size=32, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _normalised(x, size, mean, std):
    """What DenseGuide feeds its network: x resized to ``size``, mapped to [0, 1], normalised."""
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return ((x + 1) / 2 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def seg_weights(tmp_path_factory):
    """A randomly initialised DeepLabV3-MobileNetV3 with its aux head, saved as torchvision saves it
    (the published checkpoints carry ``aux_classifier.*`` too). BatchNorm statistics are perturbed so
    that eval mode would catch a guide left in train mode or stats that did not load."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5,
                                                          aux_loss=True)
        for name, buffer in model.state_dict().items():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("seg") / "deeplab.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def _seg_cli(weights, out, *flags):
    return ["--family", "torchvision_segmentation", "--arch", "deeplabv3_mobilenet_v3_large", "--weights",
            str(weights), "--mean", *map(str, IMAGENET["mean"]), "--std", *map(str, IMAGENET["std"]),
            "--out", str(out), *flags]


def test_cli_segmentation_guide_matches_torchvision_out(tmp_path, seg_weights):
    model, weights = seg_weights
    out = tmp_path / "seg.pt"
    main(_seg_cli(weights, out, "--num-outputs", "5", "--input-size", "64"))
    guide = load_dense_guide(out)   # rebuilt from the checkpoint alone
    x = _x()
    with torch.no_grad():
        expected = model(_normalised(x, 64, **IMAGENET))["out"]
        expected = F.interpolate(expected, size=x.shape[-2:], mode="bilinear", align_corners=False)
        torch.testing.assert_close(guide(x), expected)
    payload = load_checkpoint(out)
    assert payload["dropped_keys"] and all(k.startswith("aux_classifier.") for k in payload["dropped_keys"])
    assert not any("aux_classifier" in k for k in payload["state_dict"])
    spec = read_dense_spec(out)
    assert spec["family"] == "torchvision_segmentation" and spec["task"] == "segmentation"
    assert spec["aux_loss"] is False and spec["input_size"] == 64


def test_segmentation_guide_is_differentiable_at_x_resolution(tmp_path, seg_weights):
    _, weights = seg_weights
    import_dense("torchvision_segmentation", weights, tmp_path / "seg.pt", arch="deeplabv3_mobilenet_v3_large",
                 num_outputs=5, input_size=64, **IMAGENET)
    guide = load_dense_guide(tmp_path / "seg.pt")
    x = _x(batch=1, size=24).requires_grad_(True)
    out = guide(x, torch.tensor([10]))
    assert out.shape == (1, 5, 24, 24)
    (grad,) = torch.autograd.grad(out.log_softmax(1)[:, 1].sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_wrong_key_fails_naming_file_and_key(tmp_path, seg_weights):
    model, _ = seg_weights
    state = model.state_dict()
    state["classifier.9.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"extra\.pth.*unexpected 1: \['model\.classifier\.9\.weight'\]"):
        import_dense("torchvision_segmentation", path, tmp_path / "g.pt", arch="deeplabv3_mobilenet_v3_large",
                     num_outputs=5, **IMAGENET)
    del state["classifier.9.weight"], state["classifier.4.bias"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing 1: \['model\.classifier\.4\.bias'\]"):
        import_dense("torchvision_segmentation", path, tmp_path / "g.pt", arch="deeplabv3_mobilenet_v3_large",
                     num_outputs=5, **IMAGENET)
    assert not (tmp_path / "g.pt").exists()


def test_deeplabv3_resnet50_keys_are_torchvision_keys_without_the_aux_head():
    """What the COCO-VOC checkpoint (``deeplabv3_resnet50_coco-cd0a2569.pth``) holds, checked on the meta
    device (no 42M-parameter initialisation): torchvision's aux-loss model's keys, the aux head aside."""
    with torch.device("meta"):
        published = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
        ours = build_torchvision_segmentation(dict(arch="deeplabv3_resnet50", num_outputs=21, aux_loss=False))
    kept = {f"model.{k}" for k in published.state_dict() if not k.startswith("aux_classifier.")}
    assert set(ours.state_dict()) == kept
    assert any(k.startswith("aux_classifier.") for k in published.state_dict())


def _random_dpt(config, seed: int):
    """transformers' initialisation zeroes the position embeddings and cls token, and the head's final
    ReLU is then almost always off (a map of zeros compares nothing): every parameter is perturbed and
    the last convolution's bias set so that the ReLU passes most pixels."""
    from transformers import DPTForDepthEstimation

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DPTForDepthEstimation(config)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.1)
            model.head.head[-2].bias.fill_(1.0)
    return model.eval()


@pytest.fixture(scope="module")
def dpt_dir(tmp_path_factory):
    """A tiny DPT (4 ViT layers of width 32, patch 16 as the real ones) saved with ``save_pretrained``."""
    from transformers import DPTConfig

    config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16)
    model = _random_dpt(config, seed=2)
    directory = tmp_path_factory.mktemp("dpt") / "tiny-dpt"
    model.save_pretrained(directory)
    return model, directory


def test_cli_dpt_guide_matches_predicted_depth(tmp_path, dpt_dir):
    model, directory = dpt_dir
    out = tmp_path / "depth.pt"
    main(["--family", "dpt", "--weights", str(directory), "--input-size", "64", "--mean", ".5", ".5", ".5",
          "--std", ".5", ".5", ".5", "--out", str(out)])
    guide = load_dense_guide(out)
    x = _x(size=32)
    with torch.no_grad():
        expected = model(pixel_values=_normalised(x, 64, **HALF)).predicted_depth.unsqueeze(1)
        expected = F.interpolate(expected, size=x.shape[-2:], mode="bilinear", align_corners=False)
        torch.testing.assert_close(guide(x), expected)
    spec = read_dense_spec(out)
    assert spec["task"] == "regression" and spec["num_outputs"] == 1 and spec["config"]["hidden_size"] == 32


def test_dpt_guide_is_differentiable_at_x_resolution(tmp_path, dpt_dir):
    _, directory = dpt_dir
    import_dense("dpt", directory, tmp_path / "depth.pt", input_size=64, **HALF)
    guide = load_dense_guide(tmp_path / "depth.pt")
    x = _x(batch=1, size=40).requires_grad_(True)
    out = guide(x)
    assert out.shape == (1, 1, 40, 40)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_hybrid_dpt_runs_at_its_configured_size_only(tmp_path):
    """DPT-Hybrid MiDaS (a BiT stem before the ViT) checks the input size in its embedding: the importer
    names the one --input-size that works instead of leaving the error to the first guidance step."""
    from transformers import DPTConfig

    bit = dict(model_type="bit", global_padding="same", layer_type="bottleneck", depths=[1, 1, 1],
               hidden_sizes=[16, 32, 64], embedding_size=8, num_groups=4, embedding_dynamic_padding=True,
               out_features=["stage1", "stage2", "stage3"])
    config = DPTConfig(is_hybrid=True, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=64, image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[16, 32, 32, 32], fusion_hidden_size=16, backbone_featmap_shape=[1, 64, 4, 4],
                       backbone_config=bit)
    model = _random_dpt(config, seed=4)
    model.save_pretrained(tmp_path / "hybrid")
    with pytest.raises(ValueError, match="a hybrid DPT takes only its configured image size: pass --input-size 64"):
        import_dense("dpt", tmp_path / "hybrid", tmp_path / "g.pt", input_size=32, **HALF)
    import_dense("dpt", tmp_path / "hybrid", tmp_path / "g.pt", input_size=64, **HALF)
    x = _x(batch=1, size=48)
    with torch.no_grad():
        expected = model(pixel_values=_normalised(x, 64, **HALF)).predicted_depth.unsqueeze(1)
        expected = F.interpolate(expected, size=x.shape[-2:], mode="bilinear", align_corners=False)
        torch.testing.assert_close(load_dense_guide(tmp_path / "g.pt")(x), expected)


def test_sharded_dpt_directory_imports_the_same_guide(tmp_path, dpt_dir):
    """Large checkpoints come as shards and an index (``model.safetensors.index.json``)."""
    model, directory = dpt_dir
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    import_dense("dpt", sharded, tmp_path / "a.pt", input_size=64, **HALF)
    import_dense("dpt", directory, tmp_path / "b.pt", input_size=64, **HALF)
    a, b = load_checkpoint(tmp_path / "a.pt")["state_dict"], load_checkpoint(tmp_path / "b.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dpt_directory_with_a_wrong_key_fails_naming_it(tmp_path, dpt_dir):
    from safetensors.torch import save_file

    model, _ = dpt_dir
    directory = tmp_path / "renamed"
    directory.mkdir()
    model.config.to_json_file(directory / "config.json")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["head.extra.weight"] = state.pop("head.head.0.weight")
    save_file(state, directory / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*missing 1: \['model\.head\.head\.0\.weight'\]"
                                              r".*unexpected 1: \['model\.head\.extra\.weight'\]"):
        import_dense("dpt", directory, tmp_path / "g.pt", **HALF)


USER_ERRORS = {
    "missing file": (["--family", "torchvision_segmentation", "--arch", "deeplabv3_resnet50", "--weights",
                      "{tmp}/nope.pth", "--num-outputs", "21"], "guide weights not found: .*nope.pth"),
    "unknown arch": (["--family", "torchvision_segmentation", "--arch", "deeplabv3_resnet5", "--weights", "{seg}",
                      "--num-outputs", "21"], "unknown torchvision segmentation architecture 'deeplabv3_resnet5' "
                                              r"\(did you mean deeplabv3_resnet50"),
    "head shape": (["--family", "torchvision_segmentation", "--arch", "deeplabv3_mobilenet_v3_large", "--weights",
                    "{seg}", "--num-outputs", "21"], r"classifier.4.weight: file \(5, 256, 1, 1\), model "
                                                     r"\(21, 256, 1, 1\).*pass --num-outputs 5"),
    "no num outputs": (["--family", "torchvision_segmentation", "--arch", "deeplabv3_mobilenet_v3_large",
                        "--weights", "{seg}"], "--num-outputs is required"),
    "wrong task": (["--family", "dpt", "--weights", "{dpt}", "--task", "segmentation"],
                   "--family dpt imports a regression model, not --task segmentation"),
    "depth outputs": (["--family", "dpt", "--weights", "{dpt}", "--num-outputs", "3"],
                      "a regression guide has one output channel"),
    "no directory": (["--family", "dpt", "--weights", "{tmp}/nowhere"], "DPT model directory not found: .*nowhere"),
    "not a model dir": (["--family", "dpt", "--weights", "{tmp}"], "has no config.json"),
}


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, seg_weights, dpt_dir, case):
    flags, message = USER_ERRORS[case]
    places = dict(seg=str(seg_weights[1]), dpt=str(dpt_dir[1]), tmp=str(tmp_path))
    flags = [flag.format(**places) for flag in flags]
    with pytest.raises(SystemExit) as exit_info:
        main([*flags, "--mean", ".5", ".5", ".5", "--std", ".5", ".5", ".5", "--out", str(tmp_path / "g.pt")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(f"^python -m ppap.models.import_dense: error: .*{message}", err), err
    assert not (tmp_path / "g.pt").exists()


def test_module_entry_point_exits_2_without_a_traceback(tmp_path):
    """``python -m`` itself, as the README runs it."""
    run = subprocess.run([sys.executable, "-m", "ppap.models.import_dense", "--family", "dpt", "--weights",
                          str(tmp_path / "nowhere"), "--mean", ".5", ".5", ".5", "--std", ".5", ".5", ".5",
                          "--out", str(tmp_path / "g.pt")],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"python -m ppap.models.import_dense: error: DPT model directory not found: {tmp_path / 'nowhere'} "
        "(a folder with config.json and model.safetensors or pytorch_model.bin)"]
