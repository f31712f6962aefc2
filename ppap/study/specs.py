"""A rule's params -> the library's settings objects (:mod:`ppap.specs`), so that no script
re-passes sampler, steps, scale, eta, clip, spacing, precision and batch size one by one.

``params`` is a rule's ``snakemake.params`` or a plain mapping (both answer ``.get``)."""

from __future__ import annotations

from ppap.devices import batch_size_for
from ppap.specs import SamplingSpec


def batch_size(params, device) -> int:
    """``params.batch_size``, or ``params.batch_size_by_device[<cpu|cuda>]`` where the preset sets it."""
    return batch_size_for({"batch_size": params.get("batch_size"),
                           "batch_size_by_device": params.get("batch_size_by_device")}, device)


def sampling_spec(params, device, setting=None) -> SamplingSpec:
    """The sampling of a sample, score_on_validation or dense rule: its sampling ``setting`` (a
    resolved :class:`ppap.study.grammar.Sampling` as a dict; default ``params.sampling``), with its
    eta and recurrence (the section's ``eta`` for a setting without one), the section's ``precision``
    and batch sizes."""
    setting = setting or params.get("sampling")
    eta = setting.get("eta")
    return SamplingSpec(sampler=setting["sampler"], steps=setting["steps"], scale=float(setting["scale"]),
                        eta=float(params.get("eta") or 0.0) if eta is None else float(eta),
                        recurrence=int(setting.get("recurrence", 1)), clip=setting["clip"],
                        spacing=setting["spacing"], precision=params.get("precision") or "fp32",
                        batch_size=batch_size(params, device))


def synthesis_spec(params, device) -> SamplingSpec:
    """Unguided DDIM of the data-free pool (rule synthesize): the synthetic section's steps and batch
    size, the sampling section's clipping and spacing."""
    return SamplingSpec(sampler="ddim", steps=params.get("sampler_steps"), clip=params.get("clip"),
                        spacing=params.get("spacing"), precision=params.get("precision") or "fp32",
                        batch_size=batch_size(params, device))
