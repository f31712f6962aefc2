"""Schedules: alpha-bar read from diffusers, respaced timesteps, and q(x_t | x0)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppap.schedules import alphas_cumprod_from_scheduler, make_ddpm_scheduler, q_sample, respaced_timesteps

pytestmark = pytest.mark.usefixtures("one_thread")


def test_alphas_cumprod_equals_diffusers_ddpm_scheduler():
    from diffusers import DDPMScheduler

    ours = alphas_cumprod_from_scheduler(make_ddpm_scheduler(1000, "linear", 1e-4, 0.02))
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    assert ours.dtype == torch.float64 and ours.shape == (1000,)
    np.testing.assert_array_equal(ours.numpy(), reference.alphas_cumprod.double().numpy())
    # And against the definition, computed independently in float64.
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(ours.numpy(), np.cumprod(1 - betas), rtol=2e-5)
    assert (ours[1:] < ours[:-1]).all() and 0 < ours[-1] < ours[0] < 1


def test_alphas_cumprod_reads_any_beta_schedule():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=200, beta_schedule="squaredcos_cap_v2")
    ours = alphas_cumprod_from_scheduler(scheduler)
    np.testing.assert_array_equal(ours.numpy(), scheduler.alphas_cumprod.double().numpy())
    # Nichol & Dhariwal's cosine schedule: abar_t ~ f(t + 1) / f(0) with f(t) = cos^2(((t/T) + s) / (1 + s) pi/2).
    f = lambda t: math.cos((t / 200 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(ours[:150].numpy(), [f(t + 1) / f(0) for t in range(150)], rtol=1e-4)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("num_train_timesteps", [1000, 50, 7])
def test_respaced_timesteps_structure_for_every_step_count(spacing, num_train_timesteps):
    for n in range(1, num_train_timesteps + 1):
        steps = respaced_timesteps(num_train_timesteps, n, spacing)
        assert steps.dtype == torch.int64
        assert len(steps) == n, (n, steps)
        assert (steps[1:] < steps[:-1]).all(), (n, steps)
        assert steps.min() >= 0 and steps.max() < num_train_timesteps, (n, steps)
        if spacing == "trailing":
            assert steps[0] == num_train_timesteps - 1
        else:
            assert steps[-1] == 0


def test_trailing_never_visits_minus_one():
    # A float arange(T, 0, -T/N) yields N+1 values for these N, the last one rounding to t = -1.
    for n in (61, 103, 121, 122):
        steps = respaced_timesteps(1000, n, "trailing")
        assert len(steps) == n and steps.min() >= 0


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("n", [1, 10, 25, 50, 61, 250, 1000])
def test_respaced_timesteps_match_diffusers_ddim(spacing, n):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    scheduler.set_timesteps(n)
    ours = respaced_timesteps(1000, n, spacing)
    # diffusers keeps an extra t = -1 for some N (e.g. 61); every other step must agree.
    np.testing.assert_array_equal(ours.numpy(), scheduler.timesteps.numpy()[:n])


def test_respaced_timesteps_known_values():
    assert respaced_timesteps(1000, 5, "trailing").tolist() == [999, 799, 599, 399, 199]
    assert respaced_timesteps(1000, 5, "leading").tolist() == [800, 600, 400, 200, 0]
    assert respaced_timesteps(10, 10, "trailing").tolist() == list(range(9, -1, -1))


@pytest.mark.parametrize("bad", [(1000, 0, "trailing"), (1000, 1001, "trailing"), (1000, 10, "linspace")])
def test_respaced_timesteps_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        respaced_timesteps(*bad)


@pytest.mark.parametrize("t_value", [0, 100, 500, 999])
def test_q_sample_statistics(alphas_cumprod, t_value):
    n = 20000
    gen = torch.Generator().manual_seed(t_value)
    x0 = torch.linspace(-1, 1, 6).view(1, 1, 2, 3)  # six pixels with different means
    noise = torch.randn((n, 1, 2, 3), generator=gen, dtype=torch.float64)
    t = torch.full((n,), t_value, dtype=torch.long)
    x_t = q_sample(x0.double().expand(n, -1, -1, -1), t, alphas_cumprod, noise)
    abar = alphas_cumprod[t_value].item()
    sd = math.sqrt(1 - abar)
    mean, var = x_t.mean(0), x_t.var(0)
    # 5-sigma bounds: the standard error of the mean is sd / sqrt(n), of the variance ~ var sqrt(2 / n).
    assert torch.allclose(mean, math.sqrt(abar) * x0[0].double(), atol=5 * sd / math.sqrt(n))
    assert torch.allclose(var, torch.full_like(var, 1 - abar), atol=5 * (1 - abar) * math.sqrt(2 / n))


def test_q_sample_uses_each_samples_own_timestep(alphas_cumprod):
    x0 = torch.full((3, 1, 2, 2), 0.5)
    noise = torch.randn((3, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 400, 999])
    x_t = q_sample(x0, t, alphas_cumprod, noise)
    for i in range(3):
        abar = alphas_cumprod[t[i]].float()
        assert torch.allclose(x_t[i], abar.sqrt() * x0[i] + (1 - abar).sqrt() * noise[i], atol=1e-6)
    assert x_t.dtype == x0.dtype


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_load_alphas_cumprod_without_diffusers_matches_diffusers(tmp_path, beta_schedule):
    from diffusers import DDPMScheduler

    from ppap.schedules import alphas_cumprod_from_scheduler, load_alphas_cumprod

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, beta_start=1e-4, beta_end=0.02)
    scheduler.save_pretrained(tmp_path / "scheduler")
    expected = alphas_cumprod_from_scheduler(scheduler)
    for directory in (tmp_path, tmp_path / "scheduler"):  # pipeline dir or scheduler dir
        torch.testing.assert_close(load_alphas_cumprod(directory), expected, rtol=1e-6, atol=1e-7)


def test_load_alphas_cumprod_missing_config_names_the_directory(tmp_path):
    from ppap.schedules import load_alphas_cumprod

    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_alphas_cumprod(tmp_path)
