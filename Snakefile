# ppap-bench: plug-and-play diffusion guidance (PPAP, Go et al., CVPR 2023) as one Snakemake DAG.
#   snakemake --cores 8 results/table1.csv     Table 1
#   snakemake --cores 8 all                    Table 1, every ablation, figures and the report
#   snakemake --cores 8 tune                   learning rates, guidance scales and training-free variants
#                                              chosen on the validation split
#   snakemake --cores 8 pretrain               the networks the config trains (--config public_models=train: all)
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from ppap.study import paths
from ppap.study.checks import (
    check_overlays,
    check_snakemake_settings,
    config_errors_in_one_line,
    is_main_process,
    overlays_of,
    preset_name,
    retype_command_line_config,
    select_study,
)
from ppap.study.config import ConfigError, schema_error_message

# The rule harness lives with the workflow (workflow/scripts/, on every rule script's path too).
sys.path.insert(0, os.path.join(workflow.basedir, "workflow", "scripts"))
from interrupts import forward_interrupts, job_shell_prefix
from locks import clear_stale_locks, forget_owner, record_owner
from stale_outputs import check_requested_outputs

min_version("9.0")
# A job ignores SIGINT until its script's first line (job_start): no traceback while it starts.
shell.prefix(job_shell_prefix(shell.get_executable()))


configfile: os.path.join(workflow.basedir, "config/default.yaml")


# Every config error is one line naming the key (--verbose: with Snakemake's traceback).
with config_errors_in_one_line(workflow):
    check_snakemake_settings(workflow)
    # `--config 'sampling={guidance_scale: 2}'`: Snakemake hands nested values over as strings
    retype_command_line_config(config, workflow.config_settings.config or {})
    # Snakemake's own message is the schema dump; ours names the key (e.g. sampling.steps).
    try:
        validate(config, os.path.join(workflow.basedir, "config/schema.yaml"))
    except WorkflowError as err:
        raise ConfigError(schema_error_message(err)) from None
    # `methods: {}` or `ablations: {}` in an overlay changes nothing (nested keys merge): say so.
    check_overlays(overlays_of(workflow), config)
    # `study: {ablations: [names]}` selects ablations (a list replaces; [] runs none).
    select_study(config)
# Recorded with Table 1 (results/table1.preset.json) for `python -m ppap.tools.reference`.
config.setdefault("preset", preset_name(workflow.config_settings.configfiles))

# A Snakemake killed with SIGKILL leaves its lock behind; remove it if its process is gone.
if is_main_process(workflow):
    clear_stale_locks()


onstart:
    record_owner(
        workflow.persistence.path,
        getattr(workflow.persistence, "_lockfile", {}).values(),
    )
    # SIGINT (Ctrl-C, or kill -INT of Snakemake alone) ends the running jobs before Snakemake exits.
    forward_interrupts(workflow)


onsuccess:
    forget_owner(workflow.persistence.path)


onerror:
    forget_owner(workflow.persistence.path)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/guidance.smk"
include: "workflow/rules/dense.smk"


rule all:
    default_target: True
    input:
        paths.table("table1"),
        paths.table("table1", "md"),
        paths.table("table1_trainings"),
        paths.table("guidance_methods"),
        *([paths.table("table_dense")] if config.get("dense") else []),
        [paths.ablation(name) for name in config.get("ablations", {})],
        paths.figure("noisy_accuracy"),
        paths.figure("samples"),
        paths.REPORT_HTML,


# Every network the config trains rather than takes as shipped (`--config public_models=train`: all
# of them, from scratch; workflow/rules/pretrain.smk).
rule pretrain:
    input:
        pretrain_targets(),


rule tune:
    input:
        paths.tuning_table("learning_rates"),
        paths.tuning_table("guidance"),
        *(
            [paths.tuning_table("training_budget")]
            if (config.get("tuning") or {}).get("training_budget")
            else []
        ),
        *([paths.tuning_table("dense")] if config.get("dense") else []),
        *(
            [paths.tuning_table("guidance_search", "yaml")]
            if ((config.get("tuning") or {}).get("guidance") or {}).get("search")
            else []
        ),


# A requested table (figure, report) whose inputs are missing is not up to date, whatever Snakemake
# alone would say: one line, and the command that remakes them (workflow/scripts/stale_outputs.py).
if is_main_process(workflow):
    check_requested_outputs(workflow)
