"""Feature extractors by name: the space in which `gan_jax.evaluation` compares real and generated data.

    extractor = extractors.build("auto", source, inception_weights=path_or_empty, classifier=params_or_None)
    features, logits = extractor.apply(batch)      # batch: model input (n, ...) in [−1, 1]; logits may be None

- ``inception``: the FID InceptionV3 of pytorch-fid (`gan_jax.inception`), 2048 pool features, 1008 logits. Its
  Fréchet distance is FID and its numbers are comparable with published ones. Needs the weights file.
- ``classifier``: an MLP classifier trained on the run's own labelled data (`metrics.train_classifier`): its 64
  penultimate features and its class logits. Offline; its numbers compare runs on the same data only.
- ``points``: the raw points of flat (toy) data, no logits. Offline; the metrics of the samples themselves.
- ``auto``: inception when its weights are given (images only), else classifier for labelled images, else
  points for flat data; unlabelled images without weights have no offline extractor (an error says so).

Only the inception extractor's Fréchet distance is labelled "fid"; the others report "fd" (`metric_label`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import metrics as metrics_lib
from gan_jax.errors import GanJaxError
from gan_jax.registry import Registry

Apply = Callable[[np.ndarray], tuple[np.ndarray, Optional[np.ndarray]]]


class Extractor(NamedTuple):
    """A named map from a batch of model input to (features (n, dim) float32, logits (n, K) or None)."""

    name: str
    dim: int
    has_logits: bool
    apply: Apply
    identity: str  # digest of what the features depend on (weights, classifier): part of the reference cache key


def _tree_digest(tree: Any) -> str:
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _require(name: str, source: Any) -> None:
    """GanJaxError unless extractor `name` fits `source`'s data (flat points, labelled images, images)."""
    flat, images = len(source.shape) == 1, len(source.shape) == 3
    if name == "points" and not flat:
        raise GanJaxError(f"extractor 'points' compares flat data (toy points); dataset {source.name!r} has "
                          f"examples of shape {source.shape}: use eval.extractor=classifier (labelled images) "
                          "or inception")
    if name == "classifier" and not (images and source.num_classes):
        raise GanJaxError(f"extractor 'classifier' is trained on labelled images; dataset {source.name!r} "
                          f"{'has no labels' if images else 'is not images'}: use "
                          f"eval.extractor={'inception' if images else 'points'}")
    if name == "inception" and not images:
        raise GanJaxError(f"extractor 'inception' takes images; dataset {source.name!r} has examples of shape "
                          f"{source.shape}: use eval.extractor=points for toy data")


def _points(source: Any, **_: Any) -> Extractor:
    _require("points", source)
    dim = int(source.shape[0])
    return Extractor("points", dim, False, lambda x: (np.asarray(x, np.float32).reshape(len(x), dim), None),
                     identity="points")


def _classifier(source: Any, classifier: Any = None, **_: Any) -> Extractor:
    _require("classifier", source)
    if classifier is None:
        raise GanJaxError("extractor 'classifier' needs the run's classifier (metrics.load_or_train_classifier)")

    def apply(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = metrics_lib.classifier_apply(classifier, jnp.asarray(x, jnp.float32))
        return np.asarray(features, np.float32), np.asarray(logits, np.float32)

    dim = int(classifier["params"]["output"]["kernel"].shape[0])
    return Extractor("classifier", dim, True, apply, identity=_tree_digest(classifier))


def _inception(source: Any, inception_weights: str = "", batch_size: int = 50, **_: Any) -> Extractor:
    from gan_jax import inception  # the network is only built when asked for

    _require("inception", source)
    path = inception.weights_path(inception_weights or None)
    params = inception.load(path)
    extract = inception.make_extractor(params, batch_size=batch_size)  # this process's devices

    def apply(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, np.float32)
        if x.shape[-1] == 1:  # grayscale: the three channels Inception expects, as torchvision's Grayscale(3)
            x = np.repeat(x, 3, axis=-1)
        features, logits = extract(x)
        return np.asarray(features, np.float32), np.asarray(logits, np.float32)

    return Extractor("inception", inception.POOL_FEATURES, True, apply, identity=inception.WEIGHTS_SHA256)


EXTRACTORS: Registry[Callable[..., Extractor]] = Registry("feature extractor", {
    "inception": _inception, "classifier": _classifier, "points": _points})


def auto_name(source: Any, inception_weights: str = "") -> str:
    """The extractor "auto" picks: inception (images, weights given), classifier (labelled images), points."""
    from gan_jax import inception

    if len(source.shape) == 1:
        return "points"
    if inception_weights or os.environ.get(inception.WEIGHTS_ENV):
        return "inception"
    if source.num_classes:
        return "classifier"
    raise GanJaxError(f"dataset {source.name!r} is unlabelled images: its only feature extractor is inception; "
                      "give its weights with --config.eval.inception_weights=PATH (or $GAN_JAX_INCEPTION_WEIGHTS), "
                      "or set --config.eval.metrics=none")


def check(name: str, source: Any, inception_weights: str = "") -> str:
    """The extractor `name` (or auto's choice) resolves to for `source`, checked to fit its data and, for
    inception, that a weights file is configured and exists; GanJaxError otherwise. Loads nothing."""
    from gan_jax import inception

    if name == "auto":
        name = auto_name(source, inception_weights)
    EXTRACTORS.get(name)  # an unknown name: the error lists the valid ones
    _require(name, source)
    if name == "inception":
        path = inception.weights_path(inception_weights or None)
        if not os.path.isfile(path):
            inception.load(path)  # its one-line error: where to get the file and where to put it
    return name


def build(name: str, source: Any, **context: Any) -> Extractor:
    """EXTRACTORS[name] (or auto_name's choice for "auto") for `source`; context: inception_weights, classifier,
    batch_size."""
    if name == "auto":
        name = auto_name(source, context.get("inception_weights", ""))
    return EXTRACTORS[name](source, **context)


def metric_label(metric: str, extractor: str) -> str:
    """The name a metric is reported under: "fid" only for Inception features, "fd" otherwise."""
    return "fd" if metric == "fid" and extractor != "inception" else metric


def cache_key(**parts: Any) -> str:
    """A short digest of the parts a cached reference depends on (dataset digest, split, extractor, size)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
