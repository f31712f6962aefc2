"""A requested output whose inputs are missing is not reported as up to date.

Snakemake decides from the requested files down: a table that exists and is newer than the inputs
it can see needs no run, and the jobs below it are not looked at. So after a failed scoring job has
removed its metrics file, ``snakemake results/table1.csv`` says "Nothing to be done" while the
table's inputs are missing, and the table stands without the files it was made from.

Before the DAG is built, the Snakefile asks :func:`check_requested_outputs`: a requested output that
exists while a file it was made from (Snakemake's record of it, :mod:`metadata`) does not stops the run in one line naming both, with the command
that remakes them (the same command with ``--forcerun <output>``, which this check then lets
through). The requested outputs are the command's file targets and the inputs of the rules it
names (the default target ``all`` included): a study's tables, figures and report. Their inputs
are expanded by Snakemake's own rules (``Rule.expand_input``: input functions, unpack, wildcards),
so nothing here repeats what a rule declares.

Snakemake gives the Snakefile its settings only after parsing it, so the command's targets and
``--forcerun`` are read from the command line with Snakemake's own argument parser; where that is
not a Snakemake command line (the Python API), nothing is checked.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from metadata import snakemake_record


def _producer(workflow, path: str):
    """The rule that makes `path`; None where none does, or several (an ambiguity is Snakemake's to
    report: ruleorder)."""
    producers = [rule for rule in workflow.rules if rule.is_producer(path)]
    return producers[0] if len(producers) == 1 else None


def _expanded_input(workflow, path: str):
    """The input files of the rule that makes `path` (None: no single rule makes it)."""
    rule = _producer(workflow, path)
    if rule is None:
        return None
    try:
        wildcards = rule.get_wildcards(path)
        files, *_ = rule.expand_input(wildcards)
    except Exception:  # an input function that needs a finished checkpoint, a missing config key ...
        return None  # ... Snakemake says so itself when it builds the DAG
    return [str(f) for f in files]


# command-line settings under which Snakemake builds nothing: no check
NOT_BUILDING = ("unlock", "cleanup_metadata", "summary", "detailed_summary", "list_rules", "list_target_rules",
                "list_changes", "list_input_changes", "list_params_changes", "list_code_changes",
                "delete_all_output", "delete_temp_output", "touch", "lint", "dag", "rulegraph", "filegraph",
                "print_compilation", "archive", "cleanup_shadow", "report", "containerize", "export_cwl")


def command_line_request(argv=None):
    """(targets, forced files and rules, everything forced?) of this Snakemake command line, or None
    where it is not one, or not a command that builds (``--unlock``, ``--summary``, ``--list-*``)."""
    argv = sys.argv if argv is None else argv
    if not argv or "snakemake" not in os.path.basename(os.path.dirname(argv[0]) + os.path.basename(argv[0])):
        return None
    try:
        from snakemake.cli import get_argument_parser

        with contextlib.redirect_stderr(io.StringIO()):
            args, _ = get_argument_parser().parse_known_args(argv[1:])
    except (Exception, SystemExit):
        return None
    if any(getattr(args, name, None) for name in NOT_BUILDING):
        return None
    forced = set(getattr(args, "forcerun", None) or ())
    everything = bool(getattr(args, "forceall", False))
    if getattr(args, "force", False):
        forced.update(args.targets or ())
    return list(args.targets or ()), forced, everything


def _requested_files(workflow, targets) -> list[str]:
    files = []
    for target in targets or [workflow.default_target]:
        if target and workflow.is_rule(target):  # a rule name: its inputs are what it requests
            rule = workflow.get_rule(target)
            if rule.has_wildcards():
                continue
            try:
                expanded, *_ = rule.expand_input({})
            except Exception:
                continue
            files.extend(str(f) for f in expanded)
        elif target:
            files.append(target)
    return files


def outputs_with_missing_inputs(workflow, targets) -> dict[str, list[str]]:
    """{requested output that exists: its inputs that do not}, in the order requested."""
    stale: dict[str, list[str]] = {}
    for path in dict.fromkeys(_requested_files(workflow, targets)):
        if not os.path.exists(path):
            continue  # missing: Snakemake makes it anyway
        inputs = _expanded_input(workflow, path)
        # only files it was made from: a config that changed what the table reads is Snakemake's
        # own "input" trigger, which reruns it
        made_from = set((snakemake_record(path) or {}).get("input") or ())
        missing = [f for f in inputs or [] if f in made_from and not os.path.exists(f)]
        if missing:
            stale[path] = missing
    return stale


def check_requested_outputs(workflow, argv=None) -> None:
    """Stop (one line, status 1) where a requested output exists without all of its inputs."""
    request = command_line_request(argv)
    if request is None:
        return
    targets, forced, everything = request
    if everything:
        return
    for path, missing in outputs_with_missing_inputs(workflow, targets).items():
        if path in forced or getattr(_producer(workflow, path), "name", None) in forced:
            continue
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        sys.stderr.write(f"StaleOutput: {path} exists but {missing[0]}{more}, which it was made from, does not "
                         f"(a job that failed or a file removed since): remake them with the same command and "
                         f"--forcerun {path}\n")
        sys.stderr.flush()
        raise SystemExit(1)
