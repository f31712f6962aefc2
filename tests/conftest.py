"""Shared tiny models for the unit tests: every weight comes from a seeded generator."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from ppap.models.classifiers import ClassifierGuide
from ppap.schedules import alphas_cumprod_from_scheduler, make_ddpm_scheduler


@pytest.fixture
def one_thread():
    """Run a test on one torch thread, then restore the count.

    The models here are tiny: one thread is fastest, and several threads spin against any other
    job on a small machine (a 40-step fit took 9 s with 2 threads beside a training job, 0.1 s
    with 1). Restored afterwards so that tests checking the thread count stay meaningful.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded_(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Overwrite every parameter with N(0, scale^2) from a seeded generator (no global seed)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return module


def conv_backbone(in_chans: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Conv(in, 4, 3) -> ReLU -> Conv(4, 6, 3) -> ReLU -> pool -> Linear(6, classes); no batch norm."""
    return nn.Sequential(
        nn.Conv2d(in_chans, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes),
    )


@pytest.fixture
def make_guide():
    """Factory: a tiny 2-conv classifier behind a ClassifierGuide, weights from `seed`."""

    def make(seed: int = 0, in_chans: int = 1, num_classes: int = 10, scale: float = 0.5) -> ClassifierGuide:
        with torch.random.fork_rng(devices=[]):  # nn layers draw their init from the global RNG
            backbone = seeded_(conv_backbone(in_chans, num_classes), seed, scale)
        return ClassifierGuide(backbone, None, [0.5] * in_chans, [0.5] * in_chans).eval()

    return make


@pytest.fixture(scope="session")
def alphas_cumprod() -> torch.Tensor:
    """The embedded preset's linear schedule (T = 1000), float64."""
    return alphas_cumprod_from_scheduler(make_ddpm_scheduler())


REPO = Path(__file__).resolve().parents[1]


def merged_config(*overlays: dict) -> dict:
    """config/default.yaml with overlays merged key by key, by Snakemake's own merge of config files."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    for overlay in overlays:
        update_config(config, copy.deepcopy(overlay))
    return config


def run_models(*overlay_files: str | Path):
    """The models a run of these config files uses (ppap.study.public_models.model_files), from the
    config as the Snakefile sees it (schema defaults filled in)."""
    from snakemake.utils import validate

    from ppap.study.public_models import model_files

    config = merged_config(*(yaml.safe_load(Path(f).read_text()) for f in overlay_files))
    validate(config, str(REPO / "config" / "schema.yaml"))
    return model_files(config)


def expert_training(guide_set: str, **overrides):
    """The settings object of one distillation job, as ``ppap.study.config.expert_training`` would build
    it, with small defaults for unit tests (LoRA on every conv, norms frozen, no warm start)."""
    from ppap.specs import ExpertTraining
    from ppap.study import grammar

    spec = grammar.parse_guide_set(guide_set)
    datafree = spec.supervision == "datafree"
    settings = dict(guide_set=guide_set, supervision=spec.supervision, rank=spec.rank, n_experts=spec.n_experts,
                    steps=2, batch_size=4, lr=1e-3, weight_decay=0.0, seed=0,
                    norm=spec.norm or ("frozen" if spec.rank is not None else "trained"),
                    warm_start=spec.warm_start or "off", synthetic_size=32 if datafree else None,
                    temperature=0.25 if datafree else None,
                    lora=None if spec.rank is None else dict(rank=spec.rank, alpha=4.0, layer_types=["conv"],
                                                             include=None, exclude=None))
    settings.update(overrides)
    return ExpertTraining(**settings)


def run_workflow(workdir: Path, target: str | tuple, *options: str, timeout: int = 900,
                 env: dict | None = None) -> subprocess.CompletedProcess:
    """``snakemake <target>`` with this repository's Snakefile in ``workdir`` (the target, or a tuple of
    targets, first: --configfile takes several values and would swallow it); this interpreter's bin
    directory is first on PATH because the notebook rule calls papermill from there."""
    targets = [target] if isinstance(target, str) else list(target)
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           *options]
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONHASHSEED": "0", "PATH": path, **(env or {})})


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, worker_id):
    """One uninterrupted local run of Table 1 and the dense table on the smoke preset, shared by every
    test that reads it (tests that need to change it work on a copy) and by every pytest-xdist
    worker: the first to need it runs it under a file lock in the session's shared folder, the others
    wait for it and read the same folder."""
    if worker_id == "master":  # not under xdist workers (-n 0)
        return _smoke_workflow(tmp_path_factory.mktemp("smoke"))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / "smoke"
    with FileLock(str(shared) + ".lock"):
        if not (shared / "results" / "table_dense.csv").is_file():
            shutil.rmtree(shared, ignore_errors=True)  # a worker that failed half-way
            shared.mkdir()
            _smoke_workflow(shared)
    return shared


def _smoke_workflow(workdir: Path) -> Path:
    # the dense table in the same run: its networks train while Table 1's do (one DAG, both cores busy)
    result = run_workflow(workdir, ("results/table1.csv", "results/table_dense.csv"), "--cores", "2",
                          "--configfile", str(REPO / "config" / "smoke.yaml"))
    if result.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log")))
        pytest.fail(f"smoke workflow failed:\n{result.stderr[-4000:]}\n{logs}")
    return workdir


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory):
    """torch-fidelity's InceptionV3 with random weights, saved as a local weights file (no download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as module

    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    patch = pytest.MonkeyPatch()
    patch.setattr(module, "load_state_dict_from_url", lambda *a, **k: {})
    patch.setattr(module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    patch.undo()
    with torch.random.fork_rng(devices=[]):  # the default init makes every image's features the same
        torch.manual_seed(0)
        for module_ in model.modules():
            if isinstance(module_, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module_.weight, nonlinearity="relu")
    torch.save(model.state_dict(), path)
    return path
