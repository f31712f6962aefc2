# ppap-bench: plug-and-play diffusion guidance (PPAP, Go et al., CVPR 2023) as one Snakemake DAG.
#   snakemake --cores 8 results/table1.csv     Table 1
#   snakemake --cores 8 all                    Table 1, every ablation, figures and the report
#   snakemake --cores 8 tune                   learning rates chosen on the validation split
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from ppap.config import ConfigError, schema_error_message

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config/default.yaml")


# Snakemake's own message is the schema dump; ours is one line naming the key (e.g. sampling.steps).
try:
    validate(config, os.path.join(workflow.basedir, "config/schema.yaml"))
except WorkflowError as err:
    raise ConfigError(schema_error_message(err)) from None


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/table1.csv",
        "results/table1.md",
        "results/table1_trainings.csv",
        expand("results/ablations/{ablation}.csv", ablation=config.get("ablations", {})),
        "results/figures/noisy_accuracy.png",
        "results/figures/samples.png",
        "results/report/study.html",


rule tune:
    input:
        "results/tuning/learning_rates.csv",
