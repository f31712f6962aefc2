"""Rule search_guidance: the next round of the beam search over each method's hyperparameters
(tuning.guidance.search), from the validation cells ranked so far, as an overlay for the next run."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

import pandas as pd
import yaml

from harness import rule_session
from ppap.io import write_text
from ppap.study import search

with rule_session(snakemake.log[0], snakemake.threads, "search_guidance") as log:
    settings = snakemake.params.search
    if not settings:
        raise ValueError("tuning.guidance.search is not set: give it budget and beam to search")
    ranked = pd.read_csv(snakemake.input[0])  # tune_guidance's cells, each with its rank in its method
    new = search.propose(ranked, snakemake.config, settings["budget"], settings["beam"], settings.get("factor", 2.0),
                         settings.get("methods"))
    cells = {method: [list(cell) for cell in found] for method, found in (settings.get("cells") or {}).items()}
    for method, found in new.items():
        cells.setdefault(method, []).extend([guide, float(scale)] for guide, scale in found)
    spent = {method: int((ranked["method"] == method).sum()) for method in new}
    ended = sorted(method for method, found in new.items() if not found)
    header = (f"# The beam search's cells so far (rule search_guidance): {sum(map(len, new.values()))} new "
              "this round;\n"
              f"# cells scored per method: {spent}; ended (budget spent or every neighbour scored): {ended}.\n"
              "# Pass this file as the last --configfile of the next run to score the new cells.\n")
    body = yaml.safe_dump({"tuning": {"guidance": {"search": {"cells": {m: c for m, c in cells.items() if c}}}}},
                          sort_keys=False, default_flow_style=None, width=200)
    write_text(snakemake.output[0], header + body)
    log.info("new cells %s; scored %s; ended %s", new, spent, ended)
