"""Tables from metric and manifest files: Table 1 rows, seed aggregation, Markdown output."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

from ppap.config import parse_guide_name

TABLE1_COLUMNS = ["method", "n_experts", "adapter_rank", "supervision", "trainable_params", "stored_params",
                  "fid", "is", "precision", "recall", "accuracy", "samples"]
METRICS = ["fid", "is", "precision", "recall", "accuracy"]


def method_row(method: str, guide: str, runs: Sequence[Mapping], base_params: int,
               manifest: Mapping | None) -> dict:
    """One Table 1 row: the method's description, and its metrics averaged over sampling seeds."""
    if not runs:
        raise ValueError(f"no metric files for method {method!r}")
    parts = parse_guide_name(guide)
    if parts["kind"] == "experts":
        if manifest is None:
            raise ValueError(f"method {method!r} uses guide set {guide!r} but no manifest was given")
        trainable, stored = manifest["trainable_params"], manifest["stored_params"]
        rank = "full" if parts["rank"] is None else str(parts["rank"])
        supervision = "data-free" if parts["supervision"] == "datafree" else "labeled"
    elif parts["kind"] == "off_the_shelf":
        trainable, stored, rank, supervision = 0, base_params, "", "none"
    else:
        trainable, stored, rank, supervision = 0, 0, "", "none"
    row = dict(method=method, n_experts=parts["n_experts"], adapter_rank=rank, supervision=supervision,
               trainable_params=int(trainable), stored_params=int(stored))
    for metric in METRICS:
        values = [run[metric] for run in runs if metric in run]
        row[metric] = sum(values) / len(values) if values else math.nan
    row["samples"] = runs[0]["samples"] if len(runs) == 1 else ";".join(run["samples"] for run in runs)
    return row


def table1(rows: Sequence[Mapping]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    missing = [c for c in TABLE1_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"rows lack columns {missing}")
    return frame[TABLE1_COLUMNS]


def to_markdown(frame: pd.DataFrame, floatfmt: Mapping[str, str] | None = None) -> str:
    """A GitHub Markdown table (no tabulate dependency)."""
    floatfmt = dict(fid="{:.2f}", **{"is": "{:.2f}"}, precision="{:.3f}", recall="{:.3f}", accuracy="{:.3f}",
                    **(floatfmt or {}))

    def cell(column, value):
        if isinstance(value, float):
            if math.isnan(value):
                return "n/a"
            return floatfmt.get(column, "{:.4g}").format(value)
        if column in ("trainable_params", "stored_params"):
            return f"{int(value):,}"
        return str(value)

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row)) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"
