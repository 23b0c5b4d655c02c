"""Tests for gan_jax.evaluation against pytorch-fid, torch-fidelity, prdc, NumPy re-computations and closed forms."""

import functools

from torch_reference import torch  # first: it makes the reference packages importable on the CPU
from pytorch_fid.fid_score import calculate_frechet_distance
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

import numpy as np
import prdc
import pytest

from gan_jax import evaluation
from gan_jax.errors import GanJaxError


def gaussian_features(seed, n, d, shift=0.0, scale=1.0, dtype=np.float32):
    """n samples of N(shift, scale²·AAᵀ/d) for a random A: correlated, well-conditioned features."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(d) + rng.standard_normal((d, d)) / (2 * np.sqrt(d))
    return (shift + scale * rng.standard_normal((n, d)) @ mixing).astype(dtype)


# ----------------------------------------------------------------------------------------------------
# Streamed statistics


def test_merge_of_shuffled_uneven_batches_equals_numpy_mean_and_cov():
    # An offset of 1e4 against unit spread: raw sums Σxxᵀ/n − μμᵀ would lose 8 of float64's 16 digits here.
    x = 1e4 + gaussian_features(0, 5000, 8)  # 5000 > the 4096-row chunk of feature_stats
    sizes = [1, 7, 300, 2, 4690]
    batches = np.split(x, np.cumsum(sizes)[:-1])
    order = np.random.default_rng(1).permutation(len(batches))
    stats = functools.reduce(evaluation.merge, (evaluation.feature_stats(batches[i]) for i in order),
                             evaluation.FeatureStats.empty())
    mu, sigma = evaluation.mean_cov(stats)
    x64 = x.astype(np.float64)
    assert stats.count == 5000
    np.testing.assert_allclose(mu, x64.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(x64, rowvar=False), rtol=1e-9, atol=1e-12)


def test_merge_of_two_processes_halves_equals_the_whole_in_either_order():
    x = gaussian_features(2, 601, 5, shift=3.0)
    whole = evaluation.feature_stats(x)
    first, second = evaluation.feature_stats(x[:300]), evaluation.feature_stats(x[300:])
    for merged in (evaluation.merge(first, second), evaluation.merge(second, first)):
        assert merged.count == whole.count
        np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-14)
        np.testing.assert_allclose(merged.scatter, whole.scatter, rtol=1e-12, atol=1e-12)


def test_merge_refuses_statistics_of_different_dimensions():
    with pytest.raises(GanJaxError, match="4-d and 3-d"):
        evaluation.merge(evaluation.feature_stats(np.ones((2, 4))), evaluation.feature_stats(np.ones((2, 3))))


# ----------------------------------------------------------------------------------------------------
# Fréchet distance


@pytest.mark.parametrize("n, d", [(500, 64), (1000, 128)])
def test_frechet_distance_equals_pytorch_fid(n, d):
    mu1, sigma1 = evaluation.mean_cov(evaluation.feature_stats(gaussian_features(3, n, d)))
    mu2, sigma2 = evaluation.mean_cov(evaluation.feature_stats(gaussian_features(4, n, d, shift=0.2, scale=1.3)))
    reference = calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
    ours = evaluation.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert ours > 1.0
    assert ours == pytest.approx(reference, rel=1e-10)


def test_frechet_distance_closed_form_for_commuting_covariances():
    # Σ₁ = Q diag(a) Qᵀ, Σ₂ = Q diag(b) Qᵀ: FD = ‖μ₁ − μ₂‖² + Σᵢ (√aᵢ − √bᵢ)².
    d = 256
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0.1, 4.0, d), rng.uniform(0.1, 4.0, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert evaluation.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    rotated = evaluation.frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_positive_against_another():
    stats = evaluation.feature_stats(gaussian_features(6, 400, 32))
    other = evaluation.feature_stats(gaussian_features(7, 400, 32, shift=0.5))
    assert abs(evaluation.fid(stats, stats)) < 1e-9 * np.trace(stats.scatter)
    assert evaluation.fid(stats, other) > 32 * 0.5**2 * 0.9  # ≈ ‖Δμ‖² = 8 plus sampling noise


def test_fid_refuses_n_at_most_d_and_accepts_n_above_d():
    d = 64
    real = evaluation.feature_stats(gaussian_features(8, 500, d))
    with pytest.raises(GanJaxError, match=r"64 fake samples of 64-d.*more than 64 samples"):
        evaluation.fid(real, evaluation.feature_stats(gaussian_features(9, d, d)))
    assert evaluation.fid(real, evaluation.feature_stats(gaussian_features(9, d + 1, d))) > 0


def test_fid_refuses_different_dimensions_and_frechet_distance_a_non_covariance():
    with pytest.raises(GanJaxError, match="different dimensions, 8 and 9"):
        evaluation.fid(evaluation.feature_stats(np.ones((20, 8))), evaluation.feature_stats(np.ones((20, 9))))
    with pytest.raises(GanJaxError, match="sigma2 is not a finite symmetric matrix"):
        evaluation.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]))


# ----------------------------------------------------------------------------------------------------
# KID


@pytest.mark.parametrize("seed", [2020, 7])
def test_kid_equals_torch_fidelity_on_the_same_subsets(seed):
    real = gaussian_features(10, 300, 24, dtype=np.float64)
    fake = gaussian_features(11, 250, 24, shift=0.1, dtype=np.float64)  # unequal counts: the draw order matters
    # float64 tensors, so torch-fidelity's kernels are float64 like ours (it keeps the input dtype).
    reference = kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=10,
                                       kid_subset_size=100, rng_seed=seed, verbose=False)
    mean, std = evaluation.kid(real, fake, subsets=10, subset_size=100, seed=seed)
    assert mean == pytest.approx(reference["kernel_inception_distance_mean"], rel=1e-10)
    assert std == pytest.approx(reference["kernel_inception_distance_std"], rel=1e-10)
    assert std > 0
    swapped, _ = evaluation.kid(fake, real, subsets=10, subset_size=100, seed=seed)
    assert swapped != pytest.approx(mean, rel=1e-6)  # other subsets: the order of the arguments is the draw order


def test_kid_unbiased_estimator_equals_a_double_loop():
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 0.3
    gamma, m = 1.0 / 3, 6

    def k(a, b):
        return (gamma * a @ b + 1.0) ** 3

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    expected = within - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    # One subset of all m rows: a permutation of each set, to which MMD² is invariant.
    mean, std = evaluation.kid(x, y, subsets=1, subset_size=m)
    assert mean == pytest.approx(expected, rel=1e-12)
    assert std == 0.0


def test_kid_refuses_a_subset_larger_than_the_samples():
    with pytest.raises(GanJaxError, match=r"subset_size=1000 must be in \[2, 300\]"):
        evaluation.kid(np.zeros((300, 4)), np.zeros((500, 4)))


# ----------------------------------------------------------------------------------------------------
# Inception score


@pytest.mark.parametrize("shuffle_seed", [2020, None])
def test_inception_score_equals_torch_fidelity(shuffle_seed):
    logits = (3.0 * np.random.default_rng(13).standard_normal((1003, 1008))).astype(np.float32)  # 1003: uneven splits
    reference = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=shuffle_seed is not None,
                                       rng_seed=shuffle_seed or 0)
    mean, std = evaluation.inception_score(logits, shuffle_seed=shuffle_seed)
    assert mean > 1.5
    assert mean == pytest.approx(reference["inception_score_mean"], rel=1e-12)
    assert std == pytest.approx(reference["inception_score_std"], rel=1e-9)


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = evaluation.inception_score(np.full((200, 10), 0.7))
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_predictions_spread_evenly_is_the_class_count():
    classes, splits = 7, 10
    labels = np.arange(classes * splits * 3) % classes  # every split holds each class 3 times, in order
    mean, std = evaluation.inception_score(100.0 * np.eye(classes)[labels], splits=splits, shuffle_seed=None)
    assert mean == pytest.approx(classes, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_refuses_more_splits_than_samples():
    with pytest.raises(GanJaxError, match=r"splits=10 must be in \[1, 5\]"):
        evaluation.inception_score(np.zeros((5, 3)))


# ----------------------------------------------------------------------------------------------------
# Precision/recall, density/coverage


@pytest.mark.parametrize("n_real, n_fake, d, k", [(2500, 2500, 2, 3), (400, 300, 64, 3), (400, 300, 64, 5)])
def test_precision_recall_density_coverage_equal_prdc(monkeypatch, n_real, n_fake, d, k):
    monkeypatch.setattr(evaluation, "_BLOCK_ELEMENTS", 50_000)  # many row blocks, an uneven last one
    real = gaussian_features(14, n_real, d, dtype=np.float64)
    fake = gaussian_features(15, n_fake, d, shift=0.3, scale=0.8, dtype=np.float64)
    reference = prdc.compute_prdc(real, fake, nearest_k=k)
    precision, recall = evaluation.precision_recall(real, fake, k=k)
    density, coverage = evaluation.density_coverage(real, fake, k=k)
    assert 0.0 < min(precision, recall, coverage) and max(precision, recall, coverage) < 1.0
    assert precision == reference["precision"]
    assert recall == reference["recall"]
    assert density == pytest.approx(reference["density"], rel=1e-12)
    assert coverage == reference["coverage"]


def test_identical_sets_have_precision_recall_density_coverage_one():
    # With distinct points, each real ball holds itself and its k − 1 nearest others: density = nk/(nk) = 1.
    x = gaussian_features(16, 500, 8)
    assert evaluation.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)
    assert evaluation.density_coverage(x, x.copy(), k=5) == pytest.approx((1.0, 1.0), rel=1e-12)


def test_knn_metrics_refuse_too_few_samples_mismatched_dimensions_and_nan():
    x = gaussian_features(17, 50, 4)
    with pytest.raises(GanJaxError, match=r"k=5 .* got 50 real and 5 fake"):
        evaluation.density_coverage(x, x[:5], k=5)
    with pytest.raises(GanJaxError, match="different dimensions, 4 and 3"):
        evaluation.precision_recall(x, x[:, :3])
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(GanJaxError, match=r"fake features has NaN or Inf in 1 of 50 rows \(first: row 7\)"):
        evaluation.precision_recall(x, bad)
    with pytest.raises(GanJaxError, match="NaN or Inf"):
        evaluation.feature_stats(bad)


# ----------------------------------------------------------------------------------------------------
# Metrics by name


def test_metrics_registry_names_needs_and_unknown_name():
    assert evaluation.METRICS.names() == ("fid", "kid", "is", "pr", "dc")
    assert evaluation.METRICS["is"].needs == ("fake_logits",)
    assert evaluation.METRICS["fid"].needs == ("real_features", "fake_features")
    with pytest.raises(ValueError, match="unknown evaluation metric 'fidd'; valid names: fid, kid, is, pr, dc"):
        evaluation.compute(["fidd"], np.zeros((3, 2)), np.zeros((3, 2)))


def test_compute_returns_each_metric_as_the_direct_calls():
    real = gaussian_features(18, 200, 16)
    fake = gaussian_features(19, 200, 16, shift=0.2)
    logits = np.random.default_rng(20).standard_normal((200, 10))
    results = evaluation.compute(["fid", "kid", "is", "pr", "dc"], real, fake, logits,
                                 options={"kid": {"subsets": 5, "subset_size": 50}, "pr": {"k": 4}})
    kid_mean, kid_std = evaluation.kid(real, fake, subsets=5, subset_size=50)
    assert results == {
        "fid": evaluation.fid(evaluation.feature_stats(real), evaluation.feature_stats(fake)),
        "kid_mean": kid_mean, "kid_std": kid_std,
        **dict(zip(("is_mean", "is_std"), evaluation.inception_score(logits))),
        **dict(zip(("precision", "recall"), evaluation.precision_recall(real, fake, k=4))),
        **dict(zip(("density", "coverage"), evaluation.density_coverage(real, fake, k=5))),
    }
    with pytest.raises(GanJaxError, match="metric 'is' needs fake_logits"):
        evaluation.compute(["is"], real, fake)
