"""Bring-your-own guide: a timm classifier with weights from a local file becomes a ppap guide."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from ppap.models.checkpoints import CheckpointError
from ppap.models.classifiers import load_guide, read_guide_spec
from ppap.models.import_guide import import_timm_guide, main

SLIM = dict(channels=[8, 16, 32, 64], stem_width=8)


def _timm_weights(tmp_path, nested: bool):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = timm.create_model("resnet10t", num_classes=10, in_chans=1, channels=(8, 16, 32, 64), stem_width=8)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": model.state_dict()} if nested else model.state_dict(), path)
    return model.eval(), path


@pytest.mark.parametrize("nested", [False, True])
def test_imported_guide_matches_the_timm_model(tmp_path, nested):
    model, weights = _timm_weights(tmp_path, nested)
    out = tmp_path / "guide.pt"
    import_timm_guide("resnet10t", weights, 10, 1, 16, [0.5], [0.5], out, SLIM)
    guide = load_guide(out)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    # The guide resizes and normalises [-1, 1] inputs itself, then runs the classifier unchanged.
    expected = model(torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False))
    torch.testing.assert_close(guide(x), expected)
    assert read_guide_spec(out)["input_size"] == 16


def test_weights_for_another_architecture_fail_naming_the_file(tmp_path):
    _, weights = _timm_weights(tmp_path, nested=False)
    with pytest.raises(CheckpointError, match="weights.pth"):
        import_timm_guide("resnet10t", weights, 10, 1, 16, [0.5], [0.5], tmp_path / "g.pt")  # full width


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        import_timm_guide("resnet10t", tmp_path / "nope.pth", 10, 1, 16, [0.5], [0.5], tmp_path / "g.pt", SLIM)


def test_mean_and_std_need_one_value_per_input_channel(tmp_path):
    _, weights = _timm_weights(tmp_path, nested=False)
    for mean, std in (([0.5, 0.5, 0.5], [0.5]), ([0.5], [0.5, 0.5, 0.5])):
        with pytest.raises(ValueError, match="one of each per input channel"):
            import_timm_guide("resnet10t", weights, 10, 1, 16, mean, std, tmp_path / "g.pt", SLIM)
    with pytest.raises(ValueError, match="--std must be positive"):
        import_timm_guide("resnet10t", weights, 10, 1, 16, [0.5], [0.0], tmp_path / "g.pt", SLIM)
    assert not (tmp_path / "g.pt").exists()


@pytest.fixture(scope="module")
def grey_weights(tmp_path_factory):
    """A full-width 1-channel, 10-class resnet10t: what the CLI builds when given the right flags."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = timm.create_model("resnet10t", num_classes=10, in_chans=1)
    path = tmp_path_factory.mktemp("weights") / "grey.pth"
    torch.save(model.state_dict(), path)
    return path


def _cli(tmp_path, weights, *flags, arch="resnet10t"):
    return ["--arch", arch, "--weights", str(weights), "--out", str(tmp_path / "g.pt"), *flags]


USER_ERRORS = {
    "missing file": (("--num-classes", "10", "--in-chans", "1", "--mean", "0.5", "--std", "0.5"),
                     dict(weights="nope.pth"), "guide weights not found: .*nope.pth"),
    "unknown architecture": (("--num-classes", "10", "--in-chans", "1", "--mean", "0.5", "--std", "0.5"),
                             dict(arch="resnet5"), "unknown timm architecture 'resnet5' .*resnet50"),
    # the README's old example on a grey-scale guide: --in-chans defaulted to 3
    "stem shape": (("--num-classes", "10", "--mean", ".5", ".5", ".5", "--std", ".5", ".5", ".5"), {},
                   r"conv1.0.weight: file \(24, 1, 3, 3\), model \(24, 3, 3, 3\).*pass --in-chans 1"),
    "head shape": (("--num-classes", "1000", "--in-chans", "1", "--mean", "0.5", "--std", "0.5"), {},
                   r"fc.weight: file \(10, 512\), model \(1000, 512\).*pass --num-classes 10"),
    "mean length": (("--num-classes", "10", "--in-chans", "1", "--mean", ".5", ".5", ".5", "--std", ".5"), {},
                    "--mean has 3 values and --std 1 for --in-chans 1"),
    "bad number": (("--num-classes", "0", "--in-chans", "1", "--mean", "0.5", "--std", "0.5"), {},
                   "argument --num-classes: expected a positive integer, got '0'"),
    "missing flag": (("--in-chans", "1", "--mean", "0.5", "--std", "0.5"), {},
                     "the following arguments are required: --num-classes"),
}


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, grey_weights, case):
    flags, where, message = USER_ERRORS[case]
    weights = tmp_path / where["weights"] if "weights" in where else grey_weights
    with pytest.raises(SystemExit) as exit_info:
        main(_cli(tmp_path, weights, *flags, arch=where.get("arch", "resnet10t")))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(f"^python -m ppap.models.import_guide: error: .*{message}", err), err
    assert not (tmp_path / "g.pt").exists()


def test_cli_imports_a_grey_scale_guide_with_in_chans_1(tmp_path, grey_weights):
    main(_cli(tmp_path, grey_weights, "--num-classes", "10", "--in-chans", "1", "--mean", "0.5", "--std", "0.5"))
    spec = read_guide_spec(tmp_path / "g.pt")
    assert spec["in_chans"] == 1 and spec["mean"] == [0.5]
    guide = load_guide(tmp_path / "g.pt")
    assert guide(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_module_entry_point_exits_2_without_a_traceback(tmp_path):
    """``python -m`` itself, as the README runs it."""
    run = subprocess.run([sys.executable, "-m", "ppap.models.import_guide", *_cli(
        tmp_path, tmp_path / "nope.pth", "--num-classes", "10", "--in-chans", "1", "--mean", "0.5", "--std", "0.5")],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"python -m ppap.models.import_guide: error: guide weights not found: {tmp_path / 'nope.pth'}"]
