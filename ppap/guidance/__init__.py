"""Guidance: what steers the sampling loop towards a target.

* :mod:`ppap.guidance.energies`: log p(target | x) of each kind of guide (classifier, segmenter, regressor);
* :mod:`ppap.guidance.classifier`: classifier guidance on x_t (DDIM on eps, DDPM on the mean), in
  guided-diffusion's order, with any guide (off the shelf, one noise-aware guide, routed experts);
* :mod:`ppap.guidance.classifier_free`: (1 + w) eps(x, t, y) - w eps(x, t, null);
* :mod:`ppap.guidance.training_free`: the clean guide on the denoiser's x0 estimate (DPS, FreeDoM, MPGD, TFG).
"""

from ppap.guidance.base import GuidanceMethod
from ppap.guidance.classifier import (
                                      ClassifierGuidance,
                                      GuidedModel,
                                      NonFiniteError,
                                      Unguided,
                                      classifier_guided_eps,
                                      classifier_mean_shift,
                                      grad_log_prob,
                                      guided_model,
)
from ppap.guidance.classifier_free import ClassifierFreeGuidance
from ppap.guidance.energies import (
                                      Energy,
                                      classifier_energy,
                                      energy_for,
                                      regression_energy,
                                      scale_shift_aligned,
                                      segmentation_energy,
)
from ppap.guidance.training_free import TrainingFreeGuidance, TrainingFreeSettings

__all__ = ["GuidanceMethod", "Unguided", "ClassifierGuidance", "ClassifierFreeGuidance", "TrainingFreeGuidance",
           "TrainingFreeSettings", "GuidedModel", "NonFiniteError", "classifier_guided_eps", "classifier_mean_shift",
           "grad_log_prob", "guided_model", "Energy", "classifier_energy", "energy_for", "regression_energy",
           "scale_shift_aligned", "segmentation_energy"]
