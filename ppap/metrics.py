"""Sample-quality metrics computed with our own digit evaluator instead of Inception.

FID, Inception Score and precision/recall come from torch-fidelity, driven by a feature extractor
(:class:`EvaluatorFeatureExtractor`, registered as ``"ppap-evaluator"``) that wraps the
:class:`~ppap.models.classifiers.DigitEvaluator` saved at a given path. Density and coverage come
from ``prdc``; class accuracy of the generated images is computed here.

Conventions:

- Image sets are numpy ``uint8`` arrays shaped ``[N, H, W, C]`` (NHWC). torch-fidelity wants
  datasets whose items are bare ``uint8`` tensors shaped ``[C, H, W]``: see :func:`images_dataset`.
- ``"features"`` is the evaluator's embedding (FID, precision/recall, density/coverage);
  ``"logits"`` are its raw, pre-softmax class scores. torch-fidelity's Inception Score applies the
  softmax itself, so the IS layer must be logits: handing it probabilities would softmax them a
  second time and squash the score towards 1.
- Precision/recall in torch-fidelity take the generated set first (input1) and the real set second
  (input2); ``prdc.compute_prdc`` takes the real set first.

Both feature spaces sit behind one interface, :class:`Scorer`: a scorer holds the real set (and its
networks) and ``score(fake, target_labels=..., nearest_k=..., isc_splits=...)`` returns the metrics
of one sample set. :func:`make_scorer` builds the one ``evaluation.feature_extractor`` names:
:class:`EvaluatorScorer` (:func:`compute_metrics`) or :class:`InceptionScorer`.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Protocol, runtime_checkable

import numpy as np
import prdc
import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity import metric_fid, metric_isc, metric_prc
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ppap.models.classifiers import DigitEvaluator, load_evaluator

EXTRACTOR_NAME = "ppap-evaluator"
FEATURES_LAYER = "features"
LOGITS_LAYER = "logits"

METRIC_KEYS = ("fid", "is", "is_std", "precision", "recall", "f_score", "density", "coverage")


def uint8_to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (any layout) -> float32 in [-1, 1], as the evaluator expects."""
    return x.to(torch.float32) / 127.5 - 1.0


class EvaluatorFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor around a saved :class:`DigitEvaluator`.

    Provides ``"features"`` (the evaluator's embedding, ``[B, feature_dim]``) and ``"logits"``
    (raw class scores, ``[B, num_classes]``). The evaluator is loaded from the
    ``feature_extractor_weights_path`` keyword that torch-fidelity forwards from
    ``calculate_metrics``. Input: ``uint8`` tensors ``[B, C, H, W]`` in [0, 255].
    """

    def __init__(self, name: str, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(
                f"feature extractor {name!r} needs feature_extractor_weights_path=<evaluator checkpoint>"
            )
        self.weights_path = os.fspath(feature_extractor_weights_path)
        self.evaluator: DigitEvaluator = load_evaluator(self.weights_path)
        self.in_chans = int(self.evaluator.spec["in_chans"])

    @staticmethod
    def get_provided_features_list():
        return FEATURES_LAYER, LOGITS_LAYER

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": LOGITS_LAYER, "fid": FEATURES_LAYER, "kid": FEATURES_LAYER, "prc": FEATURES_LAYER}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 16, 16, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4):
            raise ValueError(
                f"{self.name}: expected a uint8 tensor [B, C, H, W], got "
                f"{getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}"
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.name}: the evaluator at {self.weights_path} takes {self.in_chans} channel(s), "
                f"got images with {x.shape[1]}"
            )
        feats = self.evaluator.features(uint8_to_unit_range(x))
        out = {FEATURES_LAYER: feats}
        if LOGITS_LAYER in self.features_list:
            out[LOGITS_LAYER] = self.evaluator.head(feats)
        return tuple(out[name].to(torch.float32) for name in self.features_list)


def register_evaluator_extractor() -> None:
    """Register :class:`EvaluatorFeatureExtractor` as ``"ppap-evaluator"``; safe to call repeatedly.

    torch-fidelity raises on a second registration of a name, so the registry is checked first.
    A same-named class from a reloaded copy of this module is replaced; any other class is an error.
    """
    registered = FEATURE_EXTRACTORS_REGISTRY.get(EXTRACTOR_NAME)
    if registered is EvaluatorFeatureExtractor:
        return
    if registered is None:
        torch_fidelity.register_feature_extractor(EXTRACTOR_NAME, EvaluatorFeatureExtractor)
        return
    same_origin = (getattr(registered, "__module__", None) == __name__
                   and getattr(registered, "__qualname__", None) == EvaluatorFeatureExtractor.__qualname__)
    if not same_origin:
        raise RuntimeError(
            f"torch-fidelity already has a different feature extractor named {EXTRACTOR_NAME!r}: {registered!r}"
        )
    FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR_NAME] = EvaluatorFeatureExtractor  # module was reloaded


# ------------------------------------------------------------------------------------------------
# Inputs


def check_images(images: Any, what: str = "images", min_count: int = 2) -> np.ndarray:
    """Validate a uint8 NHWC image set and return it as a numpy array; ValueError otherwise."""
    if isinstance(images, torch.Tensor):
        raise ValueError(f"{what}: expected a numpy uint8 array [N, H, W, C], got a torch tensor")
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{what}: expected a numpy uint8 array [N, H, W, C], got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(
            f"{what}: expected dtype uint8 (values 0..255), got {images.dtype}; "
            "convert with e.g. np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)"
        )
    if images.ndim != 4:
        hint = " (add a channel axis: images[..., None])" if images.ndim == 3 else ""
        raise ValueError(f"{what}: expected 4 dimensions [N, H, W, C], got shape {images.shape}{hint}")
    n, h, w, c = images.shape
    if c not in (1, 3):
        looks_nchw = images.shape[1] in (1, 3)
        raise ValueError(
            f"{what}: expected NHWC with 1 or 3 channels last, got shape {images.shape}"
            + (" which looks like NCHW; transpose with images.transpose(0, 2, 3, 1)" if looks_nchw else "")
        )
    if h < 1 or w < 1:
        raise ValueError(f"{what}: empty images, shape {images.shape}")
    if n < min_count:
        raise ValueError(f"{what}: need at least {min_count} images, got {n}")
    return images


class ImagesDataset(Dataset):
    """In-memory images as bare uint8 CHW tensors, the item type torch-fidelity expects."""

    def __init__(self, images_uint8_nhwc: np.ndarray):
        images = check_images(images_uint8_nhwc, "images", min_count=1)
        self.data = torch.from_numpy(np.array(images.transpose(0, 3, 1, 2), order="C", copy=True))

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


def images_dataset(images_uint8_nhwc: np.ndarray) -> Dataset:
    """Wrap a uint8 ``[N, H, W, C]`` array as a Dataset of uint8 ``[C, H, W]`` tensors."""
    return ImagesDataset(images_uint8_nhwc)


# ------------------------------------------------------------------------------------------------
# Metrics


@contextlib.contextmanager
def preserved_global_rng():
    """Restore torch's CPU RNG and numpy's global RNG on exit.

    torch's DataLoader draws a base seed from the global torch RNG each time it is iterated, even
    with no worker processes (torch-fidelity iterates one per input set), and ``load_evaluator``
    builds the module with random initial weights before loading the checkpoint.
    """
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)


@torch.no_grad()
def evaluator_outputs(evaluator: DigitEvaluator, images_uint8_nhwc: np.ndarray,
                      batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, D], logits [N, K]) as float32 numpy arrays, evaluator in eval mode."""
    was_training = evaluator.training
    evaluator.eval()
    feats, logits = [], []
    try:
        for start in range(0, images_uint8_nhwc.shape[0], batch_size):
            chunk = torch.from_numpy(np.array(
                images_uint8_nhwc[start:start + batch_size].transpose(0, 3, 1, 2), order="C", copy=True))
            f = evaluator.features(uint8_to_unit_range(chunk))
            feats.append(f.to(torch.float32))
            logits.append(evaluator.head(f).to(torch.float32))
    finally:
        evaluator.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def _as_feature_matrix(features: Any, what: str) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{what}: expected a 2-d feature matrix [N, D], got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.number) or np.iscomplexobj(features):
        raise ValueError(f"{what}: expected real-valued features, got dtype {features.dtype}")
    if features.shape[0] < 2:
        raise ValueError(f"{what}: need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ValueError(f"{what}: features contain NaN or infinite values")
    return torch.from_numpy(features.astype(np.float64))


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, D]`` (computed in float64)."""
    a = _as_feature_matrix(features_a, "features_a")
    b = _as_feature_matrix(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: features_a has {a.shape[1]}, features_b has {b.shape[1]}")
    stats_a = metric_fid.fid_features_to_statistics(a)
    stats_b = metric_fid.fid_features_to_statistics(b)
    return float(metric_fid.fid_statistics_to_metric(stats_a, stats_b, verbose=False)[metric_fid.KEY_METRIC_FID])


def compute_metrics(
    fake: np.ndarray,
    real: np.ndarray,
    evaluator_path: str | os.PathLike,
    nearest_k: int = 3,
    target_labels: np.ndarray | None = None,
    batch_size: int = 256,
    isc_splits: int = 10,
) -> dict:
    """FID, IS, precision/recall/F, density/coverage (and accuracy) of ``fake`` against ``real``.

    Args:
        fake, real: uint8 image sets ``[N, H, W, C]`` with the same H, W, C.
        evaluator_path: a checkpoint written by :func:`ppap.models.classifiers.save_evaluator`.
        nearest_k: k of the k-NN balls for precision/recall/density/coverage; each set needs
            at least ``nearest_k + 1`` images.
        target_labels: optional ``[N_fake]`` integer classes the fake images were meant to show;
            adds ``accuracy`` (fraction whose evaluator argmax equals the target).
        batch_size: evaluator batch size.
        isc_splits: Inception Score splits over the fake set (1..N_fake); use fewer for small sets,
            since each split is scored on its own.

    Returns:
        Plain Python numbers: ``fid, is, is_std, precision, recall, f_score, density, coverage``
        (floats), ``accuracy`` (float, only with ``target_labels``), ``num_fake, num_real`` (ints).

    Leaves the global torch/numpy RNG states and torch's thread settings as they were.
    """
    fake = check_images(fake, "fake")
    real = check_images(real, "real")
    if fake.shape[3] != real.shape[3]:
        raise ValueError(f"channel counts differ: fake has {fake.shape[3]}, real has {real.shape[3]}")
    if fake.shape[1:3] != real.shape[1:3]:
        raise ValueError(f"image sizes differ: fake is {fake.shape[1:3]}, real is {real.shape[1:3]}")
    if isinstance(nearest_k, bool) or not isinstance(nearest_k, (int, np.integer)) or nearest_k < 1:
        raise ValueError(f"nearest_k must be a positive integer, got {nearest_k!r}")
    nearest_k = int(nearest_k)
    for what, images in (("fake", fake), ("real", real)):
        if images.shape[0] < nearest_k + 1:
            raise ValueError(
                f"{what}: need at least nearest_k + 1 = {nearest_k + 1} images, got {images.shape[0]}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if (isinstance(isc_splits, bool) or not isinstance(isc_splits, (int, np.integer))
            or not 1 <= isc_splits <= fake.shape[0]):
        raise ValueError(
            f"isc_splits must be an integer in [1, number of fake images = {fake.shape[0]}], got {isc_splits!r}")

    with preserved_global_rng():  # building the module draws its (then overwritten) init from the RNG
        evaluator = load_evaluator(evaluator_path)
    in_chans, num_classes = int(evaluator.spec["in_chans"]), int(evaluator.spec["num_classes"])
    if fake.shape[3] != in_chans:
        raise ValueError(
            f"the evaluator at {evaluator_path} takes {in_chans} channel(s), the images have {fake.shape[3]}")

    if target_labels is not None:
        target_labels = np.asarray(target_labels)
        if target_labels.shape != (fake.shape[0],):
            raise ValueError(
                f"target_labels: expected shape ({fake.shape[0]},) (one per fake image), got {target_labels.shape}")
        if not np.issubdtype(target_labels.dtype, np.integer):
            raise ValueError(f"target_labels: expected integer class indices, got dtype {target_labels.dtype}")
        if target_labels.min() < 0 or target_labels.max() >= num_classes:
            raise ValueError(
                f"target_labels: classes must lie in [0, {num_classes}), got "
                f"[{target_labels.min()}, {target_labels.max()}]")

    register_evaluator_extractor()
    with preserved_global_rng():
        tf = torch_fidelity.calculate_metrics(
            input1=images_dataset(fake),   # generated first: precision is "fake inside real"
            input2=images_dataset(real),
            cuda=False,
            batch_size=int(batch_size),
            isc=True,
            fid=True,
            prc=True,
            feature_extractor=EXTRACTOR_NAME,
            feature_extractor_weights_path=os.fspath(evaluator_path),
            feature_layer_isc=LOGITS_LAYER,
            feature_layer_fid=FEATURES_LAYER,
            feature_layer_prc=FEATURES_LAYER,
            isc_splits=int(isc_splits),
            prc_neighborhood=nearest_k,
            # save_cpu_ram: load batches in this process (the default forks up to 4 DataLoader
            # workers per set, pointless for in-memory tensors); precision/recall are the same.
            save_cpu_ram=True,
            cache=False,
            verbose=False,
        )

        fake_features, fake_logits = evaluator_outputs(evaluator, fake, batch_size)
        real_features, _ = evaluator_outputs(evaluator, real, batch_size)
        with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
            dc = prdc.compute_prdc(real_features=real_features, fake_features=fake_features,
                                   nearest_k=nearest_k)

    out = {
        "fid": float(tf[metric_fid.KEY_METRIC_FID]),
        "is": float(tf[metric_isc.KEY_METRIC_ISC_MEAN]),
        "is_std": float(tf[metric_isc.KEY_METRIC_ISC_STD]),
        "precision": float(tf[metric_prc.KEY_METRIC_PRECISION]),
        "recall": float(tf[metric_prc.KEY_METRIC_RECALL]),
        "f_score": float(tf[metric_prc.KEY_METRIC_F_SCORE]),
        "density": float(dc["density"]),
        "coverage": float(dc["coverage"]),
    }
    if target_labels is not None:
        out["accuracy"] = float(np.mean(fake_logits.argmax(axis=1) == target_labels))
    out["num_fake"] = int(fake.shape[0])
    out["num_real"] = int(real.shape[0])
    return out


# ------------------------------------------------------------------------------------------------
# One interface for both feature spaces


@runtime_checkable
class Scorer(Protocol):
    """Scores sample sets against the real set it holds: FID / IS / precision / recall / F /
    density / coverage, ``accuracy`` where it can classify and ``target_labels`` are given, and
    ``num_fake`` / ``num_real``, as plain Python numbers."""

    def score(self, fake: np.ndarray, *, target_labels: np.ndarray | None = None, nearest_k: int = 3,
              isc_splits: int = 10) -> dict:
        ...


class EvaluatorScorer:
    """:func:`compute_metrics` as a :class:`Scorer`: the evaluator network's features (and its
    accuracy) against a real set; each call is exactly ``compute_metrics(fake, real, ...)``."""

    def __init__(self, evaluator_path: str | os.PathLike, real: np.ndarray, batch_size: int = 256):
        self.evaluator_path = evaluator_path
        self.real = check_images(real, "real")
        self.batch_size = batch_size

    def score(self, fake: np.ndarray, *, target_labels: np.ndarray | None = None, nearest_k: int = 3,
              isc_splits: int = 10) -> dict:
        return compute_metrics(fake, self.real, self.evaluator_path, nearest_k=nearest_k, target_labels=target_labels,
                               batch_size=self.batch_size, isc_splits=isc_splits)


# ------------------------------------------------------------------------------------------------
# Inception metrics (the paper-scale presets): torch-fidelity's InceptionV3 with local weights

INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_POOL, INCEPTION_LOGITS = "2048", "logits_unbiased"


def check_inception_weights(path: str | os.PathLike) -> None:
    """The file must be InceptionV3 tensors that load with ``weights_only=True``.

    torch-fidelity itself unpickles the file without that guard, so it is checked here first;
    a missing, unreadable or foreign file is a ``ValueError`` naming it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Inception weights not found: {path} (torch-fidelity's "
                         "pt_inception-2015-12-05-6726825d.pth; nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read Inception weights {path}: {type(err).__name__}: {err}") from err
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is None or tuple(fc.shape) != (1008, 2048) or "Conv2d_1a_3x3.conv.weight" not in state:
        raise ValueError(f"{path} is not torch-fidelity's InceptionV3 state dict "
                         "(fc.weight [1008, 2048], Conv2d_1a_3x3)")


class InceptionScorer:
    """FID / IS / precision-recall / density-coverage in InceptionV3 space (torch-fidelity's
    ``inception-v3-compat``, the TF-FID network) from a local weights file.

    Features of the real set are computed once and reused for every sample set (:meth:`score`):
    given as ``real`` (the :class:`Scorer` interface; ``classifier_path``, a ppap guide file, adds
    ``accuracy``), or computed with :meth:`features` and passed to each call as ``real_pool``.
    Images are uint8 NHWC with 1 or 3 channels (1 is repeated to RGB).
    """

    def __init__(self, weights_path: str | os.PathLike, device: torch.device | str = "cpu", batch_size: int = 100,
                 real: np.ndarray | None = None, classifier_path: str | os.PathLike | None = None):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        check_inception_weights(weights_path)
        self.weights_path = os.fspath(weights_path)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.classifier_path = classifier_path
        self.extractor = FeatureExtractorInceptionV3(INCEPTION_EXTRACTOR, [INCEPTION_POOL, INCEPTION_LOGITS],
                                                     feature_extractor_weights_path=self.weights_path)
        self.extractor.to(self.device).eval()
        self.real_pool = None if real is None else self.features(real, "real")[0]

    @torch.no_grad()
    def features(self, images: np.ndarray, what: str = "images") -> tuple[torch.Tensor, torch.Tensor]:
        """(pool features [N, 2048], unbiased logits [N, 1008]) as float64 CPU tensors."""
        images = check_images(images, what)
        pools, logits = [], []
        for start in range(0, len(images), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size].transpose(0, 3, 1, 2)))
            if chunk.shape[1] == 1:
                chunk = chunk.expand(-1, 3, -1, -1)
            pool, logit = self.extractor(chunk.to(self.device))
            pools.append(pool.double().cpu())
            logits.append(logit.double().cpu())
        return torch.cat(pools), torch.cat(logits)

    def score(self, fake: np.ndarray, real_pool: torch.Tensor | None = None, nearest_k: int = 3, isc_splits: int = 10,
              target_labels: np.ndarray | None = None, classifier_path: str | os.PathLike | None = None) -> dict:
        """The metrics of ``fake`` against real pool features (default: the real set given at
        construction); ``accuracy`` with a classifier (default: the one given then) and labels."""
        if real_pool is None:
            if self.real_pool is None:
                raise ValueError("InceptionScorer.score needs real_pool, or the real set as InceptionScorer(real=...)")
            real_pool = self.real_pool
        classifier_path = self.classifier_path if classifier_path is None else classifier_path
        fake = check_images(fake, "fake")
        if not 1 <= int(isc_splits) <= len(fake):
            raise ValueError(f"isc_splits must be in [1, {len(fake)}], got {isc_splits}")
        for what, n in (("fake", len(fake)), ("real", len(real_pool))):
            if n < nearest_k + 1:
                raise ValueError(f"{what}: need at least nearest_k + 1 = {nearest_k + 1} images, got {n}")
        with preserved_global_rng():
            fake_pool, fake_logits = self.features(fake, "fake")
            fid = metric_fid.fid_statistics_to_metric(metric_fid.fid_features_to_statistics(fake_pool),
                                                      metric_fid.fid_features_to_statistics(real_pool), verbose=False)
            isc = metric_isc.isc_features_to_metric(fake_logits, splits=int(isc_splits))
            prc = metric_prc.prc_features_to_metric(fake_pool.float(), real_pool.float(), prc_neighborhood=nearest_k,
                                                    save_cpu_ram=True, verbose=False)
            with contextlib.redirect_stdout(io.StringIO()):
                dc = prdc.compute_prdc(real_features=real_pool.float().numpy(), fake_features=fake_pool.float().numpy(),
                                       nearest_k=nearest_k)
        out = {"fid": float(fid[metric_fid.KEY_METRIC_FID]), "is": float(isc[metric_isc.KEY_METRIC_ISC_MEAN]),
               "is_std": float(isc[metric_isc.KEY_METRIC_ISC_STD]),
               "precision": float(prc[metric_prc.KEY_METRIC_PRECISION]),
               "recall": float(prc[metric_prc.KEY_METRIC_RECALL]), "f_score": float(prc[metric_prc.KEY_METRIC_F_SCORE]),
               "density": float(dc["density"]), "coverage": float(dc["coverage"])}
        if target_labels is not None and classifier_path is not None:
            out["accuracy"] = classifier_accuracy(classifier_path, fake, target_labels, self.device, self.batch_size)
        out["num_fake"], out["num_real"] = int(len(fake)), int(len(real_pool))
        return out


@torch.no_grad()
def classifier_accuracy(guide_path: str | os.PathLike, images: np.ndarray, target_labels: np.ndarray,
                        device: torch.device | str = "cpu", batch_size: int = 100) -> float:
    """Fraction of ``images`` whose class under a ppap guide checkpoint (argmax) is the target."""
    from ppap.data import to_float
    from ppap.models.classifiers import load_guide

    with preserved_global_rng():
        classifier = load_guide(guide_path).to(device).eval()
    target_labels = np.asarray(target_labels)
    if target_labels.shape != (len(images),):
        raise ValueError(f"target_labels: expected shape ({len(images)},), got {target_labels.shape}")
    hits = 0
    for start in range(0, len(images), batch_size):
        logits = classifier(to_float(images[start:start + batch_size]).to(device), None)
        hits += int((logits.argmax(1).cpu().numpy() == target_labels[start:start + batch_size]).sum())
    return hits / len(images)


def make_scorer(feature_extractor: str | None, real: np.ndarray, *, evaluator: str | os.PathLike | None = None,
                inception: str | os.PathLike | None = None, classifier: str | os.PathLike | None = None,
                device: torch.device | str = "cpu") -> Scorer:
    """The :class:`Scorer` that ``evaluation.feature_extractor`` names, holding the real set.

    ``evaluator`` (None or omitted: the default): the evaluator network at ``evaluator`` (on the CPU;
    accuracy from it); ``inception``: InceptionV3 from the local weights file ``inception`` on
    ``device``, accuracy from ``classifier`` (a ppap guide file) if given.
    """
    kind = feature_extractor or "evaluator"
    if kind == "inception":
        if inception is None:
            raise ValueError("feature_extractor inception needs the Inception weights file (inception=...)")
        return InceptionScorer(inception, device, real=real, classifier_path=classifier)
    if kind != "evaluator":
        raise ValueError(f"unknown feature_extractor {feature_extractor!r} (evaluator or inception)")
    if evaluator is None:
        raise ValueError("feature_extractor evaluator needs the evaluator checkpoint (evaluator=...)")
    return EvaluatorScorer(evaluator, real)
