"""Rule prepare_data: the labeled real images (the digits' or MNIST's split, or an ImageFolder tree) as uint8 NHWC arrays."""
import job_start  # noqa: F401 (first: an interrupt during the imports is one line)

from harness import rule_session
from ppap import data
from ppap.io import save_npz

with rule_session(snakemake.log[0], snakemake.threads, "prepare_data") as log:
    cfg = snakemake.params.data
    if cfg["source"] == "folder":
        split = data.load_folder_split(cfg["train_dir"], cfg["image_size"], cfg.get("test_dir"),
                                       cfg.get("train_per_class"), cfg.get("test_per_class"),
                                       cfg["test_fraction"], cfg["split_seed"], cfg["val_fraction"])
    elif cfg["source"] == "mnist":
        split = data.load_mnist_split(cfg["image_size"], cfg["test_fraction"], cfg["split_seed"], cfg["val_fraction"])
    else:
        split = data.load_digits_split(cfg["image_size"], cfg["test_fraction"], cfg["split_seed"],
                                       cfg["val_fraction"])
    for key, value in split.items():
        log.info("%s: %s %s", key, value.shape, value.dtype)
    save_npz(snakemake.output[0], **split)
