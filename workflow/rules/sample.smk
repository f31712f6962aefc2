# Guided sampling: the expert that owns each sample's timestep supplies grad log p(y | x_t); a
# training-free guide applies the off-the-shelf guide to x0_hat; classifier_free samples the
# class-conditional model. One job draws every sampling seed of one (guide, sampling setting) cell.


rule sample:
    input:
        unpack(guide_inputs),
        model=DIFFUSION_MODEL,
    output:
        samples=paths.sample_files("{guide}", "{sampling}", SEEDS),
        grid=paths.GRID,
        # passes per sample through the denoiser and the guide, and wall-seconds (ppap.compute)
        compute=paths.COMPUTE,
    log:
        paths.log("sample/{guide}/{sampling}"),
    benchmark:
        paths.benchmark("sample/{guide}/{sampling}")
    threads: THREADS["sample"]
    resources:
        **rule_resources("sample", mem_mb=4000, runtime=60, gpu=GPU),
        cpus_per_task=THREADS["sample"],
    params:
        **device_params(config["sampling"]),
        **training_free_params(),
        **performance_params(),
        sampling=lambda wc: sampling_settings(wc.sampling),
        num_samples=config["sampling"]["num_samples"],
        batch_size=config["sampling"]["batch_size"],
        eta=config["sampling"]["eta"],
        seeds=SEEDS,
        device=config["device"],
    script:
        "../scripts/sample.py"
