"""LoRA experts through peft: fresh adapters change nothing, exact counts, strict save/load, routing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ppap.experts import AdapterExperts, adapters, expert_for_timestep, timestep_ranges
from ppap.experts.distill import adapter_teacher
from ppap.models.checkpoints import CheckpointError, load_checkpoint
from ppap.models.classifiers import ClassifierGuide, save_guide

pytestmark = pytest.mark.usefixtures("one_thread")

RANK, ALPHA = 2, 4.0
CONVS = ["backbone.0", "backbone.2"]  # the two Conv2d layers of the conftest guide


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def perturb_(model: nn.Module, adapter_name: str, seed: int, scale: float = 0.3) -> None:
    """Give an adapter non-zero A and B, so that it changes the output (a trained adapter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name and f".{adapter_name}." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)


@pytest.fixture
def lora_model(make_guide):
    """The tiny guide (seed 0) with two fresh adapters e0, e1 on both convs."""
    return adapters.attach_lora_experts(make_guide(0), ["e0", "e1"], RANK, ALPHA, CONVS).eval()


# ------------------------------------------------------------------------- attach and count ----

def test_lora_target_modules_selects_by_type_and_regex(make_guide):
    guide = make_guide(0)
    assert adapters.lora_target_modules(guide, ("conv",)) == CONVS
    assert adapters.lora_target_modules(guide, ("linear",)) == ["backbone.6"]
    assert adapters.lora_target_modules(guide) == CONVS + ["backbone.6"]
    assert adapters.lora_target_modules(guide, ("conv",), exclude=r"\.0$") == ["backbone.2"]
    assert adapters.lora_target_modules(guide, include=r"\.[26]$") == ["backbone.2", "backbone.6"]
    with pytest.raises(ValueError, match="unknown layer types"):
        adapters.lora_target_modules(guide, ("attention",))
    with pytest.raises(ValueError, match="no"):
        adapters.lora_target_modules(guide, ("conv",), include="nothing-matches")


def test_fresh_adapters_leave_the_guide_unchanged(make_guide):
    x = images()
    with torch.no_grad():
        base = make_guide(0)(x)
        model = adapters.attach_lora_experts(make_guide(0), ["e0", "e1"], RANK, ALPHA, CONVS + ["backbone.6"]).eval()
        for name in ("e0", "e1"):
            model.set_adapter(name)
            assert torch.equal(model(x, None), base), name


def test_parameter_counts_by_hand(make_guide):
    model = adapters.attach_lora_experts(make_guide(0), ["e0", "e1"], RANK, ALPHA, CONVS + ["backbone.6"])
    # LoRA on Conv2d(cin, cout, k): A is Conv2d(cin, r, k), B is Conv2d(r, cout, 1): r*cin*k*k + cout*r.
    conv0 = RANK * 1 * 3 * 3 + 4 * RANK
    conv2 = RANK * 4 * 3 * 3 + 6 * RANK
    linear = RANK * 6 + 10 * RANK  # Linear(6, 10): r*in + out*r
    assert adapters.adapter_parameter_count(model, "e0") == conv0 + conv2 + linear == 142
    assert adapters.adapter_parameter_count(model, "e1") == 142
    # The base: Conv(1,4,3)+bias, Conv(4,6,3)+bias, Linear(6,10)+bias; counted once whatever the adapters.
    assert adapters.base_parameter_count(model) == (36 + 4) + (216 + 6) + (60 + 10) == 332
    assert adapters.adapter_parameter_count(model, "nope") == 0


def test_train_only_adapter_freezes_everything_else(lora_model):
    params = adapters.train_only_adapter(lora_model, "e1")
    trainable = {n for n, p in lora_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ".e1." in n for n in trainable)
    assert sum(p.numel() for p in params) == adapters.adapter_parameter_count(lora_model, "e1")
    assert {id(p) for p in params} == {id(p) for p in lora_model.parameters() if p.requires_grad}
    assert lora_model.active_adapter == "e1"
    # And switching back gives e0 alone.
    adapters.train_only_adapter(lora_model, "e0")
    trainable = {n for n, p in lora_model.named_parameters() if p.requires_grad}
    assert trainable and all(".e0." in n for n in trainable)
    # A backward pass only reaches e0's parameters.
    lora_model(images(), None).sum().backward()
    assert all(p.grad is None for n, p in lora_model.named_parameters() if ".e0." not in n)


def test_train_only_adapter_unknown_name_raises(lora_model):
    with pytest.raises((ValueError, KeyError)):
        adapters.train_only_adapter(lora_model, "missing")


def test_lora_forward_uses_alpha_over_r_scaling():
    weight = torch.randn((3, 5), generator=torch.Generator().manual_seed(0))
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(5, 3, bias=False))
    with torch.no_grad():
        backbone[1].weight.copy_(weight)
    guide = ClassifierGuide(backbone, None, [0.5], [0.5])
    model = adapters.attach_lora_experts(guide, ["e0"], 2, 6.0, ["backbone.1"])
    perturb_(model, "e0", seed=1)
    layer = model.base_model.model.backbone[1]
    a, b = layer.lora_A["e0"].weight, layer.lora_B["e0"].weight
    x = torch.rand((4, 1, 1, 5), generator=torch.Generator().manual_seed(2)) * 2 - 1
    h = x.flatten(1)  # normalising [0, 1] with mean 0.5 and std 0.5 gives back x in [-1, 1]
    expected = h @ weight.T + (6.0 / 2) * (h @ a.T @ b.T)
    with torch.no_grad():
        assert torch.allclose(model(x, None), expected, atol=1e-5)


def test_merged_and_unmerged_adapters_agree(lora_model):
    perturb_(lora_model, "e0", seed=3)
    x = images()
    with torch.no_grad():
        unmerged = lora_model(x, None)
        lora_model.merge_adapter()
        merged = lora_model(x, None)
        lora_model.unmerge_adapter()
        again = lora_model(x, None)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert torch.allclose(again, unmerged, atol=1e-5)
    with torch.no_grad(), lora_model.disable_adapter():
        base = lora_model(x, None)
    assert not torch.allclose(base, unmerged, atol=1e-3)  # the adapter does change the output


# --------------------------------------------------------------------------------- save/load ----

def test_adapter_save_load_round_trip(lora_model, make_guide, tmp_path):
    perturb_(lora_model, "e0", seed=4)
    path = tmp_path / "e0.pt"
    adapters.save_adapter(path, lora_model, "e0", index=0)
    x = images()
    with torch.no_grad():
        lora_model.set_adapter("e0")
        expected = lora_model(x, None)

    payload = load_checkpoint(path, adapters.ADAPTER_KIND)
    assert payload["lora"] == dict(rank=RANK, alpha=ALPHA, target_modules=CONVS, modules_to_save=[])
    assert payload["index"] == 0
    assert all("lora_" in key for key in payload["state_dict"])  # adapters only, never the backbone
    assert sum(v.numel() for v in payload["state_dict"].values()) == adapters.adapter_parameter_count(lora_model, "e0")

    # Into a fresh model that already has an adapter of that name (fresh, B = 0).
    fresh = adapters.attach_lora_experts(make_guide(0), ["e0"], RANK, ALPHA, CONVS).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x, None), expected)
        adapters.load_adapter(fresh, "e0", path)
        assert torch.equal(fresh(x, None), expected)

    # Into a model without that adapter: it is added from the file's LoRA settings.
    other = adapters.attach_lora_experts(make_guide(0), ["x"], 1, 1.0, CONVS[:1]).eval()
    adapters.load_adapter(other, "restored", path)
    other.set_adapter("restored")
    with torch.no_grad():
        assert torch.equal(other(x, None), expected)


def test_load_adapter_with_other_target_modules_raises_naming_the_file(lora_model, make_guide, tmp_path):
    path = tmp_path / "both_convs.pt"
    adapters.save_adapter(path, lora_model, "e0")
    one_conv = adapters.attach_lora_experts(make_guide(0), ["e0"], RANK, ALPHA, CONVS[:1])
    with pytest.raises(CheckpointError, match="both_convs.pt.*keys do not match"):
        adapters.load_adapter(one_conv, "e0", path)


def test_load_adapter_with_other_rank_raises_naming_the_file(lora_model, make_guide, tmp_path):
    path = tmp_path / "rank2.pt"
    adapters.save_adapter(path, lora_model, "e0")
    rank3 = adapters.attach_lora_experts(make_guide(0), ["e0"], 3, ALPHA, CONVS)
    with pytest.raises(CheckpointError, match="rank2.pt.*shape"):
        adapters.load_adapter(rank3, "e0", path)


def test_load_adapter_with_other_alpha_raises_naming_the_file(lora_model, make_guide, tmp_path):
    path = tmp_path / "alpha4.pt"
    adapters.save_adapter(path, lora_model, "e0")
    alpha8 = adapters.attach_lora_experts(make_guide(0), ["e0"], RANK, 8.0, CONVS)
    with pytest.raises(CheckpointError, match="alpha4.pt.*lora_alpha"):
        adapters.load_adapter(alpha8, "e0", path)


def test_load_adapter_for_another_architecture_raises_naming_the_file(lora_model, tmp_path):
    path = tmp_path / "conv_adapter.pt"
    adapters.save_adapter(path, lora_model, "e0")
    mlp = ClassifierGuide(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), None, [0.5], [0.5])
    model = adapters.attach_lora_experts(mlp, ["x"], RANK, ALPHA, ["backbone.1"])
    with pytest.raises(CheckpointError, match="conv_adapter.pt"):
        adapters.load_adapter(model, "e0", path)


def test_load_adapter_rejects_a_guide_checkpoint(lora_model, make_guide, tmp_path):
    path = tmp_path / "guide.pt"
    save_guide(path, make_guide(0), spec={})
    with pytest.raises(CheckpointError, match="guide.pt.*expected 'ppap-lora-adapter'"):
        adapters.load_adapter(lora_model, "e0", path)


# --------------------------------------------------------------------------- routed adapters ----

def test_adapter_experts_route_a_mixed_batch_per_sample(lora_model):
    perturb_(lora_model, "e0", seed=5)
    perturb_(lora_model, "e1", seed=6)
    ranges = timestep_ranges(1000, 2)
    router = AdapterExperts(lora_model, ["e0", "e1"], ranges).eval()
    x = images(8, seed=1)
    t = torch.tensor([999, 0, 500, 499, 10, 700, 300, 800])
    with torch.no_grad():
        out = router(x, t)
        alone = {}
        for name in ("e0", "e1"):
            lora_model.set_adapter(name)
            alone[name] = lora_model(x, None)
    owners = expert_for_timestep(t, ranges)
    for row in range(8):
        assert torch.allclose(out[row], alone[f"e{owners[row]}"][row], atol=1e-6), row
    assert not torch.allclose(alone["e0"], alone["e1"], atol=1e-3)  # the two experts differ


def test_adapter_experts_pass_gradients_to_the_input(lora_model):
    perturb_(lora_model, "e1", seed=7)
    lora_model.requires_grad_(False)
    router = AdapterExperts(lora_model, ["e0", "e1"], timestep_ranges(1000, 2)).eval()
    x = images(4).requires_grad_(True)
    (grad,) = torch.autograd.grad(router(x, torch.tensor([0, 999, 999, 0]))[:, 3].sum(), x)
    assert torch.isfinite(grad).all() and (grad.flatten(1).abs().sum(1) > 0).all()


def test_adapter_experts_reject_a_name_count_mismatch(lora_model):
    with pytest.raises(ValueError, match="1 adapters for 2 ranges"):
        AdapterExperts(lora_model, ["e0"], timestep_ranges(1000, 2))


def test_adapter_teacher_is_the_base_guide_while_an_adapter_is_active(make_guide, lora_model):
    x = images()
    with torch.no_grad():
        base = make_guide(0)(x)
    perturb_(lora_model, "e1", seed=8)
    lora_model.set_adapter("e1")
    teacher = adapter_teacher(lora_model)
    with torch.no_grad():
        adapted = lora_model(x, None)
        taught = teacher(x)
        after = lora_model(x, None)
    assert not torch.allclose(adapted, base, atol=1e-3)
    assert torch.allclose(taught, base, atol=1e-6)
    assert torch.equal(after, adapted)  # the adapter is switched back on afterwards
    assert lora_model.active_adapter == "e1"


class _NormGuide(nn.Module):
    """conv -> batch norm -> linear: the smallest guide with a per-expert normalisation layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 10)

    def forward(self, x, t=None):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("with_norms", [False, True])
def test_peft_mixed_batches_route_lora_but_not_the_experts_own_norms(with_norms):
    """Why AdapterExperts splits a mixed batch itself: the pinned peft routes a batch by
    ``adapter_names`` through LoRA layers (the same outputs as one adapter at a time), but refuses
    when the adapters carry their own batch norms (``modules_to_save``, PPAP's trained norms). If a
    later peft routes those too, this fails, and the router could hand the split to peft."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = adapters.attach_lora_experts(_NormGuide().eval(), ["e0", "e1"], 2, 2.0, ["conv", "head"],
                                             modules_to_save=["bn"] if with_norms else [])
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if "lora_B" in name or ("modules_to_save" in name and tensor.is_floating_point()):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
    model.eval()
    x = torch.randn((4, 1, 6, 6), generator=generator)
    names = ["e0", "e1", "e1", "e0"]
    if with_norms:
        with pytest.raises(TypeError, match="Mixed batching is only supported"):
            model(x, adapter_names=names)
        return
    mixed = model(x, adapter_names=names)
    one_at_a_time = []
    for i, name in enumerate(names):
        model.set_adapter(name)
        one_at_a_time.append(model(x[i:i + 1]))
    torch.testing.assert_close(mixed, torch.cat(one_at_a_time))
