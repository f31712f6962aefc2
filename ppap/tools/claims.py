"""The headline claims as testable statements, judged on every (data set, guide) pair that has run.

    python -m ppap.tools.claims [--reference results/reference] [--check]

Each pair's reference folder (the digits with the ResNet guide: ``results/reference/``; MNIST:
``mnist/``; the ViT guide: ``digits_vit/``, ``mnist_vit/``) holds the published tables of its study
(``python -m ppap.tools.publish --staged``). Every claim is a function of those tables; a pair
whose folder lacks a table a claim needs is "not run", never guessed. Writes ``claims.csv`` and
``claims.md`` into the reference folder (docs/claims.md embeds the latter as a generated block);
``--check`` exits 1 when the files differ from what the tables give.

Spreads. A cell's spread is the standard deviation over its sampling seeds, combined with the one
over independent trainings where the table has them: ``sqrt(sd_seed^2 + sd_train^2)``. "A beats B"
holds when A - B exceeds ``sqrt(spread_A^2 + spread_B^2)`` (one combined spread); "no worse" when
B - A does not.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ppap.io import read_json, write_text

REPO = Path(__file__).resolve().parents[2]
PAIRS = (  # (data set, guide, folder below the reference root)
    ("digits 8x8", "ResNet-10-T", "."),
    ("MNIST 16x16", "ResNet-10-T", "mnist"),
    ("digits 8x8", "ViT (4 blocks)", "digits_vit"),
    ("MNIST 16x16", "ViT (4 blocks)", "mnist_vit"),
)
CHANCE = 0.1             # ten classes
CHANCE_MARGIN = 0.05     # "at chance": within 0.05 of 0.1
LATE_T = 600             # the claim's "from t = 600"
GAIN_SHARE = 0.8         # "at least 80% of the labeled experts' gain"


class NotRun(Exception):
    """A table the claim needs is not in the pair's folder."""


@dataclass(frozen=True)
class Cell:
    """A measured value with its spread (see the module's note on spreads)."""

    value: float
    spread: float


def _table(folder: Path, name: str) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        raise NotRun(name)
    return pd.read_csv(path)


def _cell(row: pd.Series, metric: str) -> Cell:
    def sd(column):
        value = row.get(column)
        return 0.0 if value is None or pd.isna(value) else float(value)

    return Cell(float(row[metric]), math.hypot(sd(f"{metric}_sd"), sd(f"{metric}_sd_train")))


def table1(folder: Path, method: str, metric: str = "accuracy") -> Cell:
    """Table 1's row, over its trainings when the study trained each set several times."""
    for name in ("table1_trainings.csv", "table1.csv"):
        if (folder / name).is_file():
            rows = _table(folder, name).set_index("method")
            return _cell(rows.loc[method], metric)
    raise NotRun("table1.csv")


def ablation(folder: Path, name: str, value: str, metric: str = "accuracy") -> Cell:
    rows = _table(folder, f"ablations/{name}.csv")
    rows = rows[rows["value"].astype(str) == value]
    if rows.empty:
        raise NotRun(f"ablations/{name}.csv[value={value}]")
    return _cell(rows.iloc[0], metric)


def budget_closes_gap(folder: Path) -> tuple[bool, str]:
    """The training_budget ablation: labeled experts minus PPAP at the configured budget (the row
    whose guide has no ``_steps`` suffix) against the same gap at the largest budget tried."""
    rows = _table(folder, "ablations/training_budget.csv")
    rows = rows.assign(steps=rows["value"].astype(int))
    configured = int(rows.loc[~rows["guide"].str.contains("_steps"), "steps"].iloc[0])
    largest = int(rows["steps"].max())

    def gap(steps: int) -> Cell:
        pick = rows[rows["steps"] == steps].set_index("method")
        labeled, ppap = _cell(pick.loc["multi_expert_labeled"], "accuracy"), _cell(pick.loc["ppap"], "accuracy")
        return Cell(labeled.value - ppap.value, math.hypot(labeled.spread, ppap.spread))

    before, after = gap(configured), gap(largest)
    margin = math.hypot(before.spread, after.spread)
    return before.value - after.value > margin, (f"gap {before.value:+.3f} at {configured} steps, {after.value:+.3f} "
                                                 f"at {largest} (spread {margin:.3f})")


def beats(a: Cell, b: Cell) -> tuple[bool, str]:
    margin = math.hypot(a.spread, b.spread)
    return a.value - b.value > margin, f"{a.value:.3f} vs {b.value:.3f} (difference {a.value - b.value:+.3f}, " \
                                       f"spread {margin:.3f})"


def no_worse(a: Cell, b: Cell) -> tuple[bool, str]:
    margin = math.hypot(a.spread, b.spread)
    return b.value - a.value <= margin, f"{a.value:.3f} vs {b.value:.3f} (difference {a.value - b.value:+.3f}, " \
                                        f"spread {margin:.3f})"


def gain_share(folder: Path) -> tuple[bool, str]:
    naive, ppap, labeled = (table1(folder, m) for m in ("off_the_shelf", "ppap", "multi_expert_labeled"))
    share = (ppap.value - naive.value) / (labeled.value - naive.value)
    return share >= GAIN_SHARE, f"{share:.0%} of the gain ({naive.value:.3f} -> PPAP {ppap.value:.3f}, " \
                                f"labeled {labeled.value:.3f})"


def off_the_shelf_at_chance(folder: Path) -> tuple[bool, str]:
    path = folder / "guides" / "off_the_shelf.json"
    if not path.is_file():
        raise NotRun("guides/off_the_shelf.json")
    noisy = read_json(path)["noisy_test_accuracy"]
    late = [a for t, a in zip(noisy["timesteps"], noisy["accuracy"]) if t >= LATE_T]
    worst = max(abs(a - CHANCE) for a in late)
    points = list(zip(noisy["timesteps"], noisy["accuracy"]))
    first = next((t for t, _ in points if all(abs(a - CHANCE) <= CHANCE_MARGIN for s, a in points if s >= t)), None)
    return worst <= CHANCE_MARGIN, (f"at most {worst:.3f} from chance from t = {LATE_T}; within {CHANCE_MARGIN} "
                                    f"from t = {first}")


def every_guide_at_chance(folder: Path) -> tuple[bool, str]:
    """Table 1's trained guide sets (their manifests' noisy test accuracy) from t = LATE_T."""
    manifests = sorted(p for p in (folder / "guides").glob("*.json") if p.stem not in ("off_the_shelf", "evaluator"))
    if not manifests:
        raise NotRun("guides/<set>.json")
    worst = {}
    for path in manifests:
        noisy = read_json(path)["noisy_test_accuracy"]
        worst[path.stem] = max(abs(a - CHANCE) for t, a in zip(noisy["timesteps"], noisy["accuracy"]) if t >= LATE_T)
    name = max(worst, key=worst.get)
    return worst[name] <= CHANCE_MARGIN, f"farthest from chance: {name}, {worst[name]:.3f}"


def ppap_fid_no_worse_than_labeled(folder: Path) -> tuple[bool, str]:
    ppap, labeled = table1(folder, "ppap", "fid"), table1(folder, "multi_expert_labeled", "fid")
    margin = math.hypot(ppap.spread, labeled.spread)  # lower is better
    return ppap.value - labeled.value <= margin, f"{ppap.value:.2f} vs {labeled.value:.2f} (difference " \
                                                 f"{ppap.value - labeled.value:+.2f}, spread {margin:.2f})"


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    judge: Callable[[Path], tuple[bool, str]]


CLAIMS = (
    Claim("gain_share", f"PPAP reaches at least {GAIN_SHARE:.0%} of the labeled experts' accuracy gain over "
                        "naive guidance (Table 1, s = 1)", gain_share),
    Claim("ppap_beats_naive", "PPAP's accuracy beats the off-the-shelf guide's",
          lambda f: beats(table1(f, "ppap"), table1(f, "off_the_shelf"))),
    Claim("experts_beat_single", "N = 5 labeled experts beat one noise-aware guide (accuracy)",
          lambda f: beats(table1(f, "multi_expert_labeled"), table1(f, "noise_aware_single"))),
    Claim("ppap_fid", "PPAP's FID is no worse than the labeled experts'", ppap_fid_no_worse_than_labeled),
    Claim("labels_worth", "labels beat data-free transfer (labeled full vs data-free full, N = 5)",
          lambda f: beats(ablation(f, "supervision", "labeled_full"), ablation(f, "supervision", "datafree_full"))),
    Claim("lora_enough", "LoRA is no worse than full fine-tuning under data-free transfer (N = 5)",
          lambda f: no_worse(ablation(f, "supervision", "datafree_lora4"), ablation(f, "supervision", "datafree_full"))),
    Claim("more_experts", "more experts help up to N = 5 (PPAP, N = 5 beats N = 1)",
          lambda f: beats(ablation(f, "n_experts", "5"), ablation(f, "n_experts", "1"))),
    Claim("warm_start", "warm start raises PPAP's accuracy at N = 10",
          lambda f: beats(ablation(f, "warm_start", "10_warmoptimizer"), ablation(f, "warm_start", "10_warmoff"))),
    Claim("budget_closes_gap", "more distillation closes PPAP's distance to the labeled experts (accuracy gap at "
                               "4x the training budget below the gap at 1x)", budget_closes_gap),
    Claim("chance_late", f"the off-the-shelf guide is at chance from t = {LATE_T} (noisy test accuracy within "
                         f"{CHANCE_MARGIN} of {CHANCE})", off_the_shelf_at_chance),
    Claim("all_chance_late", f"every trained guide of Table 1 is at chance from t = {LATE_T} (within {CHANCE_MARGIN})",
          every_guide_at_chance),
)


def judge_all(reference: Path) -> list[dict]:
    rows = []
    for claim in CLAIMS:
        for data, guide, folder in PAIRS:
            try:
                holds, detail = claim.judge(reference / folder)
                verdict = "holds" if holds else "fails"
            except NotRun as missing:
                verdict, detail = "not run", f"no {missing}"
            rows.append(dict(claim=claim.name, statement=claim.statement, data=data, guide=guide, verdict=verdict,
                             detail=detail))
    return rows


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict]) -> str:
    pairs = [f"{data}, {guide}" for data, guide, _ in PAIRS]
    lines = ["| claim | " + " | ".join(pairs) + " |", "|---|" + "---|" * len(pairs)]
    for claim in CLAIMS:
        cells = {f"{r['data']}, {r['guide']}": r for r in rows if r["claim"] == claim.name}
        text = [f"**{cells[p]['verdict']}**" + (f": {cells[p]['detail']}" if cells[p]["verdict"] != "not run" else "")
                for p in pairs]
        lines.append(f"| {claim.statement} | " + " | ".join(text) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppap.tools.claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=str(REPO / "results" / "reference"))
    parser.add_argument("--check", action="store_true", help="exit 1 if claims.csv / claims.md are out of date")
    args = parser.parse_args(argv)
    reference = Path(args.reference)
    rows = judge_all(reference)
    outputs = {reference / "claims.csv": to_csv(rows), reference / "claims.md": to_markdown(rows)}
    if args.check:
        stale = [str(p) for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
        if stale:
            print(f"out of date (python -m ppap.tools.claims): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        write_text(path, text)
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
