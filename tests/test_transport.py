"""Tests for gan_jax.transport against independent references: POT, SciPy, closed forms, hand-worked values.

Shapes are reused across tests so that each jitted solver compiles only a few times (compiling dominates
the run time on a small CPU machine).
"""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import scipy.linalg
import scipy.stats

from gan_jax import transport


def _rng(*seed):
    return np.random.default_rng([20251125, *seed])


def _problem(n, m, kind, seed=0):
    """A float32 OT problem (a, b, C) and its float64 copy with b rescaled to a's mass for POT."""
    rng = _rng(n, m, seed)
    if kind == "points":
        x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) * [1.5, 0.5] + [1.0, 0.0]
        cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    else:
        cost = rng.random((n, m))
    a, b = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(m))
    a32, b32, c32 = (v.astype(np.float32) for v in (a, b, cost))
    a64, b64, c64 = (v.astype(np.float64) for v in (a32, b32, c32))
    return (a32, b32, c32), (a64, b64 * a64.sum() / b64.sum(), c64)


def _directions(key, n_projections, d):
    """The directions documented by sliced_wasserstein: z / ‖z‖, z = jax.random.normal(key, (L, d))."""
    z = np.asarray(jax.random.normal(key, (n_projections, d)), np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# wasserstein_1d


@pytest.mark.parametrize("n, m, weighted", [(20, 33, True), (64, 200, False)])
def test_wasserstein_1d_matches_scipy_with_weights_and_unequal_sizes(n, m, weighted):
    rng = _rng(1)
    x, y = rng.normal(size=n), rng.normal(size=m) * 2 + 0.5
    wx, wy = (rng.random(n), rng.random(m)) if weighted else (None, None)
    got = transport.wasserstein_1d(x, y, 1, wx, wy)
    np.testing.assert_allclose(got, scipy.stats.wasserstein_distance(x, y, wx, wy), rtol=1e-5)


@pytest.mark.parametrize("p, weighted", [(2.0, True), (3.0, False)])
def test_wasserstein_1d_matches_pot_for_p(p, weighted):
    rng = _rng(2)
    x, y = rng.normal(size=20), rng.exponential(size=33)
    wx, wy = (rng.random(20), rng.random(33)) if weighted else (None, None)
    # POT's wasserstein_1d returns W_p^p; ours returns W_p.
    ref = ot.wasserstein_1d(x, y, None if wx is None else wx / wx.sum(), None if wy is None else wy / wy.sum(), p=p)
    np.testing.assert_allclose(transport.wasserstein_1d(x, y, p, wx, wy) ** p, ref, rtol=1e-5)


def test_wasserstein_1d_hand_worked_values():
    # Two atoms of mass ½ at 0 and 4 against one atom at 1: W1 = ½·1 + ½·3 = 2, W2² = ½·1² + ½·3² = 5.
    x, y = jnp.array([0.0, 4.0]), jnp.array([1.0])
    assert float(transport.wasserstein_1d(x, y)) == pytest.approx(2.0)
    assert float(transport.wasserstein_1d(x, y, 2)) == pytest.approx(np.sqrt(5.0))


def test_wasserstein_1d_gradient_is_sign_over_n():
    rng = _rng(3)
    x, y = rng.normal(size=20), rng.normal(size=20) + 0.3
    grad = jax.grad(transport.wasserstein_1d)(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    # Sorted samples are matched in order: dW1/dx_(i) = sign(x_(i) − y_(i)) / n.
    rank = np.argsort(np.argsort(x))
    expected = np.sign(np.sort(x)[rank] - np.sort(y)[rank]) / 20
    np.testing.assert_allclose(grad, expected, atol=1e-7)
    ties = jnp.array([0.0, 0.0, 1.0, 1.0, 2.0])
    assert float(transport.wasserstein_1d(ties, ties)) == 0.0
    assert float(jnp.sum(jnp.abs(jax.grad(transport.wasserstein_1d)(ties, ties)))) == 0.0


def test_wasserstein_1d_weight_gradient_matches_finite_differences():
    rng = _rng(2)  # the data of test_wasserstein_1d_matches_pot_for_p (same compiled program)
    x, y = rng.normal(size=20).astype(np.float32), rng.exponential(size=33).astype(np.float32)
    wx, wy = rng.random(20).astype(np.float32), rng.random(33).astype(np.float32)
    direction = rng.normal(size=20).astype(np.float32)
    f = lambda w: transport.wasserstein_1d(x, y, 2.0, w, wy)  # noqa: E731
    h = 1e-3
    numeric = (f(wx + h * direction) - f(wx - h * direction)) / (2 * h)
    grad = jax.grad(f)(jnp.asarray(wx))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(jnp.vdot(grad, direction), numeric, rtol=2e-2, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# sliced_wasserstein


@pytest.mark.parametrize("p, weighted", [(2, False), (1, True)])
def test_sliced_wasserstein_matches_pot_with_the_same_directions(p, weighted):
    rng = _rng(5)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(33, 3)) + 1.0
    wx, wy = (rng.random(20), rng.random(33)) if weighted else (None, None)
    key = jax.random.key(3)
    got = transport.sliced_wasserstein(x, y, key, n_projections=16, p=p, x_weights=wx, y_weights=wy)
    a, b = (None, None) if not weighted else (wx / wx.sum(), wy / wy.sum())
    ref = ot.sliced_wasserstein_distance(x, y, a, b, p=p, projections=_directions(key, 16, 3).T)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_sliced_wasserstein_gradient_matches_finite_differences():
    rng = _rng(5)  # the data of test_sliced_wasserstein_matches_pot_with_the_same_directions
    x, y = rng.normal(size=(20, 3)).astype(np.float32), (rng.normal(size=(33, 3)) + 1.0).astype(np.float32)
    f = lambda x: transport.sliced_wasserstein(x, y, jax.random.key(3), n_projections=16)  # noqa: E731
    direction = rng.normal(size=(20, 3)).astype(np.float32)
    h = 3e-4  # piecewise quadratic (the sorting permutations change): small steps, float32 noise ≈ 1e-3
    numeric = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(jax.grad(f)(jnp.asarray(x)), direction), numeric, rtol=2e-2)


def test_pmap_over_two_devices():
    rng = _rng(8)
    devices = jax.devices()[:2]
    assert len(devices) == 2
    x = jnp.asarray(rng.normal(size=(2, 20)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(2, 33)), jnp.float32)
    got = jax.pmap(transport.wasserstein_1d, devices=devices)(x, y)
    np.testing.assert_allclose(got, [scipy.stats.wasserstein_distance(x[i], y[i]) for i in range(2)], rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# emd


@pytest.mark.parametrize("n, m, kind", [(64, 64, "random"), (64, 64, "points"), (150, 120, "points")])
def test_emd_matches_pot(n, m, kind):
    (a, b, c), (a64, b64, c64) = _problem(n, m, kind)
    result = transport.emd(a, b, c)
    assert bool(result.converged) and result.n_iter.dtype == jnp.int32 and int(result.n_iter) > 0
    value, plan = result.value, np.asarray(result.plan, np.float64)
    np.testing.assert_allclose(value, ot.emd2(a64, b64, c64), rtol=1e-5)
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-6)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-6)
    assert plan.min() >= 0 and np.count_nonzero(plan) <= n + m - 1  # a vertex of the transport polytope
    np.testing.assert_allclose(np.sum(plan * c64), value, rtol=1e-6)


def test_emd_jit_of_vmap_over_a_batch_matches_pot():
    problems = [_problem(20, 30, kind, seed) for seed, kind in enumerate(("random", "points", "random"))]
    a, b, c = (jnp.stack([p[0][i] for p in problems]) for i in range(3))
    result = jax.jit(jax.vmap(transport.emd))(a, b, c)
    assert np.all(result.converged) and result.n_iter.shape == (3,) and np.all(result.n_iter > 0)
    values, plans = result.value, result.plan
    for ((a32, b32, _), ref), value, plan in zip(problems, values, np.asarray(plans, np.float64)):
        np.testing.assert_allclose(value, ot.emd2(*ref), rtol=1e-5)
        np.testing.assert_allclose(plan.sum(1), a32, atol=1e-6)
        np.testing.assert_allclose(plan.sum(0), b32, atol=1e-6)


def test_emd_plan_and_gradients_match_pot_plan_and_duals():
    (a, b, c), (a64, b64, c64) = _problem(64, 64, "points")
    ref_plan, log = ot.emd(a64, b64, c64, log=True)
    plan = transport.emd(a, b, c).plan
    np.testing.assert_allclose(plan, ref_plan, atol=1e-6)  # continuous random data: the optimum is unique
    grad_a, grad_b, grad_c = jax.grad(lambda a, b, c: transport.emd(a, b, c).value, argnums=(0, 1, 2))(a, b, c)
    np.testing.assert_allclose(grad_c, ref_plan, atol=1e-6)
    # Duals are unique up to u + k, v − k for non-degenerate data; both sides are centred.
    np.testing.assert_allclose(grad_a, log["u"] - log["u"].mean(), atol=1e-4)
    np.testing.assert_allclose(grad_b, log["v"] - log["v"].mean(), atol=1e-4)


def test_emd_degenerate_problems():
    rng = _rng(9)
    x = rng.normal(size=(64, 2))
    same = ((x[:, None] - x[None]) ** 2).sum(-1)
    value, plan, converged, _ = transport.emd(np.full(64, 1 / 64), np.full(64, 1 / 64), same)  # W = 0, identity
    assert bool(converged)
    assert float(value) == 0.0
    np.testing.assert_allclose(plan, np.eye(64) / 64, atol=1e-8)
    (a, b, c), _ = _problem(64, 64, "points")
    a, b = a.copy(), b.copy()
    a[[1, 5]], b[[0, 63]] = 0.0, 0.0  # zero weights
    a, b = a / a.sum(), b / b.sum()
    a64, b64 = a.astype(np.float64), b.astype(np.float64) * a.sum(dtype=np.float64) / b.sum(dtype=np.float64)
    value, plan, converged, _ = transport.emd(a, b, c)
    assert bool(converged)
    np.testing.assert_allclose(value, ot.emd2(a64, b64, c.astype(np.float64)), rtol=1e-5)
    assert np.all(np.asarray(plan)[[1, 5]] == 0) and np.all(np.asarray(plan)[:, [0, 63]] == 0)


def test_emd_reports_nan_when_max_iter_is_too_small():
    (a, b, c), _ = _problem(64, 64, "random")
    value, plan, converged, n_iter = transport.emd(a, b, c, max_iter=1)
    assert np.isnan(value)
    assert not bool(converged) and int(n_iter) == 1
    np.testing.assert_allclose(np.asarray(plan).sum(1), a, atol=1e-6)  # still a feasible plan


def test_emd_n_iter_is_the_number_of_pricing_steps_needed():
    (a, b, c), (a64, b64, c64) = _problem(64, 64, "random")  # the problem of test_emd_matches_pot
    needed = int(transport.emd(a, b, c).n_iter)
    # Capped at exactly n_iter pricing steps, the solve still finishes; one step fewer, it reports it.
    enough = transport.emd(a, b, c, max_iter=needed)
    assert bool(enough.converged) and int(enough.n_iter) == needed
    np.testing.assert_allclose(enough.value, ot.emd2(a64, b64, c64), rtol=1e-5)
    short = transport.emd(a, b, c, max_iter=needed - 1)
    assert not bool(short.converged) and int(short.n_iter) == needed - 1 and np.isnan(short.value)


# --------------------------------------------------------------------------------------------------
# wasserstein_p and the lecture's example


@pytest.mark.parametrize("theta", [-1.0, -0.3, 0.0, 0.5, 2.0])
def test_lecture_disjoint_lines(theta):
    rng = _rng(10)
    # p = (0, U[0,1]), q = (θ, U[0,1]). With the same uniforms every point moves horizontally by |θ|.
    u = rng.random(64)
    p_samples = np.stack([np.zeros(64), u], axis=1)
    q_same = np.stack([np.full(64, theta), u], axis=1)
    np.testing.assert_allclose(transport.wasserstein_p(p_samples, q_same, 1), abs(theta), atol=1e-6)
    # Independent uniforms: |θ| ≤ W1 ≤ |θ| + W1(u, u') (√(θ² + d²) ≥ |θ|; ≤ |θ| + |d| on the 1-D coupling).
    u2 = rng.random(64)
    w = float(transport.wasserstein_p(p_samples, np.stack([np.full(64, theta), u2], axis=1), 1))
    assert abs(theta) - 1e-6 <= w <= abs(theta) + scipy.stats.wasserstein_distance(u, u2) + 1e-6


@pytest.mark.parametrize("p", [1, 1.5, 2])
def test_wasserstein_p_matches_pot(p):
    rng = _rng(11)
    x, y = rng.normal(size=(64, 2)), rng.normal(size=(64, 2)) + [1.0, -0.5]
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    cost = ot.dist(x32.astype(np.float64), y32.astype(np.float64), metric="euclidean") ** p
    ref = ot.emd2(np.full(64, 1 / 64), np.full(64, 1 / 64), cost) ** (1 / p)
    np.testing.assert_allclose(transport.wasserstein_p(x32, y32, p), ref, rtol=1e-5)


def test_wasserstein_p_gradient_matches_the_pot_plan():
    rng = _rng(100)
    x, y = rng.normal(size=(64, 2)).astype(np.float32), (rng.normal(size=(64, 2)) + 1).astype(np.float32)
    # W2² = Σ γ_ij ‖x_i − y_j‖²  ⇒  ∂W2²/∂x_i = 2 Σ_j γ_ij (x_i − y_j) at the (unique) optimal plan γ.
    plan = ot.emd(np.full(64, 1 / 64), np.full(64, 1 / 64), ot.dist(x.astype(np.float64), y.astype(np.float64)))
    expected = 2 * (plan.sum(1)[:, None] * x - plan @ y)
    grad = jax.grad(lambda x: transport.wasserstein_p(x, y, 2) ** 2)(jnp.asarray(x))
    np.testing.assert_allclose(grad, expected, atol=1e-5)
    assert np.all(np.isfinite(jax.grad(lambda x: transport.wasserstein_p(x, x, 1))(jnp.asarray(x))))  # x_i = y_j


# --------------------------------------------------------------------------------------------------
# sinkhorn and sinkhorn_divergence


@pytest.mark.parametrize(
    "n, m, relative_eps, omega", [(5, 8, 0.1, 1.0), (64, 64, 0.1, 1.0), (64, 64, 0.01, 1.0), (64, 64, 0.01, 1.8)]
)
def test_sinkhorn_matches_pot(n, m, relative_eps, omega):
    (a, b, c), (a64, b64, c64) = _problem(n, m, "points")
    eps = relative_eps * float(np.median(c))
    result = transport.sinkhorn(a, b, c, eps, overrelaxation=omega)
    ref = ot.sinkhorn2(a64, b64, c64, eps, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
    np.testing.assert_allclose(result.value, ref, rtol=1e-4)
    plan = np.asarray(result.plan, np.float64)
    if relative_eps >= 0.1:
        assert bool(result.converged) and 0 < int(result.n_iter) < 10_000
    else:  # tol = 1e-6 is below the float32 floor ≈ 3e-7 / relative_eps (docstring): the cap is reported
        assert not bool(result.converged) and int(result.n_iter) == 10_000
    # marginal_error is that L1 row error, summed in float32 (rounding ≈ 1e-8 here).
    np.testing.assert_allclose(result.marginal_error, np.abs(plan.sum(1) - a).sum(), rtol=1e-2, atol=1e-7)
    # Columns: fitted by the last update, up to float32 rounding of exp((f + g − C)/ε), ≈ 1e-7·|C|/ε relative.
    np.testing.assert_allclose(plan.sum(0), b, rtol=10 * 1e-7 / relative_eps, atol=1e-7)
    # Rows: the stopping rule Σ|γ1 − a| ≤ tol = 1e-6 (then one column update), with the same rounding floor.
    assert np.abs(plan.sum(1) - a).sum() <= max(1e-6, 3e-7 / relative_eps)


def test_sinkhorn_regularized_value_and_its_gradient():
    rng = _rng(13)
    (a, b, c), (a64, b64, c64) = _problem(64, 64, "points")
    eps = 0.1 * float(np.median(c))
    ref_plan = ot.sinkhorn(a64, b64, c64, eps, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
    kl = np.sum(ref_plan * np.log(ref_plan / np.outer(a64, b64)))
    value, _, converged, _, _ = transport.sinkhorn(a, b, c, eps, regularized=True)
    assert bool(converged)
    np.testing.assert_allclose(value, np.sum(ref_plan * c64) + eps * kl, rtol=1e-4)
    # Danskin: ∂OT_ε/∂C = γ_ε exactly; check along a random direction by central differences.
    f = lambda c: transport.sinkhorn(a, b, c, eps, regularized=True).value  # noqa: E731
    direction = jnp.asarray(rng.normal(size=c.shape), jnp.float32)
    h = 1e-2
    numeric = (f(c + h * direction) - f(c - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(jax.grad(f)(jnp.asarray(c)), direction), numeric, rtol=1e-2, atol=1e-4)


def test_sinkhorn_approaches_emd_for_small_epsilon():
    (a, b, c), (a64, b64, c64) = _problem(64, 64, "points")
    exact = ot.emd2(a64, b64, c64)
    value, _, converged, _, _ = transport.sinkhorn(a, b, c, 1e-3 * float(np.median(c)), tol=1e-4)
    assert bool(converged)
    assert exact <= float(value) * (1 + 1e-5) and float(value) <= exact * 1.01


def test_sinkhorn_reports_whether_it_converged():
    (a, b, c), (a64, b64, c64) = _problem(64, 64, "points")  # a case of test_sinkhorn_matches_pot
    eps = 0.1 * float(np.median(c))
    ref = ot.sinkhorn2(a64, b64, c64, eps, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
    needed = int(transport.sinkhorn(a, b, c, eps).n_iter)
    # max_iter too small for tol: stopped at the cap, and said so (ε-scaling alone takes more iterations).
    capped = transport.sinkhorn(a, b, c, eps, max_iter=5)
    assert not bool(capped.converged) and int(capped.n_iter) == 5
    assert float(capped.marginal_error) > 1e-6 * a.sum()
    # n_iter is the count the stopping rule needed: capped there it converges, one fewer it does not.
    enough = transport.sinkhorn(a, b, c, eps, max_iter=needed)
    assert bool(enough.converged) and int(enough.n_iter) == needed
    np.testing.assert_allclose(enough.value, ref, rtol=1e-4)
    short = transport.sinkhorn(a, b, c, eps, max_iter=needed - 1)
    assert not bool(short.converged) and int(short.n_iter) == needed - 1


def test_sinkhorn_flags_under_jit_of_vmap():
    (a, b, c), (a64, b64, c64) = _problem(64, 64, "points")
    epsilons = np.array([0.1, 1e-3]) * float(np.median(c))  # converges in ~100 iterations; below the float32 floor
    result = jax.jit(jax.vmap(lambda eps: transport.sinkhorn(a, b, c, eps, max_iter=1000)))(epsilons)
    np.testing.assert_array_equal(result.converged, [True, False])
    assert 0 < int(result.n_iter[0]) < 1000 and int(result.n_iter[1]) == 1000
    ref = ot.sinkhorn2(a64, b64, c64, epsilons[0], method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
    np.testing.assert_allclose(result.value[0], ref, rtol=1e-4)


def test_sinkhorn_divergence_matches_pot_and_is_debiased():
    rng = _rng(14)
    x, y = rng.normal(size=(64, 2)).astype(np.float32), (rng.normal(size=(64, 2)) + 1).astype(np.float32)
    eps = 0.5

    def ot_eps(u, v):  # OT_ε from POT's plan, in float64
        c = ot.dist(u.astype(np.float64), v.astype(np.float64))
        w = np.full(64, 1 / 64)
        plan = ot.sinkhorn(w, w, c, eps, method="sinkhorn_log", numItermax=100_000, stopThr=1e-13)
        return np.sum(plan * c) + eps * np.sum(plan * np.log(plan / np.outer(w, w)))

    ref = ot_eps(x, y) - 0.5 * ot_eps(x, x) - 0.5 * ot_eps(y, y)
    got = transport.sinkhorn_divergence(x, y, eps)
    np.testing.assert_allclose(got.value, ref, rtol=1e-3)
    assert bool(got.converged) and 0 < int(got.n_iter) < 10_000
    debiased = transport.sinkhorn_divergence(x, x, eps)
    assert abs(float(debiased.value)) < 1e-5 and bool(debiased.converged)
    grad = jax.grad(lambda x: transport.sinkhorn_divergence(x, y, eps).value)(jnp.asarray(x))
    assert np.all(np.isfinite(grad))
    # n_iter is the largest count of the three solves: capped there, all finish; one fewer, one does not.
    enough = transport.sinkhorn_divergence(x, y, eps, max_iter=int(got.n_iter))
    assert bool(enough.converged) and int(enough.n_iter) == int(got.n_iter)
    np.testing.assert_allclose(enough.value, ref, rtol=1e-3)
    short = transport.sinkhorn_divergence(x, y, eps, max_iter=int(got.n_iter) - 1)
    assert not bool(short.converged) and int(short.n_iter) == int(got.n_iter) - 1


# --------------------------------------------------------------------------------------------------
# gaussian_w2


def test_gaussian_w2_one_dimensional_formula():
    m1, s1, m2, s2 = 0.3, 1.5, -1.2, 0.4
    got = transport.gaussian_w2(jnp.array([m1]), jnp.array([[s1**2]]), jnp.array([m2]), jnp.array([[s2**2]]))
    np.testing.assert_allclose(got**2, (m1 - m2) ** 2 + (s1 - s2) ** 2, rtol=1e-6)


def test_gaussian_w2_commuting_and_general_covariances():
    rng = _rng(15)
    # Diagonal covariances commute: W2² = ‖m1 − m2‖² + Σ(√λ1 − √λ2)².
    d1, d2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    m1, m2 = np.array([1.0, 0.0, 2.0]), np.zeros(3)
    got = transport.gaussian_w2(m1, np.diag(d1), m2, np.diag(d2))
    np.testing.assert_allclose(got**2, 5.0 + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2), rtol=1e-5)
    # General case against SciPy's sqrtm; the formula is symmetric in the two Gaussians.
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s1, s2 = a @ a.T + 0.1 * np.eye(3), b @ b.T
    root = scipy.linalg.sqrtm(s2)
    ref = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(root @ s1 @ root)))
    np.testing.assert_allclose(transport.gaussian_w2(m1, s1, m2, s2) ** 2, ref, rtol=1e-4)
    np.testing.assert_allclose(transport.gaussian_w2(m2, s2, m1, s1) ** 2, ref, rtol=1e-4)


def test_gaussian_w2_against_samples():
    rng = _rng(16)
    m1, m2 = np.array([0.0, 0.0]), np.array([3.0, -1.0])
    s1, s2 = np.array([[1.0, 0.5], [0.5, 1.0]]), np.array([[2.0, 0.0], [0.0, 0.5]])
    closed = float(transport.gaussian_w2(m1, s1, m2, s2))
    x = rng.multivariate_normal(m1, s1, size=1000)
    y = rng.multivariate_normal(m2, s2, size=1000)
    empirical = np.sqrt(ot.emd2(np.full(1000, 1e-3), np.full(1000, 1e-3), ot.dist(x, y)))
    # The empirical W2 of n = 1000 points in 2-D deviates by O(n^{-1/2}·log n) ≈ 0.1 here.
    assert abs(empirical - closed) < 0.15


def test_gaussian_w2_gradients_finite_and_matching_finite_differences():
    grad = jax.grad(lambda s1, s2: transport.gaussian_w2(jnp.zeros(3), s1, jnp.ones(3), s2), argnums=(0, 1))
    # Repeated (identity) and zero eigenvalues: the eigh-based derivative of S^{½} stays finite.
    assert all(np.all(np.isfinite(g)) for g in grad(jnp.eye(3), jnp.diag(jnp.array([1.0, 1.0, 0.0]))))
    rng = _rng(18)
    a = rng.normal(size=(3, 3))
    s1, s2 = (a @ a.T + np.eye(3)).astype(np.float32), 2.0 * np.eye(3, dtype=np.float32)
    direction = rng.normal(size=(3, 3)).astype(np.float32)
    direction = direction + direction.T
    f = lambda s: transport.gaussian_w2(np.zeros(3), s, np.ones(3), s2)  # noqa: E731
    h = 1e-2
    numeric = (f(s1 + h * direction) - f(s1 - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(grad(jnp.asarray(s1), jnp.asarray(s2))[0], direction), numeric, rtol=1e-2)


def test_gaussian_w2_jit_and_vmap():
    rng = _rng(18)
    means = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
    cov = jnp.eye(2)
    got = jax.jit(jax.vmap(transport.gaussian_w2, in_axes=(0, None, None, None)))(means, cov, jnp.zeros(2), cov)
    np.testing.assert_allclose(got, np.linalg.norm(means, axis=1), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Validation errors


def test_errors_name_the_problem():
    x, y = np.zeros((4, 2)), np.ones((5, 2))
    with pytest.raises(ValueError, match=r"p=0.5 .*p >= 1"):
        transport.wasserstein_1d(x[:, 0], y[:, 0], p=0.5)
    with pytest.raises(ValueError, match=r"p=0.5 .*p >= 1"):
        transport.wasserstein_p(x, y, p=0.5)
    with pytest.raises(ValueError, match=r"x.shape=\(4, 2\) and y.shape=\(5, 3\).*same dimension"):
        transport.sliced_wasserstein(x, np.ones((5, 3)), jax.random.key(0))
    with pytest.raises(ValueError, match=r"x_weights has shape \(3,\).*shape \(4,\)"):
        transport.wasserstein_1d(x[:, 0], y[:, 0], x_weights=np.ones(3))
    with pytest.raises(ValueError, match=r"y_weights has negative"):
        transport.wasserstein_1d(x[:, 0], y[:, 0], y_weights=np.array([1.0, -1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"a sums to 1 but b sums to 2; .*normalise"):
        transport.emd(np.full(4, 0.25), np.full(5, 0.4), np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"cost has shape \(4,\)"):
        transport.emd(np.full(4, 0.25), np.full(4, 0.25), np.ones(4))
    with pytest.raises(ValueError, match=r"b has shape \(4,\).*\(5,\)"):
        transport.sinkhorn(np.full(4, 0.25), np.full(4, 0.25), np.ones((4, 5)), 0.1)
    with pytest.raises(ValueError, match=r"overrelaxation=2.5.*\[1, 2\)"):
        transport.sinkhorn(np.full(4, 0.25), np.full(4, 0.25), np.ones((4, 4)), 0.1, overrelaxation=2.5)
    with pytest.raises(ValueError, match=r"epsilon=0.0.*> 0"):
        transport.sinkhorn(np.full(4, 0.25), np.full(4, 0.25), np.ones((4, 4)), 0.0)
    with pytest.raises(ValueError, match=r"covariances \(d, d\)"):
        transport.gaussian_w2(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
