"""Clipping and guidance in guided-diffusion's order (Dhariwal & Nichol, 2021, and their code).

Each test writes the update out from the equations, independently of ``ppap``:

  DDIM (``p_mean_variance`` -> ``condition_score`` -> ``ddim_sample``, eta = 0):
      x0     = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t),  clipped to [-1, 1]
      eps'   = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)
      eps^   = eps' - sqrt(1 - a_t) * s * grad_x log p(y | x_t)
      x0^    = (x_t - sqrt(1 - a_t) eps^) / sqrt(a_t)             (not clipped again)
      x_prev = sqrt(a_prev) x0^ + sqrt(1 - a_prev) eps^

  DDPM (``p_mean_variance`` -> ``condition_mean`` -> ``p_sample``):
      x0     = clip((x_t - sqrt(1 - a_t) eps) / sqrt(a_t))
      beta   = 1 - a_t / a_prev
      mean   = sqrt(a_prev) beta / (1 - a_t) x0 + sqrt(1 - beta) (1 - a_prev) / (1 - a_t) x_t
      Sigma  = beta (1 - a_prev) / (1 - a_t)
      x_prev = mean + s Sigma grad + sqrt(Sigma) z
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ppap.guidance import guided_model
from ppap.sampling import clipped_eps, randn, sample_ddim, sample_ddpm

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (6, 1, 8, 8)
T_NOW, T_PREV = 300, 260


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def toy_eps(x, t):
    """A denoiser whose x0 leaves [-1, 1] by a wide margin at t = 300 (so clipping matters)."""
    return 0.05 * x + 0.01 * t.view(-1, 1, 1, 1).float() / 1000


def reference_grad(guide, x, t, labels):
    """grad_x log softmax(guide(x, t))[y], summed over the batch (each sample's own gradient)."""
    x = x.detach().clone().requires_grad_(True)
    log_p = F.log_softmax(guide(x, t), -1)[torch.arange(len(labels)), labels].sum()
    return torch.autograd.grad(log_p, x)[0]


def first_step(sampler_fn, *args, **kwargs):
    """The state after the sampler's first step t -> prev."""
    seen = {}
    with torch.no_grad():
        sampler_fn(*args, callback=lambda i, x: seen.setdefault(i, x.clone()), **kwargs)
    return seen[0]


@pytest.fixture
def case(make_guide, alphas_cumprod):
    abar = alphas_cumprod.float()
    x = 2.5 * torch.randn(SHAPE, generator=gen(0))
    t = torch.full((SHAPE[0],), T_NOW)
    labels = torch.arange(SHAPE[0]) % 10
    return dict(guide=make_guide(3, scale=1.0), abar=abar, x=x, t=t, labels=labels,
                a_t=abar[T_NOW], a_prev=abar[T_PREV], timesteps=torch.tensor([T_NOW, T_PREV, 100]))


def check_clipping_is_active(case):
    x0 = (case["x"] - (1 - case["a_t"]).sqrt() * toy_eps(case["x"], case["t"])) / case["a_t"].sqrt()
    assert (x0.abs() > 1).float().mean() > 0.5  # most pixels are clipped: the order matters


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_guided_ddim_step_in_guided_diffusion_order_matches_the_formula(case, scale):
    check_clipping_is_active(case)
    x, t, a_t, a_prev = case["x"], case["t"], case["a_t"], case["a_prev"]
    grad = reference_grad(case["guide"], x, t, case["labels"])
    x0 = ((x - (1 - a_t).sqrt() * toy_eps(x, t)) / a_t.sqrt()).clamp(-1, 1)
    eps_clipped = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    eps_hat = eps_clipped - (1 - a_t).sqrt() * scale * grad
    x0_hat = (x - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()
    expected = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps_hat
    assert x0_hat.abs().max() > 1  # guidance pushed beyond [-1, 1] and was not clipped away

    model = guided_model(toy_eps, case["abar"], "ddim", "guided_diffusion", case["guide"], case["labels"], scale)
    got = first_step(sample_ddim, model.eps_fn, x, case["timesteps"], case["abar"], clip_x0=model.clip_x0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_guided_ddim_step_clipped_after_guidance_matches_the_formula(case, scale):
    x, t, a_t, a_prev = case["x"], case["t"], case["a_t"], case["a_prev"]
    grad = reference_grad(case["guide"], x, t, case["labels"])
    eps_hat = toy_eps(x, t) - (1 - a_t).sqrt() * scale * grad
    x0 = ((x - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()).clamp(-1, 1)
    eps_again = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps_again

    model = guided_model(toy_eps, case["abar"], "ddim", "after_guidance", case["guide"], case["labels"], scale)
    got = first_step(sample_ddim, model.eps_fn, x, case["timesteps"], case["abar"], clip_x0=model.clip_x0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    ours = guided_model(toy_eps, case["abar"], "ddim", "guided_diffusion", case["guide"], case["labels"], scale)
    other = first_step(sample_ddim, ours.eps_fn, x, case["timesteps"], case["abar"], clip_x0=ours.clip_x0)
    assert (other - got).abs().max() > 1e-2  # the two orders really differ here


@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_guided_ddpm_step_in_guided_diffusion_order_matches_the_formula(case, scale):
    check_clipping_is_active(case)
    x, t, a_t, a_prev = case["x"], case["t"], case["a_t"], case["a_prev"]
    grad = reference_grad(case["guide"], x, t, case["labels"])
    x0 = ((x - (1 - a_t).sqrt() * toy_eps(x, t)) / a_t.sqrt()).clamp(-1, 1)
    beta = 1 - a_t / a_prev
    mean = a_prev.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t) * x
    sigma = beta * (1 - a_prev) / (1 - a_t)
    noise = randn(SHAPE, gen(5), x)  # the sampler's first draw from the same generator
    expected = mean + scale * sigma * grad + sigma.sqrt() * noise

    model = guided_model(toy_eps, case["abar"], "ddpm", "guided_diffusion", case["guide"], case["labels"], scale)
    got = first_step(sample_ddpm, model.eps_fn, x, case["timesteps"], case["abar"], generator=gen(5),
                     clip_x0=model.clip_x0, mean_shift_fn=model.mean_shift_fn)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler, clip", [("ddim", "guided_diffusion"), ("ddim", "after_guidance"),
                                           ("ddim", "none"), ("ddpm", "guided_diffusion"), ("ddpm", "none")])
def test_scale_zero_equals_the_unguided_sample_in_every_order(case, sampler, clip):
    x_T = torch.randn(SHAPE, generator=gen(1))
    steps = torch.tensor([960, 720, 480, 240, 0])
    run = sample_ddim if sampler == "ddim" else sample_ddpm
    outputs = []
    for guide in (None, case["guide"]):
        model = guided_model(toy_eps, case["abar"], sampler, clip, guide, case["labels"] if guide else None, 0.0)
        extra = dict(mean_shift_fn=model.mean_shift_fn, generator=gen(2)) if sampler == "ddpm" else {}
        with torch.no_grad():
            outputs.append(run(model.eps_fn, x_T, steps, case["abar"], clip_x0=model.clip_x0, **extra))
    assert torch.equal(outputs[0], outputs[1])


def test_unguided_clipping_is_the_same_step_in_either_place(case):
    """Without guidance, clipping inside the denoiser (guided-diffusion's order) and in the sampler
    are the same update, up to float rounding: the unguided cell is shared by both orders."""
    x_T = torch.randn(SHAPE, generator=gen(1))
    steps = torch.tensor([960, 720, 480, 240, 0])
    with torch.no_grad():
        in_denoiser = sample_ddim(clipped_eps(toy_eps, case["abar"]), x_T, steps, case["abar"], clip_x0=False)
        in_sampler = sample_ddim(toy_eps, x_T, steps, case["abar"], clip_x0=True)
    torch.testing.assert_close(in_denoiser, in_sampler, rtol=1e-5, atol=1e-5)


def test_ddpm_after_guidance_is_guided_diffusions_order(case):
    """DDPM guidance shifts the mean of the clipped posterior: no clip can come after it."""
    after = guided_model(toy_eps, case["abar"], "ddpm", "after_guidance", case["guide"], case["labels"], 1.0)
    assert after.clip_x0 and after.eps_fn is toy_eps
