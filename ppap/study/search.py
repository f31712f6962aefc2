"""A beam search over each guided method's own hyperparameters on the validation split
(``tuning.guidance.search``), after its grid (variants x scales).

It follows the search of TFG's authors (Ye et al., NeurIPS 2024, ``searching.py``): each round
takes the ``beam`` best cells found so far and tries every cell one step away from them in one
hyperparameter. Here a step goes both ways (TFG's goes up from small starting values, ours starts
from the grid), the order is the validation rule's (:func:`ppap.study.comparison.rank_cells`), and
every method gets the same number of cells, grid included (``budget``): the same tuning budget for
PPAP's scale as for TFG's (rho, mu, gamma, iterations, schedule).

What a step moves: the scale (TFG's rho; the classifier scale s) x or / ``factor``; of a
training-free guide also mu and the iterations x or / ``factor``, the smoothing gamma x or / 10 (as
TFG's search), and the schedule to each other one. Time travel (recurrence) and the smoothing's
sample count are what a row spends, and the step rule (``_form``) what it is: neither is searched.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from ppap.study import grammar
from ppap.vocab import TF_SCHEDULES

# training-free hyperparameter -> its step: a factor (None: the search's own), or the other values
NUMERIC_STEPS = {"mean": None, "iterations": None, "smoothing": 10.0}
CATEGORICAL_STEPS = {"schedule": TF_SCHEDULES}


def neighbours(guide: str, scale: float, config: dict, factor: float = 2.0) -> list[tuple[str, float]]:
    """The cells one step from (guide, scale) in each hyperparameter the method has (module doc),
    names canonical, in a fixed order; a hyperparameter at 0 (a term switched off) is not moved."""
    out = [(guide, scale * factor), (guide, scale / factor)]
    if grammar.guide_kind(guide) != "training_free":
        return out
    method = grammar.parse_training_free(guide).method
    current = grammar.training_free_settings(guide, config)
    for field in grammar.training_free_fields(method):
        value = current.get(field)
        if field in NUMERIC_STEPS and value:
            step = NUMERIC_STEPS[field] or factor
            moved = [value * step, value / step]
            if field == "iterations":
                moved = sorted({max(1, round(v)) for v in moved} - {value})
            out += [(grammar.with_training_free_field(guide, config, **{field: v}), scale) for v in moved]
        elif field in CATEGORICAL_STEPS:
            out += [(grammar.with_training_free_field(guide, config, **{field: v}), scale)
                    for v in CATEGORICAL_STEPS[field] if v != value]
    return out


def propose(ranked: pd.DataFrame, config: dict, budget: int, beam: int, factor: float = 2.0,
            methods: Sequence[str] | None = None) -> dict[str, list[tuple[str, float]]]:
    """The next round's new cells per method: the neighbours (:func:`neighbours`) of its ``beam``
    best cells (``rank`` from :func:`ppap.study.comparison.rank_cells`) not yet scored, best
    parent first, as many as its ``budget`` of cells still allows. ``methods``: the methods searched
    (default every guided one in ``ranked``); a method whose budget is spent, or whose neighbours
    are all scored, gets none: the search has ended for it."""
    proposals = {}
    guided = ranked[ranked["method"] != "unguided"]
    for method, group in guided.groupby("method", sort=False):
        if methods is not None and method not in methods:
            continue
        scored = {(g, _scale_key(s)) for g, s in zip(group["guide"], group["scale"])}
        room = budget - len(group)
        new = []
        for parent in group.sort_values("rank").head(beam).itertuples():
            for cell in neighbours(parent.guide, float(parent.scale), config, factor):
                key = (cell[0], _scale_key(cell[1]))
                if room > len(new) and key not in scored:
                    scored.add(key)
                    new.append(cell)
        proposals[method] = new
    return proposals


def _scale_key(scale: float) -> str:
    """A scale as the cell's name spells it (grammar.format_number): equal names, the same cell."""
    return grammar.format_number(float(scale)) if math.isfinite(float(scale)) else str(scale)
