"""The image-generation metrics a GAN paper reports, over features: FID, KID, IS, precision/recall, density/coverage.

    from gan_jax import evaluation, inception

    extract = inception.make_extractor(inception.load(inception.weights_path(None)))
    stats_real = evaluation.FeatureStats.empty()
    for images in real_batches:                          # stream: only (n, Σ-statistics) stay in memory
        pool, _ = extract(images)
        stats_real = evaluation.merge(stats_real, evaluation.feature_stats(pool))
    fake_pool, fake_logits = extract(fake_images)
    evaluation.fid(stats_real, evaluation.feature_stats(fake_pool))       # a float
    evaluation.kid(real_pool, fake_pool, subset_size=1000)                # (mean, std)
    evaluation.inception_score(fake_logits)                               # (mean, std)
    evaluation.compute(["fid", "kid", "pr", "dc"], real_pool, fake_pool)  # {"fid": …, "kid_mean": …, …}

Every function runs on the host in NumPy float64 (features may be float32 NumPy or JAX arrays) and equals the
field's reference package on the same inputs:

* FID — pytorch-fid's `calculate_frechet_distance`. Tr (Σ₁Σ₂)^½ is computed from the eigenvalues of the symmetric
  Σ₁^½ Σ₂ Σ₁^½ (similar to Σ₁Σ₂), not by `scipy.linalg.sqrtm` of the non-symmetric product as pytorch-fid does:
  the value is the same (the eigenvalues of a product of covariances are real and ≥ 0, so pytorch-fid's eps offset
  and real part are never needed), and two symmetric eigendecompositions cost a fraction of a Schur-based sqrtm
  at d = 2048. `fid` refuses statistics of n ≤ d samples, whose covariance is singular.
* KID — torch-fidelity's `kid_features_to_metric`, subsets drawn exactly as it draws them.
* IS — torch-fidelity's `isc_features_to_metric` (same shuffle, same splits).
* Precision/recall, density/coverage — `prdc.compute_prdc`, with distances blocked over rows.

`METRICS` names each metric and what it needs (features or logits); `compute` evaluates a list of names.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
from numpy.typing import ArrayLike

from gan_jax.errors import GanJaxError
from gan_jax.registry import Registry

_CHUNK_ROWS = 4096  # rows converted to float64 at once by feature_stats
_BLOCK_ELEMENTS = 2**23  # float64 distances held at once by the k-NN metrics (64 MB)


def _features(x: ArrayLike, name: str) -> np.ndarray:
    """x as a NumPy (n, d) array of finite floats (its own dtype); GanJaxError naming `name` otherwise."""
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise GanJaxError(f"{name} must be a numeric array of shape (n, d), got {x.dtype} {x.shape}; "
                          "flatten the features of each sample into one row")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise GanJaxError(f"{name} has NaN or Inf in {bad.size} of {x.shape[0]} rows (first: row {bad[0]}); "
                          "the feature extractor or the generator produced non-finite values: fix those samples")
    return x


def _same_dimension(real: np.ndarray, fake: np.ndarray) -> None:
    if real.shape[1] != fake.shape[1]:
        raise GanJaxError(f"real and fake features have different dimensions, {real.shape[1]} and "
                          f"{fake.shape[1]}; extract both with the same network and layer")


# ----------------------------------------------------------------------------------------------------
# Streamed statistics (FID)


class FeatureStats(NamedTuple):
    """Count n, mean μ = Σx/n and centred scatter M = Σ(x − μ)(x − μ)ᵀ of features, in float64.

    Centred sums, not raw ones: Σxxᵀ/n − μμᵀ loses about log₁₀(‖μ‖²/σ²) digits to cancellation, whereas Chan's
    merge (`merge`) adds only centred quantities and stays accurate whatever the mean.
    """

    count: int
    mean: np.ndarray  # (d,)
    scatter: np.ndarray  # (d, d)

    @classmethod
    def empty(cls, dim: int | None = None) -> "FeatureStats":
        """The statistics of no samples: merge's identity (of any dimension when `dim` is None)."""
        return cls(0, np.zeros(dim or 0), np.zeros((dim or 0, dim or 0)))


def merge(a: FeatureStats, b: FeatureStats) -> FeatureStats:
    """Chan et al. 1979: n = nₐ + n_b, μ = μₐ + δ·n_b/n, M = Mₐ + M_b + δδᵀ·nₐn_b/n, δ = μ_b − μₐ."""
    if a.count == 0 or b.count == 0:
        return b if a.count == 0 else a
    if a.mean.shape != b.mean.shape:
        raise GanJaxError(f"cannot merge statistics of {a.mean.shape[0]}-d and {b.mean.shape[0]}-d features; "
                          "extract every batch with the same network and layer")
    n = a.count + b.count
    delta = b.mean - a.mean
    return FeatureStats(n, a.mean + delta * (b.count / n),
                        a.scatter + b.scatter + np.outer(delta, delta) * (a.count * b.count / n))


def feature_stats(features: ArrayLike) -> FeatureStats:
    """(n, μ, Σ(x − μ)(x − μ)ᵀ) of one batch (n, d), accumulated in float64 chunk by chunk (merged by `merge`)."""
    x = _features(features, "features")
    stats = FeatureStats.empty(x.shape[1])
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = x[start:start + _CHUNK_ROWS].astype(np.float64)
        mean = chunk.mean(axis=0)
        centred = chunk - mean
        stats = merge(stats, FeatureStats(chunk.shape[0], mean, centred.T @ centred))
    return stats


def mean_cov(stats: FeatureStats) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ = M/(n − 1)): the mean and the unbiased covariance, as numpy.cov(x, rowvar=False) and pytorch-fid."""
    if stats.count < 2:
        raise GanJaxError(f"a covariance needs at least 2 samples, the statistics hold {stats.count}")
    return stats.mean, stats.scatter / (stats.count - 1)


# ----------------------------------------------------------------------------------------------------
# Fréchet (Inception) distance


def _symmetric_matrix(sigma: ArrayLike, d: int, name: str) -> np.ndarray:
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.shape != (d, d):
        raise GanJaxError(f"{name} has shape {sigma.shape}; the mean has dimension {d}, so it must be ({d}, {d})")
    if not np.isfinite(sigma).all() or not np.allclose(sigma, sigma.T, rtol=1e-6, atol=0.0):
        raise GanJaxError(f"{name} is not a finite symmetric matrix; pass a covariance (mean_cov of the features)")
    return sigma


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """FD = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) between N(μ₁, Σ₁) and N(μ₂, Σ₂), Heusel et al. 2017.

    Tr (Σ₁Σ₂)^½ = Σᵢ √λᵢ over the eigenvalues λ of Σ₁^½ Σ₂ Σ₁^½ (symmetric, similar to Σ₁Σ₂); eigenvalues that
    rounding leaves slightly below zero count as 0. Equal to pytorch-fid's value on the same inputs.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise GanJaxError(f"the means must be vectors of one length, got shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    sigma1, sigma2 = _symmetric_matrix(sigma1, d, "sigma1"), _symmetric_matrix(sigma2, d, "sigma2")
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # Σ₁^½
    lam = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.sqrt(np.clip(lam, 0.0, None)).sum())


def fid(stats_real: FeatureStats, stats_fake: FeatureStats) -> float:
    """FID = FD(N(μ_r, Σ_r), N(μ_f, Σ_f)) of streamed statistics; GanJaxError when n ≤ d (singular covariance)."""
    if stats_real.mean.shape != stats_fake.mean.shape:
        raise GanJaxError(f"real and fake statistics have different dimensions, {stats_real.mean.shape[0]} and "
                          f"{stats_fake.mean.shape[0]}; extract both with the same network and layer")
    for name, stats in (("real", stats_real), ("fake", stats_fake)):
        n, d = stats.count, stats.mean.shape[0]
        if n <= d:
            raise GanJaxError(
                f"FID of {n} {name} samples of {d}-d features: the covariance of n <= d samples is singular and the "
                f"distance meaningless (the 'imaginary component' failure); use more than {d} samples (50000 is "
                "the usual count) or a lower-dimensional feature layer")
    return frechet_distance(*mean_cov(stats_real), *mean_cov(stats_fake))


# ----------------------------------------------------------------------------------------------------
# Kernel Inception distance


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, kernel: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """MMD²ᵤ = Σᵢ≠ⱼ k(xᵢ,xⱼ)/(m(m−1)) + Σᵢ≠ⱼ k(yᵢ,yⱼ)/(m(m−1)) − 2Σᵢⱼ k(xᵢ,yⱼ)/m² (Gretton et al. 2012)."""
    m = x.shape[0]
    k_xx, k_yy = kernel(x, x), kernel(y, y)
    within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return float(within / (m * (m - 1)) - 2.0 * kernel(x, y).sum() / (m * m))


def kid(real: ArrayLike, fake: ArrayLike, *, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0, seed: int = 2020) -> tuple[float, float]:
    """KID = mean ± std over subsets of MMD²ᵤ with k(x, y) = (γ xᵀy + coef0)^degree, γ = 1/d, Bińkowski et al. 2018.

    Subsets as torch-fidelity draws them: one `np.random.RandomState(seed)`; per subset first
    `choice(len(real), subset_size, replace=False)`, then the same for `fake`. So `kid(a, b)` equals
    `torch_fidelity.metric_kid.kid_features_to_metric(a, b)` at the same seed (its `rng_seed`, default 2020)
    and settings; std is NumPy's (ddof 0), as there. Kernels in float64 (torch-fidelity keeps the input dtype).
    """
    real, fake = _features(real, "real features"), _features(fake, "fake features")
    _same_dimension(real, fake)
    if not 2 <= subset_size <= min(len(real), len(fake)):
        raise GanJaxError(f"KID subset_size={subset_size} must be in [2, {min(len(real), len(fake))}] (subsets are "
                          f"drawn without replacement from {len(real)} real and {len(fake)} fake samples); lower "
                          "subset_size or give more samples")
    if subsets < 1:
        raise GanJaxError(f"KID subsets={subsets} must be at least 1 (100 is the usual count)")
    gamma = 1.0 / real.shape[1] if gamma is None else gamma

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (gamma * (x @ y.T) + coef0) ** degree

    rng = np.random.RandomState(seed)
    mmds = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), subset_size, replace=False)].astype(np.float64)
        y = fake[rng.choice(len(fake), subset_size, replace=False)].astype(np.float64)
        mmds.append(_mmd2_unbiased(x, y, kernel))
    return float(np.mean(mmds)), float(np.std(mmds))


# ----------------------------------------------------------------------------------------------------
# Inception score


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def inception_score(logits: ArrayLike, *, splits: int = 10, shuffle_seed: int | None = 2020) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) ‖ p(y))), p(y|x) = softmax(logits), mean ± std over splits, Salimans et al. 2016.

    As torch-fidelity's `isc_features_to_metric`: rows permuted by `np.random.RandomState(shuffle_seed)` (None keeps
    their order, as openai/improved-gan does), split i = rows [i·N//splits, (i+1)·N//splits), p(y) the split's mean,
    std with ddof 0. The logits are taken as given, every class kept: for published numbers pass the FID Inception's
    1008 logits without the fc bias (`inception.features`), which both references use.
    """
    logits = _features(logits, "logits").astype(np.float64)
    n = logits.shape[0]
    if not 1 <= splits <= n:
        raise GanJaxError(f"inception_score splits={splits} must be in [1, {n}] for {n} samples (10 is usual)")
    if shuffle_seed is not None:
        logits = logits[np.random.RandomState(shuffle_seed).permutation(n)]
    log_p = _log_softmax(logits)
    scores = []
    for i in range(splits):
        log_p_yx = log_p[i * n // splits:(i + 1) * n // splits]
        p_yx = np.exp(log_p_yx)
        kl = np.sum(p_yx * (log_p_yx - np.log(p_yx.mean(axis=0))), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


# ----------------------------------------------------------------------------------------------------
# k-nearest-neighbour manifolds: precision/recall, density/coverage


def _distance_blocks(x: np.ndarray, y: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """(rows, ‖xᵢ − yⱼ‖ for i in rows) in float64 blocks of rows, as sklearn's euclidean pairwise_distances."""
    y = y.astype(np.float64)
    y_sq = np.einsum("ij,ij->i", y, y)
    step = max(1, _BLOCK_ELEMENTS // len(y))
    for start in range(0, len(x), step):
        rows = slice(start, min(start + step, len(x)))
        xb = x[rows].astype(np.float64)
        sq = -2.0 * (xb @ y.T)
        sq += np.einsum("ij,ij->i", xb, xb)[:, None]
        sq += y_sq[None, :]
        yield rows, np.sqrt(np.maximum(sq, 0.0))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """rᵢ = distance from xᵢ to its k-th nearest neighbour among the other points of x (prdc's `nearest_k`)."""
    radii = np.empty(len(x))
    for rows, dist in _distance_blocks(x, x):
        dist[np.arange(dist.shape[0]), np.arange(rows.start, rows.stop)] = 0.0  # the point itself, exactly
        radii[rows] = np.partition(dist, k, axis=1)[:, k]  # position 0 holds the point itself
    return radii


def _knn_inputs(real: ArrayLike, fake: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    real, fake = _features(real, "real features"), _features(fake, "fake features")
    _same_dimension(real, fake)
    if k < 1 or min(len(real), len(fake)) <= k:
        raise GanJaxError(f"k={k} nearest neighbours need k >= 1 and more than k samples per set, got "
                          f"{len(real)} real and {len(fake)} fake; lower k or give more samples")
    return real, fake


def precision_recall(real: ArrayLike, fake: ArrayLike, *, k: int = 3) -> tuple[float, float]:
    """precision = P_f[∃i ‖f − rᵢ‖ < rad_k(rᵢ)], recall = P_r[∃j ‖r − fⱼ‖ < rad_k(fⱼ)], Kynkäänniemi et al. 2019.

    rad_k is the k-th nearest-neighbour distance within the point's own set; equal to prdc.compute_prdc(real,
    fake, nearest_k=k)'s precision and recall.
    """
    real, fake = _knn_inputs(real, fake, k)
    real_radii, fake_radii = _knn_radii(real, k), _knn_radii(fake, k)
    fake_inside = np.zeros(len(fake), dtype=bool)
    real_inside = np.zeros(len(real), dtype=bool)
    for rows, dist in _distance_blocks(real, fake):
        fake_inside |= (dist < real_radii[rows, None]).any(axis=0)
        real_inside[rows] = (dist < fake_radii[None, :]).any(axis=1)
    return float(fake_inside.mean()), float(real_inside.mean())


def density_coverage(real: ArrayLike, fake: ArrayLike, *, k: int = 5) -> tuple[float, float]:
    """density = E_f[#{i: ‖f − rᵢ‖ < rad_k(rᵢ)}]/k, coverage = P_r[minⱼ ‖r − fⱼ‖ < rad_k(r)], Naeem et al. 2020.

    rad_k is the k-th nearest-neighbour distance among the real points; equal to prdc.compute_prdc(real, fake,
    nearest_k=k)'s density and coverage.
    """
    real, fake = _knn_inputs(real, fake, k)
    real_radii = _knn_radii(real, k)
    balls_per_fake = np.zeros(len(fake))
    covered = np.zeros(len(real), dtype=bool)
    for rows, dist in _distance_blocks(real, fake):
        balls_per_fake += (dist < real_radii[rows, None]).sum(axis=0)
        covered[rows] = dist.min(axis=1) < real_radii[rows]
    return float(balls_per_fake.mean() / k), float(covered.mean())


# ----------------------------------------------------------------------------------------------------
# Metrics by name


class Metric(NamedTuple):
    """A metric by name: `fn(*inputs named by needs, **options)` → {result name: value}."""

    needs: tuple[str, ...]  # among "real_features", "fake_features", "fake_logits"
    fn: Callable[..., dict[str, float]]


_FEATURES = ("real_features", "fake_features")


def _named(keys: tuple[str, ...], metric: Callable[..., tuple[float, float]]) -> Callable[..., dict[str, float]]:
    return lambda *inputs, **options: dict(zip(keys, metric(*inputs, **options)))


METRICS: Registry[Metric] = Registry("evaluation metric", {
    "fid": Metric(_FEATURES, lambda real, fake: {"fid": fid(feature_stats(real), feature_stats(fake))}),
    "kid": Metric(_FEATURES, _named(("kid_mean", "kid_std"), kid)),
    "is": Metric(("fake_logits",), _named(("is_mean", "is_std"), inception_score)),
    "pr": Metric(_FEATURES, _named(("precision", "recall"), precision_recall)),
    "dc": Metric(_FEATURES, _named(("density", "coverage"), density_coverage)),
})


def compute(metric_names: Sequence[str], real_features: ArrayLike, fake_features: ArrayLike,
            fake_logits: ArrayLike | None = None,
            options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, float]:
    """The named metrics of METRICS as one dict, e.g. {"fid": …, "kid_mean": …, "kid_std": …, "precision": …}.

    `options` maps a metric name to its keyword arguments: {"kid": {"subset_size": 100}, "pr": {"k": 5}}.
    """
    options = dict(options or {})
    metrics = {name: METRICS[name] for name in (*metric_names, *options)}  # ValueError listing valid names
    inputs = {"real_features": real_features, "fake_features": fake_features, "fake_logits": fake_logits}
    results: dict[str, float] = {}
    for name in metric_names:
        metric = metrics[name]
        missing = [need for need in metric.needs if inputs[need] is None]
        if missing:
            raise GanJaxError(f"metric {name!r} needs {', '.join(missing)}; pass them to compute")
        results.update(metric.fn(*(inputs[need] for need in metric.needs), **options.get(name, {})))
    return results
