# Guidance methods side by side (results/guidance_methods.csv): Table 1's methods, training-free
# guidance with the same off-the-shelf guide, and the labeled upper bound (a class-conditional model
# with classifier-free guidance), each at the scale chosen on the validation split, with its compute.
# `snakemake tune` scores the validation grid (results/tuning/guidance.csv); the config holds its
# choices (guidance_methods.scales, training_free), as it holds the tuned learning rates.
from ppap.study.config import (
    guidance_method_runs,
    guidance_sweep_runs,
    guidance_tuning_runs,
)

GUIDANCE_TUNING = (config.get("tuning") or {}).get("guidance") or {}


rule score_on_validation:
    input:
        unpack(guide_inputs),
        model=DIFFUSION_MODEL,
        data=REAL_DATA,
        evaluator=MODELS.evaluator,
    output:
        paths.TUNING_METRICS,
    log:
        paths.log("tuning/guidance/{guide}/{sampling}"),
    benchmark:
        paths.benchmark("tuning/guidance/{guide}/{sampling}")
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
        seed=GUIDANCE_TUNING.get("seeds") or GUIDANCE_TUNING.get("seed"),
        batch_size=config["sampling"]["batch_size"],
        eta=config["sampling"]["eta"],
        evaluation=SCORING,
        device=config["device"],
    script:
        "../scripts/score_on_validation.py"


rule tune_guidance:
    input:
        cells=[
            paths.tuning_metrics(r.guide, r.sampling)
            for r in guidance_tuning_runs(config)
        ],
    output:
        csv=paths.tuning_table("guidance"),
        markdown=paths.tuning_table("guidance", "md"),
    log:
        paths.log("tuning/guidance"),
    benchmark:
        paths.benchmark("tuning/guidance")
    threads: THREADS["light"]
    resources:
        **rule_resources("tune_guidance", mem_mb=1000, runtime=5),
    params:
        **(
            {"tie_break": GUIDANCE_TUNING["tie_break"]}
            if GUIDANCE_TUNING.get("tie_break", "accuracy") != "accuracy"
            else {}
        ),
        **(
            {"spread": GUIDANCE_TUNING["spread"]}
            if GUIDANCE_TUNING.get("spread", "seeds") != "seeds"
            else {}
        ),
        runs=runs_as_params(guidance_tuning_runs(config)),
        max_fid_ratio=GUIDANCE_TUNING.get("max_fid_ratio"),
        configured={
            r.label: {"guide": r.guide, "scale": float(r.value)}
            for r in guidance_method_runs(config)
            if r.guide != "none"
        },
    script:
        "../scripts/tune_guidance.py"


# The beam search (tuning.guidance.search): each run writes the next round's cells as an overlay;
# passing it to the next run scores them (docs/guidance-methods.md, "The search").
rule search_guidance:
    input:
        paths.tuning_table("guidance"),
    output:
        paths.tuning_table("guidance_search", "yaml"),
    log:
        paths.log("tuning/guidance_search"),
    benchmark:
        paths.benchmark("tuning/guidance_search")
    threads: THREADS["light"]
    resources:
        **rule_resources("search_guidance", mem_mb=1000, runtime=5),
    params:
        search=GUIDANCE_TUNING.get("search"),
    script:
        "../scripts/search_guidance.py"


rule x0_estimate_accuracy:
    input:
        model=DIFFUSION_MODEL,
        guide=BASE_GUIDE,
        data=REAL_DATA,
    output:
        paths.X0_ESTIMATE_ACCURACY,
    log:
        paths.log("guidance/x0_estimate_accuracy"),
    benchmark:
        paths.benchmark("guidance/x0_estimate_accuracy")
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
    inputs["compute"] = sorted({paths.compute(r.guide, r.sampling) for r in runs})
    inputs["synthetic"] = synthetic_compute_files()
    inputs["x0_estimate"] = paths.X0_ESTIMATE_ACCURACY
    inputs["guide_stats"] = MODELS.guide_stats
    if any(grammar.guide_kind(r.guide) == "classifier_free" for r in runs):
        inputs["conditional_record"] = MODELS.conditional_record
        inputs["conditional_model"] = MODELS.conditional_diffusion
    return inputs


rule guidance_methods:
    input:
        **guidance_table_inputs(),
    output:
        csv=report(
            paths.table("guidance_methods"),
            caption="../report/guidance_methods.rst",
            category="Guidance methods",
        ),
        markdown=paths.table("guidance_methods", "md"),
        sweeps=paths.table("guidance_sweeps"),
        fixed_fid=paths.table("guidance_fixed_fid"),
        tradeoff_png=report(
            paths.figure("guidance_tradeoff"),
            caption="../report/guidance_methods.rst",
            category="Guidance methods",
        ),
        tradeoff_pdf=paths.figure("guidance_tradeoff", "pdf"),
        compute_png=report(
            paths.figure("guidance_compute"),
            caption="../report/guidance_methods.rst",
            category="Guidance methods",
        ),
        compute_pdf=paths.figure("guidance_compute", "pdf"),
        fixed_fid_png=report(
            paths.figure("guidance_fixed_fid"),
            caption="../report/guidance_methods.rst",
            category="Guidance methods",
        ),
        fixed_fid_pdf=paths.figure("guidance_fixed_fid", "pdf"),
        noisy_png=report(
            paths.figure("guidance_noisy_accuracy"),
            caption="../report/guidance_methods.rst",
            category="Guidance methods",
        ),
        noisy_pdf=paths.figure("guidance_noisy_accuracy", "pdf"),
    log:
        paths.log("guidance_methods"),
    benchmark:
        paths.benchmark("guidance_methods")
    threads: THREADS["light"]
    resources:
        **rule_resources("guidance_methods", mem_mb=1000, runtime=5),
    params:
        rows=runs_as_params(guidance_method_runs(config)),
        sweeps=runs_as_params(guidance_sweep_runs(config)),
        amortised=config.get("ablation_center", "ppap"),
        fid_bounds=(config.get("guidance_methods") or {}).get("fid_bounds"),
    script:
        "../scripts/guidance_methods.py"
