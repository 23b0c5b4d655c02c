"""Divergences between distributions, as pure jittable array functions.

* KL, reverse KL, Jensen–Shannon and total variation between discrete distributions: probability
  vectors along the last axis, or densities sampled on a uniform grid with cell size `dx` so that
  Σ p · dx ≈ 1. Leading axes are batch axes: shape (..., k) → (...). Zeros are safe: 0·log 0 = 0,
  KL = +inf where p > 0 = q, and gradients are finite wherever the value is.
* The same divergences from log-densities (`*_from_logs`), which do not underflow in the tails; and
  `grid_divergence`, which evaluates one of them between two 1-D densities on a grid.
* Gaussian closed forms (univariate and multivariate KL), Gaussian and Gaussian-mixture densities.
* The GAN objective on discrete distributions: optimal discriminator D* = p_data/(p_data + p_model)
  and V(G, D); at D = D*, V = 2·JSD − 2·log 2.

Logs are natural (nats). Divergences are chosen by name from one registry, `DIVERGENCES`: `get(name)`, `names()`.
The array functions are `jax.jit`-compiled (shape checks run once, at trace time) and compose with
`jit`, `grad`, `vmap` and `pmap`.
"""

import math
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from gan_jax.registry import Registry

_LOG2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)

FromLogs = Callable[..., jax.Array]


# --------------------------------------------------------------------------------------------------
# Input checks and safe elementwise pieces.


def _as_float(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.float32)


def _same_shape(**arrays: ArrayLike) -> tuple[jax.Array, ...]:
    """Arrays as floats, checked to share one shape with at least one (support) axis."""
    arrays = {name: _as_float(a) for name, a in arrays.items()}
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        got = ", ".join(f"{name}.shape={shape}" for name, shape in shapes.items())
        raise ValueError(f"{' and '.join(shapes)} must have the same shape (support on the last axis); got {got}.")
    shape = next(iter(shapes.values()))
    if not shape:
        raise ValueError(
            f"{' and '.join(shapes)} are scalars (shape ()); give distributions with the support on the "
            "last axis, shape (..., k)."
        )
    return tuple(arrays.values())


def safe_log(p: jax.Array) -> jax.Array:
    """log p, with log 0 = −inf and a finite (zero) gradient at p = 0 (double where)."""
    positive = p > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, p, 1.0)), -jnp.inf)


def _xlogy(x: jax.Array, y: jax.Array) -> jax.Array:
    """x · log y with 0 · log y = 0 for every y ≥ 0, −inf where x > 0 = y; gradients finite elsewhere."""
    used = x != 0
    ok = used & (y > 0)
    return jnp.where(ok, x * jnp.log(jnp.where(ok, y, 1.0)), jnp.where(used, -jnp.inf, 0.0))


def _sum_cells(terms: jax.Array, dx: ArrayLike) -> jax.Array:
    return jnp.sum(terms, axis=-1) * dx


def _kl_terms(p: jax.Array, log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """p · (log p − log q) per cell: 0 where p = 0, +inf where p > 0 = q."""
    on_p = log_p > -jnp.inf
    ok = on_p & (log_q > -jnp.inf)
    # Double where: masked cells see finite stand-ins, so their (zeroed) gradients stay finite.
    lp = jnp.where(ok, log_p, 0.0)
    lq = jnp.where(ok, log_q, 0.0)
    return jnp.where(ok, p * (lp - lq), jnp.where(on_p, jnp.inf, 0.0))


def _js_terms(p: jax.Array, log_p: jax.Array, q: jax.Array, log_q: jax.Array) -> jax.Array:
    """½ p log(p/m) + ½ q log(q/m) per cell, m = ½(p+q)."""

    def half(a, log_a, log_b):
        # a log(a/m) = a (log 2 − log(1 + b/a)) = a (log 2 − softplus(log b − log a)): exactly a·log 2
        # where b = 0, never above it, and free of log(0).
        on_a = log_a > -jnp.inf
        la = jnp.where(on_a, log_a, 0.0)
        lb = jnp.where(on_a, log_b, 0.0)
        return jnp.where(on_a, a * (_LOG2 - jax.nn.softplus(lb - la)), 0.0)

    return 0.5 * (half(p, log_p, log_q) + half(q, log_q, log_p))


# --------------------------------------------------------------------------------------------------
# Divergences from log-densities.


@jax.jit
def kl_from_logs(log_p: ArrayLike, log_q: ArrayLike, dx: ArrayLike = 1.0) -> jax.Array:
    """KL(p‖q) = Σ exp(log p) · (log p − log q) · dx over the last axis; log p = −inf cells add 0."""
    log_p, log_q = _same_shape(log_p=log_p, log_q=log_q)
    return _sum_cells(_kl_terms(jnp.exp(log_p), log_p, log_q), dx)


@jax.jit
def reverse_kl_from_logs(log_p: ArrayLike, log_q: ArrayLike, dx: ArrayLike = 1.0) -> jax.Array:
    """KL(q‖p) = kl_from_logs(log_q, log_p, dx): the mode-seeking direction when q is the model.

    +inf where log p = −inf at a cell with log q > −inf (the model puts mass where the data has none).
    """
    return kl_from_logs(log_q, log_p, dx)


@jax.jit
def js_from_logs(log_p: ArrayLike, log_q: ArrayLike, dx: ArrayLike = 1.0) -> jax.Array:
    """JSD(p, q) = ½KL(p‖m) + ½KL(q‖m), m = ½(p+q), from log p and log q; in [0, log 2]."""
    log_p, log_q = _same_shape(log_p=log_p, log_q=log_q)
    return _sum_cells(_js_terms(jnp.exp(log_p), log_p, jnp.exp(log_q), log_q), dx)


@jax.jit
def total_variation_from_logs(log_p: ArrayLike, log_q: ArrayLike, dx: ArrayLike = 1.0) -> jax.Array:
    """TV(p, q) = ½ Σ |exp(log p) − exp(log q)| · dx."""
    log_p, log_q = _same_shape(log_p=log_p, log_q=log_q)
    return total_variation(jnp.exp(log_p), jnp.exp(log_q), dx)


# --------------------------------------------------------------------------------------------------
# Divergences from probabilities (or densities on a grid).


@jax.jit
def kl(p: ArrayLike, q: ArrayLike, dx: ArrayLike = 1.0) -> jax.Array:
    """KL(p‖q) = Σ p log(p/q) · dx over the last axis; 0·log 0 = 0, +inf if p > 0 where q = 0."""
    p, q = _same_shape(p=p, q=q)
    return _sum_cells(_kl_terms(p, safe_log(p), safe_log(q)), dx)


@jax.jit
def reverse_kl(p: ArrayLike, q: ArrayLike, dx: ArrayLike = 1.0) -> jax.Array:
    """KL(q‖p) = kl(q, p, dx): the mode-seeking direction when q is the model."""
    return kl(q, p, dx)


@jax.jit
def js(p: ArrayLike, q: ArrayLike, dx: ArrayLike = 1.0) -> jax.Array:
    """JSD(p, q) = ½KL(p‖m) + ½KL(q‖m), m = ½(p+q); finite, in [0, log 2], = log 2 on disjoint supports."""
    p, q = _same_shape(p=p, q=q)
    return _sum_cells(_js_terms(p, safe_log(p), q, safe_log(q)), dx)


@jax.jit
def total_variation(p: ArrayLike, q: ArrayLike, dx: ArrayLike = 1.0) -> jax.Array:
    """TV(p, q) = ½ Σ |p − q| · dx over the last axis; in [0, 1] for normalised p, q."""
    p, q = _same_shape(p=p, q=q)
    return _sum_cells(0.5 * jnp.abs(p - q), dx)


# --------------------------------------------------------------------------------------------------
# Registry.


class Divergence(NamedTuple):
    """A named divergence: from_probs(p, q, dx=1.0) and from_logs(log_p, log_q, dx=1.0)."""

    name: str
    from_probs: Callable[..., jax.Array]
    from_logs: FromLogs


DIVERGENCES: Registry[Divergence] = Registry("divergence", {d.name: d for d in (
    Divergence("kl", kl, kl_from_logs),
    Divergence("reverse_kl", reverse_kl, reverse_kl_from_logs),
    Divergence("js", js, js_from_logs),
    Divergence("total_variation", total_variation, total_variation_from_logs),
)})
get = DIVERGENCES.get  # get(name) -> Divergence; ValueError "unknown divergence 'x'; valid names: ..." otherwise
names = DIVERGENCES.names  # names() -> the registered names, in the order above


# --------------------------------------------------------------------------------------------------
# Gaussian closed forms and densities.


@jax.jit
def gaussian_kl(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> jax.Array:
    """KL(N(μ1,σ1²)‖N(μ2,σ2²)) = log(σ2/σ1) + (σ1² + (μ1−μ2)²)/(2σ2²) − ½ (broadcasts)."""
    mu1, sigma1, mu2, sigma2 = map(_as_float, (mu1, sigma1, mu2, sigma2))
    return jnp.log(sigma2) - jnp.log(sigma1) + (sigma1**2 + (mu1 - mu2) ** 2) / (2.0 * sigma2**2) - 0.5


@jax.jit
def gaussian_kl_mvn(m1: ArrayLike, S1: ArrayLike, m2: ArrayLike, S2: ArrayLike) -> jax.Array:
    """KL(N(m1,S1)‖N(m2,S2)) = ½[tr(S2⁻¹S1) + (m2−m1)ᵀS2⁻¹(m2−m1) − k + log det S2 − log det S1].

    Means (..., k), covariances (..., k, k), symmetric positive definite; computed with Cholesky
    factors and triangular solves (no inverse). Batch axes broadcast; returns shape (...).
    """
    m1, S1, m2, S2 = map(_as_float, (m1, S1, m2, S2))
    if m1.ndim == 0 or m1.shape[-1:] != m2.shape[-1:]:
        raise ValueError(
            f"m1 and m2 must be vectors (..., k) of one length k; got m1.shape={m1.shape}, m2.shape={m2.shape}."
        )
    k = m1.shape[-1]
    for name, S in (("S1", S1), ("S2", S2)):
        if S.shape[-2:] != (k, k):
            raise ValueError(
                f"{name} must have shape (..., {k}, {k}) to match the means (k={k}); got {name}.shape={S.shape}."
            )
    L1 = jnp.linalg.cholesky(S1)
    L2 = jnp.linalg.cholesky(S2)
    batch = jnp.broadcast_shapes(m1.shape[:-1], m2.shape[:-1], S1.shape[:-2], S2.shape[:-2])
    L1 = jnp.broadcast_to(L1, batch + (k, k))
    L2 = jnp.broadcast_to(L2, batch + (k, k))
    diff = jnp.broadcast_to(m2 - m1, batch + (k,))
    A = jax.scipy.linalg.solve_triangular(L2, L1, lower=True)  # L2⁻¹L1: tr(S2⁻¹S1) = ‖L2⁻¹L1‖²_F
    z = jax.scipy.linalg.solve_triangular(L2, diff[..., None], lower=True)[..., 0]
    log_diag = [jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)) for L in (L1, L2)]  # log det S = 2 Σ log diag L
    logdet_ratio = 2.0 * jnp.sum(log_diag[1] - log_diag[0], axis=-1)
    return 0.5 * (jnp.sum(A**2, axis=(-2, -1)) + jnp.sum(z**2, axis=-1) - k + logdet_ratio)


@jax.jit
def gaussian_log_pdf(x: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> jax.Array:
    """log N(x; μ, σ²) = −½((x−μ)/σ)² − log σ − ½ log 2π (broadcasts)."""
    x, mu, sigma = map(_as_float, (x, mu, sigma))
    return -0.5 * ((x - mu) / sigma) ** 2 - jnp.log(sigma) - 0.5 * _LOG_2PI


@jax.jit
def gaussian_pdf(x: ArrayLike, mu: ArrayLike, sigma: ArrayLike) -> jax.Array:
    """N(x; μ, σ²) = exp(−½((x−μ)/σ)²) / (σ√(2π))."""
    return jnp.exp(gaussian_log_pdf(x, mu, sigma))


@jax.jit
def gaussian_mixture_log_pdf(x: ArrayLike, weights: ArrayLike, mus: ArrayLike, sigmas: ArrayLike) -> jax.Array:
    """log Σ_j w_j N(x; μ_j, σ_j²) via logsumexp; components (k,), x any shape, result shape of x."""
    weights, mus, sigmas = _same_shape(weights=weights, mus=mus, sigmas=sigmas)
    if weights.ndim != 1:
        raise ValueError(f"weights, mus and sigmas must be 1-D, one entry per component; got shape {weights.shape}.")
    x = _as_float(x)
    return jax.nn.logsumexp(gaussian_log_pdf(x[..., None], mus, sigmas), axis=-1, b=weights)


@jax.jit
def gaussian_mixture_pdf(x: ArrayLike, weights: ArrayLike, mus: ArrayLike, sigmas: ArrayLike) -> jax.Array:
    """Σ_j w_j N(x; μ_j, σ_j²) = exp(gaussian_mixture_log_pdf)."""
    return jnp.exp(gaussian_mixture_log_pdf(x, weights, mus, sigmas))


def grid_divergence(
    divergence: Union[str, FromLogs],
    log_p_fn: Callable[[jax.Array], jax.Array],
    log_q_fn: Callable[[jax.Array], jax.Array],
    grid: ArrayLike,
) -> jax.Array:
    """D(p, q) ≈ divergence.from_logs(log p(grid), log q(grid), dx) on a uniform 1-D grid (Riemann sum).

    Args:
      divergence: a registered name (see `names()`) or a function (log_p, log_q, dx) -> value.
      log_p_fn, log_q_fn: log-densities, evaluated elementwise on the grid, e.g.
        `lambda x: gaussian_log_pdf(x, mu, sigma)` and
        `lambda x: gaussian_mixture_log_pdf(x, weights, mus, sigmas)`.
      grid: evenly spaced points (n,), n ≥ 2, covering (nearly) all mass of p and q; dx is its spacing.

    Differentiable in whatever the log-density functions close over (e.g. μ, σ of a fitted Gaussian).
    """
    from_logs = get(divergence).from_logs if isinstance(divergence, str) else divergence
    grid = _as_float(grid)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"grid must be 1-D with at least 2 evenly spaced points; got shape {grid.shape}.")
    dx = (grid[-1] - grid[0]) / (grid.shape[0] - 1)
    return from_logs(log_p_fn(grid), log_q_fn(grid), dx)


# --------------------------------------------------------------------------------------------------
# The GAN objective on discrete distributions.


@jax.jit
def optimal_discriminator(p_data: ArrayLike, p_model: ArrayLike) -> jax.Array:
    """D*(x) = p_data(x) / (p_data(x) + p_model(x)); ½ where both are 0 (finite gradients there)."""
    p_data, p_model = _same_shape(p_data=p_data, p_model=p_model)
    total = p_data + p_model
    some = total > 0
    return jnp.where(some, p_data / jnp.where(some, total, 1.0), 0.5)


@jax.jit
def gan_value(p_data: ArrayLike, p_model: ArrayLike, d: ArrayLike, dx: ArrayLike = 1.0) -> jax.Array:
    """V(G, D) = Σ p_data log D · dx + Σ p_model log(1 − D) · dx; 0·log 0 = 0. V(G, D*) = 2·JSD − 2·log 2."""
    p_data, p_model, d = _same_shape(p_data=p_data, p_model=p_model, d=d)
    return _sum_cells(_xlogy(p_data, d) + _xlogy(p_model, 1.0 - d), dx)
