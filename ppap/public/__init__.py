"""The shipped public models of the embedded presets, one folder per preset (``ppap/public/<preset>/``).

Each folder holds what ``snakemake pretrain`` writes below ``results/models/`` for that preset, at the
same relative paths: the unconditional diffusion model (``diffusion/``, a diffusers folder), the
class-conditional one (``conditional_diffusion/``), the off-the-shelf guide (``guide.safetensors``),
the metric evaluator (``evaluator.safetensors``), the dense guides and evaluators
(``dense/<task>/guide.safetensors``, ``dense/<task>/evaluator.safetensors``), each with its model record
(``<model>.record.json``: the config sections that made it, seeds and steps, library versions, the
machine, the sha256 of its files; checked whenever the model loads) and its training record
(``<model>.json``). The workflow picks them by record (:mod:`ppap.study.public_models`); from Python::

    from ppap.models.denoisers import load_eps_model
    from ppap.public import shipped_model

    denoiser = load_eps_model(shipped_model("default", "diffusion"))

No torch here.
"""

from __future__ import annotations

from pathlib import Path

PUBLIC_DIR = Path(__file__).resolve().parent


def shipped_sets() -> list[str]:
    """The presets that ship models (folders holding at least one model record)."""
    return sorted(p.name for p in PUBLIC_DIR.iterdir() if p.is_dir() and any(p.rglob("*.record.json")))


def shipped_model(preset: str, name: str) -> Path:
    """A shipped model of a preset by its path below ``results/models/`` (``diffusion``,
    ``guide.safetensors``, ``dense/segmentation/evaluator.safetensors``...)."""
    path = PUBLIC_DIR / preset / name
    if not path.exists():
        raise FileNotFoundError(f"no shipped model {name!r} for preset {preset!r} ({path}; shipped sets: "
                                f"{', '.join(shipped_sets()) or 'none'})")
    return path
