"""The networks the study starts from: the shipped public models, today's rules, or a user's files.

PPAP guides a *public* diffusion model with a *public* classifier and is scored by a *fixed*
metric network. For the embedded presets those are shipped inside the package
(``ppap/public/<set>/``, safetensors and diffusers folders, each with its model record,
:mod:`ppap.models.records`). ``public_models: shipped`` (the default) uses, for every role, the
shipped model whose record says it was made with exactly this config's sections (:func:`made_with`);
a role no shipped model was made for (an overlay that changes ``guide.train``, a folder data
source) is trained by its rule, as ``public_models: train`` trains every role. A ``pretrained``
key (``diffusion.pretrained``, ``guide.pretrained``, ``dense.pretrained``) always wins.

No torch: the Snakefile resolves these while it plans.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ppap.models.records import ModelRecordError, read_record, record_path, verify_record
from ppap.public import PUBLIC_DIR
from ppap.study import paths
from ppap.vocab import EXACTLY_SCORED_TASKS, PUBLIC_MODEL_MODES

ROLES = ("diffusion", "conditional_diffusion", "guide", "evaluator", "dense_guide", "dense_evaluator")
SHIPPED, TRAIN = PUBLIC_MODEL_MODES
TRAINED_PREFIX = "results/models/"


def trained_model(role: str, task: str | None = None) -> str:
    """Where a role's rule writes its model (results/models/...)."""
    return {
        "diffusion": paths.DIFFUSION,
        "conditional_diffusion": paths.CONDITIONAL_DIFFUSION,
        "guide": paths.GUIDE,
        "evaluator": paths.EVALUATOR,
        "dense_guide": paths.dense_guide(task) if task else None,
        "dense_evaluator": paths.dense_evaluator(task) if task else None,
    }[role]


def trained_stats(role: str, task: str | None = None) -> str | None:
    """The training record (accuracies, losses) a role's rule writes beside its model."""
    return {
        "diffusion": None,
        "conditional_diffusion": paths.CONDITIONAL_DIFFUSION_RECORD,
        "guide": paths.GUIDE_STATS,
        "evaluator": paths.EVALUATOR_STATS,
        "dense_guide": paths.dense_guide_stats(task) if task else None,
        "dense_evaluator": paths.dense_evaluator_stats(task) if task else None,
    }[role]


def shipped_name(trained: str) -> str:
    """A trained file's place inside a shipped set: the same path below results/models/."""
    assert trained.startswith(TRAINED_PREFIX), trained
    return trained[len(TRAINED_PREFIX):]


def _without(section: dict, *keys: str) -> dict:
    return {k: v for k, v in section.items() if k not in keys}


def made_with(role: str, config: dict, task: str | None = None) -> dict:
    """The config sections a role's rule reads (its params and the data behind its inputs): two
    models made with equal sections by today's rules are the same model."""
    data = config["data"]
    diffusion = _without(config["diffusion"], "pretrained")
    schedule = {k: diffusion[k] for k in ("num_train_timesteps", "beta_schedule")}
    dense = config.get("dense") or {}
    if role == "diffusion":
        return {"data": data, "diffusion": diffusion}
    if role == "conditional_diffusion":
        return {"data": data, "schedule": schedule, "unet": diffusion["unet"],
                "conditional_diffusion": config["conditional_diffusion"]}
    if role == "guide":
        return {"data": data, "schedule": schedule, "guide": _without(config["guide"], "pretrained"),
                "accuracy_timesteps": config["evaluation"]["accuracy_timesteps"]}
    if role == "evaluator":
        return {"data": data, "evaluator": config["evaluator"]}
    if role in ("dense_guide", "dense_evaluator"):
        network = dense.get("guide" if role == "dense_guide" else "evaluator") or {}
        return {"data": data, "task": task, "stroke_threshold": dense.get("stroke_threshold"),
                "network": _without(network, "pretrained")}
    raise ValueError(f"unknown model role {role!r} (known: {ROLES})")


def mode(config: dict, role: str) -> str:
    """``public_models``: one mode for every role, or a mapping role -> mode (unnamed roles: shipped)."""
    setting = config.get("public_models", SHIPPED)
    return setting if isinstance(setting, str) else setting.get(role, SHIPPED)


@lru_cache(maxsize=None)
def _shipped_records(public_dir: str) -> tuple[tuple[str, dict], ...]:
    """(model path, record) of every shipped model, sets in name order."""
    found = []
    for record_file in sorted(Path(public_dir).rglob("*.record.json")):
        record = json.loads(record_file.read_text())
        model = record_file.with_name(record["model"])
        found.append((str(model), record))
    return tuple(found)


def find_shipped(role: str, config: dict, task: str | None = None, public_dir: Path = PUBLIC_DIR) -> Path | None:
    """The shipped set (its folder) holding a model of `role` made with this config's sections, or None."""
    wanted = json.loads(json.dumps(made_with(role, config, task)))  # tuples as lists, as records hold them
    name = shipped_name(trained_model(role, task))
    for model, record in _shipped_records(str(public_dir)):
        if model.endswith("/" + name) and record.get("made_with") == wanted:
            return Path(model[: -len(name)])
    return None


@dataclass(frozen=True)
class ModelFiles:
    """The model of every role the study may use, and where each came from."""

    diffusion: str
    scheduler: str
    conditional_diffusion: str
    conditional_record: str
    guide: str
    guide_stats: str
    evaluator: str
    evaluator_stats: str
    dense_guides: dict = field(default_factory=dict)
    dense_guide_stats: dict = field(default_factory=dict)
    dense_evaluators: dict = field(default_factory=dict)
    dense_evaluator_stats: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)  # "<role>[.<task>]" -> "shipped", "trained" or "pretrained"

    def shipped(self) -> list[str]:
        """The shipped models among them (their records are checked before any job)."""
        models = [self.diffusion, self.conditional_diffusion, self.guide, self.evaluator,
                  *self.dense_guides.values(), *self.dense_evaluators.values()]
        return sorted({m for m in models if m.startswith(str(PUBLIC_DIR))})


def resolve(role: str, config: dict, task: str | None = None) -> tuple[str, str | None, str]:
    """(model, its training record or None, source) of one role."""
    trained, stats = trained_model(role, task), trained_stats(role, task)
    if mode(config, role) == SHIPPED:
        set_dir = find_shipped(role, config, task)
        if set_dir is not None:
            return (str(set_dir / shipped_name(trained)), stats and str(set_dir / shipped_name(stats)), "shipped")
    return trained, stats, "trained"


def model_files(config: dict) -> ModelFiles:
    """Every role's model under this config (``pretrained`` keys first, then public_models)."""
    sources: dict[str, str] = {}

    def pick(role, task=None):
        model, stats, source = resolve(role, config, task)
        sources[role if task is None else f"{role}.{task}"] = source
        return model, stats

    diffusion, _ = pick("diffusion")
    if config["diffusion"]["pretrained"]:
        diffusion, sources["diffusion"] = config["diffusion"]["pretrained"], "pretrained"
    scheduler = paths.scheduler(config) if sources["diffusion"] != "shipped" else f"{diffusion}/scheduler"
    conditional, conditional_record = pick("conditional_diffusion")
    guide, guide_stats = pick("guide")
    if config["guide"]["pretrained"]:
        guide, sources["guide"] = config["guide"]["pretrained"], "pretrained"
    evaluator, evaluator_stats = pick("evaluator")
    dense = config.get("dense") or {}
    dense_pretrained = dense.get("pretrained") or {}
    evaluator_pretrained = (dense.get("evaluator") or {}).get("pretrained") or {}
    files = dict(dense_guides={}, dense_guide_stats={}, dense_evaluators={}, dense_evaluator_stats={})
    for task in dense.get("tasks") or []:
        files["dense_guides"][task], files["dense_guide_stats"][task] = pick("dense_guide", task)
        if dense_pretrained.get(task):
            files["dense_guides"][task], sources[f"dense_guide.{task}"] = dense_pretrained[task], "pretrained"
        if task in EXACTLY_SCORED_TASKS:
            continue
        files["dense_evaluators"][task], files["dense_evaluator_stats"][task] = pick("dense_evaluator", task)
        if evaluator_pretrained.get(task):
            files["dense_evaluators"][task] = evaluator_pretrained[task]
            sources[f"dense_evaluator.{task}"] = "pretrained"
    return ModelFiles(diffusion=diffusion, scheduler=scheduler, conditional_diffusion=conditional,
                      conditional_record=conditional_record, guide=guide, guide_stats=guide_stats,
                      evaluator=evaluator, evaluator_stats=evaluator_stats, sources=sources, **files)


def trainable_models(config: dict) -> list[tuple[str, str | None]]:
    """(role, task) of every model a rule trains from scratch (`snakemake pretrain`)."""
    models: list[tuple[str, str | None]] = [(role, None) for role in ROLES[:4]]
    for task in (config.get("dense") or {}).get("tasks") or []:
        models.append(("dense_guide", task))
        if task not in EXACTLY_SCORED_TASKS:
            models.append(("dense_evaluator", task))
    return models


def check_shipped(models: ModelFiles) -> None:
    """Every shipped model the study may use is its recorded bytes (one line naming the file, else)."""
    from ppap.study.config import ConfigError

    for model in models.shipped():
        try:
            verify_record(model, required=True)
        except ModelRecordError as err:
            raise ConfigError(f"public_models: {err}") from None


SHIPPED_PREFIX = "ppap/public/"


def portable(path: str) -> str:
    """A model path as a run's records keep it: a shipped model as ``ppap/public/<set>/...`` (the same
    on every machine and install), any other as given (relative to the run's folder, or absolute)."""
    public = str(PUBLIC_DIR) + "/"
    return SHIPPED_PREFIX + path[len(public):] if path.startswith(public) else path


def locate(path: str, run: str | Path = ".") -> Path:
    """The file a :func:`portable` path names, for the run in folder ``run``."""
    if path.startswith(SHIPPED_PREFIX):
        return PUBLIC_DIR / path[len(SHIPPED_PREFIX):]
    return Path(run) / path


def models_used(models: ModelFiles) -> dict:
    """Role -> {source, path (portable), sha256 of a shipped model's files}: what a table's preset
    record says it was made from, so that two tables made from the very same files can be told."""
    entries = {"diffusion": models.diffusion, "scheduler": models.scheduler, "guide": models.guide,
               "guide_stats": models.guide_stats, "evaluator": models.evaluator,
               "evaluator_stats": models.evaluator_stats, "conditional_diffusion": models.conditional_diffusion}
    for kind, attribute in (("dense_guide", "dense_guides"), ("dense_guide_stats", "dense_guide_stats"),
                            ("dense_evaluator", "dense_evaluators"), ("dense_evaluator_stats", "dense_evaluator_stats")):
        for task, path in getattr(models, attribute).items():
            entries[f"{kind}.{task}"] = path  # dense_guide.<task>, dense_guide_stats.<task>, ...
    used = {}
    for role, path in entries.items():
        source = models.sources.get(role.replace("_stats", ""),
                                    "shipped" if path.startswith(str(PUBLIC_DIR)) else "trained")
        entry = {"source": source, "path": portable(path)}
        record = read_record(path) if source == "shipped" and role.split(".")[0] in ROLES else None
        if record is not None:
            entry["sha256"] = record["sha256"]
        used[role] = entry
    return used


__all__ = ["ModelFiles", "PUBLIC_DIR", "ROLES", "check_shipped", "find_shipped", "locate", "made_with", "model_files",
           "models_used", "portable", "record_path", "resolve", "shipped_name", "trainable_models", "trained_model"]
