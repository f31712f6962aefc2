# Tables and figures from the metric and manifest files.


rule table1:
    input:
        **run_inputs(table1_runs(config)),
    output:
        csv=report(
            paths.table("table1"), caption="../report/table.rst", category="Table 1"
        ),
        markdown=paths.table("table1", "md"),
        # the preset and config Table 1 was made with, beside the CSV where ppap.tools.reference looks
        preset=paths.preset_record("table1"),
    log:
        paths.log("table1"),
    benchmark:
        paths.benchmark("table1")
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
            paths.table("table1_trainings"),
            caption="../report/table_trainings.rst",
            category="Table 1",
        ),
        markdown=paths.table("table1_trainings", "md"),
    log:
        paths.log("table1_trainings"),
    benchmark:
        paths.benchmark("table1_trainings")
    threads: THREADS["light"]
    resources:
        **rule_resources("table1_trainings", mem_mb=1000, runtime=5),
    params:
        runs=runs_as_params(table1_runs(config, config["table1_trainings"])),
    script:
        "../scripts/table1.py"


rule tune_learning_rates:
    input:
        manifests=[paths.manifest(r.guide) for r in tuning_runs(config)],
    output:
        csv=paths.tuning_table("learning_rates"),
        markdown=paths.tuning_table("learning_rates", "md"),
    log:
        paths.log("tuning/learning_rates"),
    benchmark:
        paths.benchmark("tuning/learning_rates")
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


rule tune_training_budget:
    input:
        manifests=[
            paths.manifest(guide)
            for r in tuning_runs(config, "training_budget")
            for guide in r.guides
        ],
    output:
        csv=paths.tuning_table("training_budget"),
        markdown=paths.tuning_table("training_budget", "md"),
    log:
        paths.log("tuning/training_budget"),
    benchmark:
        paths.benchmark("tuning/training_budget")
    threads: THREADS["light"]
    resources:
        **rule_resources("tune_training_budget", mem_mb=1000, runtime=5),
    params:
        runs=runs_as_params(tuning_runs(config, "training_budget")),
        configured=config["experts"]["train"]["total_steps"],
    script:
        "../scripts/tune_training_budget.py"


rule ablation:
    input:
        unpack(lambda wc: run_inputs(ablation_runs(config, wc.ablation))),
        unguided=paths.metrics("none", unguided_sampling(config)),
    output:
        csv=paths.ablation("{ablation}"),
        markdown=paths.ablation("{ablation}", "md"),
        png=report(
            paths.ablation("{ablation}", "png"),
            caption="../report/table.rst",
            category="Ablations",
        ),
        pdf=paths.ablation("{ablation}", "pdf"),
    log:
        paths.log("ablation/{ablation}"),
    benchmark:
        paths.benchmark("ablation/{ablation}")
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
            pairs.append((run.label, paths.manifest(run.guide)))
    return pairs


rule figures:
    input:
        guide=BASE_GUIDE,
        guide_stats=MODELS.guide_stats,
        manifests=[path for _, path in table1_guide_sets()],
        grids=[paths.grid(r.guide, r.sampling) for r in table1_runs(config)],
    output:
        accuracy_png=report(
            paths.figure("noisy_accuracy"),
            caption="../report/noisy_accuracy.rst",
            category="Figures",
        ),
        accuracy_pdf=paths.figure("noisy_accuracy", "pdf"),
        samples_png=report(
            paths.figure("samples"),
            caption="../report/samples.rst",
            category="Figures",
        ),
        samples_pdf=paths.figure("samples", "pdf"),
    log:
        paths.log("figures"),
    benchmark:
        paths.benchmark("figures")
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
        table1=paths.table("table1"),
        table1_trainings=paths.table("table1_trainings"),
        ablations=[paths.ablation(name) for name in config.get("ablations", {})],
        ablation_plots=[
            paths.ablation(name, "png") for name in config.get("ablations", {})
        ],
        noisy_accuracy=paths.figure("noisy_accuracy"),
        samples=paths.figure("samples"),
    output:
        summary=paths.REPORT_SUMMARY,
    log:
        # papermill writes the notebook cell by cell: a log, which render_report publishes whole
        notebook=paths.EXECUTED_NOTEBOOK,
    benchmark:
        paths.benchmark("report_notebook")
    threads: THREADS["light"]
    resources:
        **rule_resources("report_notebook", mem_mb=1000, runtime=10),
    params:
        # a params entry is a rerun trigger: results made while the notebook was written straight
        # to results/report/ get the executed notebook in logs/ that render_report reads
        executed=paths.EXECUTED_NOTEBOOK,
    notebook:
        "../notebooks/study.py.ipynb"


rule render_report:
    input:
        summary=paths.REPORT_SUMMARY,
    output:
        html=paths.REPORT_HTML,
        notebook=paths.REPORT_NOTEBOOK,
    log:
        paths.log("render_report"),
    benchmark:
        paths.benchmark("render_report")
    threads: THREADS["light"]
    resources:
        **rule_resources("render_report", mem_mb=1000, runtime=5),
    params:
        executed=paths.EXECUTED_NOTEBOOK,  # report_notebook's log: the executed notebook
    script:
        "../scripts/render_report.py"
