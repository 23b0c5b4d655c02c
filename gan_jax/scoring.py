"""Scoring a generator as the field does: samples generated in batches, never held all at once, reduced to
features and counts on the way, then FID/KID/IS/precision-recall/density-coverage against the real data.

    scorer = scoring.Scorer(cfg, source, key, classifier=params_or_None, cache_dir=data_dir, write_cache=True)
    result = scorer(generate)                  # again at every evaluation: the extractor and real side are reused

`generate(start, stop) -> (samples, labels or None)` gives samples start..stop-1 as model output (host arrays);
the same indices give the same samples, so a score is a pure function of (state, config). What is kept while
streaming: the features (n × dim float32, e.g. 50k × 2048 = 400 MB for Inception: images are not kept), the
logits, the class histogram, and at most `SLICED_W1_SAMPLES` flattened samples for the sliced W1. Toy (flat)
data keep all their points (2-D) for mode coverage. FID's mean and covariance are accumulated in float64 over
row chunks of the features (`evaluation.feature_stats`, Chan's merge), never from one float32 product.

Real features come from the reference split (`eval.reference_split`, default the training split) of the records,
cached per (dataset digest, split, extractor, image size) in `<data_dir>/gan_jax_reference/`; toy data draw
the reference from the distribution. Every number is reported under its extractor's name
(`classifier/fd`, `inception/fid`, `points/precision`, ...).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Iterable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gan_jax import evaluation
from gan_jax import extractors as extractors_lib
from gan_jax import metrics as metrics_lib
from gan_jax.errors import GanJaxError

SLICED_W1_SAMPLES = 2500  # flattened samples (and as many real ones) kept for the sliced W1 of image data
REFERENCE_DIR = "gan_jax_reference"  # inside the data directory

Generate = Callable[[int, int], tuple[np.ndarray, Optional[np.ndarray]]]


class FeatureSet(NamedTuple):
    """What a stream of examples reduces to: its features and, where the extractor has them, its logits."""

    features: np.ndarray  # (n, dim) float32
    logits: Optional[np.ndarray]  # (n, K) float32, or None for an extractor without logits


def batches(generate: Generate, n: int, batch_size: int) -> Iterable[tuple[np.ndarray, Optional[np.ndarray]]]:
    """generate(i, i + batch_size) for i = 0, batch_size, ... < n (the last batch shorter)."""
    for start in range(0, n, batch_size):
        yield generate(start, min(start + batch_size, n))


class _Features:
    """The features (and logits, where the extractor has them) of every batch added, under `extractor`."""

    def __init__(self, extractor: extractors_lib.Extractor):
        self.extractor, self.features, self.logits = extractor, [], []

    def add(self, x: np.ndarray, labels: Optional[np.ndarray] = None) -> None:
        f, lg = self.extractor.apply(x)
        self.features.append(f)
        if lg is not None:
            self.logits.append(lg)

    def feature_set(self) -> FeatureSet:
        if not self.features:
            raise GanJaxError("nothing to score: the stream of examples was empty")
        return FeatureSet(np.concatenate(self.features), np.concatenate(self.logits) if self.logits else None)


def collect(stream: Iterable[np.ndarray], extractor: extractors_lib.Extractor) -> FeatureSet:
    """The FeatureSet of every batch of `stream` (model input) under `extractor`."""
    features = _Features(extractor)
    for x in stream:
        features.add(x)
    return features.feature_set()


def metric_names(cfg: ml_collections.ConfigDict, extractor: Any) -> tuple[str, ...]:
    """eval.metrics as names ("" = every metric the extractor supports; "none" = no feature metric);
    `extractor`: an Extractor (its name and has_logits are read)."""
    spec = str(cfg.eval.metrics).strip()
    if spec == "none":
        return ()
    names = tuple(evaluation.METRICS) if not spec else tuple(s.strip() for s in spec.split(",") if s.strip())
    for name in names:
        evaluation.METRICS[name]  # unknown name: the error lists the valid ones
    if not spec:
        names = tuple(n for n in names if extractor.has_logits or n != "is")
    elif "is" in names and not extractor.has_logits:
        raise GanJaxError(f"eval.metrics asks for 'is', but extractor {extractor.name!r} has no class logits: "
                          "use eval.extractor=inception or classifier, or drop 'is'")
    return names


def _feasible(names: tuple[str, ...], n: int, dim: int, cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The metrics of `names` that n samples per side allow (FID: n > dim; k-NN: n > k); the default metric set
    drops the others, an explicit eval.metrics is refused by the metric itself."""
    need = {"fid": dim + 1, "kid": 2, "is": int(cfg.eval.is_splits), "pr": int(cfg.eval.pr_k) + 1,
            "dc": int(cfg.eval.dc_k) + 1}
    return tuple(name for name in names if n >= need[name])


_REPORTED_AS = {"kid_mean": "kid", "is_mean": "is"}  # evaluation.compute's result names → the reported ones


def feature_metrics(names: tuple[str, ...], real: FeatureSet, fake: FeatureSet, extractor_name: str,
                    cfg: ml_collections.ConfigDict) -> dict[str, float]:
    """{extractor/label: value} of evaluation.compute(names) between the real and generated FeatureSets.

    Precision/recall and density/coverage use the first eval.knn_samples of each side (their cost is quadratic);
    KID's subset size is eval.kid_subset_size, or min(1000, samples) when 0.
    """
    e, knn = cfg.eval, int(cfg.eval.knn_samples)
    subset = int(e.kid_subset_size) or min(1000, len(real.features), len(fake.features))
    options = {"kid": dict(subsets=int(e.kid_subsets), subset_size=subset), "is": dict(splits=int(e.is_splits)),
               "pr": dict(k=int(e.pr_k)), "dc": dict(k=int(e.dc_k))}
    out: dict[str, float] = {}
    for name in names:
        cut = knn if name in ("pr", "dc") else None
        values = evaluation.compute([name], real.features[:cut], fake.features[:cut], fake.logits,
                                    options={name: options[name]} if name in options else None)
        for key, value in values.items():
            label = extractors_lib.metric_label(_REPORTED_AS.get(key, key), extractor_name)
            out[f"{extractor_name}/{label}"] = float(value)
    return out


# ------------------------------------------------------------------------------------------------------------
# The real side: the reference split's features, cached in the data directory.


def _records_digest(records: Any, batch_size: int) -> str:
    from gan_jax.data import images

    digest = hashlib.sha256()
    for start in range(0, len(records), batch_size):
        pixels, labels = images.read_records(records, range(start, min(start + batch_size, len(records))))
        digest.update(np.ascontiguousarray(pixels).tobytes())
        if labels is not None:
            digest.update(np.asarray(labels, np.int64).tobytes())
    return digest.hexdigest()


def _save_reference(path: str, real: FeatureSet) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    arrays = dict(features=real.features)
    if real.logits is not None:
        arrays["logits"] = real.logits
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _load_reference(path: str) -> Optional[FeatureSet]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        return FeatureSet(arrays["features"], arrays.get("logits"))
    except (OSError, ValueError, KeyError):  # an unreadable or partial cache is recomputed
        return None


def reference_features(cfg: ml_collections.ConfigDict, source: Any, extractor: extractors_lib.Extractor,
                       key: jax.Array, n_fake: int, *, cache_dir: Optional[str], write_cache: bool) -> tuple[FeatureSet, str]:
    """(FeatureSet of the real data, what it is) under `extractor`.

    Toy data: n_fake draws from the distribution with `key`. Records: every record of eval.reference_split
    (default data.split), read in batches; cached under `cache_dir` by (dataset digest, split, extractor,
    image size) when `cache_dir` is given; the cache is written only with `write_cache`.
    """
    batch = int(cfg.eval.batch_size)
    if source.records is None:
        x = np.asarray(source.sample(source.arrays, key, 0, n_fake).x)
        return collect((x[i:i + batch] for i in range(0, len(x), batch)), extractor), f"{n_fake} draws of {source.name}"
    from gan_jax.data import images

    split = str(cfg.eval.reference_split or cfg.data.split)
    records = source.records if split == cfg.data.split else images.open_records(
        cfg.data.name, split=split, data_dir=cfg.data.data_dir or None)
    what = f"{len(records)} records of {cfg.data.name} split {split!r}"
    path = None
    if cache_dir:
        name = extractors_lib.cache_key(data=_records_digest(records, 1024), split=split, extractor=extractor.name,
                                        identity=extractor.identity, image_size=list(source.shape))
        path = os.path.join(cache_dir, REFERENCE_DIR, f"{cfg.data.name}-{extractor.name}-{name}.npz")
        cached = _load_reference(path) if os.path.exists(path) else None
        if cached is not None:
            return cached, what

    def stream():
        for start in range(0, len(records), batch):
            pixels, _ = images.read_records(records, range(start, min(start + batch, len(records))))
            yield np.asarray(source.to_input(jnp.asarray(pixels)))

    real = collect(stream(), extractor)
    if path is not None and write_cache:
        _save_reference(path, real)
    return real, what


# ------------------------------------------------------------------------------------------------------------
# One pass over the generated samples.


# Reported values that are better when lower (the others, e.g. precision or IS, when higher).
LOWER_IS_BETTER = ("fd", "fid", "kid", "sliced_w1", "mode_reverse_kl", "class_reverse_kl")
# Values reported whatever the extractor, where the data have them (toy mixtures; labelled data).
DATA_VALUES = ("sliced_w1", "modes_captured", "high_quality", "mode_reverse_kl", "classes_covered",
               "class_reverse_kl", "class_accuracy")
_RESULT_LABELS = {"fid": ("fid",), "kid": ("kid",), "is": ("is",), "pr": ("precision", "recall"),
                  "dc": ("density", "coverage")}


def check(cfg: ml_collections.ConfigDict, source: Any) -> None:
    """GanJaxError, before anything is written or loaded, for an extractor that does not fit the data, missing
    Inception weights, a metric the extractor cannot give (IS without logits), or an eval.best_metric that the
    evaluation will not report."""
    names, extractor = (), "none"
    if str(cfg.eval.metrics).strip() != "none":
        extractor = extractors_lib.check(str(cfg.eval.extractor), source, str(cfg.eval.inception_weights))
        names = metric_names(cfg, extractors_lib.Extractor(extractor, 0, extractor != "points", None, ""))
    best = str(cfg.eval.get("best_metric", ""))
    reported = [*DATA_VALUES, *(f"{extractor}/{extractors_lib.metric_label(label, extractor)}"
                                for name in names for label in _RESULT_LABELS[name])]
    if best and best not in reported:
        raise GanJaxError(f"config.eval.best_metric={best!r} is not among the values this run reports: "
                          f"{', '.join(reported)}")


def make_extractor(cfg: ml_collections.ConfigDict, source: Any,
                   classifier: Any = None) -> Optional[extractors_lib.Extractor]:
    """eval.extractor for `source` (None when eval.metrics is "none"): build it once per run, it may load weights."""
    if str(cfg.eval.metrics).strip() == "none":
        return None
    extractor = extractors_lib.build(str(cfg.eval.extractor), source,
                                     inception_weights=str(cfg.eval.inception_weights), classifier=classifier,
                                     batch_size=min(int(cfg.eval.batch_size), 100))
    metric_names(cfg, extractor)  # a metric the extractor cannot give is refused before training
    return extractor


class Scorer:
    """`scorer(generate) -> {metric: value}` of a run's generated samples: the run's extractor is built once here (it
    may load weights), and the real data's reference features are computed at the first call and then reused
    (they do not change during a run: at every periodic evaluation they would otherwise be read and digested again).

    Every dataset: sliced W₁ to as many real examples (at most SLICED_W1_SAMPLES). Toy mixtures: mode coverage,
    high-quality share, reverse KL of the mode histogram. Labelled data with `classifier`: class coverage and,
    for a conditional generator, mean per-class accuracy. Then eval.metrics in eval.extractor's features
    (`extractor/fd`, `extractor/kid`, ...) against `reference_features` (cached under `cache_dir`, written there
    only with `write_cache`). `key` fixes the real draws (toy data) and the sliced W₁ projections.
    """

    def __init__(self, cfg: ml_collections.ConfigDict, source: Any, key: jax.Array, *, classifier: Any = None,
                 cache_dir: Optional[str] = None, write_cache: bool = False):
        self.cfg, self.source, self.classifier = cfg, source, classifier
        self.cache_dir, self.write_cache = cache_dir, write_cache
        self.data_key, self.w_key = jax.random.split(key)
        self.extractor = make_extractor(cfg, source, classifier)
        self._reference: Optional[tuple[FeatureSet, str]] = None

    def reference(self) -> tuple[FeatureSet, str]:
        """(the real data's FeatureSet, what it is), computed once."""
        if self._reference is None:
            self._reference = reference_features(self.cfg, self.source, self.extractor, self.data_key,
                                                 int(self.cfg.train.eval_samples), cache_dir=self.cache_dir,
                                                 write_cache=self.write_cache)
        return self._reference

    def __call__(self, generate: Generate) -> dict[str, Any]:
        """{metric: value} of train.eval_samples samples of `generate`, streamed in eval.batch_size batches."""
        cfg, source, extractor = self.cfg, self.source, self.extractor
        names = () if extractor is None else metric_names(cfg, extractor)
        means = None if source.distribution is None else source.distribution.means
        first = _FirstSamples(SLICED_W1_SAMPLES)
        points = _ModePoints(source.distribution) if means is not None else None
        classes = _ClassHistogram(self.classifier) if self.classifier is not None else None
        features = _Features(extractor) if names else None
        streams = [s for s in (first, points, classes, features) if s is not None]
        for x, labels in batches(generate, int(cfg.train.eval_samples), int(cfg.eval.batch_size)):
            x = np.asarray(x, np.float32)
            for s in streams:
                s.add(x, labels)

        result: dict[str, Any] = {} if points is None else points.summary()
        fake_flat = first.samples()
        real = np.asarray(real_examples(source, len(fake_flat), self.data_key).x, np.float32)
        result["sliced_w1"] = float(metrics_lib.sliced_w1(
            jnp.asarray(fake_flat[:len(real)]), jnp.asarray(real.reshape(len(real), -1)), self.w_key))
        if classes is not None:
            result.update(classes.summary())
        if features is not None:
            fake = features.feature_set()
            reference, what = self.reference()
            if not str(cfg.eval.metrics).strip():  # the default set: only what these sample counts allow
                names = _feasible(names, min(len(reference.features), len(fake.features)), extractor.dim, cfg)
            result.update(feature_metrics(names, reference, fake, extractor.name, cfg))
            result["reference"] = what
        return result


class _FirstSamples:
    """The first `n` samples added, flattened (for the sliced W₁)."""

    def __init__(self, n: int):
        self.n, self.rows, self.kept = n, [], 0

    def add(self, x: np.ndarray, labels: Optional[np.ndarray] = None) -> None:
        take = min(len(x), self.n - self.kept)
        if take > 0:
            self.rows.append(x[:take].reshape(take, -1))
            self.kept += take

    def samples(self) -> np.ndarray:
        return np.concatenate(self.rows)


class _ModePoints:
    """Every sample of a toy mixture, for its mode coverage, high-quality share and reverse KL."""

    def __init__(self, distribution: Any):
        self.distribution, self.points = distribution, []

    def add(self, x: np.ndarray, labels: Optional[np.ndarray] = None) -> None:
        self.points.append(x)

    def summary(self) -> dict[str, Any]:
        dist = self.distribution
        cover = metrics_lib.mode_coverage(jnp.asarray(np.concatenate(self.points)), jnp.asarray(dist.means), dist.std)
        return dict(modes_captured=int(cover.modes_captured), n_modes=len(dist.means),
                    high_quality=float(cover.high_quality_fraction), mode_reverse_kl=float(cover.reverse_kl))


class _ClassHistogram:
    """The classifier's predicted-class histogram of the samples and, for samples drawn with labels, its hits per
    label: classes covered, reverse KL to uniform, and mean per-class accuracy."""

    def __init__(self, classifier: Any):
        self.classifier = classifier
        self.counts = self.correct = self.per_label = 0  # arrays once a (labelled) batch is added

    def add(self, x: np.ndarray, labels: Optional[np.ndarray] = None) -> None:
        logits, _ = metrics_lib.classifier_apply(self.classifier, jnp.asarray(x))
        predicted, k = np.asarray(jnp.argmax(logits, axis=1)), int(logits.shape[1])
        self.counts = self.counts + np.bincount(predicted, minlength=k)
        if labels is not None:
            labels = np.asarray(labels)
            self.correct = self.correct + np.bincount(labels, weights=predicted == labels, minlength=k)
            self.per_label = self.per_label + np.bincount(labels, minlength=k)

    def summary(self) -> dict[str, Any]:
        covered, kl = metrics_lib.histogram_summary(jnp.asarray(self.counts, jnp.int32), 1)
        result: dict[str, Any] = dict(classes_covered=int(covered), class_reverse_kl=float(kl))
        if np.ndim(self.per_label):
            present = self.per_label > 0
            result["class_accuracy"] = float(np.mean(self.correct[present] / self.per_label[present]))
        return result


def real_examples(source: Any, n: int, key: jax.Array) -> Any:
    """n real examples to compare samples with: toy draws from `key`, else the first n records (model input)."""
    if source.records is None:
        return source.sample(source.arrays, key, 0, n)
    return source.real_batch(range(min(n, len(source.records))))
