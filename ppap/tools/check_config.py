"""Name the file and line of a syntax error in config overlays, which Snakemake does not.

    python -m ppap.tools.check_config FILE [FILE ...]

Snakemake reads ``--configfile`` before the Snakefile and reports a YAML syntax error as "Config
file is not valid JSON or YAML", without the file or the line: ``snakemake/common/configfile.py``
drops the YAML error it caught, so the Snakefile's own checks never see the file. This reads each
file as Snakemake does (JSON, else YAML) and prints one line per bad file,
``FILE:LINE:COLUMN: what the parser found`` (exit 1), or nothing (exit 0). A key given twice in one
mapping is named the same way: YAML keeps the last one silently, so the first is a setting that is not
used. A file that parses is then checked by the workflow itself (``snakemake -n ... --configfile FILE``:
keys, types, files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key that a mapping already has."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    f"in the mapping at line {node.start_mark.line + 1}:", node.start_mark,
                    f"key {key!r} given twice (first at line {seen[key] + 1}): YAML keeps the last one silently",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def problem(path: str | Path) -> str | None:
    """One line describing what is wrong with `path` as a config file, or None."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        return f"{path}: cannot read it: {err.strerror or err}"
    try:
        content = json.loads(text)
    except ValueError:
        try:
            content = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
            what = " ".join(str(part) for part in (getattr(err, "context", None), getattr(err, "problem", None))
                            if part) or str(err).splitlines()[0]
            return f"{where}: {what}"
    if content is not None and not isinstance(content, dict):
        return f"{path}: the top level is a {type(content).__name__}, not a mapping of config keys"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ppap.tools.check_config", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+")
    found = [line for line in map(problem, parser.parse_args(argv).files) if line]
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
