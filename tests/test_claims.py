"""The claims table (ppap.tools.claims): verdicts from tables, 'not run' where a table is missing,
and the published claims files up to date with the published tables."""

from __future__ import annotations

import json
import math

import pandas as pd

from ppap.tools import claims


def write_table1(folder, accuracy, sd=0.01, fid=None):
    rows = [dict(method=m, accuracy=a, accuracy_sd=sd, fid=(fid or {}).get(m, 5.0), fid_sd=0.2)
            for m, a in accuracy.items()]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "table1.csv", index=False)


TABLE1 = dict(unguided=math.nan, off_the_shelf=0.2, noise_aware_single=0.6, multi_expert_labeled=0.7, ppap=0.61)


def verdicts(reference, pair_folder="."):
    data, guide = next((d, g) for d, g, f in claims.PAIRS if f == pair_folder)
    return {r["claim"]: r["verdict"] for r in claims.judge_all(reference) if (r["data"], r["guide"]) == (data, guide)}


def test_verdicts_follow_the_numbers_and_their_spreads(tmp_path):
    write_table1(tmp_path, TABLE1)
    got = verdicts(tmp_path)
    assert got["gain_share"] == "holds"  # (0.61 - 0.2) / (0.7 - 0.2) = 82%
    write_table1(tmp_path, dict(TABLE1, ppap=0.55))
    assert verdicts(tmp_path)["gain_share"] == "fails"  # 70%


def test_gain_share_threshold_and_beats_margin(tmp_path):
    write_table1(tmp_path, dict(TABLE1, ppap=0.61))
    assert verdicts(tmp_path)["gain_share"] == "holds"   # 82% >= 80%
    write_table1(tmp_path, dict(TABLE1, noise_aware_single=0.69), sd=0.01)
    assert verdicts(tmp_path)["experts_beat_single"] == "fails"  # +0.01 within the spread 0.014
    write_table1(tmp_path, dict(TABLE1, noise_aware_single=0.6), sd=0.01)
    assert verdicts(tmp_path)["experts_beat_single"] == "holds"


def test_tables_a_pair_lacks_are_not_run_never_guessed(tmp_path):
    write_table1(tmp_path, TABLE1)
    got = verdicts(tmp_path)
    assert {got[name] for name in ("labels_worth", "lora_enough", "more_experts", "warm_start", "chance_late",
                                   "all_chance_late")} == {"not run"}
    assert set(verdicts(tmp_path, "mnist").values()) == {"not run"}


def test_chance_claims_read_the_noisy_accuracy_records(tmp_path):
    write_table1(tmp_path, TABLE1)
    (tmp_path / "guides").mkdir()
    timesteps = [0, 300, 600, 900]
    record = lambda acc: {"noisy_test_accuracy": {"timesteps": timesteps, "accuracy": acc}}  # noqa: E731
    (tmp_path / "guides" / "off_the_shelf.json").write_text(json.dumps(record([0.99, 0.3, 0.12, 0.1])))
    (tmp_path / "guides" / "labeled_full_n1.json").write_text(json.dumps(record([0.99, 0.6, 0.2, 0.1])))
    got = verdicts(tmp_path)
    assert got["chance_late"] == "holds" and got["all_chance_late"] == "fails"


def test_the_published_claims_are_those_of_the_published_tables():
    assert claims.main(["--check"]) == 0


def write_budget(folder, gaps, sd=0.01):
    """The training_budget ablation: PPAP at 0.6 and the labeled experts `gap` above it per budget."""
    rows = []
    for steps, gap in gaps.items():
        suffix = "" if steps == 3000 else f"_steps{steps}"
        rows += [dict(ablation="training_budget", value=steps, method="ppap", guide=f"datafree_lora4_n5{suffix}",
                      accuracy=0.6, accuracy_sd=sd),
                 dict(ablation="training_budget", value=steps, method="multi_expert_labeled",
                      guide=f"labeled_full_n5{suffix}", accuracy=0.6 + gap, accuracy_sd=sd)]
    (folder / "ablations").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "ablations" / "training_budget.csv", index=False)


def test_the_budget_claim_compares_the_gap_at_the_configured_and_the_largest_budget(tmp_path):
    write_table1(tmp_path, TABLE1)
    assert verdicts(tmp_path)["budget_closes_gap"] == "not run"
    write_budget(tmp_path, {1500: 0.2, 3000: 0.10, 6000: 0.08, 12000: 0.05})
    assert verdicts(tmp_path)["budget_closes_gap"] == "holds"  # 0.10 -> 0.05, spread 0.02
    write_budget(tmp_path, {1500: 0.2, 3000: 0.10, 6000: 0.09, 12000: 0.09})
    assert verdicts(tmp_path)["budget_closes_gap"] == "fails"  # 0.01 < the combined spread
