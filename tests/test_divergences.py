"""Tests for gan_jax.divergences against scipy, numerical integration and hand-worked values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.spatial.distance
import scipy.special
import scipy.stats

from gan_jax import divergences as D
from gan_jax.registry import Registry

LOG2 = math.log(2.0)
RTOL, ATOL = 2e-5, 2e-6  # float32


def random_pairs(seed, shape=(6, 9), zero_fraction=0.0, zeros_in_q=True):
    """Dirichlet probability vectors along the last axis, with a share of exact zeros (renormalised)."""
    rng = np.random.default_rng(seed)

    def draw():
        x = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
        x[rng.random(shape) < zero_fraction] = 0.0
        x[..., 0] += x.sum(-1) == 0  # keep every row a distribution
        return (x / x.sum(-1, keepdims=True)).astype(np.float32)

    p, q = draw(), draw()
    if not zeros_in_q:
        q = np.where(q == 0, 1e-3, q)
        q = (q / q.sum(-1, keepdims=True)).astype(np.float32)
    return p, q


# Independent references, applied row by row over the batch axes.
def per_row(fn, p, q):
    k = p.shape[-1]
    rows = zip(p.reshape(-1, k).astype(np.float64), q.reshape(-1, k).astype(np.float64))
    return np.array([fn(a, b) for a, b in rows]).reshape(p.shape[:-1])


def ref_kl(p, q):
    return per_row(scipy.stats.entropy, p, q)


def ref_js(p, q):  # scipy returns the Jensen–Shannon *distance*, √JSD (natural log by default).
    return per_row(lambda a, b: scipy.spatial.distance.jensenshannon(a, b) ** 2, p, q)


def ref_tv(p, q):
    return per_row(lambda a, b: 0.5 * scipy.spatial.distance.cityblock(a, b), p, q)


REFERENCES = {
    "kl": ref_kl,
    "reverse_kl": lambda p, q: ref_kl(q, p),
    "js": ref_js,
    "total_variation": ref_tv,
}


# ------------------------------------------------------------------------------------------------
# Discrete divergences vs scipy.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_matches_scipy_entropy(seed):
    p, q = random_pairs(seed, shape=(2, 5, 8), zero_fraction=0.3, zeros_in_q=False)
    out = D.kl(p, q)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out, ref_kl(p, q), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(D.reverse_kl(q, p), ref_kl(p, q), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_js_matches_squared_scipy_jensenshannon(seed):
    p, q = random_pairs(seed, zero_fraction=0.3)
    np.testing.assert_allclose(D.js(p, q), ref_js(p, q), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_registry_from_probs_and_from_logs_match_references(name):
    p, q = random_pairs(3, zero_fraction=0.25, zeros_in_q=False)  # zeros in p only: KL(p‖q) finite
    if name == "reverse_kl":  # KL(q‖p) finite: zeros in q only
        p, q = q, p
    div = D.get(name)
    expected = REFERENCES[name](p, q)
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(div.from_probs(p, q), expected, rtol=RTOL, atol=ATOL)
    with np.errstate(divide="ignore"):
        log_p, log_q = np.log(p), np.log(q)
    np.testing.assert_allclose(div.from_logs(log_p, log_q), expected, rtol=RTOL, atol=ATOL)


def test_dx_scales_sums_of_densities():
    # Uniform density 1 on [0, 1) sampled with 4 cells (dx = 0.25) vs density 2 on [0, 0.5): hand-worked
    # KL(q‖p) = ∫₀^½ 2 log 2 dx = log 2, KL(p‖q) = ∞, TV = ½(½·1 + ½·1) = ½.
    p = np.array([1.0, 1.0, 1.0, 1.0], np.float32)
    q = np.array([2.0, 2.0, 0.0, 0.0], np.float32)
    dx = 0.25
    np.testing.assert_allclose(D.kl(q, p, dx), LOG2, rtol=1e-6)
    assert D.kl(p, q, dx) == np.inf
    np.testing.assert_allclose(D.total_variation(p, q, dx), 0.5, rtol=1e-6)
    # m = 1.5 on [0, ½), ½ on [½, 1): JSD = ½[½ log(2/3) + ½ log 2] + ½[½ · 2 log(4/3)].
    jsd = 0.5 * (0.5 * math.log(2 / 3) + 0.5 * LOG2) + 0.5 * (math.log(4 / 3))
    np.testing.assert_allclose(D.js(p, q, dx), jsd, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Hand-worked values.


def test_hand_worked_half_half_vs_nine_tenths():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    kl_pq = math.log(5 / 3)  # ½ log(5/9) + ½ log 5 = ½ log(25/9)
    kl_qp = 0.9 * math.log(1.8) + 0.1 * math.log(0.2)
    m = (0.7, 0.3)
    jsd = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + 0.5 * (
        0.9 * math.log(0.9 / m[0]) + 0.1 * math.log(0.1 / m[1])
    )
    np.testing.assert_allclose(D.kl(p, q), kl_pq, rtol=1e-6)
    np.testing.assert_allclose(D.reverse_kl(p, q), kl_qp, rtol=1e-6)
    np.testing.assert_allclose(D.js(p, q), jsd, rtol=1e-6)
    np.testing.assert_allclose(D.total_variation(p, q), 0.4, rtol=1e-6)


@pytest.mark.parametrize(
    "p, q",
    [
        ([0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]),
        ([1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]),
        ([0.25, 0.0, 0.75, 0.0], [0.0, 0.125, 0.0, 0.875]),
    ],
)
def test_disjoint_supports(p, q):
    assert abs(float(D.js(p, q)) - LOG2) <= 1e-7
    assert abs(float(D.js(q, p)) - LOG2) <= 1e-7
    assert D.kl(p, q) == np.inf and D.reverse_kl(p, q) == np.inf
    np.testing.assert_allclose(D.total_variation(p, q), 1.0, rtol=1e-7)


def test_disjoint_uniform_lines_on_a_grid():
    # Lecture claim 5 in 1-D: U[0,1] vs U[θ,θ+1] on a grid; KL = ∞ and JSD = log 2 for θ ≥ 1, both 0 at θ = 0.
    dx = 0.01
    x = np.arange(0, 300) * dx
    p = ((x >= 0) & (x < 1 - 1e-9)).astype(np.float32) * 1.0
    for shift, jsd, kl in ((0, 0.0, 0.0), (100, LOG2, np.inf), (150, LOG2, np.inf)):
        q = np.roll(p, shift)
        assert abs(float(D.js(p, q, dx)) - jsd) <= 1e-6
        assert float(D.kl(p, q, dx)) == kl


def test_identical_distributions_give_zero_and_different_give_positive():
    p, _ = random_pairs(4, zero_fraction=0.3)
    for fn in (D.kl, D.reverse_kl, D.js, D.total_variation):
        np.testing.assert_allclose(fn(p, p), 0.0, atol=1e-7)
    q = 0.9 * p + 0.1 * np.roll(p, 1, axis=-1)  # support contains p's, so KL(p‖q) is finite
    differs = np.abs(q - p).max(-1) > 1e-3
    assert differs.all()
    for fn in (D.kl, D.js, D.total_variation):
        values = np.asarray(fn(p, q))
        assert np.all(np.isfinite(values)) and np.all(values > 0), fn.__name__


# ------------------------------------------------------------------------------------------------
# Properties.


def test_properties_on_random_batches():
    p, q = random_pairs(5, shape=(64, 6), zero_fraction=0.3)
    kl_pq, kl_qp = np.asarray(D.kl(p, q)), np.asarray(D.reverse_kl(p, q))
    jsd, jsd_swapped = np.asarray(D.js(p, q)), np.asarray(D.js(q, p))
    tv = np.asarray(D.total_variation(p, q))
    assert np.all(kl_pq >= 0) and np.all(kl_qp >= 0)
    assert np.isinf(kl_pq).any()  # the zeros make some supports not nested
    assert np.all(np.isfinite(jsd)) and np.all(jsd >= 0) and np.all(jsd <= LOG2 + 1e-7)
    np.testing.assert_allclose(jsd, jsd_swapped, rtol=1e-6, atol=1e-7)
    assert np.all(tv >= 0) and np.all(tv <= 1 + 1e-6)
    # Known bound (Lin 1991, stated in bits there): JSD ≤ TV · log 2.
    assert np.all(jsd <= tv * LOG2 + 1e-6)


def test_jit_and_vmap_agree_with_references():
    p, q = random_pairs(6, shape=(4, 7), zero_fraction=0.3)
    np.testing.assert_allclose(jax.jit(D.js)(p, q), ref_js(p, q), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(jax.vmap(D.js)(p, q), ref_js(p, q), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(jax.jit(jax.vmap(D.total_variation))(p, q), ref_tv(p, q), rtol=RTOL, atol=ATOL)
    p2, q2 = random_pairs(6, shape=(4, 7), zero_fraction=0.3, zeros_in_q=False)
    np.testing.assert_allclose(jax.jit(jax.vmap(D.kl))(p2, q2), ref_kl(p2, q2), rtol=RTOL, atol=ATOL)


def test_pmap_over_two_devices():
    assert len(jax.devices()) >= 2
    p, q = random_pairs(7, shape=(2, 5), zero_fraction=0.3)
    devices = jax.devices()[:2]
    np.testing.assert_allclose(jax.pmap(D.js, devices=devices)(p, q), ref_js(p, q), rtol=RTOL, atol=ATOL)
    d_star = jax.pmap(D.optimal_discriminator, devices=devices)(p, q)
    v = jax.pmap(D.gan_value, devices=devices)(p, q, d_star)
    np.testing.assert_allclose(v, 2 * ref_js(p, q) - 2 * LOG2, rtol=RTOL, atol=1e-5)


def test_grads_finite_with_zeros_and_match_calculus():
    p = np.array([0.4, 0.0, 0.35, 0.25], np.float32)
    q = np.array([0.1, 0.3, 0.0, 0.6], np.float32)
    q_full = np.array([0.1, 0.3, 0.2, 0.4], np.float32)
    cases = {  # name: (function, p, q); the last two include an infinite KL and JSD at p = q.
        "kl": (D.kl, p, q_full), "reverse_kl": (D.reverse_kl, q_full, p), "js": (D.js, p, q),
        "total_variation": (D.total_variation, p, q), "kl_infinite": (D.kl, p, q), "js_equal": (D.js, p, p),
    }
    grads = jax.jit(lambda: {k: jax.grad(f, argnums=(0, 1))(a, b) for k, (f, a, b) in cases.items()})()
    for name, g in grads.items():
        assert all(np.all(np.isfinite(x)) for x in g), (name, g)
    # Where both p and q are positive, ∂KL(p‖q)/∂p_i = log(p_i/q_i) + 1 and ∂/∂q_i = −p_i/q_i (calculus).
    g_p, g_q = grads["kl"]
    on = p > 0
    np.testing.assert_allclose(np.asarray(g_p)[on], np.log(p[on] / q_full[on]) + 1, rtol=1e-5)
    np.testing.assert_allclose(g_q, -p / q_full, rtol=1e-5)
    # ∂JSD/∂p_i = ½ log(2p_i/(p_i+q_i)) where p_i > 0 (the other terms cancel).
    g_js = np.asarray(grads["js"][0])
    np.testing.assert_allclose(g_js[on], 0.5 * np.log(2 * p[on] / (p[on] + q[on])), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# The GAN objective.


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_value_at_optimal_discriminator_is_two_jsd_minus_two_log2(seed):
    p_data, p_model = random_pairs(seed, shape=(5, 8), zero_fraction=0.35)
    d_star = D.optimal_discriminator(p_data, p_model)
    v = D.gan_value(p_data, p_model, d_star)
    np.testing.assert_allclose(v, 2 * ref_js(p_data, p_model) - 2 * LOG2, rtol=1e-5, atol=2e-6)


def test_optimal_discriminator_maximises_value():
    p_data, p_model = random_pairs(11, shape=(3, 8), zero_fraction=0.35)
    d_star = np.asarray(D.optimal_discriminator(p_data, p_model))
    v_star = np.asarray(D.gan_value(p_data, p_model, d_star))
    rng = np.random.default_rng(0)
    for _ in range(5):
        d = np.clip(d_star + rng.normal(0, 0.05, d_star.shape), 1e-3, 1 - 1e-3).astype(np.float32)
        assert np.all(np.asarray(D.gan_value(p_data, p_model, d)) < v_star)
    # Stationary: ∂V/∂D = p_data/D − p_model/(1 − D) vanishes at D* wherever D* is strictly inside (0, 1).
    g = np.asarray(jax.jit(jax.grad(lambda d: jnp.sum(D.gan_value(p_data, p_model, d))))(d_star))
    interior = (p_data > 0) & (p_model > 0)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[interior], 0.0, atol=1e-4)


def test_optimal_discriminator_hand_values_and_both_zero():
    p_data = np.array([0.5, 0.0, 0.3, 0.2, 0.0])
    p_model = np.array([0.5, 0.4, 0.1, 0.0, 0.0])
    np.testing.assert_allclose(D.optimal_discriminator(p_data, p_model), [0.5, 0.0, 0.75, 1.0, 0.5], rtol=1e-6)
    g = jax.jit(jax.grad(lambda a, b: jnp.sum(D.optimal_discriminator(a, b)), argnums=(0, 1)))(p_data, p_model)
    assert all(np.all(np.isfinite(x)) for x in g)
    # ∂D*/∂p_data = p_model/(p_data+p_model)² (calculus), at cell 2: 0.1/0.16.
    np.testing.assert_allclose(g[0][2], 0.1 / 0.16, rtol=1e-5)


def test_gan_value_zero_conventions():
    # 0·log 0 = 0: where p_data = 0, D = 0 costs nothing; where p_data > 0, D = 0 gives −inf.
    assert float(D.gan_value([0.0, 1.0], [1.0, 0.0], [0.0, 1.0])) == 0.0
    assert float(D.gan_value([0.5, 0.5], [0.5, 0.5], [0.0, 0.5])) == -np.inf
    # Hand-worked: p_data = p_model = ½ everywhere, D = ½: V = log ½ + log ½ = −2 log 2.
    np.testing.assert_allclose(D.gan_value([0.5, 0.5], [0.5, 0.5], [0.5, 0.5]), -2 * LOG2, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Gaussian closed forms and densities.


def norm_logpdf(mu, sigma):
    """Textbook log N(x; μ, σ²) as a fast scalar function for scipy.integrate.quad (checked against scipy below)."""
    return lambda x: -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))


def test_reference_logpdf_matches_scipy():
    x = np.linspace(-5, 5, 11)
    np.testing.assert_allclose(norm_logpdf(0.3, 1.7)(x), scipy.stats.norm(0.3, 1.7).logpdf(x), rtol=1e-12)


def quad_kl(logpdf_p, logpdf_q, lo, hi):
    return scipy.integrate.quad(lambda x: np.exp(logpdf_p(x)) * (logpdf_p(x) - logpdf_q(x)), lo, hi,
                                limit=200)[0]


@pytest.mark.parametrize("mu1, s1, mu2, s2", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.7, -1.2, 2.0), (2.0, 3.0, 0.5, 0.4)])
def test_gaussian_kl_matches_quadrature(mu1, s1, mu2, s2):
    expected = quad_kl(norm_logpdf(mu1, s1), norm_logpdf(mu2, s2), -60, 60)
    np.testing.assert_allclose(D.gaussian_kl(mu1, s1, mu2, s2), expected, rtol=1e-5, atol=1e-6)


def test_gaussian_kl_gradient_matches_calculus():
    mu1, s1, mu2, s2 = 0.3, 0.7, -1.2, 2.0
    g_mu, g_s = jax.jit(jax.grad(D.gaussian_kl, argnums=(0, 1)))(mu1, s1, mu2, s2)
    np.testing.assert_allclose(g_mu, (mu1 - mu2) / s2**2, rtol=1e-6)
    np.testing.assert_allclose(g_s, -1 / s1 + s1 / s2**2, rtol=1e-6)


def test_gaussian_kl_mvn_diagonal_is_sum_of_univariate():
    # Independent coordinates: KL adds up over coordinates; each from the univariate formula by hand.
    m1, s1 = np.array([0.0, 1.0]), np.array([1.0, 0.5])
    m2, s2 = np.array([1.0, -1.0]), np.array([2.0, 1.0])
    per_coordinate = [math.log(b / a) + (a**2 + (u - v) ** 2) / (2 * b**2) - 0.5 for u, a, v, b in zip(m1, s1, m2, s2)]
    out = D.gaussian_kl_mvn(m1, np.diag(s1**2), m2, np.diag(s2**2))
    np.testing.assert_allclose(out, sum(per_coordinate), rtol=1e-6)
    # Hand value: coordinate 1: log(2/1) + (1 + 1)/8 − ½; coordinate 2: log(1/½) + (¼ + 4)/2 − ½.
    np.testing.assert_allclose(out, 2 * LOG2 + 0.25 + 4.25 / 2 - 1.0, rtol=1e-6)


def test_gaussian_kl_mvn_matches_monte_carlo():
    m1, S1 = np.array([0.5, -0.3, 1.0]), np.array([[1.0, 0.6, 0.2], [0.6, 2.0, -0.3], [0.2, -0.3, 0.5]])
    m2, S2 = np.array([0.0, 0.4, 0.8]), np.array([[2.0, -0.5, 0.0], [-0.5, 1.0, 0.3], [0.0, 0.3, 1.5]])
    n1, n2 = scipy.stats.multivariate_normal(m1, S1), scipy.stats.multivariate_normal(m2, S2)
    x = n1.rvs(size=200_000, random_state=np.random.default_rng(0))
    log_ratio = n1.logpdf(x) - n2.logpdf(x)
    tolerance = 5 * log_ratio.std() / math.sqrt(len(x))
    assert abs(float(D.gaussian_kl_mvn(m1, S1, m2, S2)) - log_ratio.mean()) < tolerance
    # Batched and broadcast: a stack of first arguments against one second argument.
    out = D.gaussian_kl_mvn(np.stack([m1, m2]), np.stack([S1, S2]), m2, S2)
    assert out.shape == (2,)
    assert abs(float(out[0]) - log_ratio.mean()) < tolerance
    np.testing.assert_allclose(out[1], 0.0, atol=1e-5)


def test_gaussian_and_mixture_densities_match_scipy():
    x = np.linspace(-6, 6, 41)
    np.testing.assert_allclose(D.gaussian_pdf(x, 0.5, 1.3), scipy.stats.norm(0.5, 1.3).pdf(x), rtol=1e-5)
    w, mus, sigmas = np.array([0.3, 0.7]), np.array([-2.0, 1.5]), np.array([0.5, 0.8])
    expected = sum(wi * scipy.stats.norm(m, s).pdf(x) for wi, m, s in zip(w, mus, sigmas))
    np.testing.assert_allclose(D.gaussian_mixture_pdf(x, w, mus, sigmas), expected, rtol=1e-5, atol=1e-12)
    # Far tails: the log-density stays finite and accurate where the density underflows in float32.
    far = np.array([-40.0, 60.0])
    expected_log = scipy.special.logsumexp(
        np.stack([np.log(wi) + scipy.stats.norm(m, s).logpdf(far) for wi, m, s in zip(w, mus, sigmas)]), axis=0
    )
    out = D.gaussian_mixture_log_pdf(far, w, mus, sigmas)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, expected_log, rtol=1e-5)


MIX = dict(weights=np.array([0.5, 0.5]), mus=np.array([-2.0, 2.0]), sigmas=np.array([0.6, 0.6]))
GRID = np.linspace(-12.0, 12.0, 4001)


def mixture_logpdf_np(x):
    (w1, w2), (m1, m2), (s1, s2) = MIX["weights"], MIX["mus"], MIX["sigmas"]
    return np.logaddexp(math.log(w1) + norm_logpdf(m1, s1)(x), math.log(w2) + norm_logpdf(m2, s2)(x))


def quad_divergence(name, logpdf_p, logpdf_q):
    """Reference divergences by scipy.integrate.quad on the densities themselves."""

    def js_integrand(x):
        lp, lq = logpdf_p(x), logpdf_q(x)
        log_m = np.logaddexp(lp, lq) - LOG2
        return 0.5 * (np.exp(lp) * (lp - log_m) + np.exp(lq) * (lq - log_m))

    integrand = {
        "kl": lambda x: np.exp(logpdf_p(x)) * (logpdf_p(x) - logpdf_q(x)),
        "reverse_kl": lambda x: np.exp(logpdf_q(x)) * (logpdf_q(x) - logpdf_p(x)),
        "js": js_integrand,
        "total_variation": lambda x: 0.5 * abs(np.exp(logpdf_p(x)) - np.exp(logpdf_q(x))),
    }[name]
    return scipy.integrate.quad(integrand, -12, 12, points=[-2.0, 0.0, 2.0], limit=200)[0]


def mixture_log_pdf(x):
    return D.gaussian_mixture_log_pdf(x, **MIX)


def fitted_divergence(name, mu, sigma):
    """D(mixture, N(μ, σ²)) on GRID, as the lecture's fit uses it."""
    return D.grid_divergence(name, mixture_log_pdf, lambda x: D.gaussian_log_pdf(x, mu, sigma), GRID)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "js", "total_variation"])
def test_grid_divergence_gaussian_vs_mixture_matches_quadrature(name):
    mu, sigma = 0.5, 1.5
    expected = quad_divergence(name, mixture_logpdf_np, norm_logpdf(mu, sigma))
    np.testing.assert_allclose(fitted_divergence(name, mu, sigma), expected, rtol=1e-4, atol=1e-6)


def test_grid_kl_gradients_match_closed_form():
    # Grid KL(N(μ,σ)‖N(0.4, 1.3)) differentiated in (μ, σ) vs the calculus of the closed form.
    def grid_kl(mu, sigma):
        return D.grid_divergence(
            D.kl_from_logs, lambda x: D.gaussian_log_pdf(x, mu, sigma), lambda x: D.gaussian_log_pdf(x, 0.4, 1.3), GRID
        )

    mu, sigma = -0.7, 0.9
    np.testing.assert_allclose(grid_kl(mu, sigma), math.log(1.3 / 0.9) + (0.81 + 1.21) / (2 * 1.69) - 0.5, rtol=1e-5)
    g_mu, g_sigma = jax.jit(jax.grad(grid_kl, argnums=(0, 1)))(mu, sigma)
    np.testing.assert_allclose(g_mu, (mu - 0.4) / 1.3**2, rtol=1e-4)
    np.testing.assert_allclose(g_sigma, -1 / sigma + sigma / 1.3**2, rtol=1e-4)


def test_forward_kl_to_mixture_is_stationary_at_moment_matching():
    # argmin_{μ,σ} KL(p‖N(μ,σ²)) matches moments: μ = Σ w μ_j, σ² = Σ w (σ_j² + μ_j²) − μ² (mode covering).
    w, m, s = MIX["weights"], MIX["mus"], MIX["sigmas"]
    mean = float(np.sum(w * m))
    std = math.sqrt(float(np.sum(w * (s**2 + m**2))) - mean**2)
    grads = jax.jit(jax.grad(lambda mu, sigma: fitted_divergence("kl", mu, sigma), argnums=(0, 1)))(mean, std)
    np.testing.assert_allclose(grads, [0.0, 0.0], atol=1e-4)
    # Reverse KL (mode seeking) is not stationary there: its gradient pulls σ down, towards one mode.
    g_sigma = jax.jit(jax.grad(lambda sigma: fitted_divergence("reverse_kl", mean, sigma)))(std)
    assert float(g_sigma) > 0.1


def test_kl_from_logs_survives_tail_underflow():
    # p = N(0, 3²), q = N(0, ½²) on [−30, 30]: q underflows to 0 in float32 where p does not, so the
    # probability form says ∞; the log form matches the closed form log(σq/σp) + σp²/(2σq²) − ½.
    grid = np.linspace(-30.0, 30.0, 6001, dtype=np.float32)
    dx = float(grid[1] - grid[0])
    log_p, log_q = D.gaussian_log_pdf(grid, 0.0, 3.0), D.gaussian_log_pdf(grid, 0.0, 0.5)
    assert D.kl(jnp.exp(log_p), jnp.exp(log_q), dx) == np.inf
    closed = math.log(0.5 / 3.0) + 9.0 / (2 * 0.25) - 0.5
    np.testing.assert_allclose(D.kl_from_logs(log_p, log_q, dx), closed, rtol=1e-4)
    grads = jax.jit(jax.grad(lambda lp, lq: D.kl_from_logs(lp, lq, dx), argnums=(0, 1)))(log_p, log_q)
    assert all(np.all(np.isfinite(g)) for g in grads)


# ------------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("fn", [D.kl, D.reverse_kl, D.js, D.total_variation, D.kl_from_logs, D.js_from_logs,
                                D.optimal_discriminator])
def test_mismatched_shapes_name_both_shapes(fn):
    with pytest.raises(ValueError, match=r"same shape.*\(3,\).*\(4,\)|same shape.*\(4,\).*\(3,\)"):
        fn(np.full(3, 1 / 3), np.full(4, 0.25))


def test_gan_value_shape_errors_and_scalars():
    with pytest.raises(ValueError, match=r"p_data and p_model and d.*d\.shape=\(2, 3\)"):
        D.gan_value(np.full(3, 1 / 3), np.full(3, 1 / 3), np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match=r"scalars.*\(\.\.\., k\)"):
        D.kl(0.5, 0.5)


def test_other_errors():
    valid = "kl, reverse_kl, js, total_variation"
    with pytest.raises(ValueError, match=f"unknown divergence 'wasserstein'; valid names: {valid}"):
        D.get("wasserstein")
    with pytest.raises(ValueError, match=f"unknown divergence 'wasserstein'; valid names: {valid}"):
        D.grid_divergence("wasserstein", jnp.sin, jnp.cos, np.linspace(0.0, 1.0, 5))
    assert D.names() == ("kl", "reverse_kl", "js", "total_variation")
    assert isinstance(D.DIVERGENCES, Registry) and D.DIVERGENCES["js"] == D.Divergence("js", D.js, D.js_from_logs)
    with pytest.raises(ValueError, match=r"grid must be 1-D.*\(5, 2\)"):
        D.grid_divergence("kl", jnp.sin, jnp.cos, np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"weights and mus and sigmas.*mus\.shape=\(3,\)"):
        D.gaussian_mixture_log_pdf(0.0, [0.5, 0.5], [0.0, 1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"S2 must have shape \(\.\.\., 2, 2\).*\(3, 3\)"):
        D.gaussian_kl_mvn(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match=r"m1 and m2.*\(2,\).*\(3,\)"):
        D.gaussian_kl_mvn(np.zeros(2), np.eye(2), np.zeros(3), np.eye(2))
