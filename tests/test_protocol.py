"""PPAP's experts as the original trains them: per-expert normalisation state (batch-norm affine
parameters and running statistics, batch norm in train mode) stored with each adapter and restored
by the router, and warm start (expert i continues from expert i-1's weights and AdamW moments)."""

from __future__ import annotations

import pytest
import torch

from conftest import expert_training
from ppap.experts import adapters
from ppap.experts.sets import TrainingPool, load_expert_set, save_expert, train_expert
from ppap.models import classifiers
from ppap.models.checkpoints import CheckpointError, load_checkpoint
from ppap.study.accounting import parameter_accounting

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
SPEC = classifiers.guide_spec("resnet10t", 10, 1, 16, [0.5], [0.5], {"channels": [8, 16, 32, 64], "stem_width": 8})
LORA = dict(rank=2, alpha=2.0, layer_types=["conv"], include=r"(conv1\.[0-9]+|conv[12])$", exclude=None)


@pytest.fixture
def guide_path(tmp_path):
    path = tmp_path / "guide.pt"
    guide = classifiers.build_timm_guide(**SPEC, seed=0)
    with torch.no_grad():  # non-trivial clean statistics, so that "restored" means something
        for module in guide.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=torch.Generator().manual_seed(1))
                module.running_var.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(2))
    classifiers.save_guide(path, guide, SPEC)
    return path


@pytest.fixture
def images():
    return torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def train(settings, index, guide_path, alphas_cumprod, images, previous=None, labels=None):
    return train_expert(settings, index, guide_path, alphas_cumprod.float(), TrainingPool(images, labels),
                        torch.Generator().manual_seed(10 + index), previous_expert=previous, show_progress=False)


def lora_settings(guide_set="datafree_lora2_n2", **overrides):
    return expert_training(guide_set, **{"lora": LORA, "norm": "trained", "steps": 3, "batch_size": 8, **overrides})


def state_of(model, name):
    return {k: v.clone() for k, v in adapters.adapter_state_dict(model, name).items()}


def test_norm_modules_are_the_batch_norms(guide_path):
    guide = classifiers.load_guide(guide_path)
    names = adapters.norm_modules(guide)
    assert names and all(isinstance(dict(guide.named_modules())[n], torch.nn.BatchNorm2d) for n in names)
    assert len(names) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in guide.modules())


def test_trained_norms_are_per_expert_and_the_backbone_is_untouched(guide_path, alphas_cumprod, images):
    base = classifiers.load_guide(guide_path).state_dict()
    model, stats, _ = train(lora_settings(), 1, guide_path, alphas_cumprod, images)
    state = state_of(model, "expert1")
    norm_keys = [k for k in state if "running_mean" in k]
    assert norm_keys, "the adapter carries its own batch-norm statistics"
    # Train mode: the expert's running statistics moved towards its noisy inputs...
    moved = [k for k in norm_keys if not torch.allclose(state[k], base[k.replace("base_model.model.", "")])]
    assert len(moved) == len(norm_keys)
    # ...while the shared backbone (what every expert and the teacher use) did not change.
    with model.disable_adapter():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d) and "modules_to_save" not in name:
                key = name.replace("base_model.model.", "").replace(".original_module", "")
                assert torch.equal(module.running_mean, base[f"{key}.running_mean"])
    lora_params = sum(v.numel() for k, v in state.items() if "lora_" in k)
    norm_params = sum(v.numel() for k, v in state.items() if k.endswith((".weight", ".bias")) and "lora_" not in k)
    assert stats["trainable_params"] == lora_params + norm_params
    assert stats["norm"] == "trained"


def test_frozen_norms_keep_the_clean_statistics(guide_path, alphas_cumprod, images):
    model, stats, _ = train(lora_settings(norm="frozen"), 0, guide_path, alphas_cumprod, images)
    state = state_of(model, "expert0")
    assert all("lora_" in k for k in state)  # nothing but LoRA matrices
    assert stats["norm"] == "frozen"


@pytest.mark.parametrize("merge", [False, True])
def test_the_router_restores_each_experts_norm_state(tmp_path, guide_path, alphas_cumprod, images, merge):
    settings = lora_settings(warm_start="optimizer")
    paths, trained = [], []
    for index in range(2):
        model, stats, moments = train(settings, index, guide_path, alphas_cumprod, images,
                                      previous=paths[-1] if paths else None)
        path = tmp_path / f"expert{index}.pt"
        save_expert(path, model, settings, index, stats, guide_path, moments)
        paths.append(path)
        trained.append(model.eval())
    routed = load_expert_set(settings.guide_set, settings.rank, guide_path, paths, 1000, merge=merge)
    x = images[:6]
    t = torch.tensor([10, 200, 499, 500, 700, 999])  # a batch mixing both experts
    with torch.no_grad():
        out = routed(x, t)
        for index, rows in ((0, slice(0, 3)), (1, slice(3, 6))):
            expected = trained[index](x[rows], t[rows])
            torch.testing.assert_close(out[rows], expected, rtol=1e-5, atol=1e-5)
            alone = routed(x[rows], t[rows])  # one expert per batch: the merged path, if merging
            torch.testing.assert_close(alone, expected, rtol=1e-4, atol=1e-5)
    accounting = parameter_accounting(settings.guide_set, 100, paths)
    stats = [load_checkpoint(p)["stats"] for p in paths]
    assert accounting["trainable_params"] == sum(s["trainable_params"] for s in stats)
    # Stored: the backbone, plus each expert's LoRA and norm parameters and its running statistics.
    running = sum(v.numel() for p in paths for k, v in load_checkpoint(p)["state_dict"].items() if "running_" in k)
    assert running > 0
    assert accounting["stored_params"] == 100 + accounting["trainable_params"] + running


def test_warm_start_continues_from_the_previous_expert(tmp_path, guide_path, alphas_cumprod, images):
    settings = lora_settings(warm_start="optimizer")
    model0, stats0, moments0 = train(settings, 0, guide_path, alphas_cumprod, images)
    first = tmp_path / "expert0.pt"
    save_expert(first, model0, settings, 0, stats0, guide_path, moments0)
    assert "optimizer_moments" in load_checkpoint(first)  # a successor continues them
    # With a zero learning rate the successor's weights are exactly its predecessor's...
    frozen = lora_settings(warm_start="optimizer", lr=0.0, weight_decay=0.0)
    model1, stats1, moments1 = train(frozen, 1, guide_path, alphas_cumprod, images, previous=first)
    w0 = {k: v for k, v in state_of(model0, "expert0").items() if "running" not in k and "num_batches" not in k}
    w1 = {k: v for k, v in state_of(model1, "expert1").items() if "running" not in k and "num_batches" not in k}
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert any(v.abs().sum() > 0 for k, v in w1.items() if "lora_B" in k)  # not a fresh adapter
    assert stats1["warm_started_from"] == str(first)
    # ...and its AdamW moments continue the predecessor's (3 steps, then 3 more).
    steps = {int(state["step"]) for state in moments1.values()}
    assert steps == {6}
    # The last expert of a set has no successor: its file carries no optimizer state.
    last = tmp_path / "expert1.pt"
    save_expert(last, model1, frozen, 1, stats1, guide_path, moments1)
    assert "optimizer_moments" not in load_checkpoint(last)


def test_warm_start_weights_only_restarts_the_moments(tmp_path, guide_path, alphas_cumprod, images):
    settings = lora_settings(warm_start="weights")
    model0, stats0, moments0 = train(settings, 0, guide_path, alphas_cumprod, images)
    first = tmp_path / "expert0.pt"
    save_expert(first, model0, settings, 0, stats0, guide_path, moments0)
    assert "optimizer_moments" not in load_checkpoint(first)
    _, _, moments1 = train(settings, 1, guide_path, alphas_cumprod, images, previous=first)
    assert {int(state["step"]) for state in moments1.values()} == {3}


def test_full_fine_tuning_warm_start(tmp_path, guide_path, alphas_cumprod, images):
    labels = torch.arange(len(images)) % 10
    settings = expert_training("labeled_full_n2", steps=3, batch_size=8, warm_start="optimizer")
    model0, stats0, moments0 = train(settings, 0, guide_path, alphas_cumprod, images, labels=labels)
    first = tmp_path / "expert0.pt"
    save_expert(first, model0, settings, 0, stats0, guide_path, moments0)
    frozen = expert_training("labeled_full_n2", steps=3, batch_size=8, warm_start="optimizer", lr=0.0)
    model1, _, _ = train(frozen, 1, guide_path, alphas_cumprod, images, previous=first, labels=labels)
    for (name, a), b in zip(model0.named_parameters(), model1.parameters()):
        assert torch.equal(a, b), name


def test_warm_start_refuses_a_wrong_or_missing_predecessor(tmp_path, guide_path, alphas_cumprod, images):
    settings = lora_settings(warm_start="optimizer")
    with pytest.raises(ValueError, match="needs the previous expert's file"):
        train(settings, 1, guide_path, alphas_cumprod, images)
    with pytest.raises(ValueError, match="takes no previous expert"):
        train(lora_settings(warm_start="off"), 1, guide_path, alphas_cumprod, images, previous=tmp_path / "x.pt")
    model, stats, moments = train(lora_settings(guide_set="datafree_lora2_n3"), 0, guide_path, alphas_cumprod, images)
    other = tmp_path / "other_set.pt"
    save_expert(other, model, lora_settings(guide_set="datafree_lora2_n3"), 0, stats, guide_path, moments)
    with pytest.raises(CheckpointError, match="is an expert of datafree_lora2_n3, not of datafree_lora2_n2"):
        train(settings, 1, guide_path, alphas_cumprod, images, previous=other)


def test_loss_windows_do_not_overlap_on_short_runs(guide_path, alphas_cumprod, images):
    _, stats, _ = train(lora_settings(steps=10), 0, guide_path, alphas_cumprod, images)
    assert stats["loss_window"] == 1  # 10 steps: first and last step, not the same 10-step mean
