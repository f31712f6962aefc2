# Guidance methods side by side (results/guidance_methods.csv): Table 1's methods, training-free
# guidance with the same off-the-shelf guide, and the labeled upper bound (a class-conditional model
# with classifier-free guidance), each at the scale chosen on the validation split, with its compute.
# `snakemake tune` scores the validation grid (results/tuning/guidance.csv); the config holds its
# choices (guidance_methods.scales, training_free), as it holds the tuned learning rates.
from ppap.study.config import guidance_method_runs, guidance_sweep_runs, guidance_tuning_runs, tuning_metrics_path

GUIDANCE_TUNING = (config.get("tuning") or {}).get("guidance") or {}


rule score_on_validation:
    input:
        unpack(guide_inputs),
        model=diffusion_model_dir(),
        data=REAL_DATA,
        evaluator="results/models/evaluator.pt",
    output:
        "results/tuning/guidance/{guide}/{sampling}.json",
    log:
        "logs/tuning/guidance/{guide}/{sampling}.log",
    benchmark:
        "benchmarks/snakemake/tuning/guidance/{guide}/{sampling}.tsv"
    threads: THREADS["sample"]
    resources:
        **rule_resources("score_on_validation", mem_mb=4000, runtime=30, gpu=GPU),
        cpus_per_task=THREADS["sample"],
    params:
        **device_params(config["sampling"]),
        **training_free_params(),
        **performance_params(),
        sampling=lambda wc: sampling_settings(wc.sampling),
        num_samples=GUIDANCE_TUNING.get("samples"),
        seed=GUIDANCE_TUNING.get("seed"),
        batch_size=config["sampling"]["batch_size"],
        eta=config["sampling"]["eta"],
        evaluation=SCORING,
        device=config["device"],
    script:
        "../scripts/score_on_validation.py"


rule tune_guidance:
    input:
        cells=[
            tuning_metrics_path(r.guide, r.sampling)
            for r in guidance_tuning_runs(config)
        ],
    output:
        csv="results/tuning/guidance.csv",
        markdown="results/tuning/guidance.md",
    log:
        "logs/tuning/guidance.log",
    benchmark:
        "benchmarks/snakemake/tuning/guidance.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("tune_guidance", mem_mb=1000, runtime=5),
    params:
        runs=runs_as_params(guidance_tuning_runs(config)),
        max_fid_ratio=GUIDANCE_TUNING.get("max_fid_ratio"),
        configured={
            r.label: {"guide": r.guide, "scale": float(r.value)}
            for r in guidance_method_runs(config)
            if r.guide != "none"
        },
    script:
        "../scripts/tune_guidance.py"


rule x0_estimate_accuracy:
    input:
        model=diffusion_model_dir(),
        guide=base_guide_path(),
        data=REAL_DATA,
    output:
        "results/guidance/x0_estimate_accuracy.json",
    log:
        "logs/guidance/x0_estimate_accuracy.log",
    benchmark:
        "benchmarks/snakemake/guidance/x0_estimate_accuracy.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("x0_estimate_accuracy", mem_mb=2000, runtime=10, gpu=GPU),
    params:
        accuracy_timesteps=config["evaluation"]["accuracy_timesteps"],
        clip=config["sampling"]["clip"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/x0_estimate_accuracy.py"


def guidance_table_inputs():
    rows, sweeps = guidance_method_runs(config), guidance_sweep_runs(config)
    runs = rows + sweeps
    inputs = run_inputs(runs)
    inputs["compute"] = sorted({compute_file(r.guide, r.sampling) for r in runs})
    inputs["synthetic"] = [
        path.replace(".npz", ".compute.json") for path in synthetic_shard_files()
    ]
    inputs["x0_estimate"] = "results/guidance/x0_estimate_accuracy.json"
    inputs["guide_stats"] = "results/models/guide.json"
    if any(grammar.guide_kind(r.guide) == "classifier_free" for r in runs):
        inputs["conditional_record"] = CONDITIONAL_MODEL + ".json"
        inputs["conditional_model"] = CONDITIONAL_MODEL
    return inputs


rule guidance_methods:
    input:
        **guidance_table_inputs(),
    output:
        csv=report(
            "results/guidance_methods.csv",
            caption="../report/guidance_methods.rst",
            category="Guidance methods",
        ),
        markdown="results/guidance_methods.md",
        sweeps="results/guidance_sweeps.csv",
        tradeoff_png=report(
            "results/figures/guidance_tradeoff.png",
            caption="../report/guidance_methods.rst",
            category="Guidance methods",
        ),
        tradeoff_pdf="results/figures/guidance_tradeoff.pdf",
        compute_png=report(
            "results/figures/guidance_compute.png",
            caption="../report/guidance_methods.rst",
            category="Guidance methods",
        ),
        compute_pdf="results/figures/guidance_compute.pdf",
        noisy_png=report(
            "results/figures/guidance_noisy_accuracy.png",
            caption="../report/guidance_methods.rst",
            category="Guidance methods",
        ),
        noisy_pdf="results/figures/guidance_noisy_accuracy.pdf",
    log:
        "logs/guidance_methods.log",
    benchmark:
        "benchmarks/snakemake/guidance_methods.tsv"
    threads: THREADS["light"]
    resources:
        **rule_resources("guidance_methods", mem_mb=1000, runtime=5),
    params:
        rows=runs_as_params(guidance_method_runs(config)),
        sweeps=runs_as_params(guidance_sweep_runs(config)),
        amortised=config.get("ablation_center", "ppap"),
    script:
        "../scripts/guidance_methods.py"
