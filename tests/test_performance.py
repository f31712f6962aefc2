"""The speed switches (config ``performance``): channels-last guides, AdamW's fused kernel, merged
adapters in sampling. Each is the same computation in other kernels: the tests check that it stays
the same computation (up to rounding), stays deterministic, and that its files are the usual ones;
and that a rule's params hold only what the rule uses (a rerun trigger)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, expert_training
from ppap.experts import adapters
from ppap.experts.sets import TrainingPool, save_expert, train_expert
from ppap.generate import sample_with_cost
from ppap.models import classifiers
from ppap.models.checkpoints import load_checkpoint
from ppap.sampling import Denoiser
from ppap.specs import SamplingSpec
from ppap.study import grammar
from ppap.study.config import expert_training as config_expert_training
from ppap.study.config import guide_performance, performance, scoring_settings
from ppap.study.guides import GuideSource, load_guidance
from ppap.training import adamw, load_optimizer_moments, optimizer_moments

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
SPEC = classifiers.guide_spec("resnet10t", 10, 1, 16, [0.5], [0.5], {"channels": [8, 16, 32, 64], "stem_width": 8})
LORA = dict(rank=2, alpha=2.0, layer_types=["conv"], include=r"(conv1\.[0-9]+|conv[12])$", exclude=None)
FAST = dict(channels_last=True, fused_optimizer=True, center_tap_convs=True)


@pytest.fixture(scope="module")
def config():
    """The default preset as Snakemake loads it (schema defaults filled in)."""
    from snakemake.utils import validate

    cfg = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    validate(cfg, str(REPO / "config" / "schema.yaml"))
    return cfg


@pytest.fixture
def guide_path(tmp_path):
    path = tmp_path / "guide.pt"
    classifiers.save_guide(path, classifiers.build_timm_guide(**SPEC, seed=0), SPEC)
    return path


@pytest.fixture
def images():
    return torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def train(settings, index, guide_path, alphas_cumprod, images, previous=None):
    labels = torch.arange(len(images)) % 10 if settings.supervision == "labeled" else None
    return train_expert(settings, index, guide_path, alphas_cumprod.float(), TrainingPool(images, labels),
                        torch.Generator().manual_seed(10 + index), previous_expert=previous, show_progress=False)


def settings_for(guide_set, **switches):
    lora = LORA if grammar.parse_guide_set(guide_set).rank is not None else None
    return expert_training(guide_set, lora=lora, norm="trained", warm_start="optimizer", steps=4, batch_size=8,
                           **switches)


def trained_state(model, settings, index):
    if settings.rank is not None:
        return {k: v.clone() for k, v in adapters.adapter_state_dict(model, f"expert{index}").items()}
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("guide_set", ["datafree_lora2_n2", "labeled_full_n2"])
def test_fast_training_is_the_same_training_up_to_rounding_and_saves_the_usual_files(
        guide_set, guide_path, alphas_cumprod, images, tmp_path):
    plain, fast = settings_for(guide_set), settings_for(guide_set, **FAST)
    states = {}
    for name, settings in (("plain", plain), ("fast", fast), ("fast_again", fast)):
        chain = []
        previous = None
        for index in range(2):  # expert 1 continues expert 0's weights and AdamW moments (warm start)
            model, stats, moments = train(settings, index, guide_path, alphas_cumprod, images, previous)
            path = tmp_path / f"{name}_{guide_set}_expert{index}.pt"
            save_expert(path, model, settings, index, stats, guide_path, moments)
            chain.append(trained_state(model, settings, index))
            previous = path
            if name == "fast":
                # The files hold contiguous tensors (weights and moments) whatever layout trained them.
                kind = adapters.ADAPTER_KIND if settings.rank is not None else None
                payload = load_checkpoint(path, kind) if kind else torch.load(path, weights_only=True)
                tensors = [v for v in _tensors(payload)]
                assert tensors and all(t.is_contiguous() for t in tensors)
        states[name] = chain
    for index in range(2):
        plain_state, fast_state, again = states["plain"][index], states["fast"][index], states["fast_again"][index]
        assert plain_state.keys() == fast_state.keys()
        # Deterministic at a fixed thread count: the fast path twice gives the same bits...
        assert all(torch.equal(fast_state[k], again[k]) for k in fast_state)
        # ...and the same training as the plain path, up to rounding: Adam's first steps are
        # lr * g / (|g| + eps), so an entry whose gradient is nearly 0 may take the other sign (at
        # most 2 lr per step); every other entry agrees to float precision.
        keys = [k for k in plain_state if plain_state[k].is_floating_point()]
        difference = torch.cat([(fast_state[k] - plain_state[k]).abs().flatten() for k in keys])
        assert difference.max() <= 2 * plain.lr * plain.steps * (index + 1)
        assert (difference > 1e-5).float().mean() < 0.02


def _tensors(payload):
    if torch.is_tensor(payload):
        yield payload
    elif isinstance(payload, dict):
        for value in payload.values():
            yield from _tensors(value)
    elif isinstance(payload, (list, tuple)):
        for value in payload:
            yield from _tensors(value)


def test_moments_take_the_layout_of_the_parameter_they_continue():
    conv = torch.nn.Conv2d(3, 4, 3)
    source = adamw(list(conv.parameters()), 1e-2, 0.0)
    conv(torch.randn(2, 3, 5, 5)).sum().backward()
    source.step()
    moments = optimizer_moments(source)
    assert all(v.is_contiguous() for state in moments.values() for v in state.values() if torch.is_tensor(v))
    target = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    optimizer = adamw(list(target.parameters()), 1e-2, 0.0, fused=True)
    load_optimizer_moments(optimizer, moments)
    weight_state = optimizer.state[target.weight]
    assert weight_state["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(weight_state["exp_avg"], moments[0]["exp_avg"])


def test_fast_sampling_draws_the_images_of_the_plain_path(guide_path, alphas_cumprod, images, tmp_path):
    """Merged adapters and a channels-last guide: the same samples as active adapters in NCHW, up to
    a rounding flip of one uint8 level; and the merged router's samples of a seed do not depend on
    what it sampled before (unmerging restores the trained weights)."""
    from ppap.models.unet import EpsilonModel, build_unet

    settings = settings_for("datafree_lora2_n2")
    paths = []
    for index in range(2):
        model, stats, moments = train(settings, index, guide_path, alphas_cumprod, images,
                                      paths[-1] if paths else None)
        with torch.no_grad():  # trained-looking, distinct experts: routing and merging matter
            for name, param in model.named_parameters():
                if "lora_B" in name and f"expert{index}" in name:
                    param.normal_(0, 0.05, generator=torch.Generator().manual_seed(index))
        path = tmp_path / f"expert{index}.pt"
        save_expert(path, model, settings, index, stats, guide_path, moments)
        paths.append(path)
    manifest = {"experts": [str(p) for p in paths], "ranges": [[0, 500], [500, 1000]]}
    unet = build_unet(8, 1, [8, 16], 1, [False, False], 4, seed=0)
    eps_model = EpsilonModel(unet, alphas_cumprod.float()).eval().requires_grad_(False)

    def draw(guidance, seed):
        images_out, _, _, _ = sample_with_cost(guidance, SamplingSpec(steps=6, scale=4.0, batch_size=16), 16, seed,
                                               CPU, show_progress=False)
        return images_out.astype(int)

    def guidance(**switches):
        return load_guidance("datafree_lora2_n2", Denoiser(eps_model, alphas_cumprod.float(), (1, 8, 8)), CPU,
                             GuideSource(guide_path, manifest), performance=switches)

    plain = guidance()
    fast = guidance(merge_adapters=True, channels_last=True, center_tap_convs=True)
    assert fast.method.guide.merge and not plain.method.guide.merge
    plain_seed1 = draw(plain, 1)
    fast_seed1 = draw(fast, 1)
    assert np.abs(plain_seed1 - fast_seed1).max() <= 1
    assert (plain_seed1 != fast_seed1).mean() < 0.02
    draw(fast, 0)
    assert np.array_equal(draw(fast, 1), fast_seed1)  # no drift from the batches before
    assert not np.array_equal(plain_seed1, draw(guidance(), 2))


def test_params_hold_only_what_a_rule_uses(config):
    on = performance(config)
    any_guide = {"channels_last": on["channels_last"], "center_tap_convs": on["center_tap_convs"]}
    assert guide_performance("none", config) == {} and guide_performance("classifier_free", config) == {}
    assert guide_performance("off_the_shelf", config) == any_guide
    assert guide_performance("trainingfree_freedom", config) == any_guide
    assert guide_performance("labeled_full_n5", config) == any_guide
    assert guide_performance("datafree_lora4_n5", config) == {**any_guide, "merge_adapters": on["merge_adapters"]}
    # The manifests' accuracy timesteps are not scoring's: changing them reruns no evaluate job.
    other = copy.deepcopy(config)
    other["evaluation"]["accuracy_timesteps"] = [0, 500]
    assert scoring_settings(other) == scoring_settings(config)
    other["evaluation"]["nearest_k"] += 1
    assert scoring_settings(other) != scoring_settings(config)
    # Each switch reaches the jobs that use it, and only those.
    slow = copy.deepcopy(config)
    slow["performance"] = {}
    assert not any(performance(slow).values())
    trained = config_expert_training("datafree_lora4_n5", config)
    assert (trained.channels_last, trained.fused_optimizer) == (on["channels_last"], on["fused_optimizer"])
    merge_only = copy.deepcopy(config)
    merge_only["performance"] = {**on, "merge_adapters": not on["merge_adapters"]}
    assert (config_expert_training("datafree_lora4_n5", merge_only).as_params()
            == trained.as_params())


def test_the_default_preset_turns_every_switch_on(config):
    assert performance(config) == dict(channels_last=True, fused_optimizer=True, merge_adapters=True,
                                       center_tap_convs=True)


def test_center_tap_convolutions_are_the_same_convolutions():
    from ppap.models.convs import CenterTapConv2d, use_center_taps

    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.Conv2d(6, 5, 3, stride=2, padding=1),
                                torch.nn.Conv2d(5, 5, 3),                 # no padding: every tap reads data
                                torch.nn.Conv2d(5, 5, 3, padding=2, dilation=2))
    reference = copy.deepcopy(model)
    assert use_center_taps(model) == 2
    assert [type(m) is CenterTapConv2d for m in model] == [True, True, False, False]
    assert model.state_dict().keys() == reference.state_dict().keys()
    for size in (1, 2, 7):  # the centre-tap path (1x1) and the ordinary one
        for conv, plain in zip(model[:2], reference[:2]):
            x = torch.randn((3, conv.in_channels, size, size), generator=gen)
            xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            out, expected = conv(xa), plain(xb)
            assert out.shape == expected.shape
            assert torch.allclose(out, expected, atol=1e-6)
            out.square().sum().backward()
            expected.square().sum().backward()
            assert torch.allclose(xa.grad, xb.grad, atol=1e-5)
            assert torch.allclose(conv.weight.grad, plain.weight.grad, atol=1e-5)
            if size == 1:  # only the centre tap has a gradient: the others multiplied padding
                mask = torch.ones_like(conv.weight.grad, dtype=torch.bool)
                mask[:, :, 1, 1] = False
                assert torch.count_nonzero(conv.weight.grad[mask]) == 0
            conv.zero_grad(), plain.zero_grad()


def test_a_rule_process_freezes_its_objects_at_exit_after_the_job(tmp_path):
    """rule_session registers gc.freeze at exit (teardown without the final full collection): it
    runs after the job's own exit handlers were registered and done, and the job's files are whole."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import atexit, gc
        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))
        import sys
        sys.path.insert(0, "workflow/scripts")
        from harness import rule_session, skip_final_collection
        with rule_session({str(tmp_path / "job.log")!r}, 1, "probe"):
            open({str(tmp_path / "out.txt")!r}, "w").write("done")
        print("registered again:", skip_final_collection(), flush=True)
        print("frozen before exit:", gc.get_freeze_count() > 0, flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["registered again: False", "frozen before exit: False",
                                           "frozen at exit: True"]
    assert (tmp_path / "out.txt").read_text() == "done"
    assert "done in" in (tmp_path / "job.log").read_text()
