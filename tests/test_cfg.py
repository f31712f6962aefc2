"""The labeled upper bound: a class-conditional UNet (ppap.models.unet, ppap.pretrain) sampled with
classifier-free guidance (ppap.guidance.classifier_free)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ppap.guidance.classifier_free import classifier_free_eps
from ppap.models.checkpoints import CheckpointError
from ppap.models.unet import (
    EpsilonModel,
    build_unet,
    load_class_conditioning,
    load_conditional_eps_model,
    load_diffusion_model,
    null_label_of,
    save_diffusion_model,
)
from ppap.pretrain import DiffusionTraining, drop_labels, train_diffusion
from ppap.sampling import sample_ddim, sample_ddpm
from ppap.schedules import make_ddpm_scheduler, q_sample, respaced_timesteps
from ppap.training import EMA, check_finite, make_optimizer, random_batch

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_CLASSES = 10
TINY = dict(sample_size=8, in_channels=1, block_out_channels=[8, 16], layers_per_block=1,
            attention=[False, False], norm_num_groups=4)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_unet(seed: int = 0, num_classes: int | None = NUM_CLASSES):
    return build_unet(**TINY, seed=seed, num_classes=num_classes)


@pytest.fixture(scope="module")
def cond_eps(alphas_cumprod):
    """A random class-conditional epsilon model, with label embeddings large enough to matter."""
    unet = tiny_unet(seed=1).eval()
    with torch.no_grad():
        unet.class_embedding.weight.copy_(torch.randn(unet.class_embedding.weight.shape, generator=gen(5)))
    return EpsilonModel(unet, alphas_cumprod).eval().requires_grad_(False)


def batch(n: int = 4, seed: int = 0):
    x = torch.randn((n, 1, 8, 8), generator=gen(seed))
    t = torch.tensor([10, 300, 600, 999][:n])
    labels = torch.arange(n) % NUM_CLASSES
    return x, t, labels


class CountingEps:
    """A conditional eps function that counts its calls and the batch size of each."""

    def __init__(self, eps_fn):
        self.eps_fn, self.batch_sizes = eps_fn, []

    def __call__(self, x, t, class_labels):
        self.batch_sizes.append(x.shape[0])
        return self.eps_fn(x, t, class_labels)


# ---------------------------------------------------------------------------------- the UNet ----

def old_build_unet(sample_size, in_channels, block_out_channels, layers_per_block, attention, norm_num_groups, seed):
    """build_unet as it was before class conditioning existed (the base model must not change)."""
    from diffusers import UNet2DModel

    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                           block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                           down_block_types=down, up_block_types=up, norm_num_groups=norm_num_groups)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("attention", [[False, False], [False, True]])
def test_unconditional_build_is_unchanged(attention):
    spec = dict(TINY, attention=attention)
    old = old_build_unet(**spec, seed=3)
    assert_same_weights(build_unet(**spec, seed=3), old)
    assert_same_weights(build_unet(**spec, seed=3, num_classes=None), old)
    assert dict(build_unet(**spec, seed=3).config) == dict(old.config)
    assert build_unet(**spec, seed=3).class_embedding is None


def test_conditional_build_has_a_null_label_row():
    unet = tiny_unet()
    assert unet.config.num_class_embeds == NUM_CLASSES + 1
    assert unet.class_embedding.num_embeddings == NUM_CLASSES + 1
    assert null_label_of(unet) == NUM_CLASSES and null_label_of(tiny_unet(num_classes=None)) is None
    with pytest.raises(ValueError, match="num_classes"):
        tiny_unet(num_classes=0)


def test_conditional_eps_depends_on_the_label_and_needs_one(cond_eps):
    x, t, labels = batch()
    with torch.no_grad():
        assert not torch.allclose(cond_eps(x, t, labels), cond_eps(x, t, torch.full_like(labels, NUM_CLASSES)))
        with pytest.raises(ValueError, match="class_labels"):
            cond_eps(x, t)


def test_conditional_model_round_trips(tmp_path, cond_eps, alphas_cumprod):
    scheduler = make_ddpm_scheduler()
    save_diffusion_model(tmp_path / "cond", cond_eps.unet, scheduler)
    unet, _ = load_diffusion_model(tmp_path / "cond")
    assert load_class_conditioning(tmp_path / "cond") == {"num_classes": NUM_CLASSES, "null_label": NUM_CLASSES}
    x, t, labels = batch()
    null = torch.full_like(labels, NUM_CLASSES)
    loaded = EpsilonModel(unet, alphas_cumprod).eval()
    with torch.no_grad():
        for y in (labels, null):
            assert torch.equal(loaded(x, t, y), cond_eps(x, t, y))
    # An unconditional model is written exactly as before: no conditioning record.
    save_diffusion_model(tmp_path / "uncond", tiny_unet(num_classes=None), scheduler)
    assert not (tmp_path / "uncond" / "unet" / "class_conditioning.json").exists()
    assert load_class_conditioning(tmp_path / "uncond") is None


def test_load_conditional_eps_model_gives_the_model_and_its_null_label(tmp_path, cond_eps):
    save_diffusion_model(tmp_path / "cond", cond_eps.unet, make_ddpm_scheduler())
    model, null_label = load_conditional_eps_model(tmp_path / "cond", "cpu")
    assert null_label == NUM_CLASSES and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    x, t, labels = batch()
    with torch.no_grad():
        assert torch.equal(model(x, t, labels), cond_eps(x, t, labels))
    save_diffusion_model(tmp_path / "uncond", tiny_unet(num_classes=None), make_ddpm_scheduler())
    with pytest.raises(CheckpointError, match="unconditional"):
        load_conditional_eps_model(tmp_path / "uncond", "cpu")


def test_a_conditional_model_without_its_null_label_record_is_refused(tmp_path, cond_eps):
    save_diffusion_model(tmp_path / "cond", cond_eps.unet, make_ddpm_scheduler())
    record = tmp_path / "cond" / "unet" / "class_conditioning.json"
    record.write_text('{"num_classes": 9, "null_label": 9}')
    with pytest.raises(CheckpointError, match="does not match num_class_embeds"):
        load_class_conditioning(tmp_path / "cond")
    record.unlink()
    with pytest.raises(CheckpointError, match="class_conditioning.json"):
        load_class_conditioning(tmp_path / "cond")


# -------------------------------------------------------------------------------- the wrapper ----

def test_scale_zero_is_the_conditional_eps_in_one_pass(cond_eps):
    x, t, labels = batch()
    counting = CountingEps(cond_eps)
    with torch.no_grad():
        assert torch.equal(classifier_free_eps(counting, labels, NUM_CLASSES, 0.0)(x, t), cond_eps(x, t, labels))
    assert counting.batch_sizes == [4]


@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_guided_eps_is_ho_and_salimans_formula(cond_eps, scale):
    x, t, labels = batch()
    null = torch.full_like(labels, NUM_CLASSES)
    with torch.no_grad():
        guided = classifier_free_eps(cond_eps, labels, NUM_CLASSES, scale)(x, t)
        expected = (1 + scale) * cond_eps(x, t, labels) - scale * cond_eps(x, t, null)  # two separate forwards
    assert torch.allclose(guided, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(guided, cond_eps(x, t, labels), atol=1e-3)


def test_ddim_with_scale_zero_is_the_conditional_sample(cond_eps, alphas_cumprod):
    x_T, _, labels = batch(seed=7)
    timesteps = respaced_timesteps(1000, 5)
    with torch.no_grad():
        wrapped = sample_ddim(classifier_free_eps(cond_eps, labels, NUM_CLASSES, 0.0), x_T, timesteps, alphas_cumprod,
                              eta=1.0, generator=gen(3))
        direct = sample_ddim(lambda x, t: cond_eps(x, t, labels), x_T, timesteps, alphas_cumprod, eta=1.0,
                             generator=gen(3))
    assert torch.equal(wrapped, direct)


@pytest.mark.parametrize("scale", [0.0, 2.0])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_one_denoiser_call_per_step(cond_eps, alphas_cumprod, scale, sampler):
    x_T, _, labels = batch(seed=7)
    timesteps = respaced_timesteps(1000, 6)
    counting = CountingEps(cond_eps)
    eps_fn = classifier_free_eps(counting, labels, NUM_CLASSES, scale)
    sample = sample_ddim if sampler == "ddim" else sample_ddpm
    with torch.no_grad():
        out = sample(eps_fn, x_T, timesteps, alphas_cumprod, generator=gen(0))
    assert counting.batch_sizes == [4 if scale == 0 else 8] * len(timesteps)
    assert out.shape == x_T.shape and torch.isfinite(out).all()


def test_guided_eps_under_bf16_autocast_keeps_x_dtype(cond_eps):
    x, t, labels = batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for scale in (0.0, 1.0):
            assert classifier_free_eps(cond_eps, labels, NUM_CLASSES, scale)(x, t).dtype == torch.float32
    # A model answering in another dtype is cast back to x's.
    as_float = lambda x, t, y: x.float() * 2  # noqa: E731
    for scale in (0.0, 1.0):
        assert classifier_free_eps(as_float, labels, NUM_CLASSES, scale)(x.bfloat16(), t).dtype == torch.bfloat16


def test_one_label_per_sample_is_required(cond_eps):
    x, t, labels = batch()
    for scale in (0.0, 1.0):
        with pytest.raises(ValueError, match="one label per sample"):
            classifier_free_eps(cond_eps, labels[:3], NUM_CLASSES, scale)(x, t)


# ------------------------------------------------------------------------------- training ----

def old_train_diffusion(unet, images, alphas_cumprod, steps, batch_size, lr, generator, ema_decay=0.999,
                        warmup_steps=100, weight_decay=0.0):
    """train_diffusion's loop as it was before labels existed: the base model must stay bit for bit."""
    num_timesteps = len(alphas_cumprod)
    optimizer, schedule = make_optimizer(list(unet.parameters()), lr, weight_decay, steps, warmup_steps)
    ema = EMA(unet, ema_decay)
    unet.train()
    for step in range(steps):
        x0 = images[random_batch(len(images), batch_size, generator).to(images.device)]
        t = torch.randint(num_timesteps, (batch_size,), generator=generator, device=generator.device).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        loss = F.mse_loss(unet(q_sample(x0, t, alphas_cumprod, noise), t).sample, noise)
        check_finite(loss, step, "diffusion training")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        ema.update(unet)
    return ema.model


def digits_like(n: int = 64, seed: int = 0):
    images = torch.rand((n, 1, 8, 8), generator=gen(seed)) * 2 - 1
    labels = torch.randint(NUM_CLASSES, (n,), generator=gen(seed + 1))
    return images, labels


def test_unconditional_training_is_unchanged(alphas_cumprod):
    images, _ = digits_like()
    abar = alphas_cumprod.float()
    new_generator, old_generator = gen(4), gen(4)
    new = train_diffusion(tiny_unet(num_classes=None), images, abar, DiffusionTraining(3, 8, 1e-3, 0.9, warmup_steps=1),
                          new_generator, show_progress=False)
    old = old_train_diffusion(tiny_unet(num_classes=None), images, abar, 3, 8, 1e-3, old_generator, ema_decay=0.9,
                              warmup_steps=1)
    assert_same_weights(new, old)
    assert torch.equal(new_generator.get_state(), old_generator.get_state())  # the same draws, no more


class RecordingUNet(nn.Module):
    """A conditional UNet that records the class labels it is trained on."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.seen = unet, []

    def forward(self, x, t, class_labels=None):
        self.seen.append(class_labels.clone())
        return self.unet(x, t, class_labels=class_labels)


@pytest.mark.parametrize("dropout", [0.0, 0.5, 1.0])
def test_training_drops_labels_at_the_configured_rate(alphas_cumprod, dropout):
    images, labels = digits_like()
    recorder = RecordingUNet(tiny_unet())
    training = DiffusionTraining(12, 32, 1e-3, warmup_steps=1, label_dropout=dropout)
    ema = train_diffusion(recorder, images, alphas_cumprod.float(), training, gen(0), labels, NUM_CLASSES,
                          show_progress=False)
    seen = torch.cat(recorder.seen)
    assert len(recorder.seen) == 12 and seen.shape == (12 * 32,)
    null_rate = (seen == NUM_CLASSES).float().mean().item()
    assert null_rate == pytest.approx(dropout, abs=0.08)  # 384 draws: sd 0.026 at 0.5
    assert ((seen >= 0) & (seen <= NUM_CLASSES)).all()
    assert all(torch.isfinite(p).all() for p in ema.parameters())


def test_kept_labels_are_the_batch_labels(alphas_cumprod):
    """Replaying the generator's draws: every label not dropped is its image's own."""
    images, labels = digits_like()
    recorder = RecordingUNet(tiny_unet())
    train_diffusion(recorder, images, alphas_cumprod.float(), DiffusionTraining(2, 16, 1e-3, warmup_steps=1, label_dropout=0.3),
                    gen(9), labels, NUM_CLASSES, show_progress=False)
    replay = gen(9)
    for seen in recorder.seen:
        idx = random_batch(len(images), 16, replay)
        torch.randint(1000, (16,), generator=replay)
        torch.randn((16, 1, 8, 8), generator=replay)
        assert torch.equal(seen, drop_labels(labels[idx], NUM_CLASSES, 0.3, replay))
        kept = seen != NUM_CLASSES
        assert torch.equal(seen[kept], labels[idx][kept]) and kept.any()


def test_training_with_labels_checks_them(alphas_cumprod):
    images, labels = digits_like()
    args = (tiny_unet(), images, alphas_cumprod.float(), DiffusionTraining(1, 4, 1e-3), gen(0))
    with pytest.raises(ValueError, match="num_classes"):
        train_diffusion(*args, labels=labels, show_progress=False)
    with pytest.raises(ValueError, match="labels must lie"):
        train_diffusion(*args, labels=labels + 1, num_classes=NUM_CLASSES, show_progress=False)
    with pytest.raises(ValueError, match="label_dropout"):
        train_diffusion(tiny_unet(), images, alphas_cumprod.float(), DiffusionTraining(1, 4, 1e-3, label_dropout=1.5),
                        gen(0), labels, NUM_CLASSES, show_progress=False)
