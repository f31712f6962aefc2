"""What every benchmark script shares: the embedded preset's networks (randomly initialised, built
from config/default.yaml by the workflow's own builders), thread control, timing with medians, FLOP
counts, and atomic table output.

Benchmarks print tables and write CSVs; they never assert on time (the machine is shared).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import yaml

from ppap.io import write_text
from ppap.models import classifiers
from ppap.study.checks import data_shape, guide_spec_of

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ the preset

def preset_config(*overlays: str | os.PathLike | Mapping) -> dict:
    """config/default.yaml with overlays (YAML files or dicts) merged over it key by key, nested
    sections included, by Snakemake's own merge (``snakemake.utils.update_config``)."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    for overlay in overlays:
        overlay = overlay if isinstance(overlay, Mapping) else yaml.safe_load(Path(overlay).read_text()) or {}
        update_config(config, copy.deepcopy(overlay))
    return config


def guide_args(config: Mapping) -> dict:
    """The off-the-shelf guide's spec as rule train_guide builds it (classifiers.guide_spec)."""
    return guide_spec_of(config)


def unet_args(config: Mapping) -> dict:
    """The diffusion UNet's arguments as rule train_diffusion passes them to ppap.models.unet.build_unet."""
    shape, net = data_shape(config), config["diffusion"]["unet"]
    return dict(sample_size=shape.image_size, in_channels=shape.channels, block_out_channels=net["block_out_channels"],
                layers_per_block=net["layers_per_block"], attention=net["attention"],
                norm_num_groups=net["norm_num_groups"])


def image_shape(config: Mapping) -> tuple[int, int, int]:
    """(channels, height, width) of the study's images."""
    shape = data_shape(config)
    return (shape.channels, shape.image_size, shape.image_size)


PRESET = preset_config()  # the embedded default preset; the constants below are its values
GUIDE_ARGS = guide_args(PRESET)
UNET_ARGS = unet_args(PRESET)
IMAGE_SHAPE = image_shape(PRESET)
LORA_ALPHA = PRESET["experts"]["lora"]["alpha"]
LORA_LAYER_TYPES = tuple(PRESET["experts"]["lora"]["layer_types"])


# ------------------------------------------------------------------------------ arguments

def parser(description: str, repeats: int = 5) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=repeats, help="timed repeats per measurement (medians quoted)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the CSV and the markdown table")
    return p


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def machine(threads: int) -> str:
    """One line naming the machine, as the README quotes it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{cores}-core CPU ({cpu}), no GPU used; torch {torch.__version__}, {threads} torch thread(s); "
            f"load average at start {load}")


def export_commit(commit: str, to: Path) -> str:
    """The commit's tree (``git archive``, no .git) in the new folder `to`; returns its short hash."""
    to.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(to)], input=archive, check=True)
    return subprocess.run(["git", "rev-parse", "--short", commit], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


# ------------------------------------------------------------------------------- networks

def alphas_cumprod(config: Mapping = PRESET) -> torch.Tensor:
    """The preset's training noise schedule, as rule noise_schedule makes it."""
    from ppap.schedules import alphas_cumprod_from_scheduler, make_ddpm_scheduler

    diffusion = config["diffusion"]
    return alphas_cumprod_from_scheduler(make_ddpm_scheduler(diffusion["num_train_timesteps"],
                                                             diffusion["beta_schedule"]))


def preset_guide(seed: int = 0, config: Mapping = PRESET):
    """The preset's off-the-shelf guide (guide.arch with guide.model_kwargs), random weights, eval mode."""
    return classifiers.build_timm_guide(**guide_args(config), seed=seed).eval()


def preset_eps_model(config: Mapping = PRESET):
    """The preset's diffusers UNet (diffusion.unet) behind ``eps_fn(x, t)``, frozen."""
    from ppap.models.unet import EpsilonModel, build_unet

    unet = build_unet(**unet_args(config))
    return EpsilonModel(unet, alphas_cumprod(config)).eval().requires_grad_(False)


def lora_targets(guide, config: Mapping = PRESET) -> list[str]:
    """The layers the preset's LoRA experts adapt (experts.lora: layer_types, include, exclude), as
    ppap.experts.sets.train_expert chooses them."""
    from ppap.experts.adapters import lora_target_modules

    lora = config["experts"]["lora"]
    return lora_target_modules(guide, lora["layer_types"], lora.get("include"), lora.get("exclude"))


def perturb_adapters_(model, scale_a: float = 0.1, scale_b: float = 0.02, seed: int = 0) -> None:
    """Seeded non-zero LoRA A and B, different per adapter: the experts differ as trained ones would,
    and two models built this way are identical (peft draws A from the global RNG otherwise)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                scale = scale_a if "lora_A" in name else scale_b
                param.copy_(torch.randn(param.shape, generator=gen) * scale)


def full_copies(guide, n: int) -> list:
    return [copy.deepcopy(guide) for _ in range(n)]


# -------------------------------------------------------------------------------- measuring

def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_both(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). With one torch thread the CPU time leaves out
    the time other processes held the core, so it is the steadier of the two on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved_times(calls: dict[str, Callable[[], object]], repeats: int
                      ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time every call once per round, `repeats` rounds, the order rotated each round; returns
    (wall seconds, CPU seconds) per call and round.

    Interleaving puts every configuration under the same background load; rotating the order
    keeps any first-in-round effect from favouring one of them. Ratios are then taken per round.
    """
    names = list(calls)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            w, c = timed_both(calls[name])
            wall[name].append(w)
            cpu[name].append(c)
    return wall, cpu


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def round_ratios(times: dict[str, list[float]], num: str, den: str) -> list[float]:
    return [a / b for a, b in zip(times[num], times[den])]


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (multiply-add = 2) of the matmuls and convolutions `fn` runs; elementwise ops count 0."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------- output

def fmt(value, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    columns = list(columns or rows[0].keys())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    write_text(path, buffer.getvalue())


def goal_line(text: str, met: bool, detail: str) -> str:
    return f"- goal: {text}: {'MET' if met else 'NOT MET'} ({detail})"


def report(out: Path, name: str, header: Sequence[str], tables: Sequence[tuple[str, str]], footer: Sequence[str]) -> str:
    """Print the tables and write them (with the machine line and goals) to ``<out>/<name>.md``."""
    parts = [f"# {name}", "", *header, ""]
    for title, table in tables:
        parts += [f"## {title}", "", table, ""]
    parts += list(footer)
    text = "\n".join(parts).rstrip() + "\n"
    print(text)
    write_text(out / f"{name}.md", text)
    return text
