"""Tests for gan_jax.sampling: samplers driven by the TRUE log density ratio must produce the target π.

Generator p = N(0, 2²); target π = ½N(−2, 0.5²) + ½N(2, 0.5²), 1-D. Logits are log π(x) − log p(x) from
scipy.stats; accepted samples are compared with π by a KS test against π's CDF (scipy) and by mean and
variance within sampling error from scipy's moments of π.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import sampling

stats = pytest.importorskip("scipy.stats")
optimize = pytest.importorskip("scipy.optimize")

P = stats.norm(0.0, 2.0)
COMPONENTS = (stats.norm(-2.0, 0.5), stats.norm(2.0, 0.5))


def log_pi(x):
    return np.logaddexp(*(np.log(0.5) + c.logpdf(x) for c in COMPONENTS))


def pi_cdf(x):
    return 0.5 * sum(c.cdf(x) for c in COMPONENTS)


def true_logits(x):
    return log_pi(x) - P.logpdf(x)


def pi_moments():
    """Mean, variance and 4th central moment of π from scipy's component moments."""
    raw = [0.5 * sum(c.moment(k) for c in COMPONENTS) for k in range(1, 5)]  # E x^k
    mean = raw[0]
    var = raw[1] - mean**2
    mu4 = raw[3] - 4 * mean * raw[2] + 6 * mean**2 * raw[1] - 3 * mean**4
    return mean, var, mu4


def sup_logit():
    """sup_x log π(x)/p(x) (attained near ±2), by scipy."""
    res = optimize.minimize_scalar(lambda x: -true_logits(x), bounds=(0.0, 4.0), method="bounded")
    return -res.fun


def generator_batch(seed, n):
    x = P.rvs(size=n, random_state=np.random.default_rng(seed))
    return x.astype(np.float32), true_logits(x).astype(np.float32)


def assert_follows_pi(x):
    x = np.asarray(x, np.float64).reshape(-1)
    n = x.size
    assert n > 1000, n
    assert stats.kstest(x, pi_cdf).pvalue > 1e-3
    mean, var, mu4 = pi_moments()
    # Standard errors: sd(mean) = √(var/n), sd(sample variance) ≈ √((μ4 − var²)/n).
    assert abs(np.mean(x) - mean) < 4 * np.sqrt(var / n), (np.mean(x), mean)
    assert abs(np.var(x) - var) < 4 * np.sqrt((mu4 - var**2) / n), (np.var(x), var)


def assert_not_pi(x):
    """The generator's own samples fail the same test: the check has power."""
    assert stats.kstest(np.asarray(x, np.float64).reshape(-1), pi_cdf).pvalue < 1e-6


def test_reference_setup():
    mean, var, _ = pi_moments()
    np.testing.assert_allclose([mean, var], [0.0, 4.25])  # ½(±2) = 0; 0.5² + 2² = 4.25
    assert 1.1 < sup_logit() < 1.3  # log(0.5·N(0; 0, 0.5²)/N(2; 0, 2²)) ≈ 1.19 near x = ±2
    x, _ = generator_batch(0, 20000)
    assert_not_pi(x)


# --------------------------------------------------------------------------------------------------
# Rejection sampling.


def test_rejection_with_exact_bound_follows_pi():
    x, logits = generator_batch(1, 60000)
    out = sampling.rejection_sample(jax.random.key(0), x, logits, max_logit=sup_logit())
    count = int(out.count)
    # Acceptance rate E_p[exp(l − M)] = exp(−M) for the exact ratio; binomial sampling error.
    rate = np.exp(-sup_logit())
    assert abs(count / x.size - rate) < 4 * np.sqrt(rate * (1 - rate) / x.size)
    np.testing.assert_array_equal(out.valid, np.arange(x.size) < count)
    assert np.all(np.asarray(out.samples)[count:] == 0)
    assert_follows_pi(out.samples[:count])
    # Accepted rows come first in input order: a subsequence of the input.
    remaining = iter(x.tolist())
    assert all(any(v == w for w in remaining) for v in np.asarray(out.samples[:count]).tolist())


def test_rejection_with_batch_max_follows_pi():
    x, logits = generator_batch(2, 60000)
    out = sampling.rejection_sample(jax.random.key(1), x, logits)
    assert_follows_pi(out.samples[: int(out.count)])


def test_rejection_keeps_event_axes():
    x, logits = generator_batch(3, 40000)
    out = sampling.rejection_sample(jax.random.key(2), x[:, None], logits[:, None], max_logit=sup_logit())
    assert out.samples.shape == (40000, 1) and out.valid.shape == (40000,)
    assert_follows_pi(out.samples[out.valid])


def test_rejection_gamma_variant():
    x, logits = generator_batch(4, 20000)
    key = jax.random.key(3)
    exact = sampling.rejection_sample(key, x, logits, max_logit=sup_logit())
    # γ = 0, ε = 0: σ(d − log(1 − e^d)) = e^d, the exact rule; same uniforms, same decisions.
    zero = sampling.rejection_sample(key, x, logits, max_logit=sup_logit(), gamma=0.0, epsilon=0.0)
    assert abs(int(zero.count) - int(exact.count)) <= 2
    counts = [int(sampling.rejection_sample(key, x, logits, gamma=g).count) for g in (-2.0, 0.0, 2.0)]
    assert counts[0] > counts[1] > counts[2], counts


def test_rejection_hand_values():
    # l − M = 0 is always accepted, l − M = −inf never.
    x = jnp.arange(4.0)
    out = sampling.rejection_sample(jax.random.key(0), x, jnp.array([0.0, -jnp.inf, 0.0, -jnp.inf]))
    assert int(out.count) == 2
    np.testing.assert_array_equal(out.samples, [0.0, 2.0, 0.0, 0.0])
    np.testing.assert_array_equal(out.valid, [True, True, False, False])


def test_rejection_sample_n_gets_n_samples_from_pi():
    n = 6000
    components = jnp.array([-2.0, 2.0])

    def propose(key):
        x = 2.0 * jax.random.normal(key, (2048,))
        log_pi = jax.nn.logsumexp(jax.scipy.stats.norm.logpdf(x[:, None], components, 0.5), axis=-1) + jnp.log(0.5)
        return x, log_pi - jax.scipy.stats.norm.logpdf(x, 0.0, 2.0)

    out = sampling.rejection_sample_n(jax.random.key(5), propose, n, max_logit=sup_logit())
    assert int(out.count) == n and bool(out.valid.all())
    assert_follows_pi(out.samples)
    # Too few rounds: count < n, the rest zero-padded and masked.
    short = sampling.rejection_sample_n(jax.random.key(5), propose, n, max_logit=sup_logit(), max_rounds=2)
    assert 0 < int(short.count) < n
    np.testing.assert_array_equal(short.valid, np.arange(n) < int(short.count))
    assert np.all(np.asarray(short.samples)[int(short.count) :] == 0)
    np.testing.assert_array_equal(short.samples[: int(short.count)], out.samples[: int(short.count)])


# --------------------------------------------------------------------------------------------------
# Metropolis–Hastings.


def test_metropolis_hastings_follows_pi():
    n_chains, steps = 4000, 40
    x, logits = generator_batch(6, n_chains * steps)
    chains = sampling.metropolis_hastings(jax.random.key(7), x, logits, n_chains=n_chains)
    assert chains.samples.shape == (n_chains,) and chains.accepted.shape == (n_chains,)
    np.testing.assert_allclose(chains.logits, true_logits(np.asarray(chains.samples, np.float64)), rtol=1e-4, atol=1e-4)
    assert_follows_pi(chains.samples)
    assert np.all(np.asarray(chains.accepted) <= steps - 1)
    # Independent chains: the final states are distinct draws, not one state repeated.
    assert np.unique(np.asarray(chains.samples)).size > 0.9 * n_chains


def test_metropolis_hastings_from_real_starts_stays_on_pi():
    # π is stationary: chains started at π-samples stay π-distributed (Turner et al. start at real data).
    n_chains, steps = 3000, 5
    rng = np.random.default_rng(8)
    start = np.where(rng.random(n_chains) < 0.5, -2.0, 2.0) + 0.5 * rng.standard_normal(n_chains)
    x, logits = generator_batch(9, n_chains * steps)
    chains = sampling.metropolis_hastings(
        jax.random.key(9), x[:, None], logits, n_chains, start[:, None].astype(np.float32), true_logits(start)
    )
    assert chains.samples.shape == (n_chains, 1)
    assert_follows_pi(chains.samples)


def test_metropolis_hastings_hand_values():
    # Equal logits: ratio 1, every proposal accepted, each chain ends on its last proposal.
    x = jnp.arange(12.0)
    chains = sampling.metropolis_hastings(jax.random.key(0), x, jnp.zeros(12), n_chains=3)
    np.testing.assert_array_equal(chains.samples, [9.0, 10.0, 11.0])
    np.testing.assert_array_equal(chains.accepted, [3, 3, 3])
    # Proposals with logit −inf are never accepted: chains stay at their first sample.
    logits = jnp.concatenate([jnp.zeros(3), jnp.full(9, -jnp.inf)])
    chains = sampling.metropolis_hastings(jax.random.key(0), x, logits, n_chains=3)
    np.testing.assert_array_equal(chains.samples, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(chains.accepted, [0, 0, 0])


def test_metropolis_hastings_acceptance_probability():
    # One current state with l = 0 and proposals with l′ = log 0.3 (ratio 0.3) that each return the chain
    # to the same logit... use two chains: the rate of accepting a proposal with l′ − l = log r is r.
    n_chains = 20000
    x = jnp.concatenate([jnp.zeros(n_chains), jnp.ones(n_chains)])
    logits = jnp.concatenate([jnp.zeros(n_chains), jnp.full(n_chains, np.log(0.3))])
    chains = sampling.metropolis_hastings(jax.random.key(1), x, logits, n_chains=n_chains)
    rate = float(jnp.mean(chains.accepted))
    assert abs(rate - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n_chains), rate


# --------------------------------------------------------------------------------------------------
# Calibration.


def _balanced_logistic_mle(real, fake):
    """Reference: scipy BFGS on the class-balanced log loss in float64 numpy."""

    def loss(theta):
        a, b = theta
        return np.mean(np.logaddexp(0, -(a * real + b))) + np.mean(np.logaddexp(0, a * fake + b))

    return optimize.minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x


def test_calibration_recovers_gaussian_score_ratio():
    # Scores real ~ N(1.5, 2²), fake ~ N(−0.5, 2²): log ratio = a·s + b with a = (1.5 + 0.5)/4 = 0.5 and
    # b = (0.5² − 1.5²)/(2·4) = −0.25. Unequal sample sizes: the balanced fit does not shift b.
    rng = np.random.default_rng(10)
    real = rng.normal(1.5, 2.0, 30000)
    fake = rng.normal(-0.5, 2.0, 10000)
    cal = sampling.fit_calibration(real.astype(np.float32), fake.astype(np.float32))
    np.testing.assert_allclose([cal.scale, cal.shift], [0.5, -0.25], atol=0.05)
    np.testing.assert_allclose([cal.scale, cal.shift], _balanced_logistic_mle(real, fake), rtol=1e-3, atol=1e-4)


def test_calibration_recovers_logistic_labels():
    # x ~ N(0, 1.5²), y ~ Bernoulli(σ(a·x + b)), a = 1.7, b = −0.6. Real = {x: y = 1}, fake = {x: y = 0};
    # the class-balanced fit estimates p(x|1)/p(x|0), i.e. a·x + b − log(n₁/n₀).
    a, b = 1.7, -0.6
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 1.5, 40000)
    y = rng.random(x.size) < 1.0 / (1.0 + np.exp(-(a * x + b)))
    real, fake = x[y], x[~y]
    cal = sampling.fit_calibration(real[:, None].astype(np.float32), fake.astype(np.float32))
    np.testing.assert_allclose(cal.scale, a, rtol=0.05)
    np.testing.assert_allclose(cal.shift, b - np.log(real.size / fake.size), atol=0.05)
    np.testing.assert_allclose([cal.scale, cal.shift], _balanced_logistic_mle(real, fake), rtol=1e-3, atol=1e-4)


def test_calibration_of_a_scaled_critic_then_rejection_follows_pi():
    # A "Wasserstein-like" critic: scores = 3·log(π/p) + 5, not log ratios. Calibrated on held-out real
    # (π, by scipy) and fake (p) scores, the logits come back to log π/p and DRS targets π again.
    rng = np.random.default_rng(12)
    comp = rng.random(20000) < 0.5
    real = np.where(comp, COMPONENTS[0].rvs(20000, random_state=rng), COMPONENTS[1].rvs(20000, random_state=rng))
    fake = P.rvs(20000, random_state=rng)
    critic = lambda x: (3.0 * true_logits(x) + 5.0).astype(np.float32)  # noqa: E731
    cal = sampling.fit_calibration(critic(real), critic(fake))
    np.testing.assert_allclose(cal.scale, 1 / 3, rtol=0.05)
    # a, b are strongly correlated (b ≈ −5a); what matters is the logit where π and p have their mass.
    grid = np.linspace(-3.0, 3.0, 61)
    np.testing.assert_allclose(cal(critic(grid)), true_logits(grid), rtol=0.03, atol=0.05)
    x, _ = generator_batch(13, 60000)
    logits = sampling.calibrate(critic(real), critic(fake), critic(x))
    np.testing.assert_allclose(logits, cal(critic(x)), rtol=1e-6, atol=1e-6)
    out = sampling.rejection_sample(jax.random.key(14), x, logits)
    assert_follows_pi(out.samples[: int(out.count)])
    # Uncalibrated scores give the wrong distribution (the test has power).
    wrong = sampling.rejection_sample(jax.random.key(14), x, critic(x))
    assert stats.kstest(np.asarray(wrong.samples[: int(wrong.count)], np.float64), pi_cdf).pvalue < 1e-3


def test_calibration_separable_and_constant_scores_stay_finite():
    cal = sampling.fit_calibration(jnp.array([1.0, 2.0, 3.0]), jnp.array([-1.0, -2.0]))
    assert np.isfinite(cal.scale) and np.isfinite(cal.shift) and cal.scale > 0
    cal = sampling.fit_calibration(jnp.ones(4), jnp.ones(3))
    np.testing.assert_allclose([cal.scale, cal.shift], [0.0, 0.0], atol=1e-6)


# --------------------------------------------------------------------------------------------------
# jit, vmap and errors.


def test_under_jit_and_vmap():
    x, logits = generator_batch(15, 400)
    key = jax.random.key(16)
    eager = sampling.rejection_sample(key, x, logits)
    jitted = jax.jit(lambda k, s, l: sampling.rejection_sample(k, s, l, max_logit=None, gamma=0.5))(key, x, logits)
    assert jitted.samples.shape == eager.samples.shape
    chains = jax.jit(sampling.metropolis_hastings, static_argnames="n_chains")(key, x, logits, n_chains=20)
    assert chains.samples.shape == (20,)
    cal = jax.jit(sampling.fit_calibration)(logits[:200], logits[200:])
    assert np.isfinite(cal.scale)
    # vmap over keys: independent rejection decisions per key, same fixed shapes.
    keys = jax.random.split(key, 3)
    batched = jax.vmap(sampling.rejection_sample, in_axes=(0, None, None))(keys, x, logits)
    assert batched.samples.shape == (3, 400) and batched.count.shape == (3,)
    # Under jit the mask, not a dynamic slice, selects: mean of the accepted samples.
    @jax.jit
    def accepted_mean(k):
        out = sampling.rejection_sample(k, x, logits)
        return jnp.sum(jnp.where(out.valid, out.samples, 0.0)) / out.count

    np.testing.assert_allclose(accepted_mean(key), np.mean(np.asarray(eager.samples[: int(eager.count)])), rtol=1e-5)


def test_errors_name_problem_and_fix():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"logits has shape \(5,\) but there are 4 samples; give one critic logit"):
        sampling.rejection_sample(key, jnp.zeros(4), jnp.zeros(5))
    with pytest.raises(ValueError, match=r"there are 4 samples; .*packs of m > 1 samples .* cannot drive"):
        sampling.metropolis_hastings(key, jnp.zeros((4, 2)), jnp.zeros(2), n_chains=2)  # a critic on pairs
    with pytest.raises(ValueError, match=r"logits has shape \(4, 2\); expected \(n,\) or \(n, 1\)"):
        sampling.rejection_sample(key, jnp.zeros((4, 3)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"samples is a scalar"):
        sampling.rejection_sample(key, jnp.zeros(()), jnp.zeros(1))
    with pytest.raises(ValueError, match=r"10 samples do not split into 3 chains.*e\.g\. 9 or 12"):
        sampling.metropolis_hastings(key, jnp.zeros(10), jnp.zeros(10), n_chains=3)
    with pytest.raises(ValueError, match=r"n_chains must be a positive int; got 0"):
        sampling.metropolis_hastings(key, jnp.zeros(10), jnp.zeros(10), n_chains=0)
    with pytest.raises(ValueError, match=r"at least 2·n_chains = 8 samples"):
        sampling.metropolis_hastings(key, jnp.zeros(4), jnp.zeros(4), n_chains=4)
    with pytest.raises(ValueError, match=r"init_samples has shape \(3,\); expected .* \(2, 1\)"):
        sampling.metropolis_hastings(key, jnp.zeros((4, 1)), jnp.zeros(4), 2, jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"init_logits has shape \(3,\) but there are 2 samples"):
        sampling.metropolis_hastings(key, jnp.zeros(4), jnp.zeros(4), 2, jnp.zeros(2), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"both init_samples and init_logits"):
        sampling.metropolis_hastings(key, jnp.zeros(4), jnp.zeros(4), 2, init_samples=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"real_scores has shape \(3, 2\).*held-out real samples"):
        sampling.fit_calibration(jnp.zeros((3, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"fake_scores is empty"):
        sampling.fit_calibration(jnp.zeros(3), jnp.zeros(0))
    with pytest.raises(ValueError, match=r"n must be a positive int"):
        sampling.rejection_sample_n(key, lambda k: (jnp.zeros(2), jnp.zeros(2)), 0)
    calls = []

    def changing_batch(key):  # batch size 2 on the first call, 3 afterwards
        calls.append(key)
        b = 2 if len(calls) == 1 else 3
        return jnp.zeros(b), jnp.full(b, -jnp.inf)

    with pytest.raises(ValueError, match=r"propose returned 3 samples after 2; return the same batch size"):
        sampling.rejection_sample_n(key, changing_batch, 5, max_logit=0.0)


def test_refit_critic_recovers_the_log_density_ratio_of_two_gaussians():
    """π = N(0, 1), p = N(1, 1): log π(x)/p(x) = −x + ½, which a linear critic a·x + b can represent exactly; the refit
    logistic critic reaches it from (0, 0), under jit."""
    def critic(params, x):
        return params["a"] * x[:, 0] + params["b"]

    real = lambda key, n: jax.random.normal(key, (n, 1))  # noqa: E731
    fake = lambda key, n: 1.0 + jax.random.normal(key, (n, 1))  # noqa: E731
    refit = jax.jit(lambda key, params: sampling.refit_critic(key, critic, params, real, fake, steps=1500,
                                                              batch_size=512, learning_rate=0.05))
    params = refit(jax.random.key(0), {"a": jnp.zeros(()), "b": jnp.zeros(())})
    np.testing.assert_allclose([float(params["a"]), float(params["b"])], [-1.0, 0.5], atol=0.08)
    with pytest.raises(ValueError, match="positive ints"):
        sampling.refit_critic(jax.random.key(0), critic, params, real, fake, steps=0, batch_size=8, learning_rate=0.1)
