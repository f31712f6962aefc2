"""Keep the README and the docs true to the result files: generated tables and checked numbers.

The pages are ``README.md`` and every ``docs/*.md`` (:func:`pages`); each is checked by the same
rules. Two mechanisms, both over ``results/reference/`` (the paths inside the comments are relative
to it, whichever page quotes them):

* **Generated blocks**::

      <!-- generated: table1.md -->
      ...the file's contents...
      <!-- /generated -->

  or, from a table's CSV, the Markdown of some of its columns (metrics "mean ± sd")::

      <!-- generated: table1_trainings.csv columns=method,adapter_rank,fid,accuracy -->

  ``python -m ppap.tools.readme --update`` rewrites each block of every page from its file;
  :func:`check` reports a block that differs from it.
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

A page checked as a file (:func:`check_page`, the command line) also has its relative links
checked: every ``[text](path)`` and ``![alt](path)`` outside code must name a file or folder that
exists, relative to the page (so a page moved into ``docs/`` cannot keep the README's paths), and
a ``#heading`` of a Markdown page must be one of its headings.

    python -m ppap.tools.readme                      # check README.md and docs/*.md
    python -m ppap.tools.readme --update             # rewrite their generated blocks, then check
    python -m ppap.tools.readme docs/results.md      # check some pages only
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
LINK = re.compile(r"\[[^\]\n]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:
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


def check(readme: str, reference: Path, name: str = "README") -> list[str]:
    """Every problem of a page's text against the reference results, one line each (empty: true).
    ``name`` is how the problems call the page."""
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
            problems.append(f"{name} says {ref['number']}{ref['percent']} but {ref['expr'].strip()} = {value:.6g}")
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


def _without_code(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them (lower case, punctuation dropped,
    spaces to hyphens; a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.sub(r"```.*?```", "", text, flags=re.DOTALL), re.MULTILINE)
    for heading in headings:
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def check_links(text: str, page: Path) -> list[str]:
    """Every relative link of a page that names no file or folder (relative to the page's folder),
    or a heading that its Markdown target does not have."""
    problems = []
    for link in LINK.finditer(_without_code(text)):
        target = link["target"]
        if EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        file = page.parent / path if path else page
        if not file.exists():
            problems.append(f"link {target} names nothing (relative to {page.parent.as_posix() or '.'}/)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            problems.append(f"link {target}: {file.as_posix()} has no heading #{anchor}")
    return problems


def pages(root: Path = Path(".")) -> list[Path]:
    """The pages that quote results: README.md and every docs/*.md, in that order."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def check_page(page: Path, reference: Path) -> list[str]:
    """Every problem of one page file: :func:`check` on its text, and its relative links."""
    text = page.read_text()
    return check(text, reference, name="the page") + check_links(text, page)


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
    parser = argparse.ArgumentParser(
        description="check (or update) README.md and docs/*.md against results/reference/")
    parser.add_argument("pages", nargs="*", type=Path,
                        help="Markdown pages to check (default: README.md and every docs/*.md)")
    parser.add_argument("--reference", default="results/reference")
    parser.add_argument("--update", action="store_true",
                        help="rewrite the generated blocks of every page first")
    args = parser.parse_args(argv)
    reference = Path(args.reference)
    failed = 0
    for page in args.pages or pages():
        if not page.is_file():
            print(f"{page}: no such page")
            failed += 1
            continue
        if args.update:
            text = page.read_text()
            updated = update(text, reference)
            if updated != text:
                write_text(page, updated)
        problems = check_page(page, reference)
        for problem in problems:
            print(f"{page}: {problem}")
        print(f"{page}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
