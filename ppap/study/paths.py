"""Every file and folder the workflow writes, spelled once (relative to the working directory).

One function per kind of result, and a wildcard pattern beside it where a rule produces that kind
(the function called with ``{wildcard}`` names). The rule files, :mod:`ppap.study.config` and the
tables' row lists build their paths from here; a rule script reads only what its rule declares.
No torch and no snakemake: the Snakefile imports this before any job runs.
"""

from __future__ import annotations

import os

from ppap.models.records import record_path

# ------------------------------------------------------------------------------------------ data


def real_data(source: str) -> str:
    """The labeled real images' splits: the digits' or MNIST's (data.source digits | mnist), or an
    ImageFolder tree's."""
    return "results/data/real.npz" if source == "folder" else f"results/data/{source}.npz"


def synthetic_shard(shard) -> str:
    """Shard ``shard`` of the data-free transfer set (unconditional samples, no labels)."""
    return f"results/data/synthetic/shard{shard}.npz"


def synthetic_shard_compute(shard) -> str:
    """What generating shard ``shard`` of the transfer set cost (ppap.compute)."""
    return f"results/data/synthetic/shard{shard}.compute.json"


SYNTHETIC_SHARD = synthetic_shard("{shard}")
SYNTHETIC_SHARD_COMPUTE = synthetic_shard_compute("{shard}")

# ---------------------------------------------------------------------------------------- models

SCHEDULER = "results/models/scheduler"                              # the embedded training noise schedule
DIFFUSION = "results/models/diffusion"                              # the embedded unconditional diffusion model
CONDITIONAL_DIFFUSION = "results/models/conditional_diffusion"      # the class-conditional model (upper bound)
CONDITIONAL_DIFFUSION_RECORD = CONDITIONAL_DIFFUSION + ".json"      # its training record
GUIDE = "results/models/guide.safetensors"                          # the embedded off-the-shelf guide
GUIDE_STATS = "results/models/guide.json"                           # its accuracy per timestep
EVALUATOR = "results/models/evaluator.safetensors"                  # the metric evaluator network
EVALUATOR_STATS = "results/models/evaluator.json"                   # its training record


def model_record(model: str) -> str:
    """A model's record (sha256, what made it: ppap.models.records), beside the model."""
    return str(record_path(model))


def diffusion_model(config: dict) -> str:
    """The diffusion model sampled from: diffusion.pretrained (a diffusers folder), else the embedded one."""
    return config["diffusion"]["pretrained"] or DIFFUSION


def scheduler(config: dict) -> str:
    """The training noise schedule: the pretrained model's own, else the embedded preset's."""
    pretrained = config["diffusion"]["pretrained"]
    return os.path.join(pretrained, "scheduler") if pretrained else SCHEDULER


def guide(config: dict) -> str:
    """The off-the-shelf guide: guide.pretrained, else the embedded one."""
    return config["guide"]["pretrained"] or GUIDE


def expert(guide_set: str, index) -> str:
    """Expert ``index`` of a trained guide set."""
    return f"results/models/guides/{guide_set}/expert{index}.pt"


def expert_files(guide_set: str, n_experts: int) -> list[str]:
    """Every expert of a set of ``n_experts``, in timestep order."""
    return [expert(guide_set, i) for i in range(n_experts)]


def manifest(guide_set: str) -> str:
    """A trained guide set's manifest (its experts, ranges and noisy accuracy)."""
    return f"results/models/guides/{guide_set}/manifest.json"


EXPERT = expert("{guide_set}", "{index}")
MANIFEST = manifest("{guide_set}")

# --------------------------------------------------------------------------- samples and metrics


def samples(guide: str, sampling: str, seed) -> str:
    """The samples of one cell (guide, sampling setting) drawn with one sampling seed."""
    return f"results/samples/{guide}/{sampling}/seed{seed}.npz"


def sample_files(guide: str, sampling: str, seeds) -> list[str]:
    """A cell's samples, one file per sampling seed."""
    return [samples(guide, sampling, seed) for seed in seeds]


def grid(guide: str, sampling: str) -> str:
    """A cell's sample grid (rows, columns and target classes recorded in the PNG)."""
    return f"results/samples/{guide}/{sampling}/grid.png"


def compute(guide: str, sampling: str) -> str:
    """A cell's compute record: passes per sample and wall-seconds (ppap.compute)."""
    return f"results/samples/{guide}/{sampling}/compute.json"


def metrics(guide: str, sampling: str) -> str:
    """A cell's metrics on the test split, every seed and their summary."""
    return f"results/metrics/{guide}/{sampling}.json"


GRID = grid("{guide}", "{sampling}")
COMPUTE = compute("{guide}", "{sampling}")
METRICS = metrics("{guide}", "{sampling}")

# ---------------------------------------------------------------------------------------- tuning


def tuning_metrics(guide: str, sampling: str) -> str:
    """A cell of the guidance validation grid (tuning.guidance): metrics and compute on the validation split."""
    return f"results/tuning/guidance/{guide}/{sampling}.json"


def tuning_table(name: str, ext: str = "csv") -> str:
    """A tuning table, ``learning_rates``, ``training_budget``, ``guidance`` or ``dense`` (csv, or md beside it)."""
    return f"results/tuning/{name}.{ext}"


TUNING_METRICS = tuning_metrics("{guide}", "{sampling}")
X0_ESTIMATE_ACCURACY = "results/guidance/x0_estimate_accuracy.json"  # the guide's accuracy on x0_hat(x_t)

# ----------------------------------------------------------------------------------------- dense


def dense_guide(task: str) -> str:
    """The embedded off-the-shelf dense guide of a task."""
    return f"results/models/dense/{task}/guide.safetensors"


def dense_guide_stats(task: str) -> str:
    """The embedded dense guide's training record."""
    return f"results/models/dense/{task}/guide.json"


def dense_evaluator(task: str) -> str:
    """The embedded dense evaluator of a task (segmentation, depth)."""
    return f"results/models/dense/{task}/evaluator.safetensors"


def dense_evaluator_stats(task: str) -> str:
    """The embedded dense evaluator's training record."""
    return f"results/models/dense/{task}/evaluator.json"


def dense_expert(task: str, guide_set: str, index) -> str:
    """Expert ``index`` of a dense guide set of a task."""
    return f"results/models/dense/{task}/{guide_set}/expert{index}.pt"


def dense_expert_files(task: str, guide_set: str, n_experts: int) -> list[str]:
    """Every expert of a dense set of ``n_experts``, in timestep order."""
    return [dense_expert(task, guide_set, i) for i in range(n_experts)]


def dense_cell(task: str, guide: str, sampling: str, ext: str = "json") -> str:
    """A test cell of the dense study: its record (json) or its first seed's samples (npz)."""
    return f"results/dense/{task}/{guide}/{sampling}.{ext}"


def dense_validation(task: str, guide: str, ext: str = "json") -> str:
    """A dense method's validation sweep: its cells (json) or its first cell's samples (npz)."""
    return f"results/tuning/dense/{task}/{guide}.{ext}"


DENSE_GUIDE = dense_guide("{task}")
DENSE_GUIDE_STATS = dense_guide_stats("{task}")
DENSE_EVALUATOR = dense_evaluator("{task}")
DENSE_EVALUATOR_STATS = dense_evaluator_stats("{task}")
DENSE_EXPERT = dense_expert("{task}", "{guide_set}", "{index}")
DENSE_CELL = dense_cell("{task}", "{guide}", "{sampling}")
DENSE_CELL_SAMPLES = dense_cell("{task}", "{guide}", "{sampling}", "npz")
DENSE_VALIDATION = dense_validation("{task}", "{guide}")
DENSE_VALIDATION_SAMPLES = dense_validation("{task}", "{guide}", "npz")

# ----------------------------------------------------------------------- tables, figures, report


def table(name: str, ext: str = "csv") -> str:
    """A table of the study: table1, table1_trainings, guidance_methods, guidance_sweeps, table_dense."""
    return f"results/{name}.{ext}"


def preset_record(name: str = "table1") -> str:
    """The preset and config a table was made with (ppap.tools.reference.write_preset_record)."""
    return f"results/{name}.preset.json"


def ablation(name: str, ext: str = "csv") -> str:
    """An ablation's table (csv, md) or plot (png, pdf)."""
    return f"results/ablations/{name}.{ext}"


def figure(name: str, ext: str = "png") -> str:
    """A figure of the study (png, or pdf beside it)."""
    return f"results/figures/{name}.{ext}"


REPORT_SUMMARY = "results/report/summary.md"      # the report notebook's summary
REPORT_HTML = "results/report/study.html"         # the published report page
REPORT_NOTEBOOK = "results/report/study.ipynb"    # the published executed notebook
EXECUTED_NOTEBOOK = "logs/report/study.ipynb"     # report_notebook's log: papermill writes it cell by cell

# ------------------------------------------------------------------------ logs and benchmarks


def log(name: str) -> str:
    """A rule's log, ``logs/<name>.log`` (name: the rule's place, with its wildcards)."""
    return f"logs/{name}.log"


def benchmark(name: str) -> str:
    """A rule's benchmark record, ``benchmarks/snakemake/<name>.tsv`` (the same name as its log)."""
    return f"benchmarks/snakemake/{name}.tsv"
