"""Choosing settings by looking at results: only ever on the validation split.

The validation split is carved from the training digits (stratified, seeded; see
:func:`ppap.data.load_digits_split`) and held out from every network the DAG trains. The test
digits score the final tables and nothing else.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

CRITERION = "mean noisy validation accuracy over evaluation.accuracy_timesteps"


def validation_score(manifest: Mapping) -> float:
    """A guide set's mean top-1 accuracy on noised validation digits over the accuracy timesteps:
    how well it classifies x_t across the whole range it guides."""
    if "noisy_val_accuracy" not in manifest:
        raise ValueError(f"manifest of {manifest.get('guide_set')} has no validation accuracy "
                         "(data.val_fraction must be > 0 to tune)")
    return float(np.mean(manifest["noisy_val_accuracy"]["accuracy"]))


def learning_rate_table(runs: Sequence[Mapping], manifests: Mapping[str, Mapping],
                        configured: Mapping[str, float]) -> pd.DataFrame:
    """One row per (family, learning rate): the validation score, which rate each family would
    choose (the best score; ties go to the smaller rate) and whether the config uses it."""
    rows = []
    for run in runs:
        guide = run["guides"][0]
        manifest = manifests[guide]
        curve = manifest["noisy_val_accuracy"]
        rows.append(dict(family=run["method"], lr=float(run["value"]), guide=guide,
                         val_accuracy=validation_score(manifest),
                         **{f"val_t{t}": a for t, a in zip(curve["timesteps"], curve["accuracy"])}))
    frame = pd.DataFrame(rows)
    frame["chosen"] = False
    for family, group in frame.groupby("family", sort=False):
        best = group.sort_values(["val_accuracy", "lr"], ascending=[False, True]).index[0]
        frame.loc[best, "chosen"] = True
    frame["configured"] = [np.isclose(lr, configured.get(family, np.nan)) for family, lr in
                           zip(frame["family"], frame["lr"])]
    return frame


def chosen_rates(frame: pd.DataFrame) -> dict[str, float]:
    return {row.family: float(row.lr) for row in frame[frame["chosen"]].itertuples()}
