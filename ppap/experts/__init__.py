"""Timestep experts: ranges and per-sample routing (:mod:`ppap.experts.routing`, re-exported here),
LoRA adapters through peft (:mod:`ppap.experts.adapters`), noise-aware training and data-free
transfer (:mod:`ppap.experts.distill`), and whole expert sets: train, save, load
(:mod:`ppap.experts.sets`)."""

from ppap.experts.routing import (
                                  AdapterExperts,
                                  ModuleExperts,
                                  Range,
                                  RoutedGuide,
                                  SingleGuide,
                                  check_ranges,
                                  expert_for_timestep,
                                  timestep_ranges,
)

__all__ = ["AdapterExperts", "ModuleExperts", "Range", "RoutedGuide", "SingleGuide", "check_ranges",
           "expert_for_timestep", "timestep_ranges"]
