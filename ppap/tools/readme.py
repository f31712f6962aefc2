"""Keep the README true to the result files: generated tables and checked numbers.

Two mechanisms, both over ``results/reference/`` (paths in the README are relative to it):

* **Generated blocks**::

      <!-- generated: table1.md -->
      ...the file's contents...
      <!-- /generated -->

  or, from a table's CSV, the Markdown of some of its columns (metrics "mean ± sd")::

      <!-- generated: table1_trainings.csv columns=method,adapter_rank,fid,accuracy -->

  ``python -m ppap.tools.readme --update`` rewrites each block from the file; :func:`check` reports a
  block that differs from it.
* **Checked numbers**: a number quoted in prose is followed by an HTML comment (invisible when
  rendered) saying where it comes from::

      PPAP reaches 0.513<!-- ref: table1.csv[method=ppap].accuracy -->

  The expression may combine references with + - * / and parentheses, e.g. a gain
  ``table1.csv[method=ppap].accuracy - table1.csv[method=off_the_shelf].accuracy``. CSV references
  are ``FILE[col=value,...].column``; JSON references ``FILE:key.key[index]``. The quoted number
  must equal the expression rounded to the quoted number of decimals (``%`` quotes are x100).

Between ``<!-- results:begin -->`` and ``<!-- results:end -->`` every decimal number outside code
and generated blocks must carry such a comment (or ``<!-- ref: none -->`` for a number that is not
from a result file, e.g. a setting), so that no quoted result can go unchecked.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import operator
import re
import sys
from functools import lru_cache
from pathlib import Path

from ppap.io import write_text

GENERATED = re.compile(r"<!-- generated: (?P<file>[^ ]+)(?: columns=(?P<columns>[^ ]+))? -->\n(?P<body>.*?)"
                       r"<!-- /generated -->", re.S)
# A sign belongs to the number only where it cannot be a range's dash ("0.003-0.010", "...-->-0.010").
REF = re.compile(r"(?P<number>(?:(?<![\w>.])[-+])?[0-9][0-9,]*(?:\.[0-9]+)?)(?P<percent>%?)(?P<unit>[a-zA-Z]*)"
                 r"<!-- ref: (?P<expr>.*?) -->")
CSV_TOKEN = re.compile(r"(?P<file>[\w./-]+\.csv)\[(?P<keys>[^\]]*)\]\.(?P<column>\w+)")
JSON_TOKEN = re.compile(r"(?P<file>[\w./-]+\.json):(?P<path>[\w.\[\]]+)")
RESULTS = re.compile(r"<!-- results:begin -->(?P<body>.*?)<!-- results:end -->", re.S)
DECIMAL = re.compile(r"(?<![\w.])[-+]?[0-9]+\.[0-9]+%?")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


class ReadmeError(ValueError):
    pass


@lru_cache(maxsize=None)
def _csv(path: str):
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False, na_values=[""])


@lru_cache(maxsize=None)
def _json(path: str):
    return json.loads(Path(path).read_text())


def lookup_csv(reference: Path, file: str, keys: str, column: str) -> float:
    import numpy as np

    frame = _csv(str(reference / file))
    mask = np.ones(len(frame), dtype=bool)
    for condition in filter(None, (k.strip() for k in keys.split(","))):
        key, value = condition.split("=", 1)
        if key not in frame.columns:
            raise ReadmeError(f"{file} has no column {key!r}")
        mask &= (frame[key].astype(str) == value).to_numpy()
    rows = frame[mask]
    if len(rows) != 1:
        raise ReadmeError(f"{file}[{keys}] selects {len(rows)} rows, not one")
    if column not in frame.columns:
        raise ReadmeError(f"{file} has no column {column!r}")
    return float(rows.iloc[0][column])


def lookup_json(reference: Path, file: str, path: str) -> float:
    value = _json(str(reference / file))
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        value = value[int(part[1:-1])] if part.startswith("[") else value[part]
    return float(value)


def evaluate(expression: str, reference: Path) -> float:
    """The value of a reference expression (see the module docstring)."""
    values = []

    def substitute(match, kind):
        values.append(lookup_csv(reference, match["file"], match["keys"], match["column"]) if kind == "csv"
                      else lookup_json(reference, match["file"], match["path"]))
        return f" __v{len(values) - 1} "

    text = CSV_TOKEN.sub(lambda m: substitute(m, "csv"), expression)
    text = JSON_TOKEN.sub(lambda m: substitute(m, "json"), text)

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id.startswith("__v"):
            return values[int(node.id[3:])]
        raise ReadmeError(f"cannot evaluate {expression!r}")

    try:
        return walk(ast.parse(text.strip(), mode="eval"))
    except SyntaxError as err:
        raise ReadmeError(f"cannot parse {expression!r}: {err}") from None


def _matches(quoted: str, percent: bool, value: float) -> bool:
    text = quoted.replace(",", "")
    decimals = len(text.split(".")[1]) if "." in text else 0
    target = value * 100 if percent else value
    if math.isnan(target):
        return False
    return abs(float(text) - round(target, decimals)) < 0.5 * 10 ** -decimals + 1e-12


def check(readme: str, reference: Path) -> list[str]:
    """Every problem of the README against the reference results, one line each (empty: true)."""
    problems = []
    for block in GENERATED.finditer(readme):
        path = reference / block["file"]
        if not path.is_file():
            problems.append(f"generated block: {block['file']} does not exist")
        elif block["body"] != render(block, reference):
            problems.append(f"generated block {block['file']} differs from the file (python -m ppap.tools.readme --update)")
    for ref in REF.finditer(readme):
        if ref["expr"].strip() == "none":
            continue
        try:
            value = evaluate(ref["expr"], reference)
        except (ReadmeError, KeyError, IndexError, FileNotFoundError, ValueError) as err:
            problems.append(f"{ref.group(0)}: {err}")
            continue
        if not _matches(ref["number"], bool(ref["percent"]), value):
            problems.append(f"README says {ref['number']}{ref['percent']} but {ref['expr'].strip()} = {value:.6g}")
    for section in RESULTS.finditer(readme):
        body = GENERATED.sub("", section["body"])
        body = re.sub(r"```.*?```", "", body, flags=re.S)
        body = re.sub(r"`[^`]*`", "", body)
        body = REF.sub("", body)
        for line in body.splitlines():
            if line.lstrip().startswith("|"):
                continue  # hand-written tables are not allowed to quote results: generate them
            for number in DECIMAL.findall(line):
                problems.append(f"unchecked number {number} in a results section: {line.strip()[:100]}")
    return problems


def render(block, reference: Path) -> str:
    """What a generated block holds: the file itself, or chosen columns of a CSV table."""
    path = reference / block["file"]
    if not block["columns"]:
        return path.read_text()
    import pandas as pd

    from ppap.study import report

    frame = pd.read_csv(path, dtype={"adapter_rank": str, "value": str}, keep_default_na=False,
                        na_values={c: [""] for c in pd.read_csv(path, nrows=0).columns
                                   if c.split("_sd")[0] in report.METRICS + report.EXTRA_METRICS})
    return report.to_markdown(frame, columns=block["columns"].split(","))


def update(readme: str, reference: Path) -> str:
    """The README with every generated block rewritten from its file."""
    def fill(block):
        options = f" columns={block['columns']}" if block["columns"] else ""
        return f"<!-- generated: {block['file']}{options} -->\n{render(block, reference)}<!-- /generated -->"

    return GENERATED.sub(fill, readme)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="check (or update) the README against results/reference/")
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--reference", default="results/reference")
    parser.add_argument("--update", action="store_true", help="rewrite the generated blocks first")
    args = parser.parse_args(argv)
    path, reference = Path(args.readme), Path(args.reference)
    text = path.read_text()
    if args.update:
        text = update(text, reference)
        write_text(path, text)
    problems = check(text, reference)
    for problem in problems:
        print(problem)
    print(f"{path}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
