"""What a workflow job costs before and after its work: the imports of its script, and the
interpreter's teardown at exit, with and without ``harness.rule_session``'s exit freeze.

    python benchmarks/job_overhead.py [--repeats 5]

Each measurement is a fresh ``python -c`` process that imports what a rule's script imports
(the libraries loaded at the top and the ones its work loads: peft for LoRA experts, diffusers for
the denoiser, torch-fidelity and prdc for scoring), builds nothing, and exits. Import seconds are
timed inside the process; teardown = process end (seen by this script) minus the moment the last
exit handler started. ``default``: Python's own exit; ``freeze``: the handler ``rule_session``
registers (``harness.skip_final_collection``: ``gc.freeze`` before the final collection).
The modes alternate within each round.
Then each library's own import time after torch (``job_overhead_libraries.csv``: the floor a job
that needs it pays) and the load time of the shipped default models (``job_overhead_models.csv``).
Writes ``benchmarks/results/job_overhead.csv`` and ``.md``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import _common as common

# what each kind of job imports before it does any work (its script's imports and the lazy ones)
JOBS = {
    "distill_expert_lora": "from ppap import data, dense; from ppap.experts.sets import train_expert; "
                           "from ppap.specs import ExpertTraining; from harness import rule_session; import peft, timm",
    "sample": "from ppap.generate import sample_with_cost; from ppap.study.guides import load_guidance; "
              "from ppap.models.denoisers import load_eps_model; from harness import rule_session; "
              "import diffusers, peft, timm; from diffusers import UNet2DModel",
    "evaluate": "from ppap import data, metrics; from ppap.study import report; from harness import rule_session",
    "table1": "from ppap.study import report; from ppap.tools.reference import write_preset_record; import pandas; "
              "from harness import rule_session",
}
MODES = ("default", "freeze")
# each library's own import, after torch (the floor a job that needs it pays); peft imports transformers
# (peft.utils.constants imports transformers' Bloom model) and accelerate
LIBRARIES = {"torch": "import torch", "timm": "import timm", "peft": "import peft", "diffusers": "import diffusers",
             "torch_fidelity": "import torch_fidelity", "prdc": "import prdc", "pandas": "import pandas"}
# the shipped default models, loaded (and their records checked) as the jobs load them
MODELS = {
    "guide": "from ppap.models.classifiers import load_guide; load_guide(shipped_model('default', 'guide.safetensors'))",
    "evaluator": "from ppap.models.classifiers import load_evaluator; "
                 "load_evaluator(shipped_model('default', 'evaluator.safetensors'))",
    "diffusion": "from ppap.models.denoisers import load_eps_model; load_eps_model(shipped_model('default', 'diffusion'))",
}
TIMED = """
import sys, time
sys.path.insert(0, "workflow/scripts")
import torch
from ppap.public import shipped_model
{setup}
started = time.perf_counter()
{work}
print(time.perf_counter() - started, sorted(m for m in ("transformers", "accelerate", "diffusers") if m in sys.modules))
"""

PROBE = """
import atexit, sys, time
sys.path.insert(0, "workflow/scripts")  # the rule harness, as a rule script finds it
started = time.time()
{imports}
imported = time.time() - started
if {freeze}:
    from harness import skip_final_collection  # what rule_session registers
    skip_final_collection()
atexit.register(lambda: print(f"{{imported}} {{time.time()!r}}", flush=True))  # runs first (LIFO)
print(len(sys.modules), flush=True)
"""


def measure(imports: str, freeze: bool) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports, freeze=freeze)],
                          capture_output=True, text=True, cwd=common.REPO)
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    modules, last = done.stdout.split("\n")[:2]
    imported, exit_started = (float(value) for value in last.split())
    return dict(modules=int(modules), import_s=imported, teardown_s=ended - exit_started)


def timed(work: str, setup: str = "") -> tuple[float, str]:
    """Seconds of `work` in a fresh process (after torch and `setup`), and which heavy libraries it loaded."""
    done = subprocess.run([sys.executable, "-c", TIMED.format(setup=setup, work=work)], capture_output=True,
                          text=True, cwd=common.REPO)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    seconds, loaded = done.stdout.strip().split(" ", 1)
    return float(seconds), loaded


def main() -> None:
    args = common.parser(__doc__.split("\n")[0]).parse_args()
    machine = common.machine(1)
    samples = {(job, mode): [] for job in JOBS for mode in MODES}
    for r in range(args.repeats):
        for job, imports in JOBS.items():
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                samples[job, mode].append(measure(imports, mode == "freeze"))
    rows = []
    for job in JOBS:
        row = dict(job=job, modules=samples[job, "default"][0]["modules"],
                   import_s=statistics.median(s["import_s"] for mode in MODES for s in samples[job, mode]))
        for mode in MODES:
            row[f"teardown_{mode}_s"] = statistics.median(s["teardown_s"] for s in samples[job, mode])
        row["saved_s"] = row["teardown_default_s"] - row["teardown_freeze_s"]
        rows.append(row)
    columns = ["job", "modules", "import_s", "teardown_default_s", "teardown_freeze_s", "saved_s"]
    common.write_csv(args.out / "job_overhead.csv", rows, columns)
    library_rows, model_rows = [], []
    for name, work in LIBRARIES.items():
        if name == "torch":  # torch itself: a process that imports nothing else first
            runs = [(measure("import torch", True)["import_s"], "") for _ in range(args.repeats)]
        else:
            runs = [timed(work) for _ in range(args.repeats)]
        library_rows.append(dict(library=name, import_s=statistics.median(r[0] for r in runs), also_loads=runs[0][1]))
    for name, work in MODELS.items():
        # the loader's imports (and the libraries it loads lazily) are not the load
        setup = work.split(";")[0] + "; import timm, diffusers, safetensors.torch"
        runs = [timed(work.split(";", 1)[1].strip(), setup=setup) for _ in range(args.repeats)]
        model_rows.append(dict(model=name, load_s=statistics.median(r[0] for r in runs)))
    common.write_csv(args.out / "job_overhead_libraries.csv", library_rows, ["library", "import_s", "also_loads"])
    common.write_csv(args.out / "job_overhead_models.csv", model_rows, ["model", "load_s"])
    shown = [{**row, **{c: common.fmt(row[c], 2) for c in columns[2:]}} for row in rows]
    common.report(args.out, "job_overhead",
                  [f"Machine: {machine}.", f"{args.repeats} rounds, a fresh process per measurement; medians."],
                  [("Imports and teardown of a job's process", common.markdown_table(shown, columns)),
                   ("Each library's own import (after torch; torch: alone)",
                    common.markdown_table([{**r, "import_s": common.fmt(r["import_s"], 2)} for r in library_rows],
                                          ["library", "import_s", "also_loads"])),
                   ("Loading the shipped default models (record check included, imports excluded)",
                    common.markdown_table([{**r, "load_s": common.fmt(r["load_s"], 3)} for r in model_rows],
                                          ["model", "load_s"]))],
                  ["- import_s: the script's imports and the libraries its work loads, both modes pooled.",
                   "- teardown: from the last exit handler's start to the process's end; `freeze` is "
                   "`harness.rule_session`'s exit handler (`gc.freeze` before the final collection)."])


if __name__ == "__main__":
    main()
