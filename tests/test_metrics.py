"""Tests for gan_jax.metrics against hand-worked values, closed forms, scipy and POT."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import scipy.special
import scipy.stats
from sklearn.datasets import load_digits

from gan_jax import evaluation, metrics

STD = 0.01
HQ_CEILING = 1 - math.exp(-4.5)  # P(‖x − μ‖ ≤ 3σ) for an isotropic 2-D Gaussian (χ²₂ tail)


def ring_centers(m=8, radius=1.0):
    angles = 2 * np.pi * np.arange(m) / m
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def grid_centers():
    return np.array([(i, j) for i in range(-4, 5, 2) for j in range(-4, 5, 2)], dtype=np.float64)


def mixture_samples(rng, centers, std, n):
    return centers[rng.integers(0, len(centers), n)] + std * rng.standard_normal((n, centers.shape[1]))


def kl_to_uniform(counts):
    """Independent reference: scipy's relative entropy of the normalised histogram from uniform."""
    counts = np.asarray(counts, dtype=np.float64)
    return scipy.stats.entropy(counts, np.ones_like(counts))


# ----------------------------------------------------------------------------------------------------
# Mode coverage


def test_all_modes_exactly_at_centres():
    centers = ring_centers()
    out = metrics.mode_coverage(np.repeat(centers, 3, axis=0), centers, STD)
    assert int(out.modes_captured) == 8
    assert float(out.high_quality_fraction) == 1.0
    np.testing.assert_allclose(out.reverse_kl, 0.0, atol=1e-6)
    np.testing.assert_array_equal(out.counts, np.full(8, 3))


def test_one_mode_only():
    centers = ring_centers()
    out = metrics.mode_coverage(np.tile(centers[2], (100, 1)), centers, STD)
    assert int(out.modes_captured) == 1
    assert float(out.high_quality_fraction) == 1.0
    np.testing.assert_allclose(out.reverse_kl, math.log(8), rtol=1e-6)
    np.testing.assert_array_equal(out.counts, np.eye(8, dtype=int)[2] * 100)


def test_off_mode_noise_has_no_quality_and_no_modes():
    rng = np.random.default_rng(0)
    centers = ring_centers()
    # Uniform on the square [-0.5, 0.5]², inside the unit ring: every point is ≥ 0.29 = 29σ from a centre.
    samples = rng.uniform(-0.5, 0.5, (500, 2))
    out = metrics.mode_coverage(samples, centers, STD)
    assert int(out.modes_captured) == 0
    assert float(out.high_quality_fraction) == 0.0
    np.testing.assert_array_equal(out.counts, np.zeros(8))
    assert np.isnan(out.reverse_kl)  # no high-quality sample: the mode histogram is undefined


def test_hand_made_mix():
    centers = ring_centers()
    far = centers[5] + 3.5 * STD * np.array([np.cos(0.3), np.sin(0.3)])
    samples = np.concatenate([centers[[0, 1, 4]], far[None]])
    out = metrics.mode_coverage(samples, centers, STD)
    assert int(out.modes_captured) == 3
    np.testing.assert_allclose(out.high_quality_fraction, 0.75)
    np.testing.assert_array_equal(out.counts, [1, 1, 0, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(out.reverse_kl, kl_to_uniform(out.counts), rtol=1e-6)
    np.testing.assert_allclose(out.reverse_kl, math.log(8 / 3), rtol=1e-6)


def test_three_sigma_boundary():
    centers = ring_centers()
    directions = np.array([[1.0, 0.0], [0.0, -1.0], [np.cos(1.0), np.sin(1.0)]])
    for k in range(8):
        for u in directions:
            inside = metrics.mode_coverage((centers[k] + 2.99 * STD * u)[None], centers, STD)
            outside = metrics.mode_coverage((centers[k] + 3.01 * STD * u)[None], centers, STD)
            assert float(inside.high_quality_fraction) == 1.0 and int(inside.modes_captured) == 1
            assert float(outside.high_quality_fraction) == 0.0 and int(outside.modes_captured) == 0
    # The radius scales with `threshold`.
    point = (centers[0] + 3.5 * STD * directions[0])[None]
    assert float(metrics.mode_coverage(point, centers, STD, threshold=4.0).high_quality_fraction) == 1.0


def test_min_count():
    centers = ring_centers()
    samples = np.concatenate([np.tile(centers[0], (5, 1)), centers[1:3]])
    assert int(metrics.mode_coverage(samples, centers, STD).modes_captured) == 3
    assert int(metrics.mode_coverage(samples, centers, STD, min_count=2).modes_captured) == 1
    assert int(metrics.mode_coverage(samples, centers, STD, min_count=6).modes_captured) == 0


def test_true_ring_mixture_scores_the_ceiling():
    rng = np.random.default_rng(1)
    centers = ring_centers()
    n = 2500
    out = metrics.mode_coverage(mixture_samples(rng, centers, STD, n), centers, STD)
    assert int(out.modes_captured) == 8
    sigma = math.sqrt(HQ_CEILING * (1 - HQ_CEILING) / n)
    assert abs(float(out.high_quality_fraction) - HQ_CEILING) < 4 * sigma
    np.testing.assert_allclose(out.reverse_kl, kl_to_uniform(out.counts), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("centers, std", [(ring_centers(), 0.01), (grid_centers(), 0.05)], ids=["ring8", "grid25"])
def test_reverse_kl_of_data_matches_plug_in_bias(centers, std):
    # For samples of the true mixture, 2·N_HQ·KL(p̂ ‖ U_m) is the G statistic of a uniform multinomial:
    # asymptotically χ²_{m-1}, mean m − 1, variance 2(m − 1). Check the mean over R replicates (vmapped).
    rng = np.random.default_rng(2)
    m, n, reps = len(centers), 2500, 200
    samples = np.stack([mixture_samples(rng, centers, std, n) for _ in range(reps)])
    out = jax.vmap(lambda s: metrics.mode_coverage(s, centers, std))(jnp.asarray(samples, jnp.float32))
    assert out.counts.shape == (reps, m)
    assert np.all(np.asarray(out.modes_captured) == m)
    n_hq = np.asarray(out.counts).sum(axis=1)
    g = 2 * n_hq * np.asarray(out.reverse_kl, dtype=np.float64)
    assert abs(g.mean() - (m - 1)) < 4 * math.sqrt(2 * (m - 1) / reps)
    # Each replicate equals scipy's relative entropy of the same counts.
    ref = np.array([kl_to_uniform(c) for c in np.asarray(out.counts)])
    np.testing.assert_allclose(out.reverse_kl, ref, rtol=1e-3, atol=1e-6)


def test_mode_coverage_jit_and_pmap():
    rng = np.random.default_rng(3)
    centers = ring_centers()
    samples = np.stack([mixture_samples(rng, centers, STD, 200), np.tile(centers[0], (200, 1))]).astype(np.float32)
    eager = [metrics.mode_coverage(s, centers, STD) for s in samples]
    jitted = jax.jit(lambda s, std: metrics.mode_coverage(s, centers, std))(samples[0], STD)
    jax.tree.map(np.testing.assert_allclose, jitted, eager[0])
    devices = jax.devices()[:2]
    pmapped = jax.pmap(lambda s: metrics.mode_coverage(s, centers, STD), devices=devices)(samples)
    for i in range(2):
        jax.tree.map(np.testing.assert_allclose, jax.tree.map(lambda a: a[i], pmapped), eager[i])
    assert [int(e.modes_captured) for e in eager] == [8, 1]


def test_mode_coverage_errors():
    centers = ring_centers()
    with pytest.raises(ValueError, match=r"samples must be \(n, d\) and centers \(m, d\).*\(5, 3\)"):
        metrics.mode_coverage(np.zeros((5, 3)), centers, STD)
    with pytest.raises(ValueError, match="min_count must be >= 1.*got 0"):
        metrics.mode_coverage(np.zeros((5, 2)), centers, STD, min_count=0)
    with pytest.raises(ValueError, match="threshold must be > 0.*got -1"):
        metrics.mode_coverage(np.zeros((5, 2)), centers, STD, threshold=-1.0)


# ----------------------------------------------------------------------------------------------------
# Wasserstein wrappers


def test_wasserstein_to_data_matches_pot():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 2))
    y = rng.standard_normal((30, 2)) + np.array([1.0, 0.5])
    w = np.full(40, 1 / 40), np.full(30, 1 / 30)
    ref1 = ot.emd2(*w, ot.dist(x, y, metric="euclidean"))
    ref2 = math.sqrt(ot.emd2(*w, ot.dist(x, y, metric="sqeuclidean")))
    np.testing.assert_allclose(metrics.wasserstein_to_data(x, y), ref1, rtol=1e-4)
    np.testing.assert_allclose(metrics.wasserstein_to_data(x, y, p=2), ref2, rtol=1e-4)


def test_sliced_w1_of_a_translation():
    # y = x + v: every projection θ moves the sample by θ·v, so W₁ = |θ·v| and SW₁ = ‖v‖ E|cos φ| = 2‖v‖/π.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 2))
    v = np.array([0.6, -0.8])
    n_proj = 2000
    sw = metrics.sliced_w1(x, x + v, jax.random.key(0), n_projections=n_proj)
    sd = math.sqrt(0.5 - 4 / math.pi**2)  # sd of |cos φ|, φ uniform
    assert abs(float(sw) - 2 / math.pi) < 4 * sd / math.sqrt(n_proj) + 1e-4


# ----------------------------------------------------------------------------------------------------
# Two-sample classifier


def binomial_sd(p, n):
    return math.sqrt(p * (1 - p) / n)


def test_two_sample_identical_distributions_is_chance():
    # Real and fake from one distribution: any classifier's held-out accuracy is Binomial(n_test, ½)/n_test.
    rng = np.random.default_rng(6)
    n = 2000
    real, fake = rng.standard_normal((2, n, 2)).astype(np.float32)
    acc = metrics.two_sample_accuracy(real, fake, jax.random.key(0))
    assert abs(float(acc) - 0.5) < 4 * binomial_sd(0.5, n)
    assert float(metrics.two_sample_accuracy(real, fake, jax.random.key(0))) == float(acc)  # pure in the key


def test_two_sample_far_apart_gaussians_are_separated():
    rng = np.random.default_rng(7)
    n = 2000
    real = rng.standard_normal((n, 2))
    fake = rng.standard_normal((n, 2)) + np.array([4.0, 4.0])
    assert float(metrics.two_sample_accuracy(real, fake, jax.random.key(1))) > 0.95


@pytest.mark.parametrize("seed", [0, 1])
def test_two_sample_reaches_bayes_accuracy(seed):
    # N(0, I) vs N((2, 0), I): the Bayes classifier thresholds x₁ at 1, accuracy Φ(1) = 0.841; a trained
    # classifier does no better, up to the binomial noise of the n held-out pairs, and should come close.
    rng = np.random.default_rng(8 + seed)
    n = 2000
    real = rng.standard_normal((n, 2))
    fake = rng.standard_normal((n, 2)) + np.array([2.0, 0.0])
    bayes = scipy.stats.norm.cdf(1.0)
    acc = float(metrics.two_sample_accuracy(real, fake, jax.random.key(seed)))
    assert bayes - 4 * binomial_sd(bayes, n) - 0.02 < acc < bayes + 4 * binomial_sd(bayes, n)


def test_two_sample_errors():
    with pytest.raises(ValueError, match=r"same shape.*real \(10, 2\), fake \(12, 2\)"):
        metrics.two_sample_accuracy(np.zeros((10, 2)), np.zeros((12, 2)), jax.random.key(0))
    with pytest.raises(ValueError, match="steps and batch_size must be >= 1, got steps=0"):
        metrics.two_sample_accuracy(np.zeros((10, 2)), np.zeros((10, 2)), jax.random.key(0), steps=0)


# ----------------------------------------------------------------------------------------------------
# Digits classifier and its scores


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    images = (data.images[..., None] / 8.0 - 1.0).astype(np.float32)  # pixel values 0..16 -> [-1, 1]
    labels = data.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(labels))
    train, test = perm[:1200], perm[1200:]
    params = metrics.train_classifier(images[train], labels[train], jax.random.key(0))
    return params, images[train], labels[train], images[test], labels[test]


def softmax_np(params, images):
    logits, features = metrics.classifier_apply(params, jnp.asarray(images))
    return scipy.special.softmax(np.asarray(logits, np.float64), axis=1), np.asarray(features, np.float64)


def test_digits_classifier_accuracy(digits):
    params, _, _, x_test, y_test = digits
    logits, features = metrics.classifier_apply(params, x_test)
    assert features.shape == (len(y_test), 64)
    assert float(np.mean(np.argmax(logits, axis=1) == y_test)) > 0.9


def test_inception_score_of_the_classifier(digits):
    """evaluation.inception_score on the digits classifier's logits (one split) = exp(E KL(p(y|x) ‖ p(y))) by scipy."""
    params, _, _, x_test, _ = digits
    probs, _ = softmax_np(params, x_test)
    p_y = probs.mean(axis=0)
    ref = math.exp(np.mean([scipy.stats.entropy(p, p_y) for p in probs]))
    logits, _ = metrics.classifier_apply(params, x_test)
    score, _ = evaluation.inception_score(logits, splits=1, shuffle_seed=None)
    np.testing.assert_allclose(score, ref, rtol=1e-5)
    assert 7.0 < score <= 10.0
    repeated, _ = metrics.classifier_apply(params, np.repeat(x_test[:1], len(x_test), axis=0))
    np.testing.assert_allclose(evaluation.inception_score(repeated, splits=1)[0], 1.0, atol=1e-6)


def test_class_coverage(digits):
    params, _, _, x_test, _ = digits
    probs, _ = softmax_np(params, x_test)
    counts_ref = np.bincount(probs.argmax(axis=1), minlength=10)
    out = metrics.class_coverage(params, x_test)
    assert int(out.classes_covered) == 10
    np.testing.assert_array_equal(out.counts, counts_ref)
    np.testing.assert_allclose(out.reverse_kl, kl_to_uniform(counts_ref), rtol=1e-4, atol=1e-6)
    one = metrics.class_coverage(params, np.repeat(x_test[:1], len(x_test), axis=0))
    assert int(one.classes_covered) == 1
    np.testing.assert_allclose(one.reverse_kl, math.log(10), rtol=1e-6)
    assert int(jnp.max(one.counts)) == len(x_test)


def frechet_reference(f1, f2):
    """Float64 FD; tr((S₁S₂)^½) = Σ √λᵢ(S₁S₂), S₁S₂ being similar to the PSD S₂^½ S₁ S₂^½."""
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0.0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross), np.trace(s1) + np.trace(s2)


def test_frechet_distance_of_the_classifier_features(digits):
    """evaluation.fid of the classifier's penultimate features = the float64 eigenvalue form; noise is far."""
    params, x_train, _, x_test, _ = digits
    noise = np.random.default_rng(9).uniform(-1, 1, x_test.shape).astype(np.float32)
    f_test, f_noise, f_train = (softmax_np(params, x)[1] for x in (x_test, noise, x_train))

    def fd(a, b):
        return evaluation.fid(evaluation.feature_stats(a), evaluation.feature_stats(b))

    # Rank-deficient covariances (dead ReLU units) leave tiny negative eigenvalues of S₁S₂: absolute tolerance.
    ref, scale = frechet_reference(f_test, f_noise)
    np.testing.assert_allclose(fd(f_test, f_noise), ref, rtol=1e-6, atol=1e-9 * scale)
    ref_real, scale = frechet_reference(f_train, f_test)
    np.testing.assert_allclose(fd(f_train, f_test), ref_real, rtol=1e-6, atol=1e-9 * scale)
    assert abs(fd(f_test, f_test)) < 1e-8 * scale  # sqrtm of a rank-deficient S²: -6e-7 measured
    assert fd(f_test, f_noise) > 10 * fd(f_train, f_test)


def test_load_or_train_classifier_caches(tmp_path, digits):
    params, x_train, y_train, _, _ = digits
    # Same data and key as the fixture: the (deterministic) training reproduces the fixture's params.
    first = metrics.load_or_train_classifier(tmp_path, x_train, y_train, jax.random.key(0))
    assert (tmp_path / metrics.CLASSIFIER_FILE).exists()
    jax.tree.map(np.testing.assert_array_equal, first, params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Another key would train other params: equal params mean they came from the cache.
        second = metrics.load_or_train_classifier(tmp_path, x_train, y_train, jax.random.key(1))
    jax.tree.map(np.testing.assert_array_equal, second, params)
    kernels = [second["params"][layer]["kernel"].shape for layer in ("hidden_0", "hidden_1", "output")]
    assert kernels == [(64, 128), (128, 64), (64, 10)]


@pytest.fixture(scope="module")
def cache_arrays(tmp_path_factory, digits):
    """The arrays of a valid cache of the fixture's classifier (same data, key and settings)."""
    _, x_train, y_train, _, _ = digits
    workdir = tmp_path_factory.mktemp("cache")
    metrics.load_or_train_classifier(workdir, x_train, y_train, jax.random.key(0))
    with np.load(workdir / metrics.CLASSIFIER_FILE) as data:
        return {name: data[name] for name in data.files}


@pytest.mark.parametrize(
    "corruption, reason",
    [
        ("garbage", r"not an \.npz \(zip\) file"),
        ("truncated", r"not an \.npz \(zip\) file"),
        ("wrong_input_size", r"params/hidden_0/kernel': \(5, 128\)"),
        ("non_finite", "params/hidden_1/kernel hold non-finite values"),
        ("no_settings", "records no training settings"),
        ("other_settings", r"trained with other steps\)"),
        ("other_data", r"trained with other data_sha256\)"),
    ],
)
def test_corrupt_or_stale_digits_classifier_cache_is_retrained(tmp_path, digits, cache_arrays, corruption, reason):
    params, x_train, y_train, _, _ = digits
    path = tmp_path / metrics.CLASSIFIER_FILE
    arrays = dict(cache_arrays)
    if corruption == "garbage":
        path.write_bytes(b"not an npz file")
    elif corruption == "truncated":
        np.savez(path, **arrays)
        path.write_bytes(path.read_bytes()[:100])
    else:
        if corruption == "wrong_input_size":
            arrays["params/hidden_0/kernel"] = np.zeros((5, 128), np.float32)
        elif corruption == "non_finite":
            arrays["params/hidden_1/kernel"] = np.full_like(arrays["params/hidden_1/kernel"], np.nan)
        elif corruption == "no_settings":
            del arrays["settings"]
        elif corruption == "other_settings":  # a stale cache: trained for 5 steps
            arrays["settings"] = np.array(str(arrays["settings"]).replace('"steps": 1000', '"steps": 5'))
        else:  # another run's cache: the same classifier trained on other images
            metrics.load_or_train_classifier(tmp_path, x_train[:-1], y_train[:-1], jax.random.key(0))
            arrays = None
        if arrays is not None:
            np.savez(path, **arrays)
    with pytest.warns(UserWarning, match=f"classifier cache .* is unusable .*{reason}"):
        retrained = metrics.load_or_train_classifier(tmp_path, x_train, y_train, jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, retrained, params)
    # The rewritten cache loads without a warning (key 1 would train other params).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = metrics.load_or_train_classifier(tmp_path, x_train, y_train, jax.random.key(1))
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_digits_classifier_errors(digits):
    params = digits[0]
    with pytest.raises(ValueError, match=r"labels \(n,\).*labels \(3,\)"):
        metrics.train_classifier(np.zeros((4, 8, 8, 1)), np.zeros(3, np.int32), jax.random.key(0))
    with pytest.raises(TypeError, match="labels must be integers"):
        metrics.train_classifier(np.zeros((4, 8, 8, 1)), np.zeros(4), jax.random.key(0))
    with pytest.raises(ValueError, match=r"expects inputs with 64 features per example, got x of shape \(4, 28, 28"):
        metrics.classifier_apply(params, np.zeros((4, 28, 28, 1)))
    with pytest.raises(ValueError, match="min_count must be >= 1"):
        metrics.class_coverage(params, np.zeros((4, 8, 8, 1)), min_count=0)
