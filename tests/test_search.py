"""The beam search over each method's hyperparameters (ppap.study.search, tuning.guidance.search)."""

import pandas as pd
import pytest
import yaml

from conftest import REPO, merged_config
from ppap.study import comparison, grammar, search
from ppap.study.config import guidance_tuning_runs


@pytest.fixture(scope="module")
def config():
    return merged_config({})


def test_a_classifier_guide_moves_its_scale_only(config):
    assert search.neighbours("datafree_lora4_n5", 4.0, config) == [("datafree_lora4_n5", 8.0),
                                                                    ("datafree_lora4_n5", 2.0)]
    assert search.neighbours("off_the_shelf", 1.0, config, factor=4) == [("off_the_shelf", 4.0),
                                                                          ("off_the_shelf", 0.25)]


def test_tfg_moves_rho_mu_gamma_iterations_and_schedule_one_at_a_time(config):
    # default.yaml's tfg: mean 1, recurrence 4, iterations 1, smoothing 0.1, 1 smoothing sample, constant
    found = search.neighbours("trainingfree_tfg", 0.25, config)
    assert found == [
        ("trainingfree_tfg", 0.5), ("trainingfree_tfg", 0.125),
        ("trainingfree_tfg_mu2", 0.25), ("trainingfree_tfg_mu0.5", 0.25),
        ("trainingfree_tfg_it2", 0.25),                                       # iterations: 1 / 2 rounds back to 1
        ("trainingfree_tfg_sm1", 0.25), ("trainingfree_tfg_sm0.01", 0.25),   # gamma x / 10, as TFG's search
        ("trainingfree_tfg_schincrease", 0.25), ("trainingfree_tfg_schdecrease", 0.25),
    ]
    # time travel and the smoothing's sample count are the row's compute: never moved
    assert not any("_rec" in guide or "_smn" in guide for guide, _ in found)
    # a moved name is canonical: back at the config's value, the suffix goes
    assert ("trainingfree_tfg", 0.25) in search.neighbours("trainingfree_tfg_mu0.5", 0.25, config)


def test_a_switched_off_term_stays_off_and_each_method_moves_only_its_own_hyperparameters(config):
    # Universal Guidance without backward guidance (mean 0): its mu is not moved from 0
    ug = [guide for guide, _ in search.neighbours("trainingfree_ug", 1.0, config)]
    assert not any("_mu" in guide for guide in ug) and "trainingfree_ug_it2" in ug
    # DPS: scale and schedule only; its own step (_formpaper) stays its own
    dps = search.neighbours("trainingfree_dps_formpaper", 1.0, config)
    assert {guide for guide, _ in dps} == {"trainingfree_dps_formpaper", "trainingfree_dps_formpaper_schconstant",
                                           "trainingfree_dps_formpaper_schdecrease"}
    for guide, _ in dps + search.neighbours("trainingfree_mpgd", 1.0, config):
        grammar.parse_training_free(guide)  # every proposal is a valid name


def _ranked(cells, config):
    frame = pd.DataFrame([dict(method="unguided", guide="none", scale=0.0, fid=4.0, accuracy=float("nan"))]
                         + [dict(method=m, guide=g, scale=s, fid=f, accuracy=a) for m, g, s, f, a in cells])
    return comparison.rank_cells(frame, max_fid_ratio=1.5)


def test_a_round_tries_the_neighbours_of_the_beam_best_cells_within_the_budget(config):
    ranked = _ranked([("ppap", "datafree_lora4_n5", s, f, a)
                      for s, f, a in [(1.0, 4.0, 0.5), (2.0, 4.5, 0.8), (4.0, 5.5, 0.9), (8.0, 9.0, 0.99)]], config)
    assert ranked.set_index("scale")["rank"].to_dict() == {0.0: pytest.approx(float("nan"), nan_ok=True),
                                                           1.0: 3, 2.0: 2, 4.0: 1, 8.0: 4}
    # the best (s = 4) has both neighbours scored; the second best (s = 2) too: the search has ended
    assert search.propose(ranked, config, budget=10, beam=2) == {"ppap": []}
    # with s = 8 unscored, the best's upper neighbour is new; s = 16 is beyond the over-bound cell
    trimmed = ranked[ranked["scale"] != 8.0]
    assert search.propose(trimmed, config, budget=10, beam=1) == {"ppap": [("datafree_lora4_n5", 8.0)]}
    assert search.propose(trimmed, config, budget=3, beam=1) == {"ppap": []}  # 3 cells scored: budget spent
    assert search.propose(trimmed, config, budget=10, beam=1, methods=["freedom"]) == {}


def test_a_tfg_round_spends_the_same_budget_as_the_others(config):
    ranked = _ranked([("tfg", "trainingfree_tfg", 0.25, 3.0, 0.9), ("tfg", "trainingfree_tfg", 0.5, 5.0, 0.95),
                      ("ppap", "datafree_lora4_n5", 4.0, 4.0, 0.9), ("ppap", "datafree_lora4_n5", 8.0, 5.0, 0.95)],
                     config)
    proposed = search.propose(ranked, config, budget=6, beam=2)
    assert len(proposed["tfg"]) == 4  # 6 cells in all, 2 scored
    assert proposed["tfg"][:2] == [("trainingfree_tfg", 1.0), ("trainingfree_tfg_mu2", 0.5)]  # the best's, first
    assert proposed["ppap"] == [("datafree_lora4_n5", 16.0), ("datafree_lora4_n5", 2.0)]


def test_the_searched_cells_join_the_validation_grid_once(config):
    overlay = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    smoke = merged_config(overlay)
    grid = guidance_tuning_runs(smoke)
    searched = merged_config(overlay, {"tuning": {"guidance": {"search": {
        "budget": 10, "beam": 1,
        "cells": {"freedom": [["trainingfree_freedom_rec2_schincrease", 0.5], ["trainingfree_freedom_rec2", 0.5]]}}}}})
    runs = guidance_tuning_runs(searched)
    added = [(r.method, r.guide, r.sampling) for r in runs if r not in grid]
    assert [r for r in runs if r in grid] == grid
    # after the method's grid; the other searched cell is a grid cell already
    assert added == [("freedom", "trainingfree_freedom_rec2_schincrease", "ddim4_s0.5")]


def test_the_workflow_plans_a_search_round_with_its_cells(tmp_path):
    from conftest import run_workflow

    overlay = tmp_path / "search.yaml"
    overlay.write_text(yaml.safe_dump({"tuning": {"guidance": {"search": {
        "budget": 4, "beam": 1, "cells": {"ppap": [["datafree_lora2_n2", 0.25]]}}}}}))
    plan = run_workflow(tmp_path / "run", "tune", "-n", "--cores", "2",
                        "--configfile", str(REPO / "config" / "smoke.yaml"), str(overlay))
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "results/tuning/guidance/datafree_lora2_n2/ddim4_s0.25.json" in plan.stdout
    assert "rule search_guidance:" in plan.stdout and "results/tuning/guidance_search.yaml" in plan.stdout
