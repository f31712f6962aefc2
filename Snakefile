# ppap-bench: plug-and-play diffusion guidance (PPAP, Go et al., CVPR 2023) as one Snakemake DAG.
#   snakemake --cores 8 results/table1.csv     Table 1
#   snakemake --cores 8 all                    Table 1, every ablation, figures and the report
import os

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config/default.yaml")


validate(config, os.path.join(workflow.basedir, "config/schema.yaml"))


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
        expand("results/ablations/{ablation}.csv", ablation=config.get("ablations", {})),
        "results/figures/noisy_accuracy.png",
        "results/figures/samples.png",
