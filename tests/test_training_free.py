"""Training-free guidance (DPS, FreeDoM, MPGD, TFG) and the pass counters, on tiny models.

The properties: scale 0 is exactly the unguided sample; each gradient matches finite differences;
x0-guidance through the denoiser depends on the denoiser, MPGD's gradient never reaches it; the
counters say exactly how many passes a known number of steps, repeats and iterations makes.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import merged_config, seeded_
from ppap.compute import PassCounter, SamplingCost, cost_record
from ppap.generate import Guidance, generate_samples
from ppap.guidance import ClassifierFreeGuidance, ClassifierGuidance, TrainingFreeGuidance
from ppap.guidance.training_free import (
    GuideOnEstimate,
    TrainingFreeSettings,
    mean_guidance_gradient,
    sample_ddim_training_free,
    schedule_weights,
    smoothed_log_prob,
    variance_guidance_gradient,
)
from ppap.sampling import Denoiser, predict_x0
from ppap.schedules import respaced_timesteps
from ppap.specs import SamplingSpec
from ppap.study import comparison, grammar

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)
METHODS = {
    "dps": TrainingFreeSettings(variance=1.0, mean=0.0),
    "freedom": TrainingFreeSettings(variance=1.0, mean=0.0, recurrence=3),
    "mpgd": TrainingFreeSettings(variance=0.0, mean=1.0, iterations=2),
    "tfg": TrainingFreeSettings(variance=1.0, mean=0.5, recurrence=2, iterations=2, smoothing=0.2,
                                smoothing_samples=2, schedule="increase"),
}


class TinyDenoiser(nn.Module):
    """eps(x, t): two convolutions and a timestep feature; smooth (no clipping inside)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1)
        seeded_(self, seed, 0.3)

    def forward(self, x, t):
        h = torch.tanh(self.conv1(x) + (t.view(-1, 1, 1, 1).to(x.dtype) / 1000))
        return self.conv2(h)


def finite_difference(fn, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of a scalar function of x (float64), coordinate by coordinate."""
    grad = torch.zeros_like(x)
    flat = grad.view(-1)
    for i in range(x.numel()):
        step = torch.zeros_like(x).view(-1)
        step[i] = eps
        step = step.view_as(x)
        flat[i] = (fn(x + step) - fn(x - step)) / (2 * eps)
    return grad


@pytest.fixture
def tiny(make_guide, alphas_cumprod):
    denoiser = TinyDenoiser().double().requires_grad_(False)
    guide = make_guide(seed=3).double()
    labels = torch.tensor([1, 4])
    return denoiser, guide, labels, alphas_cumprod.double()


def test_variance_gradient_matches_finite_differences(tiny):
    denoiser, guide, labels, abar = tiny
    x = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((2,), 300)
    noise = 0.1 * torch.randn((2, 2, *SHAPE), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for smoothing in (None, noise):
        grad, _ = variance_guidance_gradient(denoiser, guide, x, t, labels, abar[t], clip_x0=False, noise=smoothing)

        def log_p(x_):
            x0 = predict_x0(x_, denoiser(x_, t), abar[t])
            return smoothed_log_prob(guide, x0, labels, smoothing).sum()

        assert torch.allclose(grad, finite_difference(log_p, x), atol=1e-6, rtol=1e-5)


def test_mean_gradient_matches_finite_differences(tiny):
    _, guide, labels, _ = tiny
    x0 = 0.5 * torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grad = mean_guidance_gradient(guide, x0, labels)
    expected = finite_difference(lambda x_: smoothed_log_prob(guide, x_, labels).sum(), x0)
    assert torch.allclose(grad, expected, atol=1e-6, rtol=1e-5)


def test_smoothed_log_prob_is_the_log_of_the_mean_probability(tiny):
    _, guide, labels, _ = tiny
    x0 = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    noise = torch.randn((3, 2, *SHAPE), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t0 = torch.zeros(2, dtype=torch.long)
    probs = torch.stack([guide(x0 + n, t0).softmax(-1)[torch.arange(2), labels] for n in noise])
    assert torch.allclose(smoothed_log_prob(guide, x0, labels, noise), probs.mean(0).log())
    assert torch.allclose(smoothed_log_prob(guide, x0, labels), guide(x0, t0).log_softmax(-1)[torch.arange(2), labels])


def test_x0_guidance_depends_on_the_denoiser_and_mpgd_never_reaches_it(tiny):
    denoiser, guide, labels, abar = tiny
    x = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t = torch.full((2,), 500)
    other = TinyDenoiser(seed=9).double().requires_grad_(False)
    grad_a, _ = variance_guidance_gradient(denoiser, guide, x, t, labels, abar[t])
    grad_b, _ = variance_guidance_gradient(other, guide, x, t, labels, abar[t])
    assert not torch.allclose(grad_a, grad_b)
    # MPGD sampling with a denoiser whose weights would collect gradients: none arrives.
    learning = TinyDenoiser().double()  # requires_grad on every weight
    counter = PassCounter()
    sample_ddim_training_free(counter.wrap(learning), guide, labels, x, respaced_timesteps(1000, 4), abar,
                              METHODS["mpgd"], scale=1.0)
    assert all(p.grad is None for p in learning.parameters())
    assert counter.backward == 0 and counter.forward == 4 * 2


@pytest.mark.parametrize("method", sorted(METHODS))
def test_scale_zero_is_the_unguided_sample(method, make_guide, alphas_cumprod):
    denoiser, guide = TinyDenoiser().requires_grad_(False), make_guide(seed=1)
    model, spec = Denoiser(denoiser, alphas_cumprod, SHAPE), SamplingSpec(steps=5, batch_size=4)
    guided_by = Guidance(model, TrainingFreeGuidance(guide, METHODS[method]))
    unguided, _ = generate_samples(Guidance(model), spec, 6, 3, show_progress=False)
    at_zero, labels = generate_samples(guided_by, spec, 6, 3, show_progress=False)
    guided, _ = generate_samples(guided_by, replace(spec, scale=2.0), 6, 3, show_progress=False)
    assert (at_zero == unguided).all()
    assert labels is not None and not (guided == unguided).all()


def expected_passes(settings: TrainingFreeSettings, steps: int) -> dict:
    """Per sample: each repeat of each step runs the denoiser once; variance guidance backpropagates
    through it and the K-sample smoothed guide; each mean-guidance iteration runs the guide K times."""
    repeats = steps * settings.recurrence
    k = settings.smoothing_samples
    variance = settings.variance > 0
    guide = repeats * (k * variance + k * settings.iterations * (settings.mean > 0))
    return dict(denoiser_forward=repeats, denoiser_backward=repeats * variance, guide_forward=guide,
                guide_backward=guide)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_pass_counters_are_exact(method, make_guide, alphas_cumprod):
    settings = METHODS[method]
    cost = SamplingCost()
    guidance = Guidance(Denoiser(TinyDenoiser().requires_grad_(False), alphas_cumprod, SHAPE),
                        TrainingFreeGuidance(make_guide(seed=2), settings))
    generate_samples(guidance, SamplingSpec(steps=4, scale=1.0, batch_size=3), 5, 0, cost=cost, show_progress=False)
    assert cost.samples == 5
    assert cost.per_sample() == expected_passes(settings, 4)


def test_pass_counters_of_classifier_and_classifier_free_guidance(make_guide, alphas_cumprod):
    spec = SamplingSpec(steps=6, scale=1.0, batch_size=4)
    cost = SamplingCost()
    guidance = Guidance(Denoiser(TinyDenoiser().requires_grad_(False), alphas_cumprod, SHAPE),
                        ClassifierGuidance(make_guide()))
    generate_samples(guidance, spec, 4, 0, cost=cost, show_progress=False)
    assert cost.per_sample() == dict(denoiser_forward=6, denoiser_backward=0, guide_forward=6, guide_backward=6)

    class Conditional(nn.Module):
        def forward(self, x, t, y):
            return 0.1 * x + 0.01 * y.view(-1, 1, 1, 1).to(x.dtype)

    for scale, forwards in ((0.0, 6), (2.0, 12)):
        cost = SamplingCost()
        guidance = Guidance(Denoiser(Conditional(), alphas_cumprod, SHAPE), ClassifierFreeGuidance(10), num_classes=10)
        generate_samples(guidance, replace(spec, scale=scale), 4, 0, cost=cost, show_progress=False)
        assert cost.per_sample() == dict(denoiser_forward=forwards, denoiser_backward=0, guide_forward=0,
                                         guide_backward=0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_time_travel_repeats_the_step_with_one_renoising_between(sampler, make_guide, alphas_cumprod):
    """with_recurrence(step, 2) is step, x re-noised back to t by q(x_t | x_prev) with the
    generator's next draw, step again; classifier guidance with _rec r makes r times the passes, and
    at scale 0 it is unguided sampling with the same time travel."""
    from ppap.sampling import StepContext, per_sample, randn, sampler_step, with_recurrence

    denoiser = TinyDenoiser().requires_grad_(False)
    step = sampler_step(sampler, denoiser, eta=1.0)
    assert with_recurrence(step, 1) is step
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 600)
    context = StepContext(2, t, alphas_cumprod[t], alphas_cumprod[t - 200], False)
    got = with_recurrence(step, 2)(x, context, torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    first = step(x, context, generator)
    alpha = per_sample(context.abar_t / context.abar_prev, x)
    again = alpha.sqrt() * first + (1 - alpha).sqrt() * randn(x.shape, generator, x)
    assert torch.equal(got, step(again, context, generator))

    model = Denoiser(denoiser, alphas_cumprod, SHAPE)
    spec = SamplingSpec(sampler=sampler, steps=4, scale=1.0, recurrence=3, batch_size=4)
    cost = SamplingCost()
    generate_samples(Guidance(model, ClassifierGuidance(make_guide())), spec, 4, 0, cost=cost, show_progress=False)
    assert cost.per_sample() == dict(denoiser_forward=12, denoiser_backward=0, guide_forward=12, guide_backward=12)
    unguided, _ = generate_samples(Guidance(model), spec, 4, 1, show_progress=False)
    at_zero, _ = generate_samples(Guidance(model, ClassifierGuidance(make_guide())), replace(spec, scale=0.0), 4, 1,
                                  show_progress=False)
    once, _ = generate_samples(Guidance(model), replace(spec, recurrence=1), 4, 1, show_progress=False)
    assert (at_zero == unguided).all() and not (once == unguided).all()


def test_freedoms_recurrence_is_the_samplers_time_travel_around_dps(tiny):
    """One mechanism: TFG's recurrence (FreeDoM = DPS's step repeated) is with_recurrence of the
    unrepeated step, draw for draw; a training-free guide refuses the sampling's recurrence."""
    from ppap.guidance.training_free import training_free_step
    from ppap.sampling import sample_loop, with_recurrence

    denoiser, guide, labels, alphas_cumprod = tiny
    timesteps = respaced_timesteps(1000, 5, "ddim")
    weights = schedule_weights(alphas_cumprod, timesteps, "constant")
    x_T = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    freedom = training_free_step(denoiser, guide, labels, weights, METHODS["freedom"], 2.0, eta=0.5)
    dps = with_recurrence(training_free_step(denoiser, guide, labels, weights, METHODS["dps"], 2.0, eta=0.5), 3)
    a = sample_loop(freedom, x_T, timesteps, alphas_cumprod, torch.Generator().manual_seed(2))
    b = sample_loop(dps, x_T, timesteps, alphas_cumprod, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="its own settings' recurrence"):
        TrainingFreeGuidance(guide, METHODS["dps"]).step(denoiser, labels, SamplingSpec(recurrence=2),
                                                         alphas_cumprod, timesteps)


def test_cost_record_per_sample_and_machine():
    a, b = SamplingCost(), SamplingCost()
    a.denoiser.forward, a.samples = 50, 2
    b.denoiser.forward, b.samples = 75, 3
    record = cost_record([(0, a, 1.0), (1, b, 2.0)], threads=1, device="cpu")
    assert record["per_sample"]["denoiser_forward"] == 25
    assert record["per_sample"]["wall_s"] == pytest.approx(3.0 / 5)
    assert record["samples"] == 5 and record["machine"]


def test_schedule_weights_have_mean_one(alphas_cumprod):
    timesteps = respaced_timesteps(1000, 10)
    for schedule in ("constant", "increase", "decrease"):
        weights = schedule_weights(alphas_cumprod, timesteps, schedule)
        assert weights.mean().item() == pytest.approx(1.0, abs=1e-6)
    increase = schedule_weights(alphas_cumprod, timesteps, "increase")
    assert increase[-1] > increase[0]  # alpha_t of the strided step grows as t falls


def test_training_free_names():
    assert grammar.guide_kind("trainingfree_freedom_rec4") == "training_free"
    assert grammar.guide_kind("classifier_free") == "classifier_free"
    assert grammar.n_experts("classifier_free") == 0 and grammar.n_experts("trainingfree_dps") == 1
    config = merged_config()
    # a suffix equal to the config's value is dropped; the method's fixed terms cannot be changed
    freedom = config["training_free"]["freedom"]["recurrence"]
    assert grammar.canonical_guide(f"trainingfree_freedom_rec{freedom}", config) == "trainingfree_freedom"
    assert grammar.canonical_guide(f"trainingfree_freedom_rec{freedom + 1}", config) == \
        f"trainingfree_freedom_rec{freedom + 1}"
    settings = grammar.training_free_settings("trainingfree_mpgd_it3", config)
    assert settings["iterations"] == 3 and settings["variance"] == 0 and settings["mean"] == 1
    with pytest.raises(grammar.GrammarError, match="does not apply to dps"):
        grammar.parse_training_free("trainingfree_dps_rec2")
    with pytest.raises(grammar.GrammarError, match="ddim sampler"):
        grammar.canonical_sampling("trainingfree_dps", "ddpm50_s1", config)
    assert grammar.canonical_sampling("classifier_free", "ddim25_s2_routelower", config) == "ddim25_s2"
    # a method's own step: _formpaper (the TFG form is the default and leaves no rule); ug is its own
    assert grammar.canonical_guide("trainingfree_dps_formtfg", config) == "trainingfree_dps"
    assert "rule" not in grammar.training_free_settings("trainingfree_dps", config)
    assert grammar.training_free_settings("trainingfree_dps_formpaper", config)["rule"] == "dps"
    ug = grammar.training_free_settings("trainingfree_ug_mu0.01_rec2_it3", config)
    assert (ug["rule"], ug["mean"], ug["recurrence"], ug["iterations"]) == ("ug", 0.01, 2, 3)
    assert TrainingFreeSettings(**ug).rule == "ug"
    with pytest.raises(grammar.GrammarError, match="does not apply to tfg"):
        grammar.parse_training_free("trainingfree_tfg_formpaper")


def test_choose_on_validation_takes_the_most_accurate_cell_within_the_fid_bound():
    cells = pd.DataFrame([
        dict(method="unguided", guide="none", scale=0.0, fid=4.0, accuracy=0.1),
        dict(method="a", guide="g1", scale=1.0, fid=5.0, accuracy=0.6),
        dict(method="a", guide="g1", scale=2.0, fid=5.9, accuracy=0.7),
        dict(method="a", guide="g2", scale=1.0, fid=9.0, accuracy=0.9),   # too far from unguided quality
        dict(method="b", guide="h", scale=1.0, fid=12.0, accuracy=0.9),   # none qualifies: lowest FID
        dict(method="b", guide="h", scale=2.0, fid=20.0, accuracy=0.95),
    ])
    chosen = comparison.chosen_settings(comparison.choose_on_validation(cells, max_fid_ratio=1.5))
    assert chosen == {"a": dict(guide="g1", scale=2.0), "b": dict(guide="h", scale=1.0)}


def test_a_choice_says_whether_it_sits_on_its_grids_edge_and_beats_the_runner_up_by_more_than_the_spread():
    cells = pd.DataFrame([
        dict(method="unguided", guide="none", scale=0.0, fid=4.0, accuracy=0.1, accuracy_sd=0.0),
        dict(method="a", guide="g", scale=1.0, fid=5.0, accuracy=0.60, accuracy_sd=0.01),
        dict(method="a", guide="g", scale=2.0, fid=5.5, accuracy=0.70, accuracy_sd=0.01),
        dict(method="a", guide="g", scale=4.0, fid=5.9, accuracy=0.71, accuracy_sd=0.02),  # top of the grid
        dict(method="b", guide="h", scale=1.0, fid=5.0, accuracy=0.50, accuracy_sd=0.01),
        dict(method="b", guide="h", scale=2.0, fid=5.0, accuracy=0.60, accuracy_sd=0.01),  # inside, clear
        dict(method="b", guide="h", scale=4.0, fid=9.0, accuracy=0.90, accuracy_sd=0.01),  # beyond the bound
    ])
    marked = comparison.choose_on_validation(cells, max_fid_ratio=1.5).set_index(["method", "scale"])
    a, b = marked.loc[("a", 4.0)], marked.loc[("b", 2.0)]
    assert a["chosen"] and a["at_edge"] and a["margin"] == pytest.approx(0.01) and a["margin_over_spread"] is False
    assert b["chosen"] and not b["at_edge"] and b["margin"] == pytest.approx(0.10) and b["margin_over_spread"] is True
    one_seed = comparison.choose_on_validation(cells.drop(columns="accuracy_sd"), 1.5).set_index(["method", "scale"])
    assert one_seed.loc[("b", 2.0), "margin_over_spread"] is None  # no spread to compare with
    # tie_break fid: a's 0.70 is within the spread (0.022) of 0.71, at a lower FID; b's clear win stays
    by_fid = comparison.chosen_settings(comparison.choose_on_validation(cells, 1.5, tie_break="fid"))
    assert by_fid == {"a": dict(guide="g", scale=2.0), "b": dict(guide="h", scale=2.0)}
    assert comparison.chosen_settings(comparison.choose_on_validation(cells.drop(columns="accuracy_sd"), 1.5, "fid")) \
        == comparison.chosen_settings(comparison.choose_on_validation(cells, 1.5))  # no sd: the plain rule
    with pytest.raises(ValueError, match="tie_break"):
        comparison.choose_on_validation(cells, 1.5, tie_break="recall")


def test_the_binomial_spread_does_not_vanish_at_saturated_accuracy():
    # Agresti-Coull: k correct of n, p = (k + 2) / (n + 4); one seed's sd sqrt(p (1 - p) / (m + 4))
    p = (500 + 2) / (500 + 4)
    assert comparison.binomial_sd(1.0, 250, seeds=2) == pytest.approx(math.sqrt(p * (1 - p) / 254))
    assert comparison.binomial_sd(0.5, 100) == pytest.approx(math.sqrt(0.25 / 104))
    assert math.isnan(comparison.binomial_sd(float("nan"), 250))
    # two seeds at accuracy 1.000 and 0.996 both have seed sd 0: the seed rule calls 1.000 a clear win
    # at a worse FID; the binomial spread (0.004 each) ties them and the lower FID wins
    cells = pd.DataFrame([
        dict(method="unguided", guide="none", scale=0.0, fid=4.0, accuracy=float("nan"), accuracy_sd=0.0,
             seeds=2, samples_per_seed=250),
        dict(method="a", guide="g", scale=4.0, fid=4.5, accuracy=0.996, accuracy_sd=0.0, seeds=2, samples_per_seed=250),
        dict(method="a", guide="g", scale=8.0, fid=5.5, accuracy=1.000, accuracy_sd=0.0, seeds=2, samples_per_seed=250),
        dict(method="a", guide="g", scale=16.0, fid=5.9, accuracy=0.900, accuracy_sd=0.05, seeds=2,
             samples_per_seed=250),
    ])
    by_seeds = comparison.choose_on_validation(cells, 1.5, tie_break="fid").set_index("scale")
    assert by_seeds.loc[8.0, "chosen"] and by_seeds.loc[8.0, "margin_over_spread"] is True
    binomial = comparison.choose_on_validation(cells, 1.5, tie_break="fid", spread="binomial").set_index("scale")
    assert binomial.loc[4.0, "chosen"] and binomial.loc[4.0, "margin_over_spread"] is False
    assert binomial.loc[16.0, "accuracy_spread"] == pytest.approx(0.05)  # the seeds' sd where it is larger
    with pytest.raises(ValueError, match="spread"):
        comparison.choose_on_validation(cells, 1.5, spread="poisson")
    budget = comparison.tuning_budget(cells).set_index("method")
    assert budget.loc["a"].to_dict() == dict(variants=1, scales=3, cells=3, samples=3 * 2 * 250)
    assert "unguided" not in budget.index


def test_a_validation_cell_over_several_seeds_records_their_mean_and_sd():
    compute = {"per_sample": {"wall_s": 0.5}}
    one = comparison.validation_record("g", "ddim25_s1", [dict(seed=7, fid=2.0, precision=0.8, recall=0.9,
                                                                accuracy=0.5)], compute)
    assert one["seed"] == 7 and "seed" not in one["metrics"] and "metrics_sd" not in one
    row = comparison.validation_row(one)
    assert row["accuracy"] == 0.5 and row["seeds"] == 1 and math.isnan(row["accuracy_sd"])
    two = comparison.validation_record("g", "ddim25_s1", [dict(seed=7, fid=2.0, precision=0.8, recall=0.9, accuracy=0.5),
                                                          dict(seed=8, fid=4.0, precision=0.6, recall=0.7, accuracy=0.7)],
                                       compute)
    row = comparison.validation_row(two)
    assert two["seeds"] == [7, 8] and row["seeds"] == 2
    assert row["fid"] == pytest.approx(3.0) and row["accuracy"] == pytest.approx(0.6)
    assert row["accuracy_sd"] == pytest.approx(0.1414, abs=1e-4)  # sample sd of 0.5 and 0.7


def test_break_even():
    assert comparison.break_even_samples(100.0, 0.01, 0.03) == pytest.approx(5000)
    assert math.isinf(comparison.break_even_samples(100.0, 0.03, 0.01))


def test_accuracy_at_a_fixed_fid_is_read_off_the_sweep_between_neighbouring_scales():
    sweep = pd.DataFrame(dict(scale=[1.0, 2.0, 4.0], fid=[3.0, 5.0, 9.0], accuracy=[0.5, 0.8, 0.9]))
    # bound 4: cell s=1 is under it; FID crosses 4 halfway between s=1 and s=2: accuracy 0.65
    assert comparison.accuracy_at_fid(sweep, 4.0) == pytest.approx((0.65, 0.5))
    assert comparison.accuracy_at_fid(sweep, 7.0) == pytest.approx((0.85, 0.8))
    assert comparison.accuracy_at_fid(sweep, 10.0) == pytest.approx((0.9, 0.9))
    assert all(math.isnan(v) for v in comparison.accuracy_at_fid(sweep, 2.0))
    # FID falling with the scale (a guide that fixes the model's errors) crosses the other way
    falling = pd.DataFrame(dict(scale=[1.0, 2.0], fid=[6.0, 2.0], accuracy=[0.4, 0.8]))
    assert comparison.accuracy_at_fid(falling, 4.0) == pytest.approx((0.8, 0.8))


def _fair_rows():
    def row(method, guide, family, sampling, wall_s, one_time_s, fid=3.0):
        return dict(method=method, guide=guide, family=family, scale=1.0, sampling=sampling, fid=fid, accuracy=0.5,
                    denoiser_forward=25, denoiser_backward=0, guide_forward=25, guide_backward=25, wall_s=wall_s,
                    one_time_s=one_time_s)

    rows = pd.DataFrame([
        row("unguided", "none", "unguided", "ddim25_s0", 0.004, 0.0, fid=4.0),
        row("ppap", "datafree_lora4_n5", "data-free lora4 x5", "ddim25_s8", 0.007, 100.0),
        row("ppap_rec4", "datafree_lora4_n5", "data-free lora4 x5", "ddim25_s8_rec4", 0.025, 100.0),
        row("ppap_eta1", "datafree_lora4_n5", "data-free lora4 x5", "ddim25_s8_eta1", 0.007, 100.0),
        row("freedom", "trainingfree_freedom_rec4", "training-free (on x0_hat)", "ddim25_s0.5", 0.070, 0.0),
    ])
    cells = {  # method -> (fid, accuracy) over scales 1, 2
        "ppap": [(3.0, 0.90), (5.0, 0.99)], "ppap_rec4": [(2.0, 0.95), (3.0, 1.00)],
        "ppap_eta1": [(3.5, 0.80), (4.5, 0.90)], "freedom": [(2.0, 0.96), (3.0, 0.97)]}
    sweeps = pd.DataFrame([dict(method=m, scale=s, fid=f, accuracy=a) for m, points in cells.items()
                           for s, (f, a) in zip((1.0, 2.0), points)])
    return rows, sweeps


def test_the_fixed_fid_table_groups_rows_that_differ_only_in_compute_and_finds_the_break_even():
    rows, sweeps = _fair_rows()
    table = comparison.fixed_fid_table(rows, sweeps, unguided_fid=4.0, bound_ratios=[0.75, 1.0])
    assert "unguided" not in set(table["method"]) and len(table) == 2 * 4
    curves = dict(zip(table["method"], table["curve"]))
    # time travel is ppap's curve; eta 1 is another sampler, its own curve; training-free rows their own
    assert curves == {"ppap": "ppap", "ppap_rec4": "ppap", "ppap_eta1": "ppap_eta1", "freedom": "freedom"}
    at = table.set_index(["fid_ratio", "method"])["accuracy_at_fid"]
    assert at[(0.75, "ppap")] == pytest.approx(0.90) and at[(1.0, "ppap")] == pytest.approx(0.945)
    assert math.isnan(at[(0.75, "ppap_eta1")]) and at[(1.0, "ppap_eta1")] == pytest.approx(0.85)
    assert at[(0.75, "ppap_rec4")] == pytest.approx(1.00) and at[(0.75, "freedom")] == pytest.approx(0.97)
    even = comparison.break_even_at_fid(table, "ppap").set_index("fid_ratio")
    # FID <= 3: plain ppap (0.90) falls short of freedom's 0.97, time travel reaches 1.00 at 0.025 s a sample
    assert even.loc[0.75, "method"] == "ppap_rec4"
    assert even.loc[0.75, "break_even_samples"] == pytest.approx(100.0 / (0.070 - 0.025))
    assert even.loc[1.0, "method"] == "ppap_rec4"  # 0.945 < 0.97 still
    tight = comparison.fixed_fid_table(rows, sweeps, unguided_fid=4.0, bound_ratios=[0.5])
    # FID <= 2: freedom 0.96, time travel 0.95: no row of ppap's curve reaches it
    assert comparison.break_even_at_fid(tight, "ppap").iloc[0]["method"] is None
    # another sampler of the same guide (one training) counts: ppap_eta1 at 0.98 is the cheapest there
    eta1 = table.copy()
    eta1.loc[(eta1["method"] == "ppap_eta1") & (eta1["fid_ratio"] == 1.0), "accuracy_at_fid"] = 0.98
    assert comparison.break_even_at_fid(eta1, "ppap").set_index("fid_ratio").loc[1.0, "method"] == "ppap_eta1"
    assert comparison.break_even_at_fid(table, "not_a_row").empty
    text = "\n".join(comparison.fixed_fid_markdown(table, "ppap"))
    assert f"- FID <= 0.75 x unguided, freedom (0.970): ppap_rec4 reaches 1.000 and its one-time 100 s pays for " \
           f"itself after {100 / (0.070 - 0.025):,.0f} samples" in text
    figure = comparison.plot_fixed_fid(table)
    assert len(figure.axes) == 2
    assert len(comparison.plot_fixed_fid(table.iloc[0:0]).axes) == 1  # says there is no bound


def test_guide_on_estimate_reads_the_clipped_x0_estimate(make_guide, alphas_cumprod):
    guide = make_guide(seed=4)
    denoiser = TinyDenoiser().requires_grad_(False)
    x = torch.randn((3, *SHAPE), generator=torch.Generator().manual_seed(6))
    t = torch.tensor([0, 400, 900])
    on_estimate = GuideOnEstimate(denoiser, guide, alphas_cumprod)
    abar = alphas_cumprod.float()[t].view(-1, 1, 1, 1)
    x0 = ((x - (1 - abar).sqrt() * denoiser(x, t)) / abar.sqrt()).clamp(-1, 1)
    assert torch.allclose(on_estimate(x, t), guide(x0, torch.zeros_like(t)), atol=1e-6)


# ------------------------------------------------------------------ each method's own step

PUBLISHED = {
    "dps": TrainingFreeSettings(variance=1.0, mean=0.0, rule="dps"),
    "freedom": TrainingFreeSettings(variance=1.0, mean=0.0, recurrence=3, rule="freedom"),
    "mpgd": TrainingFreeSettings(variance=0.0, mean=1.0, iterations=2, rule="mpgd"),
    "ug": TrainingFreeSettings(variance=1.0, mean=0.05, recurrence=2, iterations=2, rule="ug"),
}


def _one_step(settings, scale, tiny, t=600, prev=400, clip_x0=False):
    """(x_t, context, x_prev guided at ``scale``, x_prev unguided) of one published step, float64."""
    from ppap.guidance.training_free import published_step
    from ppap.sampling import StepContext

    denoiser, guide, labels, abar = tiny
    x = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    t_batch = torch.full((2,), t)
    context = StepContext(0, t_batch, abar[t_batch], abar[torch.full((2,), prev)], False)
    weights = torch.ones(1, dtype=torch.float64)
    guided = published_step(denoiser, guide, labels, weights, replace(settings, recurrence=1), scale, clip_x0)
    plain = published_step(denoiser, guide, labels, weights, settings, 0.0, clip_x0)
    return x, context, guided(x, context, None), plain(x, context, None)


def test_dps_own_step_follows_the_unsquared_residual_norm(tiny):
    """DPS's code: x_prev - zeta grad_{x_t} ||residual||; here ||residual|| = sqrt(-log p(y | x0_hat))."""
    denoiser, guide, labels, abar = tiny
    x, context, guided, plain = _one_step(PUBLISHED["dps"], 0.3, tiny)
    t, a = context.t, abar[context.t]

    def residual_norm(x_):
        return (-smoothed_log_prob(guide, predict_x0(x_, denoiser(x_, t), a), labels)).sqrt().sum()

    assert torch.allclose(guided - plain, -0.3 * finite_difference(residual_norm, x), atol=1e-6, rtol=1e-5)


def test_freedom_own_step_is_rescaled_to_the_x0_noise_size(tiny):
    """FreeDoM's code: rho = s l1 / rms(g) per sample, along g = grad_{x_t} log p(y | x0_hat)."""
    from ppap.sampling import per_sample

    denoiser, guide, labels, abar = tiny
    x, context, guided, plain = _one_step(PUBLISHED["freedom"], 0.02, tiny)
    t, a, a_prev = context.t, abar[context.t], context.abar_prev
    g = finite_difference(lambda x_: smoothed_log_prob(guide, predict_x0(x_, denoiser(x_, t), a), labels).sum(), x)
    eps = denoiser(x, t)
    c1 = a_prev.sqrt() * (1 - a / a_prev) / (1 - a)
    l1 = eps.pow(2).flatten(1).mean(1).sqrt() * (1 - a).sqrt() / a.sqrt() * c1
    rho = 0.02 * l1 / g.pow(2).flatten(1).mean(1).sqrt()
    assert torch.allclose(guided - plain, per_sample(rho, x) * g, atol=1e-7, rtol=1e-5)


def test_mpgd_own_step_moves_x_prev_by_the_same_gradient_at_every_t(tiny):
    """MPGD's code: x0 += s grad / sqrt(abar_prev), so x_prev moves by s grad_{x0} log p whatever t."""
    denoiser, guide, labels, abar = tiny
    one = replace(PUBLISHED["mpgd"], iterations=1)
    for t, prev in ((900, 700), (300, 100)):
        x, context, guided, plain = _one_step(one, 0.5, tiny, t, prev)
        x0 = predict_x0(x, denoiser(x, context.t), abar[context.t])
        expected = 0.5 * finite_difference(lambda x_: smoothed_log_prob(guide, x_, labels).sum(), x0)
        assert torch.allclose(guided - plain, expected, atol=1e-6, rtol=1e-5)


def test_universal_guidance_forward_on_eps_and_backward_by_adam(tiny):
    """UG's code: eps_hat = eps - s sqrt(1 - abar) grad_{x_t} log p; backward: Adam on Delta, whose
    first step moves every pixel by about the learning rate against the loss's gradient sign."""
    denoiser, guide, labels, abar = tiny
    forward = replace(PUBLISHED["ug"], mean=0.0)
    x, context, guided, _ = _one_step(forward, 2.0, tiny)
    a, a_prev = abar[context.t][0], context.abar_prev[0]
    g = finite_difference(lambda x_: smoothed_log_prob(guide, predict_x0(x_, denoiser(x_, context.t), a),
                                                       labels).sum(), x)
    eps_hat = denoiser(x, context.t) - 2.0 * (1 - a).sqrt() * g
    x0 = predict_x0(x, eps_hat, a)
    expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps_hat
    assert torch.allclose(guided, expected, atol=1e-6, rtol=1e-5)
    backward = replace(PUBLISHED["ug"], iterations=1)
    _, _, moved, _ = _one_step(backward, 2.0, tiny)
    ascent = mean_guidance_gradient(guide, x0, labels)
    step = 2.0 * backward.mean * ascent / (ascent.abs() + 1e-8)  # Adam's first step: lr g / (|g| + eps)
    assert torch.allclose(moved, a_prev.sqrt() * (x0 + step) + (1 - a_prev).sqrt() * eps_hat
                          - (1 - a_prev).sqrt() * (a / (1 - a)).sqrt() * step, atol=1e-6)


@pytest.mark.parametrize("rule", sorted(PUBLISHED))
def test_published_steps_at_scale_zero_are_unguided_and_count_their_passes(rule, make_guide, alphas_cumprod):
    """Scale 0 is exactly the unguided sample; the counters give each rule's passes (FreeDoM's time
    travel only at 0.5 T <= t <= 0.8 T: ddim5 visits 800 and 600 there)."""
    settings = PUBLISHED[rule]
    model = Denoiser(TinyDenoiser().requires_grad_(False), alphas_cumprod, SHAPE)
    guidance = Guidance(model, TrainingFreeGuidance(make_guide(seed=1), settings))
    spec = SamplingSpec(steps=5, batch_size=4, eta=1.0)
    unguided, _ = generate_samples(Guidance(model), spec, 4, 3, show_progress=False)
    at_zero, _ = generate_samples(guidance, spec, 4, 3, show_progress=False)
    assert (at_zero == unguided).all()
    cost = SamplingCost()
    guided, _ = generate_samples(guidance, replace(spec, scale=1.0), 4, 3, cost=cost, show_progress=False)
    assert not (guided == unguided).all()
    steps = {"dps": 5, "freedom": 2 * 3 + 3, "mpgd": 5, "ug": 5 * 2}[rule]
    denoiser_backward = 0 if rule == "mpgd" else steps
    guide = {"dps": steps, "freedom": steps, "mpgd": steps * 2, "ug": steps * (1 + 2)}[rule]
    assert cost.per_sample() == dict(denoiser_forward=steps, denoiser_backward=denoiser_backward,
                                     guide_forward=guide, guide_backward=guide)
