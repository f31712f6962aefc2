"""The validation split, learning-rate tuning on it, and tables over independent trainings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ppap import data
from ppap.study import report, tuning


def test_validation_split_is_carved_from_train_and_leaves_test_alone():
    plain = data.load_digits_split(8, 0.2, 0)
    split = data.load_digits_split(8, 0.2, 0, val_fraction=0.2)
    assert np.array_equal(split["test_images"], plain["test_images"])  # the scoring set never changes
    assert len(split["train_images"]) + len(split["val_images"]) == len(plain["train_images"])
    assert (len(split["train_images"]), len(split["val_images"]), len(split["test_images"])) == (1149, 288, 360)
    # Disjoint: no validation image is a training image (the digits hold no exact duplicates across
    # the parts; compare rows as bytes).
    train = {row.tobytes() for row in split["train_images"]}
    assert not any(row.tobytes() in train for row in split["val_images"])
    # Stratified: every digit is in the validation split in about the training proportions.
    counts = np.bincount(split["val_labels"], minlength=10)
    assert counts.min() >= 25 and counts.max() <= 33
    again = data.load_digits_split(8, 0.2, 0, val_fraction=0.2)
    assert np.array_equal(again["val_labels"], split["val_labels"])  # seeded


def manifest(guide, accuracies):
    return dict(guide_set=guide, noisy_val_accuracy=dict(timesteps=[0, 500, 999], accuracy=accuracies))


def test_learning_rate_table_chooses_on_validation_accuracy():
    runs = [dict(method="lora", value=str(lr), guides=[f"g{lr}"]) for lr in (0.001, 0.003, 0.01)]
    runs += [dict(method="full", value=str(lr), guides=[f"f{lr}"]) for lr in (0.0003, 0.001)]
    manifests = {"g0.001": manifest("g0.001", [0.9, 0.5, 0.1]), "g0.003": manifest("g0.003", [0.9, 0.7, 0.1]),
                 "g0.01": manifest("g0.01", [0.8, 0.6, 0.1]), "f0.0003": manifest("f0.0003", [0.9, 0.6, 0.1]),
                 "f0.001": manifest("f0.001", [0.9, 0.6, 0.1])}
    frame = tuning.learning_rate_table(runs, manifests, {"lora": 0.003, "full": 0.001})
    assert tuning.chosen_rates(frame) == {"lora": 0.003, "full": 0.0003}  # a tie goes to the smaller rate
    assert frame.set_index("guide").loc["g0.003", "val_accuracy"] == pytest.approx(1.7 / 3)
    assert list(frame["configured"]) == [False, True, False, False, True]
    with pytest.raises(ValueError, match="validation accuracy"):
        tuning.validation_score(dict(guide_set="x", noisy_test_accuracy={}))


def test_training_budget_chosen_where_a_doubling_gains_less_than_a_trainings_spread():
    def run(family, steps, *guides):
        return dict(method=family, value=str(steps), guides=list(guides))

    # lora: 1x has three trainings (sd 0.01); 1x -> 2x gains 0.05, 2x -> 4x 0.005: 2x chosen
    runs = [run("lora", 1500, "a"), run("lora", 3000, "b", "b1", "b2"), run("lora", 6000, "c"), run("lora", 12000, "d"),
            run("full", 1500, "e"), run("full", 3000, "f", "f1"), run("full", 6000, "g")]
    scores = dict(a=0.5, b=0.59, b1=0.60, b2=0.61, c=0.65, d=0.655, e=0.3, f=0.4, f1=0.42, g=0.6)
    manifests = {g: manifest(g, [v, v, v]) for g, v in scores.items()}
    frame = tuning.training_budget_table(runs, manifests, 3000)
    assert tuning.chosen_budgets(frame) == {"lora": 6000, "full": 6000}
    lora = frame[frame.family == "lora"].set_index("total_steps")
    assert lora.loc[3000, "val_accuracy"] == pytest.approx(0.60) and lora.loc[3000, "val_sd"] == pytest.approx(0.01)
    assert lora.loc[3000, "gain_per_doubling"] == pytest.approx(0.05)
    assert not lora.at_edge.any()
    full = frame[frame.family == "full"].set_index("total_steps")
    assert full.loc[6000, "at_edge"] and full.loc[6000, "chosen"]  # still rising at the grid's top
    assert list(frame.configured) == [False, True, False, False, False, True, False]
    with pytest.raises(ValueError, match="spread_trainings >= 2"):
        tuning.training_budget_table([run("lora", 3000, "a"), run("lora", 6000, "c")], manifests, 3000)


def metrics(per_seed_accuracy):
    values = np.array(per_seed_accuracy)
    return dict(seeds=list(range(len(values))), per_seed=[dict(samples="s.npz")],
                mean=dict(accuracy=float(values.mean()), fid=1.0, num_fake=10),
                sd=dict(accuracy=float(values.std(ddof=1)), fid=0.0))


def test_rows_over_trainings_keep_the_two_spreads_apart():
    manifest_ = dict(trainable_params=10, stored_params=20)
    one = report.run_row("datafree_lora4_n5", metrics([0.5, 0.6, 0.7]), 100, manifest_)
    assert one["accuracy"] == pytest.approx(0.6) and one["accuracy_sd"] == pytest.approx(0.1)
    assert one["trainings"] == 1 and math.isnan(one["accuracy_sd_train"])
    three = report.run_row(["datafree_lora4_n5", "datafree_lora4_n5_rep1", "datafree_lora4_n5_rep2"],
                           [metrics([0.5, 0.6, 0.7]), metrics([0.2, 0.3, 0.4]), metrics([0.8, 0.9, 1.0])], 100,
                           manifest_)
    assert three["trainings"] == 3 and three["seeds"] == 3
    assert three["accuracy"] == pytest.approx(0.6)
    assert three["accuracy_sd"] == pytest.approx(0.1)  # within trainings, pooled
    assert three["accuracy_sd_train"] == pytest.approx(0.3)  # of the per-training means 0.6, 0.3, 0.9
    table = report.table1([dict(method="ppap", **three)])
    assert list(table.columns[-6:]) == report.TRAINING_COLUMNS
    assert "(trainings ± 0.300)" in report.to_markdown(table)
