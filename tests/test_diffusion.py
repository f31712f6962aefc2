"""DDIM / DDPM samplers (ppap.sampling) and classifier guidance (ppap.guidance)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ppap.guidance import NonFiniteError, classifier_guided_eps, classifier_mean_shift, grad_log_prob
from ppap.models.unet import EpsilonModel, build_unet
from ppap.sampling import ddim_step, ddpm_posterior, predict_x0, randn, sample_ddim, sample_ddpm
from ppap.schedules import q_sample, respaced_timesteps

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (4, 1, 8, 8)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def eps_model(alphas_cumprod):
    """A tiny random diffusers UNet as the epsilon model (what is sampled does not matter here)."""
    unet = build_unet(8, 1, [8, 16], 1, [False, False], 4, seed=0).eval()
    return EpsilonModel(unet, alphas_cumprod).eval()


def oracle_eps(x0: torch.Tensor, alphas_cumprod: torch.Tensor):
    """eps(x_t, t) that knows x0: the true noise of any x_t on x0's forward process."""

    def eps_fn(x, t):
        abar = alphas_cumprod[t].to(x.dtype).view(-1, 1, 1, 1)
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()

    return eps_fn


def log_prob(guide, x, t, labels):
    with torch.no_grad():
        return F.log_softmax(guide(x, t), -1).gather(1, labels.view(-1, 1)).flatten()


# ----------------------------------------------------------------------------------- noise ----

def test_randn_same_noise_whatever_the_dtype_of_like():
    shape = (3, 2, 4, 4)
    a32 = randn(shape, gen(7), torch.empty(0, dtype=torch.float32))
    a64 = randn(shape, gen(7), torch.empty(0, dtype=torch.float64))
    a16 = randn(shape, gen(7), torch.empty(0, dtype=torch.bfloat16))
    assert a32.dtype == torch.float32 and a64.dtype == torch.float64 and a16.dtype == torch.bfloat16
    assert torch.equal(a64, a32.double())
    assert torch.equal(a16, a32.bfloat16())
    assert not torch.equal(randn(shape, gen(8), a32), a32)


# ------------------------------------------------------------------------------------ DDIM ----

def test_predict_x0_inverts_q_sample(alphas_cumprod):
    x0 = torch.rand(SHAPE, generator=gen(0)) * 2 - 1
    noise = torch.randn(SHAPE, generator=gen(1))
    t = torch.tensor([0, 250, 600, 900])
    x_t = q_sample(x0, t, alphas_cumprod, noise)
    x0_hat = predict_x0(x_t, noise, alphas_cumprod[t])
    assert torch.allclose(x0_hat, x0, atol=2e-4)


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_step_with_true_noise_stays_on_the_forward_process(alphas_cumprod, clip_x0):
    x0 = torch.rand(SHAPE, generator=gen(0)) * 2 - 1  # inside [-1, 1]: clipping changes nothing
    noise = torch.randn(SHAPE, generator=gen(1))
    t, prev = torch.full((4,), 600), torch.full((4,), 400)
    x_t = q_sample(x0, t, alphas_cumprod, noise)
    x_prev = ddim_step(x_t, noise, alphas_cumprod[t], alphas_cumprod[prev], eta=0.0, clip_x0=clip_x0)
    assert torch.allclose(x_prev, q_sample(x0, prev, alphas_cumprod, noise), atol=1e-5)


def test_sample_ddim_with_oracle_eps_returns_x0(alphas_cumprod):
    x0 = torch.rand(SHAPE, generator=gen(0)) * 2 - 1
    x_T = torch.randn(SHAPE, generator=gen(1))
    out = sample_ddim(oracle_eps(x0, alphas_cumprod), x_T, respaced_timesteps(1000, 10), alphas_cumprod,
                      clip_x0=False)
    assert torch.allclose(out, x0, atol=1e-4)


def test_sample_ddim_eta0_is_deterministic(eps_model, alphas_cumprod):
    x_T = torch.randn(SHAPE, generator=gen(3))
    steps = respaced_timesteps(1000, 5)
    with torch.no_grad():
        a = sample_ddim(eps_model, x_T, steps, alphas_cumprod, generator=gen(0))
        b = sample_ddim(eps_model, x_T, steps, alphas_cumprod, generator=gen(123))
        c = sample_ddim(eps_model, x_T, steps, alphas_cumprod, generator=None)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.isfinite(a).all() and a.shape == SHAPE


def test_sample_ddim_matches_diffusers_ddim_scheduler(eps_model, alphas_cumprod):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    x_T = torch.randn(SHAPE, generator=gen(4))
    with torch.no_grad():
        ours = sample_ddim(eps_model, x_T, respaced_timesteps(1000, 10, "trailing"), alphas_cumprod, clip_x0=False)
        x = x_T
        for t in scheduler.timesteps:
            x = scheduler.step(eps_model(x, t.expand(x.shape[0])), t, x, eta=0.0).prev_sample
    assert torch.allclose(ours, x, atol=1e-4)


def test_ddim_with_eta_needs_noise(alphas_cumprod):
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x, x, alphas_cumprod[[500] * 4], alphas_cumprod[[400] * 4], eta=1.0)


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_eta1_step_is_the_ddpm_posterior(alphas_cumprod, clip_x0):
    x_t = torch.randn(SHAPE, generator=gen(0)) * 1.5
    eps = torch.randn(SHAPE, generator=gen(1))
    noise = torch.randn(SHAPE, generator=gen(2))
    abar_t, abar_prev = alphas_cumprod[[700] * 4], alphas_cumprod[[500] * 4]
    ddim = ddim_step(x_t, eps, abar_t, abar_prev, eta=1.0, noise=noise, clip_x0=clip_x0)
    mean, var = ddpm_posterior(x_t, eps, abar_t, abar_prev, clip_x0=clip_x0)
    assert torch.allclose(ddim, mean + var.sqrt() * noise, atol=1e-5)


def test_sample_ddim_eta1_equals_sample_ddpm(eps_model, alphas_cumprod):
    x_T = torch.randn(SHAPE, generator=gen(5))
    steps = respaced_timesteps(1000, 6)
    with torch.no_grad():
        ddim = sample_ddim(eps_model, x_T, steps, alphas_cumprod, eta=1.0, generator=gen(9))
        ddpm = sample_ddpm(eps_model, x_T, steps, alphas_cumprod, generator=gen(9))
    assert torch.allclose(ddim, ddpm, atol=1e-5)


# ------------------------------------------------------------------------------------ DDPM ----

def test_sample_ddpm_matches_diffusers_ddpm_scheduler(eps_model, alphas_cumprod):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              clip_sample=False, variance_type="fixed_small", timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    x_T = torch.randn(SHAPE, generator=gen(6))
    with torch.no_grad():
        ours = sample_ddpm(eps_model, x_T, respaced_timesteps(1000, 10, "trailing"), alphas_cumprod,
                           generator=gen(11), clip_x0=False)
        x, g = x_T, gen(11)
        for t in scheduler.timesteps:
            x = scheduler.step(eps_model(x, t.expand(x.shape[0])), t, x, generator=g).prev_sample
    # diffusers adds 1e-10 * noise at its last step (variance clamped at 1e-20); we add nothing.
    assert torch.allclose(ours, x, atol=1e-4)


def test_sample_ddpm_depends_on_the_generator_only(eps_model, alphas_cumprod):
    x_T = torch.randn(SHAPE, generator=gen(7))
    steps = respaced_timesteps(1000, 4)
    seen = []
    with torch.no_grad():
        a = sample_ddpm(eps_model, x_T, steps, alphas_cumprod, generator=gen(1), callback=lambda i, x: seen.append(i))
        b = sample_ddpm(eps_model, x_T, steps, alphas_cumprod, generator=gen(1))
        c = sample_ddpm(eps_model, x_T, steps, alphas_cumprod, generator=gen(2))
    assert seen == [0, 1, 2, 3]
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.isfinite(a).all()


# -------------------------------------------------------------------------------- guidance ----

def test_grad_log_prob_matches_the_softmax_formula_per_sample():
    weight = torch.randn((10, 64), generator=gen(0))

    def linear_guide(x, t):
        return x.flatten(1) @ weight.T

    x = torch.randn(SHAPE, generator=gen(1))
    labels = torch.tensor([0, 3, 3, 9])
    grad = grad_log_prob(linear_guide, x, torch.full((4,), 10), labels)
    probs = torch.softmax(linear_guide(x, None), -1)
    expected = (weight[labels] - probs @ weight).view(SHAPE)  # grad log p_y = W_y - sum_k p_k W_k
    assert torch.allclose(grad, expected, atol=1e-5)
    assert not x.requires_grad and grad.dtype == x.dtype


def test_guided_eps_formula(make_guide, alphas_cumprod):
    guide = make_guide(0)
    x = torch.randn(SHAPE, generator=gen(0))
    t = torch.tensor([100, 300, 500, 700])
    labels = torch.tensor([1, 2, 3, 4])
    eps_fn = lambda x, t: 0.1 * x  # noqa: E731
    guided = classifier_guided_eps(eps_fn, guide, labels, alphas_cumprod, scale=2.0)(x, t)
    grad = grad_log_prob(guide, x, t, labels)
    expected = 0.1 * x - (1 - alphas_cumprod[t]).sqrt().float().view(-1, 1, 1, 1) * 2.0 * grad
    assert torch.allclose(guided, expected, atol=1e-6)
    assert grad.abs().max() > 0


def test_guidance_scale_zero_ddim_step_equals_unguided(make_guide, eps_model, alphas_cumprod):
    guide = make_guide(1)
    labels = torch.tensor([0, 1, 2, 3])
    x = torch.randn(SHAPE, generator=gen(0))
    t = torch.full((4,), 500)
    with torch.no_grad():
        eps = eps_model(x, t)
    guided_eps = classifier_guided_eps(eps_model, guide, labels, alphas_cumprod, scale=0.0)
    with torch.no_grad():
        g_eps = guided_eps(x, t)
    assert torch.equal(g_eps, eps)
    abar_t, abar_prev = alphas_cumprod[t], alphas_cumprod[t - 100]
    assert torch.equal(ddim_step(x, g_eps, abar_t, abar_prev), ddim_step(x, eps, abar_t, abar_prev))


def test_guidance_scale_zero_sample_ddim_equals_unguided(make_guide, eps_model, alphas_cumprod):
    guide = make_guide(1)
    labels = torch.tensor([0, 1, 2, 3])
    x_T = torch.randn(SHAPE, generator=gen(2))
    steps = respaced_timesteps(1000, 5)
    guided_eps = classifier_guided_eps(eps_model, guide, labels, alphas_cumprod, scale=0.0)
    with torch.no_grad():
        unguided = sample_ddim(eps_model, x_T, steps, alphas_cumprod)
        guided = sample_ddim(guided_eps, x_T, steps, alphas_cumprod)
        guided_s1 = sample_ddim(classifier_guided_eps(eps_model, guide, labels, alphas_cumprod, 1.0), x_T, steps,
                                alphas_cumprod)
    assert torch.equal(guided, unguided)
    assert not torch.allclose(guided_s1, unguided)  # guidance is not a no-op at scale 1


def test_mean_shift_scale_zero_sample_ddpm_equals_unguided(make_guide, eps_model, alphas_cumprod):
    guide = make_guide(1)
    labels = torch.tensor([5, 6, 7, 8])
    x_T = torch.randn(SHAPE, generator=gen(3))
    steps = respaced_timesteps(1000, 5)
    with torch.no_grad():
        unguided = sample_ddpm(eps_model, x_T, steps, alphas_cumprod, generator=gen(4))
        guided = sample_ddpm(eps_model, x_T, steps, alphas_cumprod, generator=gen(4),
                             mean_shift_fn=classifier_mean_shift(guide, labels, 0.0))
        guided_s1 = sample_ddpm(eps_model, x_T, steps, alphas_cumprod, generator=gen(4),
                                mean_shift_fn=classifier_mean_shift(guide, labels, 1.0))
    assert torch.equal(guided, unguided)
    assert not torch.allclose(guided_s1, unguided)


def test_mean_shift_formula(make_guide):
    guide = make_guide(2)
    x = torch.randn(SHAPE, generator=gen(0))
    t = torch.full((4,), 300)
    labels = torch.tensor([1, 1, 2, 2])
    variance = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(-1, 1, 1, 1)
    shift = classifier_mean_shift(guide, labels, 3.0)(x, t, variance)
    assert torch.allclose(shift, 3.0 * variance * grad_log_prob(guide, x, t, labels))


@pytest.mark.parametrize("t_value, prev_value", [(399, 379), (599, 579)])
def test_one_guided_ddim_step_raises_the_target_log_prob(make_guide, eps_model, alphas_cumprod, t_value, prev_value):
    guide = make_guide(3, scale=1.0)
    n = 16
    x0 = torch.rand((n, 1, 8, 8), generator=gen(0)) * 2 - 1
    x_t = q_sample(x0, torch.full((n,), t_value), alphas_cumprod, torch.randn(x0.shape, generator=gen(1)))
    t = torch.full((n,), t_value)
    labels = torch.arange(n) % 10
    abar_t, abar_prev = alphas_cumprod[t], alphas_cumprod[torch.full((n,), prev_value)]
    with torch.no_grad():
        eps = eps_model(x_t, t)
    guided_eps = classifier_guided_eps(eps_model, guide, labels, alphas_cumprod, scale=1.0)(x_t, t).detach()
    x_unguided = ddim_step(x_t, eps, abar_t, abar_prev, clip_x0=False)
    x_guided = ddim_step(x_t, guided_eps, abar_t, abar_prev, clip_x0=False)
    assert not torch.allclose(x_guided, x_unguided)
    t_prev = torch.full((n,), prev_value)
    gain = log_prob(guide, x_guided, t_prev, labels) - log_prob(guide, x_unguided, t_prev, labels)
    assert (gain > 0).all(), gain
    # And the other classes lose: guidance towards (y + 1) lowers log p(y).
    other = classifier_guided_eps(eps_model, guide, (labels + 1) % 10, alphas_cumprod, scale=1.0)(x_t, t).detach()
    x_other = ddim_step(x_t, other, abar_t, abar_prev, clip_x0=False)
    assert (log_prob(guide, x_other, t_prev, (labels + 1) % 10) > log_prob(guide, x_unguided, t_prev, (labels + 1) % 10)).all()


def test_one_guided_ddpm_step_raises_the_target_log_prob(make_guide, eps_model, alphas_cumprod):
    guide = make_guide(3, scale=1.0)
    n = 16
    x0 = torch.rand((n, 1, 8, 8), generator=gen(0)) * 2 - 1
    x_t = q_sample(x0, torch.full((n,), 399), alphas_cumprod, torch.randn(x0.shape, generator=gen(1)))
    labels = torch.arange(n) % 10
    steps = torch.tensor([399, 379, 359])  # compare after the first step (the last one has no variance)
    shift = classifier_mean_shift(guide, labels, 1.0)
    first = {}
    with torch.no_grad():
        sample_ddpm(eps_model, x_t, steps, alphas_cumprod, generator=gen(2), clip_x0=False,
                    callback=lambda i, x: first.setdefault("unguided", x))
        sample_ddpm(eps_model, x_t, steps, alphas_cumprod, generator=gen(2), clip_x0=False, mean_shift_fn=shift,
                    callback=lambda i, x: first.setdefault("guided", x))
    unguided, guided = first["unguided"], first["guided"]
    assert not torch.allclose(guided, unguided)
    t_prev = torch.full((n,), 379)
    gain = log_prob(guide, guided, t_prev, labels) - log_prob(guide, unguided, t_prev, labels)
    assert (gain > 0).all(), gain


# ----------------------------------------------------------------------- non-finite guides ----

def nan_guide(x, t):
    """A guide whose logits depend on x but whose gradient is NaN for every sample."""
    return torch.sqrt(-x.abs() - 1).flatten(1)[:, :10] * 0 + x.flatten(1)[:, :10]


def test_nan_gradient_raises_non_finite_error():
    x = torch.randn(SHAPE, generator=gen(0))
    with pytest.raises(NonFiniteError, match="250"):
        grad_log_prob(nan_guide, x, torch.full((4,), 250), torch.zeros(4, dtype=torch.long))


def test_nan_gradient_in_one_sample_is_reported_with_its_timestep():
    def one_bad(x, t):
        logits = x.flatten(1)[:, :10]
        return logits * torch.where(t.view(-1, 1) == 7, torch.tensor(float("nan")), torch.tensor(1.0))

    x = torch.randn(SHAPE, generator=gen(0))
    with pytest.raises(NonFiniteError, match=r"\[7\]"):
        grad_log_prob(one_bad, x, torch.tensor([3, 7, 3, 3]), torch.zeros(4, dtype=torch.long))


def test_nan_guide_stops_both_samplers(eps_model, alphas_cumprod):
    labels = torch.zeros(4, dtype=torch.long)
    x_T = torch.randn(SHAPE, generator=gen(0))
    steps = respaced_timesteps(1000, 3)
    with pytest.raises(NonFiniteError):
        sample_ddim(classifier_guided_eps(eps_model, nan_guide, labels, alphas_cumprod, 1.0), x_T, steps,
                    alphas_cumprod)
    with pytest.raises(NonFiniteError):
        sample_ddpm(eps_model, x_T, steps, alphas_cumprod, generator=gen(0),
                    mean_shift_fn=classifier_mean_shift(nan_guide, labels, 1.0))
    # Scale 0 hides nothing: 0 * NaN is still NaN, and it is still caught.
    with pytest.raises(NonFiniteError):
        sample_ddim(classifier_guided_eps(eps_model, nan_guide, labels, alphas_cumprod, 0.0), x_T, steps,
                    alphas_cumprod)


def test_sampling_callback_sees_every_step(eps_model, alphas_cumprod):
    seen = []
    x_T = torch.randn(SHAPE, generator=gen(0))
    with torch.no_grad():
        out = sample_ddim(eps_model, x_T, respaced_timesteps(1000, 4), alphas_cumprod,
                          callback=lambda i, x: seen.append((i, x.clone())))
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert torch.equal(seen[-1][1], out)
    assert math.isfinite(out.abs().max().item())
