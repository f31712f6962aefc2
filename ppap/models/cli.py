"""What the model tools' command lines share (convert_adm, convert_glide, import_guide, import_dense):
one-line errors with exit code 2, and argument types that say what they expected."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from typing import Iterator

from ppap.models.checkpoints import CheckpointError


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``prog: error: message``, with exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def int_list(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 32,16,8, got {text!r}") from None


def number_list(text: str) -> tuple:
    try:
        return tuple(float(v) if "." in v else int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1,1,2,2,4,4, "
                                         f"got {text!r}") from None


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Expected user errors (a missing or foreign file, flags that do not fit it) become one line on
    stderr and exit code 2; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (CheckpointError, ValueError, OSError) as err:
        print(f"{prog}: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
