"""Bring-your-own guide: a timm classifier with weights from a local file becomes a ppap guide."""

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
        main(["--arch", "resnet10t", "--weights", str(tmp_path / "nope.pth"), "--num-classes", "10",
              "--mean", "0.5", "--std", "0.5", "--out", str(tmp_path / "g.pt")])
