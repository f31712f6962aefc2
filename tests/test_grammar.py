"""The guide-set and sampling grammar (ppap.study.grammar), the spacing (ppap.spacing), and the runs and
job settings the config derives from them (ppap.study.config)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from ppap.spacing import spaced_timesteps
from ppap.study import grammar
from ppap.study.config import ConfigError, ablation_runs, check_config, expert_training, table1_runs, tuning_runs
from ppap.study.grammar import GrammarError, GuideSet, Sampling

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    """The default preset as Snakemake would load it (schema defaults filled in)."""
    from snakemake.utils import validate

    cfg = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    validate(cfg, str(REPO / "config" / "schema.yaml"))
    return cfg


# ---------------------------------------------------------------------------------- names ----

@pytest.mark.parametrize("name", [
    "datafree_lora4_n5", "labeled_full_n1", "datafree_lora16_n10_syn250_tau0.1", "datafree_lora4_n5_normfrozen",
    "datafree_lora4_n5_warmoff", "labeled_full_n5_warmweights_lr0.0003_rep2", "datafree_full_n3_lr3e-5",
    "datafree_lora2_n2_syn64_tau1_normtrained_warmoptimizer_lr0.01_rep1", "labeled_full_n5_lr0.001_steps6000_rep2",
])
def test_guide_set_names_round_trip_and_match_the_wildcard_pattern(name):
    spec = grammar.parse_guide_set(name)
    assert grammar.format_guide_set(spec) == name
    assert re.fullmatch(grammar.GUIDE_SET_PATTERN, name)
    assert re.fullmatch(grammar.GUIDE_PATTERN, name)


def test_parsed_fields():
    spec = grammar.parse_guide_set("datafree_lora4_n5_tau0.5_normfrozen_warmoff_lr0.001_rep2")
    assert spec == GuideSet("datafree", 4, 5, None, 0.5, "frozen", "off", 0.001, replicate=2)
    assert spec.adapter == "lora4" and grammar.parse_guide_set("labeled_full_n1").adapter == "full"


@pytest.mark.parametrize("name, message", [
    ("datafree_lora4_n0", "number of experts"),
    ("datafree_lora0_n2", "LoRA rank"),
    ("labeled_full_n5_tau0.5", "data-free sets only"),
    ("datafree_full_n5_normfrozen", "LoRA sets"),
    ("datafree_lora4_n5_warmon", "suffixes, in this order"),
    ("datafree_lora4_n5_rep1_lr0.1", "suffixes, in this order"),  # out of order
    ("datafree_lora4_n5_lr0", "learning rate must be > 0"),
    ("datafree_lora4_n5_steps3", "at least one step per expert"),
    ("datafree_lora4_n5_rep1_steps600", "suffixes, in this order"),
    ("guide", "unknown guide"),
])
def test_bad_guide_names_say_what_is_wrong(name, message):
    with pytest.raises(GrammarError, match=message):
        grammar.parse_guide_set(name)
    assert not re.fullmatch(grammar.GUIDE_SET_PATTERN, name) or message in ("data-free sets only", "LoRA sets",
                                                                           "learning rate must be > 0",
                                                                           "at least one step per expert")


def test_untrained_guides():
    assert grammar.guide_kind("none") == "none" and grammar.n_experts("none") == 0
    assert grammar.guide_kind("off_the_shelf") == "off_the_shelf" and grammar.n_experts("off_the_shelf") == 1
    assert grammar.n_experts("labeled_full_n5") == 5


def test_canonical_names_drop_the_configs_values(config):
    canonical = lambda name: grammar.canonical_guide(name, config)  # noqa: E731
    assert canonical("datafree_lora4_n5_syn2000_tau0.25_normtrained_warmoptimizer") == "datafree_lora4_n5"
    lora_lr, full_lr = (grammar.format_number(config["experts"]["train"][k]) for k in ("lr", "full_lr"))
    assert canonical(f"datafree_lora4_n5_lr{lora_lr}") == canonical("datafree_lora4_n5") == "datafree_lora4_n5"
    assert canonical("datafree_lora4_n5_tau0.50") == "datafree_lora4_n5_tau0.5"
    assert canonical(f"labeled_full_n5_lr{full_lr}") == "labeled_full_n5"  # full fine-tuning's own rate
    assert canonical("labeled_full_n5_lr0.123") == "labeled_full_n5_lr0.123"
    assert canonical("datafree_lora4_n1_warmoff") == "datafree_lora4_n1"  # one expert: nothing to start from
    assert canonical("datafree_lora4_n5_warmoff_rep0") == "datafree_lora4_n5_warmoff"
    assert canonical("datafree_lora4_n5_rep2") == "datafree_lora4_n5_rep2"
    other = copy.deepcopy(config)
    other["experts"]["norm"] = "frozen"
    assert grammar.canonical_guide("datafree_lora4_n5_normtrained", other) == "datafree_lora4_n5_normtrained"
    assert grammar.canonical_guide("datafree_lora4_n5_normfrozen", other) == "datafree_lora4_n5"


def test_resolved_sets_take_every_unset_factor_from_the_config(config):
    lora = grammar.resolve_guide_set("datafree_lora4_n5_warmoff", config)
    assert (lora.synthetic_size, lora.temperature, lora.norm, lora.warm_start, lora.lr) == (
        config["experts"]["train"]["synthetic_size"], config["experts"]["train"]["temperature"],
        config["experts"]["norm"], "off", config["experts"]["train"]["lr"])
    full = grammar.resolve_guide_set("labeled_full_n5", config)
    assert full.lr == config["experts"]["train"]["full_lr"] and full.norm == "trained"


def test_sampling_names(config):
    spec = grammar.parse_sampling("ddim25_s7.5_clipafter_sptrailing")
    assert spec == Sampling("ddim", 25, 7.5, "after_guidance", "trailing")
    assert spec.name == "ddim25_s7.5_clipafter_sptrailing"
    assert re.fullmatch(grammar.SAMPLING_PATTERN, spec.name)
    canonical = grammar.canonical_sampling
    assert canonical("datafree_lora4_n5", "ddim25_s1_clipgd_spddim", config) == "ddim25_s1"
    assert canonical("datafree_lora4_n5", "ddim25_s4_clipnone", config) == "ddim25_s4_clipnone"
    # Unguided: no scale, and clipping before or after an absent guidance is the same step.
    assert canonical("none", "ddim25_s4_clipafter", config) == "ddim25_s0"
    assert canonical("none", "ddim25_s4_clipnone", config) == "ddim25_s0_clipnone"
    assert canonical("datafree_lora4_n5", "ddpm50_s1_clipafter", config) == "ddpm50_s1"  # DDPM: the same step
    with pytest.raises(GrammarError, match="unknown sampling"):
        grammar.parse_sampling("ddim25_s1_clipsometimes")



def test_eta_and_recurrence_are_sampling_factors(config):
    """_eta<e> and _rec<r> round-trip; each is dropped where it equals the config's value or means
    nothing (DDPM draws its own noise); time travel stays on unguided sampling (it changes the
    samples), and a training-free guide repeats by its own _rec, never the sampling's."""
    spec = grammar.parse_sampling("ddim100_s2_routelower_eta0.5_rec4")
    assert (spec.steps, spec.routing, spec.eta, spec.recurrence) == (100, "lower", 0.5, 4)
    assert spec.name == "ddim100_s2_routelower_eta0.5_rec4" and re.fullmatch(grammar.SAMPLING_PATTERN, spec.name)
    resolved = grammar.resolve_sampling("ddim25_s1", config)
    assert (resolved.eta, resolved.recurrence) == (config["sampling"]["eta"], config["sampling"]["recurrence"]) == (0, 1)
    canonical = grammar.canonical_sampling
    assert canonical("datafree_lora4_n5", "ddim25_s1_eta0_rec1", config) == "ddim25_s1"
    assert canonical("datafree_lora4_n5", "ddim25_s1_eta1.0_rec2", config) == "ddim25_s1_eta1_rec2"
    assert canonical("none", "ddim25_s3_eta1_rec2", config) == "ddim25_s0_eta1_rec2"
    assert canonical("datafree_lora4_n5", "ddpm25_s1_eta1_rec2", config) == "ddpm25_s1_rec2"
    assert canonical("trainingfree_dps", "ddim25_s1_eta1", config) == "ddim25_s1_eta1"
    with pytest.raises(GrammarError, match="its own recurrence"):
        canonical("trainingfree_freedom", "ddim25_s1_rec2", config)
    with pytest.raises(GrammarError, match="unknown sampling"):
        grammar.parse_sampling("ddim25_s1_rec0")
    other = copy.deepcopy(config)
    other["sampling"].update(eta=1.0, recurrence=2)
    assert canonical("datafree_lora4_n5", "ddim25_s1_eta1_rec2", other) == "ddim25_s1"
    assert canonical("datafree_lora4_n5", "ddim25_s1", other) == "ddim25_s1"
    assert canonical("datafree_lora4_n5", "ddim25_s1_eta0_rec1", other) == "ddim25_s1_eta0_rec1"


# -------------------------------------------------------------------------------- spacing ----

def test_guided_diffusion_ddim_spacing():
    assert spaced_timesteps(1000, 25, "ddim") == list(range(960, -1, -40))  # the paper's DDIM-25
    assert spaced_timesteps(1000, 50, "ddim") == list(range(980, -1, -20))
    # 30 steps: guided-diffusion's first stride with exactly 30 values is 34 (0, 34, ..., 986).
    assert spaced_timesteps(1000, 30, "ddim") == list(range(0, 1000, 34))[::-1]
    with pytest.raises(ValueError, match="ddim1 spacing does not exist"):
        spaced_timesteps(1000, 1, "ddim")
    for n in (10, 20, 25, 40, 50, 100):  # leading = ddimN whenever N divides T
        assert spaced_timesteps(1000, n, "leading") == spaced_timesteps(1000, n, "ddim")


def test_spacing_is_a_config_key_checked_before_any_job(config):
    bad = copy.deepcopy(config)
    bad["sampling"]["steps"] = 999  # no integer stride gives 999 steps over 1000
    bad["ablations"] = {}
    with pytest.raises(ConfigError, match="sampling.spacing.*ddim999"):
        check_config(bad)
    bad["sampling"]["spacing"] = "trailing"
    check_config(bad)



@pytest.mark.parametrize("routing", ["owner", "lower"])
def test_a_set_with_experts_no_sampling_step_reaches_is_refused(config, routing):
    """20 experts of 50 timesteps, DDIM-10 (timesteps 0, 100, ..., 900): with owner routing only the
    even experts own a step; with the original's lower routing a step on a boundary goes below."""
    bad = copy.deepcopy(config)
    bad["methods"]["ppap"], bad["ablations"] = "datafree_lora2_n20", {}
    bad["sampling"].update(steps=10, routing=routing)
    idle = ", ".join(map(str, range(1, 20, 2))) if routing == "owner" else "2, 4, 6, 8, 10, 12, 14, 16, 18, 19"
    with pytest.raises(ConfigError, match=rf"datafree_lora2_n20 has 20 experts but ddim10_s1 visits 10 timesteps "
                                          rf"and routes none to expert\(s\) \[{idle}\]"):
        check_config(bad)
    bad["methods"]["ppap"] = "datafree_lora2_n5"
    check_config(bad)  # 5 experts, two steps each


# ------------------------------------------------------------------------ runs and settings ----

def test_table1_runs_with_independent_trainings(config):
    one = {r.label: r for r in table1_runs(config)}
    three = {r.label: r for r in table1_runs(config, 3)}
    assert one["ppap"].guides == ("datafree_lora4_n5",)
    assert three["ppap"].guides == ("datafree_lora4_n5", "datafree_lora4_n5_rep1", "datafree_lora4_n5_rep2")
    assert three["off_the_shelf"].guides == ("off_the_shelf",)  # an untrained guide has one instance
    assert three["unguided"].sampling == "ddim25_s0"
    assert three["ppap"].metrics_paths[1] == "results/metrics/datafree_lora4_n5_rep1/ddim25_s1.json"


def test_faithful_ablations_share_cells_with_table1(config):
    norm = {r.label: r for r in ablation_runs(config, "norm")}
    assert norm["5_normtrained"].guides[0] == "datafree_lora4_n5"
    assert norm["5_normfrozen"].guides == tuple(f"datafree_lora4_n5_normfrozen{s}" for s in ("", "_rep1", "_rep2"))
    warm = {r.label: r for r in ablation_runs(config, "warm_start")}
    assert warm["10_warmoff"].guides[0] == "datafree_lora4_n10_warmoff"
    clip = {r.label: r for r in ablation_runs(config, "clip")}
    assert clip["s1_clipgd/ppap"].sampling == "ddim25_s1" and clip["s4_clipafter/ppap"].sampling == "ddim25_s4_clipafter"
    assert len(clip) == 6 * 4


def test_tuning_runs_name_each_rate(config):
    runs = tuning_runs(config)
    guides = [r.guide for r in runs]
    assert "datafree_lora4_n5" in guides  # the configured rate is the plain set
    assert any(g.startswith("datafree_lora4_n5_lr") for g in guides)
    assert {r.method for r in runs} == {"lora", "full"}


def test_a_training_budget_is_a_guide_factor_and_its_grid_is_relative_to_the_config(config):
    configured = config["experts"]["train"]["total_steps"]
    assert grammar.canonical_guide(f"datafree_lora4_n5_steps{configured}", config) == "datafree_lora4_n5"
    assert grammar.canonical_guide("datafree_lora4_n5_steps6000_rep1", config) == "datafree_lora4_n5_steps6000_rep1"
    assert expert_training("labeled_full_n5_steps6000", config).steps == 6000 // 5
    assert expert_training("datafree_lora4_n1_steps1500", config).steps == 1500
    runs = tuning_runs(config, "training_budget")
    factors = config["tuning"]["training_budget"]["lora"]["factors"]
    lora = [r for r in runs if r.method == "lora"]
    assert [int(r.value) for r in lora] == [round(f * configured) for f in factors]
    # the configured budget is trained spread_trainings times (Table 1's trainings: the same files)
    at_one = next(r for r in lora if int(r.value) == configured)
    assert at_one.guides == tuple(table1_runs(config, 3)[-1].guides) == (
        "datafree_lora4_n5", "datafree_lora4_n5_rep1", "datafree_lora4_n5_rep2")
    assert all(len(r.guides) == 1 for r in lora if r is not at_one)
    # the ablation on test samples the very sets the validation grid trained
    ablation = {g for r in ablation_runs(config, "training_budget") for g in r.guides}
    assert {r.guide for r in runs} <= ablation | {"datafree_lora4_n5", "labeled_full_n5"}


@pytest.mark.parametrize("entry, message", [
    ({"factors": [2, 1]}, "must increase"),
    ({"factors": [0.5, 2]}, "must include 1"),
    ({"guide": "datafree_lora4_n5_steps600"}, "names a value of _steps"),
    ({"guide": "labeled_full_n5"}, "tuned on a LoRA set"),
])
def test_a_bad_training_budget_grid_names_its_key(config, entry, message):
    bad = copy.deepcopy(config)
    bad["tuning"]["training_budget"]["lora"].update(entry)
    with pytest.raises(ConfigError, match=message) as err:
        check_config(bad)
    assert "tuning.training_budget.lora" in str(err.value)


def test_expert_training_holds_only_what_a_job_uses(config):
    settings = expert_training("datafree_lora4_n5_rep2", config)
    assert settings.steps == config["experts"]["train"]["total_steps"] // 5
    assert settings.seed == config["experts"]["train"]["seed"] + 2 * 1_000_000
    assert settings.norm == "trained" and settings.warm_start == "optimizer"
    assert settings.lora["rank"] == 4 and settings.lora["include"] == config["experts"]["lora"]["include"]
    labeled = expert_training("labeled_full_n5", config)
    assert labeled.lora is None and labeled.synthetic_size is None and labeled.temperature is None
    assert expert_training("labeled_full_n1", config).warm_start == "off"
    # A key this set does not use leaves its params (Snakemake's rerun trigger) unchanged.
    other = copy.deepcopy(config)
    other["experts"]["custom_ranges"] = {"datafree_lora4_n3": [[0, 100], [100, 400], [400, 1000]]}
    other["experts"]["train"]["full_lr"] = 0.123
    assert expert_training("datafree_lora4_n5", other).as_params() == expert_training("datafree_lora4_n5", config).as_params()
    # Custom ranges of a set apply to its independent trainings too.
    ranged = expert_training("datafree_lora4_n3_rep1", other)
    assert ranged.ranges == [[0, 100], [100, 400], [400, 1000]]


def test_the_default_preset_is_faithful_to_the_original(config):
    """The defaults the fidelity table (docs/fidelity.md) promises."""
    assert config["sampling"]["clip"] == "guided_diffusion" and config["sampling"]["spacing"] == "ddim"
    assert config["experts"]["norm"] == "trained" and config["experts"]["warm_start"] == "optimizer"
    assert config["experts"]["train"]["weight_decay"] == 0.05
    assert config["data"]["val_fraction"] > 0
    paper = yaml.safe_load((REPO / "config" / "imagenet256.yaml").read_text())
    assert paper["sampling"].get("spacing", "ddim") == "ddim"
    assert paper["sampling"].get("clip", "guided_diffusion") == "guided_diffusion"


def test_routing_is_a_sampling_factor_only_where_experts_hand_over(config):
    assert grammar.parse_sampling("ddim25_s1_routelower").routing == "lower"
    assert grammar.canonical_sampling("datafree_lora4_n5", "ddim25_s1_routelower", config) == "ddim25_s1_routelower"
    assert grammar.canonical_sampling("datafree_lora4_n5", "ddim25_s1_routeowner", config) == "ddim25_s1"
    # One guide for every timestep: routing changes nothing, so the cell is shared.
    assert grammar.canonical_sampling("labeled_full_n1", "ddim25_s1_routelower", config) == "ddim25_s1"
    assert grammar.canonical_sampling("off_the_shelf", "ddim25_s1_routelower", config) == "ddim25_s1"


def test_fair_race_rows_sample_as_named_and_are_tuned_as_their_siblings():
    """config/fair_race.yaml: each new guidance-methods row samples with its own entry of
    guidance_methods.sampling, and gets its eta = 0 sibling's guide, validation variants and scales
    (the same tuning budget); a sampling entry for a method that does not exist is refused."""
    from snakemake.utils import validate

    from conftest import merged_config
    from ppap.study.config import guidance_method_runs, guidance_sweep, guidance_tuning_runs

    overlay = yaml.safe_load((REPO / "config" / "fair_race.yaml").read_text())
    cfg = merged_config(overlay)
    validate(cfg, str(REPO / "config" / "schema.yaml"))
    check_config(cfg)
    rows = {run.method: run for run in guidance_method_runs(cfg)}
    # each row at its validation choice (guidance_methods.scales, and its chosen variant in methods)
    assert rows["ppap_rec4"].sampling == "ddim25_s8_rec4" and rows["ppap"].sampling == "ddim25_s8"
    assert rows["multi_expert_labeled_ddim100"].sampling == "ddim100_s8"
    assert rows["ppap_eta1"].sampling == "ddim25_s4_eta1"
    assert rows["ppap_rec4_eta1"].sampling == "ddim25_s4_eta1_rec4"
    assert rows["multi_expert_labeled_ddim100_eta1"].sampling == "ddim100_s8_eta1"
    assert rows["unguided_eta1"].sampling == "ddim25_s0_eta1"
    assert rows["tfg_eta1"].sampling == "ddim25_s0.5_eta1" and rows["tfg"].guides != rows["tfg_eta1"].guides
    assert rows["mpgd_eta1"].guides == rows["mpgd"].guides  # both chose six iterations
    grid = {}
    for run in guidance_tuning_runs(cfg):
        grid.setdefault(run.method, []).append((run.guides, run.value, grammar.parse_sampling(run.sampling).scale))
    new = [m for m in overlay["guidance_methods"]["sampling"] if m != "unguided_eta1"]
    assert len(new) == 25
    # each method's own step: as many validation cells as its TFG form (2 variants x 5 scales)
    for method, sibling in (("dps_paper", "dps"), ("freedom_paper", "freedom"), ("mpgd_paper", "mpgd"),
                            ("ug", "dps")):
        assert len(grid[method]) == len(grid[sibling]) == 10, method
        assert grammar.training_free_settings(cfg["methods"][method], cfg)["rule"] == method.split("_")[0]
    def base(guide):  # a training-free guide's method without its variant's suffixes
        return grammar.parse_training_free(guide).method if guide.startswith("trainingfree_") else guide

    for method in new:
        sibling = re.sub(r"_(eta1|rec[0-9]+|ddim100)$", "", method)
        assert base(cfg["methods"][method]) == base(cfg["methods"][sibling])
        assert guidance_sweep(cfg, method) == guidance_sweep(cfg, sibling)
        assert [cell[:2] for cell in grid[method]] == [cell[:2] for cell in grid[sibling]], method
    bad = copy.deepcopy(cfg)
    bad["guidance_methods"]["sampling"]["ppap_rec8"] = {"recurrence": 8}
    with pytest.raises(ConfigError, match="guidance_methods.sampling.ppap_rec8: not a key of methods"):
        check_config(bad)
    bad = copy.deepcopy(cfg)
    bad["guidance_methods"]["sampling"]["freedom"] = {"recurrence": 2}
    with pytest.raises(ConfigError, match="its own recurrence"):
        check_config(bad)


def test_sampling_params_give_each_cell_its_own_eta_and_recurrence(config):
    """A rule's sampling params: the plain samplers' eta and recurrence left out where the config has
    them too (the cells of before keep their params), and the spec a job builds is the name's."""
    from ppap.study.specs import sampling_spec

    def spec(name, cfg):
        params = dict(sampling=grammar.sampling_params(name, cfg), eta=cfg["sampling"]["eta"], batch_size=4)
        return sampling_spec(params, "cpu")

    assert "eta" not in grammar.sampling_params("ddim25_s1", config)
    assert "recurrence" not in grammar.sampling_params("ddim25_s1", config)
    assert (spec("ddim25_s1_eta0.5_rec2", config).eta, spec("ddim25_s1_eta0.5_rec2", config).recurrence) == (0.5, 2)
    noisy = copy.deepcopy(config)
    noisy["sampling"].update(eta=0.5, recurrence=2)
    assert (spec("ddim25_s1", noisy).eta, spec("ddim25_s1", noisy).recurrence) == (0.5, 2)
    assert (spec("ddim25_s1_eta0_rec1", noisy).eta, spec("ddim25_s1_eta0_rec1", noisy).recurrence) == (0.0, 1)
