"""Tests of gan_jax.data.toy against the distributions' definitions, scipy and closed forms."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from gan_jax.data import toy

KEY = jax.random.key(0)
# One sample size for every statistical test: each (distribution, n) pair is one XLA compilation,
# so sharing n keeps the file fast.
N = 10_000
MIXTURES = {
    "ring8 (unrolled GAN)": ("ring8", {}),
    "ring (VEEGAN/PacGAN)": ("ring8", {"radius": 1.0, "std": 0.01}),
    "grid25": ("grid25", {}),
    "two_gaussians_1d": ("two_gaussians_1d", {}),
    "two_gaussians_1d unequal": ("two_gaussians_1d", {"means": (-1.0, 3.0), "std": 0.7, "weights": (0.3, 0.7)}),
}


def mixture_reference(name, kwargs):
    """(means, std, weights) of a mixture written out from its definition, independently of the code."""
    if name == "ring8":
        r, s, k = kwargs.get("radius", 2.0), kwargs.get("std", 0.02), kwargs.get("n_modes", 8)
        a = 2 * np.pi * np.arange(k) / k
        return np.stack([r * np.cos(a), r * np.sin(a)], 1), s, np.full(k, 1 / k)
    if name == "grid25":
        g = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
        return np.array([(a, b) for a in g for b in g]), 0.05, np.full(25, 1 / 25)
    means = np.array(kwargs.get("means", (-2.0, 2.0)))[:, None]
    return means, kwargs.get("std", 0.5), np.array(kwargs.get("weights", (0.5, 0.5)))


def scipy_log_prob(x, means, std, weights):
    logs = [stats.multivariate_normal(mu, std**2 * np.eye(len(mu))).logpdf(x) for mu in means]
    return special.logsumexp(np.stack(logs, 1) + np.log(weights), axis=1)


def test_registry_names_and_unknown_name():
    assert set(toy.names()) == {"ring8", "grid25", "swiss_roll", "two_gaussians_1d", "disjoint_lines"}
    with pytest.raises(ValueError, match="unknown toy distribution 'ring9'.*ring8.*grid25.*disjoint_lines"):
        toy.get("ring9")


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("ring8", {"std": -0.1}, "std must be > 0"),
        ("ring8", {"radius": 0.0}, "radius must be > 0"),
        ("ring8", {"n_modes": 0}, "n_modes must be an integer >= 1"),
        ("ring8", {"std": float("nan")}, "std must be finite"),
        ("grid25", {"spacing": -2.0}, "spacing must be > 0"),
        ("swiss_roll", {"noise": -0.1}, "noise must be >= 0"),
        ("two_gaussians_1d", {"weights": (0.5, 0.6)}, "weights must sum to 1"),
        ("two_gaussians_1d", {"means": (1.0, 2.0, 3.0)}, "2 entries"),
        ("ring8", {"sigma": 0.1}, r"unknown parameter\(s\) \['sigma'\].*radius, std, n_modes"),
    ],
)
def test_bad_parameters_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        toy.get(name, **kwargs)


def test_non_numeric_parameter_is_type_error():
    with pytest.raises(TypeError, match="theta must be a real number"):
        toy.get("disjoint_lines", theta="1")


def test_defaults_and_exposed_fields():
    ring = toy.get("ring8")
    assert (ring.dim, ring.std) == (2, 0.02)
    # Angles 2πk/8, k = 0..7: eight distinct centres at radius 2 (not linspace(0, 2π, 8)).
    np.testing.assert_allclose(ring.centers(), mixture_reference("ring8", {})[0], atol=1e-6)
    assert len(np.unique(np.round(np.asarray(ring.centers()), 4), axis=0)) == 8
    grid = toy.get("grid25")
    assert grid.std == 0.05 and grid.centers().shape == (25, 2)
    np.testing.assert_array_equal(np.unique(np.asarray(grid.centers())), [-4, -2, 0, 2, 4])
    assert toy.get("ring8", n_modes=5).centers().shape == (5, 2)
    two = toy.get("two_gaussians_1d")
    assert (two.dim, two.std) == (1, 0.5)
    np.testing.assert_array_equal(two.centers(), [[-2.0], [2.0]])
    for name in ("swiss_roll", "disjoint_lines"):
        dist = toy.get(name)
        assert dist.log_prob is None and dist.centers() is None and dist.std is None


@pytest.mark.parametrize("name, kwargs", [MIXTURES["ring8 (unrolled GAN)"], MIXTURES["grid25"]])
def test_mode_frequencies_and_per_mode_std(name, kwargs):
    means, std, _ = mixture_reference(name, kwargs)
    m, n = len(means), N
    x = np.asarray(toy.get(name, **kwargs).sample(KEY, n), np.float64)
    nearest = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), 1)
    counts = np.bincount(nearest, minlength=m)
    sigma_binomial = math.sqrt(n * (1 / m) * (1 - 1 / m))
    assert np.all(np.abs(counts - n / m) < 4 * sigma_binomial), counts
    residual = x - means[nearest]
    np.testing.assert_allclose(residual.mean(0), 0.0, atol=4 * std / math.sqrt(n))
    np.testing.assert_allclose(residual.std(0), std, rtol=0.03)  # pooled: std error ≈ 1/sqrt(2n) = 0.7 %
    for k in range(m):  # each mode separately: ≥ 400 samples, std error ≤ 1/sqrt(800) ≈ 3.5 %
        np.testing.assert_allclose(residual[nearest == k].std(0), std, rtol=0.15)


def test_two_gaussians_moments_and_weights():
    kwargs = MIXTURES["two_gaussians_1d unequal"][1]
    means, std, weights = mixture_reference("two_gaussians_1d", kwargs)
    n = N
    x = np.asarray(toy.get("two_gaussians_1d", **kwargs).sample(KEY, n))[:, 0]
    mean = weights @ means[:, 0]
    var = std**2 + weights @ means[:, 0] ** 2 - mean**2
    np.testing.assert_allclose(x.mean(), mean, atol=5 * math.sqrt(var / n))
    np.testing.assert_allclose(x.var(), var, rtol=0.05)
    right = np.mean(x > 1.0)  # the modes -1 and 3 are 2.9σ from the midpoint 1
    assert abs(right - 0.7) < 4 * math.sqrt(0.7 * 0.3 / n) + 0.01


@pytest.mark.parametrize("label", list(MIXTURES))
def test_log_prob_matches_scipy(label):
    name, kwargs = MIXTURES[label]
    dist = toy.get(name, **kwargs)
    means, std, weights = mixture_reference(name, kwargs)
    rng = np.random.default_rng(0)
    near = means[rng.integers(len(means), size=200)] + std * rng.normal(size=(200, dist.dim))
    # Far points too: −‖x − μ‖²/2σ² reaches −10⁵, where a naive sum of exp underflows.
    far = rng.uniform(-6, 6, size=(100, dist.dim))
    x = np.concatenate([near, far])
    np.testing.assert_allclose(dist.log_prob(jnp.asarray(x, jnp.float32)), scipy_log_prob(x, means, std, weights),
                               rtol=1e-5, atol=2e-3)


def test_log_prob_integrates_to_one_on_a_box():
    """2-D trapezoid rule over [−4, 4]² (cells 0.02) for a ring whose std (0.3) the grid resolves."""
    dist = toy.get("ring8", std=0.3)
    grid = np.linspace(-4.0, 4.0, 401)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    density = np.exp(np.asarray(dist.log_prob(jnp.stack([xx.ravel(), yy.ravel()], 1)))).reshape(xx.shape)
    total = integrate.trapezoid(integrate.trapezoid(density, grid, axis=1), grid)
    np.testing.assert_allclose(total, 1.0, atol=2e-3)


@pytest.mark.parametrize("label", [k for k, (name, _) in MIXTURES.items() if name != "two_gaussians_1d"])
def test_log_prob_integrates_to_one_on_local_grids(label):
    """2-D trapezoid rule on a fine grid of ±8σ around each mode, at the papers' small stds.

    The modes are more than 16σ apart, so the boxes are disjoint and hold all but ~e⁻³² of the mass.
    """
    name, kwargs = MIXTURES[label]
    dist = toy.get(name, **kwargs)
    means, std, _ = mixture_reference(name, kwargs)
    offsets = np.linspace(-8 * std, 8 * std, 161)
    xx, yy = np.meshgrid(offsets, offsets, indexing="ij")
    pts = np.concatenate([np.stack([xx.ravel() + mu[0], yy.ravel() + mu[1]], 1) for mu in means])
    density = np.exp(np.asarray(dist.log_prob(jnp.asarray(pts, jnp.float32)))).reshape(len(means), *xx.shape)
    total = integrate.trapezoid(integrate.trapezoid(density, offsets, axis=2), offsets, axis=1).sum()
    np.testing.assert_allclose(total, 1.0, atol=2e-3)


@pytest.mark.parametrize("label", [k for k, (name, _) in MIXTURES.items() if name == "two_gaussians_1d"])
def test_log_prob_integrates_to_one_1d(label):
    dist = toy.get(*MIXTURES[label][:1], **MIXTURES[label][1])
    grid = np.linspace(-10.0, 10.0, 2001)
    density = np.exp(np.asarray(dist.log_prob(jnp.asarray(grid[:, None], jnp.float32))))
    np.testing.assert_allclose(integrate.trapezoid(density, grid), 1.0, atol=1e-4)


def test_log_prob_grad_is_the_mixture_score():
    """∇ log p(x) = Σ_k r_k(x) (μ_k − x)/σ², r = posterior of the component; finite far from all modes."""
    dist = toy.get("ring8", std=0.3)
    means, std, weights = mixture_reference("ring8", {"std": 0.3})
    rng = np.random.default_rng(1)
    x = means[rng.integers(8, size=64)] + 0.5 * rng.normal(size=(64, 2))
    grad = jax.grad(lambda y: dist.log_prob(y).sum())(jnp.asarray(x, jnp.float32))
    logits = -((x[:, None] - means[None]) ** 2).sum(-1) / (2 * std**2) + np.log(weights)
    r = special.softmax(logits, axis=1)
    score = (r[:, :, None] * (means[None] - x[:, None])).sum(1) / std**2
    np.testing.assert_allclose(grad, score, rtol=1e-3, atol=1e-3)
    far_grad = jax.grad(lambda y: toy.get("ring8").log_prob(y).sum())(jnp.array([[30.0, -40.0]]))
    assert np.all(np.isfinite(far_grad))


def test_log_prob_shape_error():
    with pytest.raises(ValueError, match=r"expects x of shape \(n, 2\), got \(5, 3\)"):
        toy.get("ring8").log_prob(jnp.zeros((5, 3)))


def test_swiss_roll_moments_and_curve():
    a, b, scale, noise, n = 1.5 * np.pi, 4.5 * np.pi, 7.5, 0.25, N
    mean_of = lambda f: integrate.quad(f, a, b, limit=200)[0] / (b - a)  # noqa: E731  t ~ U[a, b]
    mean = np.array([mean_of(lambda t: t * np.cos(t)), mean_of(lambda t: t * np.sin(t))]) / scale
    second = np.array([mean_of(lambda t: (t * np.cos(t)) ** 2), mean_of(lambda t: (t * np.sin(t)) ** 2)])
    var = (second - (mean * scale) ** 2 + noise**2) / scale**2
    x = np.asarray(toy.get("swiss_roll").sample(KEY, n), np.float64)
    np.testing.assert_allclose(x.mean(0), mean, atol=5 * np.sqrt(var / n).max())
    np.testing.assert_allclose(x.var(0), var, rtol=0.05)
    # Without noise every point is (t cos t, t sin t)/scale with t = scale·‖x‖ ∈ [1.5π, 4.5π].
    clean = np.asarray(toy.get("swiss_roll", noise=0.0, scale=2.0).sample(KEY, N), np.float64)
    t = 2.0 * np.linalg.norm(clean, axis=1)
    assert t.min() >= a - 1e-4 and t.max() <= b + 1e-4
    np.testing.assert_allclose(clean, np.stack([t * np.cos(t), t * np.sin(t)], 1) / 2.0, atol=1e-4)


def test_disjoint_lines():
    theta = 0.37
    x = np.asarray(toy.get("disjoint_lines", theta=theta).sample(KEY, N))
    np.testing.assert_array_equal(x[:, 0], np.float32(theta))
    assert x[:, 1].min() >= 0.0 and x[:, 1].max() <= 1.0
    np.testing.assert_allclose(x[:, 1].mean(), 0.5, atol=5 * math.sqrt(1 / 12 / N))
    np.testing.assert_allclose(x[:, 1].var(), 1 / 12, rtol=0.05)
    assert toy.get("disjoint_lines", theta=theta).param("theta") == theta
    with pytest.raises(ValueError, match="unknown disjoint_lines parameter 'noise'; valid names: theta"):
        toy.get("disjoint_lines").param("noise")


@pytest.mark.parametrize("name", toy.names())
def test_determinism_keys_and_shapes(name):
    dist = toy.get(name)
    x = dist.sample(KEY, N)
    assert x.shape == (N, dist.dim) and x.dtype == jnp.float32
    chex.assert_trees_all_equal(x, dist.sample(jax.random.key(0), N))
    assert not np.allclose(x, dist.sample(jax.random.key(1), N))


def test_raw_uint32_keys_work():
    x = toy.get("ring8").sample(jax.random.PRNGKey(0), N)
    chex.assert_trees_all_equal(x, toy.get("ring8").sample(jax.random.PRNGKey(0), N))
    assert x.shape == (N, 2)


def test_sample_needs_static_positive_n():
    dist = toy.get("ring8")
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        dist.sample(KEY, 0)
    with pytest.raises(TypeError, match="static Python int"):
        jax.jit(dist.sample)(KEY, 4)


def test_hashable_value_semantics():
    a, b = toy.get("ring8", radius=1.0, std=0.01), toy.get("ring8", radius=1.0, std=0.01)
    assert a == b and hash(a) == hash(b) and a != toy.get("ring8")
    assert len({a, b, toy.get("ring8")}) == 2


@pytest.mark.parametrize("name", toy.names())
def test_batch_is_fold_in_sample(name):
    dist = toy.get(name)
    for step in (0, 7):
        chex.assert_trees_all_equal(toy.batch(dist, KEY, step, N), dist.sample(jax.random.fold_in(KEY, step), N))
    assert not np.allclose(toy.batch(dist, KEY, 0, N), toy.batch(dist, KEY, 1, N))


@pytest.mark.parametrize("name", ["ring8", "swiss_roll"])
def test_batch_jits_with_traced_step(name):
    dist = toy.get(name)
    jitted = jax.jit(toy.batch, static_argnums=(0, 3))  # the dist itself is a static (hashable) argument
    chex.assert_trees_all_close(jitted(dist, KEY, jnp.int32(7), N), toy.batch(dist, KEY, 7, N), atol=1e-5)
    chex.assert_trees_all_close(jitted(dist, KEY, jnp.int32(8), N), toy.batch(dist, KEY, 8, N), atol=1e-5)


def test_jit_closing_over_dist_and_partial_sample():
    dist = toy.get("ring8")
    closed_over = jax.jit(lambda step: toy.batch(dist, KEY, step, N))
    chex.assert_trees_all_close(closed_over(jnp.int32(3)), toy.batch(dist, KEY, 3, N), atol=1e-5)
    sample = jax.jit(functools.partial(dist.sample, n=N))
    chex.assert_trees_all_close(sample(KEY), dist.sample(KEY, N), atol=1e-5)


def test_vmap_over_steps_and_log_prob():
    dist = toy.get("ring8")
    stacked = jax.vmap(lambda s: toy.batch(dist, KEY, s, N))(jnp.arange(4))
    chex.assert_trees_all_close(stacked, jnp.stack([toy.batch(dist, KEY, s, N) for s in range(4)]), atol=1e-6)
    means, std, weights = mixture_reference("ring8", {})
    lp = jax.vmap(dist.log_prob)(stacked)
    expected = scipy_log_prob(np.asarray(stacked, np.float64).reshape(-1, 2), means, std, weights).reshape(4, N)
    np.testing.assert_allclose(lp, expected, rtol=1e-5, atol=2e-3)


def test_pmap_over_devices():
    n_dev = 4
    assert jax.device_count() >= n_dev
    dist = toy.get("grid25")
    means, std, weights = mixture_reference("grid25", {})
    steps = jnp.arange(n_dev)
    x, lp = jax.pmap(lambda s: (toy.batch(dist, KEY, s, N), dist.log_prob(toy.batch(dist, KEY, s, N))))(steps)
    assert x.shape == (n_dev, N, 2)
    for s in range(n_dev):
        chex.assert_trees_all_close(x[s], toy.batch(dist, KEY, s, N), atol=1e-6)
    expected = scipy_log_prob(np.asarray(x, np.float64).reshape(-1, 2), means, std, weights)
    np.testing.assert_allclose(lp.ravel(), expected, rtol=1e-5, atol=2e-3)
