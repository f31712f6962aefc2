"""Snakemake's own record of an output it wrote (``.snakemake/metadata/``): the rule, the input files,
the params. Standard library only: the Snakefile reads it before the DAG is built, a job when it
names the rule that made a damaged file."""

from __future__ import annotations

import contextlib
import json
import os
from base64 import urlsafe_b64encode
from pathlib import Path


def snakemake_record(path: str | os.PathLike, persistence: str | os.PathLike = ".snakemake") -> dict | None:
    """The record of ``path`` (relative to the working directory): the path in URL-safe base64, split
    into parts of at most NAME_MAX - 1 characters, all but the last prefixed with ``@``; None for a
    file Snakemake did not write (a file the config names) or an unreadable record."""
    record = urlsafe_b64encode(os.path.normpath(str(path)).encode()).decode()
    folder = Path(persistence) / "metadata"
    limit = 254
    with contextlib.suppress(OSError):
        limit = os.pathconf(folder, "PC_NAME_MAX") - 1
    parts = [record[i:i + limit] for i in range(0, len(record), limit)]
    location = folder.joinpath(*["@" + part for part in parts[:-1]], parts[-1])
    try:
        content = json.loads(location.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None
