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


BUDGET_RULE = ("the smallest budget from which one doubling raises the validation score by less than the "
               "score's spread over trainings at the configured budget (sample sd); the largest when every "
               "doubling still rises (at_edge: the grid should grow)")


def training_budget_table(runs: Sequence[Mapping], manifests: Mapping[str, Mapping],
                          configured_steps: int) -> pd.DataFrame:
    """One row per (family, total steps): the validation score (mean over the value's trainings),
    the gain per doubling to the next budget, and the budget each family would choose
    (:data:`BUDGET_RULE`). The spread is measured where several trainings exist: at the
    configured budget (``tuning.training_budget.<family>.spread_trainings``)."""
    rows = []
    for run in runs:
        scores = [validation_score(manifests[guide]) for guide in run["guides"]]
        rows.append(dict(family=run["method"], total_steps=int(run["value"]), guide=run["guides"][0],
                         trainings=len(scores), val_accuracy=float(np.mean(scores)),
                         val_sd=float(np.std(scores, ddof=1)) if len(scores) > 1 else np.nan))
    frame = pd.DataFrame(rows)
    frame["gain_per_doubling"] = np.nan
    frame["spread"] = np.nan
    frame["chosen"] = False
    frame["at_edge"] = False
    for family, group in frame.groupby("family", sort=False):
        group = group.sort_values("total_steps")
        spread = group.loc[group.total_steps == configured_steps, "val_sd"]
        spread = float(spread.iloc[0]) if len(spread) and np.isfinite(spread.iloc[0]) else np.nan
        if not np.isfinite(spread):
            raise ValueError(f"training budget of {family}: no spread (train the configured budget "
                             f"{configured_steps} at least twice: spread_trainings >= 2)")
        frame.loc[group.index, "spread"] = spread
        index, steps, score = list(group.index), group.total_steps.to_numpy(), group.val_accuracy.to_numpy()
        gains = (score[1:] - score[:-1]) / np.log2(steps[1:] / steps[:-1])
        frame.loc[index[:-1], "gain_per_doubling"] = gains
        settled = [i for i, gain in enumerate(gains) if gain < spread]
        chosen = index[settled[0]] if settled else index[-1]
        frame.loc[chosen, "chosen"] = True
        frame.loc[chosen, "at_edge"] = not settled
    frame["configured"] = frame.total_steps == int(configured_steps)
    return frame


def chosen_budgets(frame: pd.DataFrame) -> dict[str, int]:
    return {row.family: int(row.total_steps) for row in frame[frame["chosen"]].itertuples()}


def markdown_table(frame: pd.DataFrame, columns: Sequence[str], header: str) -> str:
    """`header`, then the columns of `frame` as a Markdown table (booleans as yes / blank, numbers
    to 4 significant decimals)."""
    def cell(value) -> str:
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else ""
        if isinstance(value, float):
            return "" if not np.isfinite(value) else f"{value:.4g}" if abs(value) >= 1 else f"{value:.4f}"
        return str(value)

    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(getattr(row, c)) for c in columns) + " |" for row in frame.itertuples()]
    return "\n".join(lines) + "\n"
