# Tables and figures from the metric and manifest files.


rule table1:
    input:
        **run_inputs(table1_runs(config)),
    output:
        csv=report(
            "results/table1.csv", caption="../report/table.rst", category="Table 1"
        ),
        markdown="results/table1.md",
        # the preset and config Table 1 was made with, beside the CSV where ppap.tools.reference looks
        preset="results/table1.preset.json",
    log:
        "logs/table1.log",
    benchmark:
        "benchmarks/snakemake/table1.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("table1", mem_mb=1000, runtime=5),
    params:
        runs=runs_as_params(table1_runs(config)),
    script:
        "../scripts/table1.py"


rule table1_trainings:
    input:
        **run_inputs(table1_runs(config, config["table1_trainings"])),
    output:
        csv=report(
            "results/table1_trainings.csv",
            caption="../report/table_trainings.rst",
            category="Table 1",
        ),
        markdown="results/table1_trainings.md",
    log:
        "logs/table1_trainings.log",
    benchmark:
        "benchmarks/snakemake/table1_trainings.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("table1_trainings", mem_mb=1000, runtime=5),
    params:
        runs=runs_as_params(table1_runs(config, config["table1_trainings"])),
    script:
        "../scripts/table1.py"


rule tune_learning_rates:
    input:
        manifests=[manifest_path(r.guide) for r in tuning_runs(config)],
    output:
        csv="results/tuning/learning_rates.csv",
        markdown="results/tuning/learning_rates.md",
    log:
        "logs/tuning/learning_rates.log",
    benchmark:
        "benchmarks/snakemake/tuning/learning_rates.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("tune_learning_rates", mem_mb=1000, runtime=5),
    params:
        runs=runs_as_params(tuning_runs(config)),
        configured={
            "lora": config["experts"]["train"]["lr"],
            "full": config["experts"]["train"]["full_lr"],
        },
    script:
        "../scripts/tune_learning_rates.py"


rule ablation:
    input:
        unpack(lambda wc: run_inputs(ablation_runs(config, wc.ablation))),
        unguided=f"results/metrics/none/{unguided_sampling(config)}.json",
    output:
        csv="results/ablations/{ablation}.csv",
        markdown="results/ablations/{ablation}.md",
        png=report(
            "results/ablations/{ablation}.png",
            caption="../report/table.rst",
            category="Ablations",
        ),
        pdf="results/ablations/{ablation}.pdf",
    log:
        "logs/ablation/{ablation}.log",
    benchmark:
        "benchmarks/snakemake/ablation/{ablation}.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("ablation", mem_mb=1000, runtime=5),
    params:
        runs=lambda wc: runs_as_params(ablation_runs(config, wc.ablation)),
        spec=lambda wc: config["ablations"][wc.ablation],
        factor=lambda wc: config["ablations"][wc.ablation].get("factor", wc.ablation),
    script:
        "../scripts/ablation.py"


def table1_guide_sets():
    """(method, manifest) of Table 1's trained guide sets."""
    pairs = []
    for run in table1_runs(config):
        if grammar.guide_kind(run.guide) == "experts":
            pairs.append((run.label, manifest_path(run.guide)))
    return pairs


rule figures:
    input:
        guide=base_guide_path(),
        guide_stats="results/models/guide.json",
        manifests=[path for _, path in table1_guide_sets()],
        grids=[
            f"results/samples/{r.guide}/{r.sampling}/grid.png"
            for r in table1_runs(config)
        ],
    output:
        accuracy_png=report(
            "results/figures/noisy_accuracy.png",
            caption="../report/noisy_accuracy.rst",
            category="Figures",
        ),
        accuracy_pdf="results/figures/noisy_accuracy.pdf",
        samples_png=report(
            "results/figures/samples.png",
            caption="../report/samples.rst",
            category="Figures",
        ),
        samples_pdf="results/figures/samples.pdf",
    log:
        "logs/figures.log",
    benchmark:
        "benchmarks/snakemake/figures.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("figures", mem_mb=1000, runtime=5),
    params:
        set_methods=[method for method, _ in table1_guide_sets()],
        grid_methods=[r.label for r in table1_runs(config)],
    script:
        "../scripts/figures.py"


rule report_notebook:
    input:
        table1="results/table1.csv",
        table1_trainings="results/table1_trainings.csv",
        ablations=expand(
            "results/ablations/{ablation}.csv", ablation=config.get("ablations", {})
        ),
        ablation_plots=expand(
            "results/ablations/{ablation}.png", ablation=config.get("ablations", {})
        ),
        noisy_accuracy="results/figures/noisy_accuracy.png",
        samples="results/figures/samples.png",
    output:
        summary="results/report/summary.md",
    log:
        # papermill writes the notebook cell by cell: a log, which render_report publishes whole
        notebook="logs/report/study.ipynb",
    benchmark:
        "benchmarks/snakemake/report_notebook.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("report_notebook", mem_mb=1000, runtime=10),
    params:
        # a params entry is a rerun trigger: results made while the notebook was written straight
        # to results/report/ get the executed notebook in logs/ that render_report reads
        executed="logs/report/study.ipynb",
    notebook:
        "../notebooks/study.py.ipynb"


rule render_report:
    input:
        summary="results/report/summary.md",
    output:
        html="results/report/study.html",
        notebook="results/report/study.ipynb",
    log:
        "logs/render_report.log",
    benchmark:
        "benchmarks/snakemake/render_report.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("render_report", mem_mb=1000, runtime=5),
    params:
        executed="logs/report/study.ipynb",  # report_notebook's log: the executed notebook
    script:
        "../scripts/render_report.py"
