# FID, IS, precision/recall (k from config) with torch-fidelity and the evaluator network, for each
# sampling seed, against the real test digits or, when evaluation.reference is set, against that
# folder of PNGs / .npz (arr_0); accuracy = evaluator agrees with the target. With
# evaluation.feature_extractor: inception the features are torch-fidelity's InceptionV3 (weights from
# evaluation.inception_weights) and accuracy comes from evaluation.accuracy_classifier, if set.


def real_images_input():
    """The real set: the configured reference images, else the digits split (its test half)."""
    reference = config["evaluation"].get("reference")
    if reference:
        return {"reference": reference}
    return {"data": REAL_DATA}


INCEPTION = config["evaluation"].get("feature_extractor") == "inception"


def metric_model_input():
    """The network whose features define the metrics: the trained evaluator, or Inception."""
    evaluation = config["evaluation"]
    if not INCEPTION:
        return {"evaluator": MODELS.evaluator}
    models = {"inception": evaluation["inception_weights"]}
    if evaluation.get("accuracy_classifier"):
        models["classifier"] = evaluation["accuracy_classifier"]
    return models


rule evaluate:
    input:
        **real_images_input(),
        **metric_model_input(),
        samples=lambda wc: paths.sample_files(wc.guide, wc.sampling, SEEDS),
    output:
        paths.METRICS,
    log:
        paths.log("evaluate/{guide}/{sampling}"),
    benchmark:
        paths.benchmark("evaluate/{guide}/{sampling}")
    threads: THREADS["light"]
    resources:
        **rule_resources(
            "evaluate", mem_mb=2000, runtime=10, gpu=GPU if INCEPTION else 0
        ),
    params:
        **({"device": config["device"]} if INCEPTION else {}),
        evaluation=SCORING,
        seeds=SEEDS,
    script:
        "../scripts/evaluate.py"
