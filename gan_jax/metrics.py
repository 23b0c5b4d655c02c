"""Sample-quality metrics: mode coverage on mixtures, Wasserstein distance to data, classifier scores.

* ``mode_coverage`` — modes captured, high-quality fraction and reverse KL of the mode histogram on the
  ring-of-8 / grid-of-25 benchmarks, in the VEEGAN / PacGAN convention.
* ``sliced_w1``, ``wasserstein_to_data`` — thin wrappers over :mod:`gan_jax.transport`.
* ``two_sample_accuracy`` — held-out accuracy of a small MLP told real from fake (0.5 = indistinguishable).
* ``train_classifier`` / ``load_or_train_classifier`` (a classifier of any labelled image data, e.g. the digits) and
  the scores computed with it: ``class_coverage``, ``class_accuracy``; its logits and penultimate features feed
  :mod:`gan_jax.evaluation`'s Inception score and Fréchet distance (the ``digits`` extractor).

Both classifiers are a ``models.MLPClassifier`` trained with optax; their params are its Flax variables
(a nested dict of arrays), cached as an ``.npz`` of the flattened arrays beside the settings they were trained with.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import warnings
import zipfile
from typing import IO, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.scipy.special import xlogy

from gan_jax import models, transport
from gan_jax import workdir as workdir_lib

Params = dict[str, Any]  # Flax variables {"params": {"hidden_0": …, "output": …}} of a models.MLPClassifier

CLASSIFIER_FILE = "data_classifier.npz"  # in the workdir: the classifier of the run's labelled data
_SETTINGS_ENTRY = "settings"  # the .npz entry holding the JSON of the training settings and data digest


# ----------------------------------------------------------------------------------------------------
# Histogram summaries (one mechanism for modes of a mixture and classes of a classifier)


def histogram_summary(counts: jax.Array, min_count: int) -> tuple[jax.Array, jax.Array]:
    """(#bins with count ≥ min_count, KL(p̂ ‖ U_m) = Σ p̂_k log(m p̂_k)); KL is NaN for an empty histogram."""
    m = counts.shape[0]
    total = jnp.sum(counts)
    p = counts / jnp.maximum(total, 1)
    kl = jnp.sum(xlogy(p, p)) + jnp.log(m)
    kl = jnp.where(total > 0, kl, jnp.nan)
    return jnp.sum(counts >= min_count).astype(jnp.int32), kl


def _check_min_count(min_count: int) -> None:
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1 (a mode with 0 samples is not captured), got {min_count}")


# ----------------------------------------------------------------------------------------------------
# Mode coverage on Gaussian mixtures


class ModeCoverage(NamedTuple):
    """Mode-coverage summary; all fields are jnp arrays."""

    modes_captured: jax.Array  # int32 scalar: modes with >= min_count high-quality samples
    high_quality_fraction: jax.Array  # float scalar in [0, 1]
    reverse_kl: jax.Array  # float scalar: KL(mode histogram of HQ samples ‖ uniform); NaN if no HQ sample
    counts: jax.Array  # int32 (m,): high-quality samples whose nearest centre is each mode


@functools.partial(jax.jit, static_argnames=("threshold", "min_count"))
def mode_coverage(
    samples: jax.Array,
    centers: jax.Array,
    std: float | jax.Array,
    *,
    threshold: float = 3.0,
    min_count: int = 1,
) -> ModeCoverage:
    """HQ: ‖x − μ_k*‖ ≤ threshold·std, k* = argmin_k ‖x − μ_k‖; mode k captured: #HQ with k* = k ≥ min_count.

    The VEEGAN convention (Srivastava et al. 2017, §5.1; their benchmark code scores 2500 samples):
    threshold 3, a mode is captured when it is the nearest mean of at least one (``min_count=1``)
    high-quality sample. ``reverse_kl`` is PacGAN's (Lin et al. 2018, Table 1) "reverse KL":
    KL(p̂ ‖ U_m) = Σ_k p̂_k log(m p̂_k), p̂ the mode histogram of the high-quality samples, U_m the true uniform
    mode distribution — finite (≤ log m) even when modes are dropped: one mode only gives log m. For samples
    of the data itself the plug-in estimate is biased upward, E ≈ (m − 1) / (2 N_HQ) (2 N·KL is the G
    statistic, ≈ χ²_{m−1}): 0.0014 for 2500 ring samples.

    Args:
      samples: (n, d) generated samples.
      centers: (m, d) mixture means.
      std: per-coordinate standard deviation of each (isotropic) mixture component.
      threshold: HQ radius in units of std (a Python float: static under jit).
      min_count: number of HQ samples a mode needs to count as captured (a Python int: static under jit).
    """
    samples = jnp.asarray(samples)
    centers = jnp.asarray(centers)
    if samples.ndim != 2 or centers.ndim != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(
            f"samples must be (n, d) and centers (m, d) with the same d; got samples {samples.shape} "
            f"and centers {centers.shape}"
        )
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0 (in units of std), got {threshold}")
    _check_min_count(min_count)
    m = centers.shape[0]
    sq_dist = jnp.sum((samples[:, None, :] - centers[None, :, :]) ** 2, axis=-1)  # (n, m)
    nearest = jnp.argmin(sq_dist, axis=1)
    high_quality = jnp.min(sq_dist, axis=1) <= (threshold * std) ** 2
    counts = jnp.bincount(nearest, weights=high_quality.astype(jnp.int32), length=m).astype(jnp.int32)
    modes_captured, reverse_kl = histogram_summary(counts, min_count)
    return ModeCoverage(modes_captured, jnp.mean(high_quality), reverse_kl, counts)


# ----------------------------------------------------------------------------------------------------
# Wasserstein distances to the data (thin wrappers over gan_jax.transport)


def sliced_w1(x: jax.Array, y: jax.Array, key: jax.Array, n_projections: int = 128) -> jax.Array:
    """SW₁(x, y) = E_θ W₁(θᵀx, θᵀy), θ uniform on the sphere, Monte Carlo over ``n_projections`` directions."""
    return transport.sliced_wasserstein(x, y, key, n_projections=n_projections, p=1)


def wasserstein_to_data(x: jax.Array, y: jax.Array, p: float = 1) -> jax.Array:
    """W_p(x̂, ŷ) between the uniform empirical measures of x (n, d) and y (k, d), exact (EMD): for small n.

    The network simplex costs roughly O((n + k)·n·k) per solve: keep n, k to a few hundred (e.g. 500 each).
    """
    return transport.wasserstein_p(x, y, p=p)


# ----------------------------------------------------------------------------------------------------
# The classifier of both tests: a models.MLPClassifier trained with optax


def _classifier(params: Params) -> models.MLPClassifier:
    """The MLPClassifier that ``params`` parametrise: hidden widths and number of classes read off the kernels."""
    layers = params["params"]
    hidden = tuple(layers[f"hidden_{i}"]["kernel"].shape[1] for i in range(len(layers) - 1))
    return models.MLPClassifier(num_classes=layers["output"]["kernel"].shape[1], hidden=hidden)


@jax.jit
def classifier_apply(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(logits (n, K), last hidden features (n, h)) of the models.MLPClassifier ``params`` on x (n, ...) flattened."""
    d_in = params["params"]["hidden_0"]["kernel"].shape[0]
    if x.ndim < 1 or math.prod(x.shape[1:]) != d_in:
        raise ValueError(f"classifier expects inputs with {d_in} features per example, got x of shape {x.shape}")
    return _classifier(params).apply(params, x)


@functools.partial(jax.jit, static_argnames=("num_classes", "hidden", "steps", "batch_size", "learning_rate"))
def _fit_classifier(x: jax.Array, y: jax.Array, key: jax.Array, *, num_classes: int, hidden: tuple[int, ...],
                    steps: int, batch_size: int, learning_rate: float) -> Params:
    """Adam on mean softmax cross-entropy, ``steps`` minibatches drawn with replacement, in a lax.scan."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    classifier = models.MLPClassifier(num_classes=num_classes, hidden=hidden)
    init_key, batch_key = jax.random.split(key)
    params = classifier.init(init_key, x[:1])
    optimizer = optax.adam(learning_rate)
    batch_indices = jax.random.randint(batch_key, (steps, min(batch_size, x.shape[0])), 0, x.shape[0])

    def loss_fn(p, xb, yb):
        logits, _ = classifier.apply(p, xb)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    def step(carry, idx):
        p, opt_state = carry
        grads = jax.grad(loss_fn)(p, x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), batch_indices)
    return params


# ----------------------------------------------------------------------------------------------------
# Two-sample classifier test


@functools.partial(jax.jit, static_argnames=("steps", "hidden", "batch_size", "learning_rate"))
def two_sample_accuracy(
    real: jax.Array,
    fake: jax.Array,
    key: jax.Array,
    *,
    steps: int = 300,
    hidden: tuple[int, ...] = (64, 64),
    batch_size: int = 256,
    learning_rate: float = 3e-3,
) -> jax.Array:
    """acc = P̂_test[argmax MLP(x) = label], MLP trained on half of real (label 1) vs fake (label 0).

    Each set is shuffled with ``key`` and split in halves: a ``models.MLPClassifier`` with ``hidden`` layers is
    trained for ``steps`` Adam steps on the first halves (inputs standardised with the training mean/std) and
    scored on the held-out halves. 0.5 means the classifier cannot tell the samples apart; 1.0 means they are
    fully separable.

    Args:
      real, fake: (n, ...) samples, the same n (≥ 4) and per-example shape; flattened to (n, d).
    """
    if real.shape != fake.shape or real.ndim < 2 or real.shape[0] < 4:
        raise ValueError(
            f"real and fake must have the same shape (n, ...) with n >= 4; got real {real.shape}, fake {fake.shape}"
        )
    n = real.shape[0]
    half = n // 2
    real = jnp.reshape(real, (n, -1)).astype(jnp.float32)
    fake = jnp.reshape(fake, (n, -1)).astype(jnp.float32)
    k_shuffle, k_fit = jax.random.split(key)
    perm = jnp.argsort(jax.random.uniform(k_shuffle, (2, n)), axis=1)  # one shuffle per set
    real, fake = real[perm[0]], fake[perm[1]]
    x_train = jnp.concatenate([real[:half], fake[:half]])
    x_test = jnp.concatenate([real[half:], fake[half:]])
    y_train = jnp.concatenate([jnp.ones(half, jnp.int32), jnp.zeros(half, jnp.int32)])
    y_test = jnp.concatenate([jnp.ones(n - half, jnp.int32), jnp.zeros(n - half, jnp.int32)])
    mean = jnp.mean(x_train, axis=0)
    scale = jnp.std(x_train, axis=0) + 1e-6
    params = _fit_classifier((x_train - mean) / scale, y_train, k_fit, num_classes=2, hidden=hidden, steps=steps,
                             batch_size=batch_size, learning_rate=learning_rate)
    logits, _ = classifier_apply(params, (x_test - mean) / scale)
    return jnp.mean(jnp.argmax(logits, axis=1) == y_test)


# ----------------------------------------------------------------------------------------------------
# A classifier of labelled image data (the digits, or any dataset) and the scores computed with it


def train_classifier(
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    steps: int = 1000,
    num_classes: int = 10,
    hidden: tuple[int, ...] = (128, 64),
    batch_size: int = 128,
    learning_rate: float = 1e-3,
) -> Params:
    """θ = argmin_θ E[−log softmax(MLP_θ(x))_y] by Adam; returns the variables of a ``models.MLPClassifier``.

    Args:
      images: (n, H, W, C) in [−1, 1] (any (n, ...) works; flattened).
      labels: (n,) ints in [0, num_classes).
    Returns:
      params for ``classifier_apply``; the last hidden width (64) is its feature space.
    """
    images = jnp.asarray(images, jnp.float32)
    labels = jnp.asarray(labels)
    if images.ndim < 2 or labels.shape != (images.shape[0],):
        raise ValueError(f"images must be (n, ...) and labels (n,); got images {images.shape}, labels {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integers in [0, num_classes), got dtype {labels.dtype}")
    return _fit_classifier(jnp.reshape(images, (images.shape[0], -1)), labels, key, num_classes=num_classes,
                           hidden=tuple(hidden), steps=steps, batch_size=batch_size, learning_rate=learning_rate)


def _training_settings(images: jax.Array, labels: jax.Array, train_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a cached classifier must have been trained with: the settings of ``train_classifier`` with
    ``train_kwargs`` (its defaults elsewhere) and a SHA-256 digest of the images and labels (not the key)."""
    bound = inspect.signature(train_classifier).bind(images, labels, None, **train_kwargs)
    bound.apply_defaults()
    settings = {name: value for name, value in bound.arguments.items() if name not in ("images", "labels", "key")}
    digest = hashlib.sha256()
    for array in (np.asarray(images, np.float32), np.asarray(labels, np.int64)):
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    settings["data_sha256"] = digest.hexdigest()
    return json.loads(json.dumps(settings))  # as it reads back from the cache (tuples become lists)


def _load_classifier(file: IO[bytes], settings: dict[str, Any], n_features: int) -> Params:
    """The variables cached in ``file``; ValueError unless they were trained with ``settings`` (same data,
    same training settings) and are the finite arrays of the classifier those settings and ``n_features`` give."""
    if not zipfile.is_zipfile(file):
        raise ValueError("it is not an .npz (zip) file")
    with np.load(file, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if _SETTINGS_ENTRY not in arrays:
        raise ValueError("it records no training settings (another file, or a cache of an older gan_jax)")
    stored = json.loads(str(arrays.pop(_SETTINGS_ENTRY)))
    changed = sorted(name for name in settings if stored.get(name) != settings[name])
    if changed:
        raise ValueError(f"it was trained with other {', '.join(changed)}")
    classifier = models.MLPClassifier(num_classes=settings["num_classes"], hidden=tuple(settings["hidden"]))
    x = jax.ShapeDtypeStruct((1, n_features), jnp.float32)
    expected = flatten_dict(jax.eval_shape(classifier.init, jax.random.key(0), x), sep="/")
    found = {name: array.shape for name, array in arrays.items()}
    if found != {name: leaf.shape for name, leaf in expected.items()}:
        raise ValueError(f"its arrays {found} are not those of {classifier} on {n_features} input features")
    bad = sorted(name for name, array in arrays.items() if not np.all(np.isfinite(array)))
    if bad:
        raise ValueError(f"{', '.join(bad)} hold non-finite values")
    return unflatten_dict({name: jnp.asarray(array) for name, array in arrays.items()}, sep="/")


def load_or_train_classifier(
    workdir: str | os.PathLike,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    write: bool = True,
    **train_kwargs: Any,
) -> Params:
    """Params at ``workdir/CLASSIFIER_FILE`` if trained on these data and settings, else trained and saved there
    (with ``write=False`` only trained: a reader of a workdir never writes into it).

    Training is ``train_classifier(images, labels, key, **train_kwargs)``. The cache stores the settings
    and a digest of the data beside the weights: a cache trained on other data or with other ``train_kwargs``
    (stale, or another run's), or one that cannot be read or does not fit (corrupt file, wrong shapes,
    non-finite values) is retrained with a warning and overwritten. The key is not part of the settings: a
    cache trained with another key is used.
    """
    path = workdir_lib.as_path(workdir) / CLASSIFIER_FILE
    settings = _training_settings(images, labels, train_kwargs)
    n_features = math.prod(np.shape(images)[1:])
    if path.exists():
        try:
            with path.open("rb") as f:
                return _load_classifier(f, settings, n_features)
        except Exception as err:  # noqa: BLE001 — any unusable cache is retrained
            warnings.warn(f"classifier cache {path} is unusable ({err}); retraining it", stacklevel=2)
    params = train_classifier(images, labels, key, **train_kwargs)
    if not write:
        return params
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(array) for name, array in flatten_dict(params, sep="/").items()}
    with workdir_lib.atomic_write(path, "wb") as f:
        np.savez(f, **arrays, **{_SETTINGS_ENTRY: np.array(json.dumps(settings))})
    return params


class ClassCoverage(NamedTuple):
    """Class-coverage summary of generated images under a classifier; all fields are jnp arrays."""

    classes_covered: jax.Array  # int32 scalar: classes predicted for >= min_count samples
    reverse_kl: jax.Array  # float scalar: KL(predicted class histogram ‖ uniform)
    counts: jax.Array  # int32 (num_classes,): samples predicted as each class


@functools.partial(jax.jit, static_argnames=("min_count",))
def class_coverage(params: Params, images: jax.Array, *, min_count: int = 1) -> ClassCoverage:
    """covered = #{k : #{x : argmax p(y|x) = k} ≥ min_count}; reverse KL = KL(p̂ ‖ U_K) as in ``mode_coverage``."""
    _check_min_count(min_count)
    logits, _ = classifier_apply(params, images)
    counts = jnp.bincount(jnp.argmax(logits, axis=1), length=logits.shape[1]).astype(jnp.int32)
    covered, kl = histogram_summary(counts, min_count)
    return ClassCoverage(covered, kl, counts)


@jax.jit
def class_accuracy(params: Params, images: jax.Array, labels: jax.Array) -> jax.Array:
    """(1/K) Σ_k P̂(argmax p(·|x) = k | y = k): the classifier's accuracy per label, averaged over the K labels
    present (for a conditional generator: how often a sample drawn for class k is recognised as k)."""
    logits, _ = classifier_apply(params, images)
    k = logits.shape[1]
    correct = jnp.bincount(labels, weights=(jnp.argmax(logits, axis=1) == labels).astype(jnp.float32), length=k)
    counts = jnp.bincount(labels, length=k)
    present = counts > 0
    return jnp.sum(jnp.where(present, correct / jnp.maximum(counts, 1), 0.0)) / jnp.sum(present)
