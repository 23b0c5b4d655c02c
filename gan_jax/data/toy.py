"""Toy 1-D/2-D distributions of the lecture and the GAN papers, chosen by name.

Each `ToyDistribution` is a frozen, hashable value (only static fields), so it can be closed over in
`jax.jit` or passed as a static argument. `sample(key, n)` is pure; `log_prob` exists where the
distribution has a density (Gaussian mixtures: exact, via logsumexp) and is `None` otherwise.

    dist = get("ring8", radius=1.0, std=0.01)      # VEEGAN/PacGAN ring
    x = batch(dist, key, step, 256)                # = dist.sample(fold_in(key, step), 256)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gan_jax.errors import GanJaxError
from gan_jax.registry import Registry

Sampler = Callable[["ToyDistribution", jax.Array, int], jax.Array]
LogDensity = Callable[["ToyDistribution", jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class ToyDistribution:
    """A named distribution on R^dim: `sample(key, n) -> (n, dim)`, `log_prob(x) -> (n,)` or None.

    Gaussian mixtures set `means` (component centres), `weights` (None = equal) and the isotropic
    component `std`; other distributions keep their parameters in `params` ((name, value) pairs).
    """

    name: str
    dim: int
    sampler: Sampler = dataclasses.field(repr=False)
    log_density: LogDensity | None = dataclasses.field(default=None, repr=False)
    means: tuple[tuple[float, ...], ...] | None = None
    weights: tuple[float, ...] | None = None
    std: float | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str) -> Any:
        """The value of parameter `name` of a non-mixture distribution (e.g. theta, noise); GanJaxError otherwise."""
        return Registry(f"{self.name} parameter", dict(self.params))[name]

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """x_i ~ p i.i.d., i = 1..n; n must be static under jit (static_argnums / functools.partial)."""
        try:
            n = operator.index(n)
        except TypeError:
            raise TypeError(
                f"n must be a static Python int, got {n!r}; under jit mark it static "
                "(jax.jit(dist.sample, static_argnums=1) or functools.partial(dist.sample, n=...))"
            ) from None
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return _jit_sample(self, key, n)

    @property
    def log_prob(self) -> Callable[[jax.Array], jax.Array] | None:
        """x (n, dim) -> log p(x) (n,); None where p has no density (swiss_roll, disjoint_lines)."""
        return None if self.log_density is None else self._log_prob

    def _log_prob(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{self.name}.log_prob expects x of shape (n, {self.dim}), got {x.shape}")
        return _jit_log_prob(self, x)

    def centers(self) -> jax.Array | None:
        """Mixture component centres (m, dim), or None for distributions that are not mixtures."""
        return None if self.means is None else jnp.asarray(self.means, jnp.float32)


# One compiled program per (distribution, n) in eager use; inlined when called inside an outer jit.
@functools.partial(jax.jit, static_argnums=(0, 2))
def _jit_sample(dist: ToyDistribution, key: jax.Array, n: int) -> jax.Array:
    return dist.sampler(dist, key, n)


@functools.partial(jax.jit, static_argnums=0)
def _jit_log_prob(dist: ToyDistribution, x: jax.Array) -> jax.Array:
    return dist.log_density(dist, x)


# --- Gaussian mixtures: one mechanism for ring, grid and the 1-D pair ------------------------------


def _mixture_log_weights(dist: ToyDistribution) -> jax.Array:
    m = len(dist.means)
    weights = (1.0 / m,) * m if dist.weights is None else dist.weights
    return jnp.log(jnp.asarray(weights, jnp.float32))


def _mixture_sample(dist: ToyDistribution, key: jax.Array, n: int) -> jax.Array:
    """x = μ_c + σ ε, c ~ Categorical(w), ε ~ N(0, I)."""
    component_key, noise_key = jax.random.split(key)
    c = jax.random.categorical(component_key, _mixture_log_weights(dist), shape=(n,))
    means = jnp.asarray(dist.means, jnp.float32)
    return means[c] + dist.std * jax.random.normal(noise_key, (n, dist.dim))


def _mixture_log_density(dist: ToyDistribution, x: jax.Array) -> jax.Array:
    """log p(x) = logsumexp_k [log w_k − ‖x − μ_k‖² / 2σ²] − (d/2) log(2πσ²)."""
    means = jnp.asarray(dist.means, jnp.float32)
    sq_dist = jnp.sum((x[:, None, :] - means[None, :, :]) ** 2, axis=-1)
    log_norm = 0.5 * dist.dim * math.log(2.0 * math.pi * dist.std**2)
    logits = _mixture_log_weights(dist) - sq_dist / (2.0 * dist.std**2)
    return jax.nn.logsumexp(logits, axis=-1) - log_norm


def _mixture(name: str, means: list[tuple[float, ...]], std: float, weights=None) -> ToyDistribution:
    return ToyDistribution(
        name=name,
        dim=len(means[0]),
        sampler=_mixture_sample,
        log_density=_mixture_log_density,
        means=tuple(tuple(float(v) for v in mu) for mu in means),
        weights=None if weights is None else tuple(float(w) for w in weights),
        std=float(std),
    )


# --- parameter checks -------------------------------------------------------------------------------


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise GanJaxError(f"{name} must be finite, got {value!r}")
    return float(value)


def _positive(name: str, value: Any) -> float:
    value = _real(name, value)
    if value <= 0:
        raise GanJaxError(f"{name} must be > 0, got {value!r}")
    return value


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise GanJaxError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


# --- the distributions ------------------------------------------------------------------------------


def ring8(radius: float = 2.0, std: float = 0.02, n_modes: int = 8) -> ToyDistribution:
    """p = (1/K) Σ_k N((r cos 2πk/K, r sin 2πk/K), σ² I), k = 0..K−1.

    Defaults r = 2, σ = 0.02, K = 8 as in the unrolled-GAN paper (Metz et al. 2016); the VEEGAN/PacGAN
    ring is radius=1.0, std=0.01. The angles are 2πk/K, not linspace(0, 2π, K) (which repeats 0 = 2π).
    """
    radius, std, n_modes = _positive("radius", radius), _positive("std", std), _count("n_modes", n_modes)
    angles = [2.0 * math.pi * k / n_modes for k in range(n_modes)]
    return _mixture("ring8", [(radius * math.cos(a), radius * math.sin(a)) for a in angles], std)


def grid25(spacing: float = 2.0, std: float = 0.05, side: int = 5) -> ToyDistribution:
    """p = (1/S²) Σ_{i,j} N((s·(i − (S−1)/2), s·(j − (S−1)/2)), σ² I), i, j = 0..S−1.

    Defaults s = 2, σ = 0.05, S = 5: means on {−4, −2, 0, 2, 4}² (VEEGAN / PacGAN benchmark).
    """
    spacing, std, side = _positive("spacing", spacing), _positive("std", std), _count("side", side)
    axis = [spacing * (i - (side - 1) / 2.0) for i in range(side)]
    return _mixture("grid25", [(a, b) for a in axis for b in axis], std)


def two_gaussians_1d(
    means: tuple[float, float] = (-2.0, 2.0),
    std: float = 0.5,
    weights: tuple[float, float] = (0.5, 0.5),
) -> ToyDistribution:
    """p = w₁ N(μ₁, σ²) + w₂ N(μ₂, σ²) on R; defaults μ = (−2, 2), σ = 0.5, w = (½, ½).

    The target for mode covering (forward KL) vs mode seeking (reverse KL).
    """
    std = _positive("std", std)
    if len(means) != 2 or len(weights) != 2:
        raise GanJaxError(f"means and weights must have 2 entries, got means={means!r}, weights={weights!r}")
    means = tuple(_real("means", m) for m in means)
    weights = tuple(_positive("weights", w) for w in weights)
    if abs(sum(weights) - 1.0) > 1e-6:
        raise GanJaxError(f"weights must sum to 1, got {weights!r} (sum {sum(weights)})")
    return _mixture("two_gaussians_1d", [(m,) for m in means], std, weights)


def _swiss_roll_sample(dist: ToyDistribution, key: jax.Array, n: int) -> jax.Array:
    """x = (t cos t + η ε₁, t sin t + η ε₂) / scale, t ~ U[1.5π, 4.5π], ε ~ N(0, I)."""
    t_key, noise_key = jax.random.split(key)
    t = 1.5 * jnp.pi * (1.0 + 2.0 * jax.random.uniform(t_key, (n,)))
    curve = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1)
    noise = dist.param("noise") * jax.random.normal(noise_key, (n, 2))
    return (curve + noise) / dist.param("scale")


def swiss_roll(noise: float = 0.25, scale: float = 7.5) -> ToyDistribution:
    """x = (t cos t, t sin t)/scale + noise/scale · ε, t ~ U[1.5π, 4.5π]; no closed-form density.

    The 2-D slice of scikit-learn's make_swiss_roll; noise 0.25 and scale 7.5 as in the WGAN-GP toy
    experiments (Gulrajani et al. 2017).
    """
    noise, scale = _real("noise", noise), _positive("scale", scale)
    if noise < 0:
        raise GanJaxError(f"noise must be >= 0, got {noise!r}")
    return ToyDistribution(
        name="swiss_roll", dim=2, sampler=_swiss_roll_sample, params=(("noise", noise), ("scale", scale))
    )


def _disjoint_lines_sample(dist: ToyDistribution, key: jax.Array, n: int) -> jax.Array:
    """x = (θ, y), y ~ U[0, 1]."""
    y = jax.random.uniform(key, (n,))
    return jnp.stack([jnp.full((n,), dist.param("theta"), jnp.float32), y], axis=1)


def disjoint_lines(theta: float = 0.0) -> ToyDistribution:
    """q_θ = δ_θ ⊗ U[0, 1] on R²: the vertical segment at x = θ. Singular, so log_prob is None.

    With p = q_0, KL(p‖q_θ) = ∞ and JSD = log 2 for θ ≠ 0, while W₁(p, q_θ) = |θ|.
    """
    return ToyDistribution(
        name="disjoint_lines", dim=2, sampler=_disjoint_lines_sample, params=(("theta", _real("theta", theta)),)
    )


_REGISTRY: Registry[Callable[..., ToyDistribution]] = Registry("toy distribution", {
    "ring8": ring8,
    "grid25": grid25,
    "swiss_roll": swiss_roll,
    "two_gaussians_1d": two_gaussians_1d,
    "disjoint_lines": disjoint_lines,
})


def names() -> tuple[str, ...]:
    """The registered distribution names, in registration order."""
    return _REGISTRY.names()


def get(name: str, **kwargs: Any) -> ToyDistribution:
    """_REGISTRY[name](**kwargs): the distribution `name` with its parameters (see each factory's defaults).

    GanJaxError for an unknown name or parameter name, or a parameter out of its range (TypeError: not a number).
    """
    factory = _REGISTRY[name]
    valid = tuple(inspect.signature(factory).parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise GanJaxError(f"unknown parameter(s) {unknown} for {name!r}; valid parameters: {', '.join(valid)}")
    return factory(**kwargs)


def batch(dist: ToyDistribution, key: jax.Array, step: jax.Array | int, n: int) -> jax.Array:
    """x_step = dist.sample(fold_in(key, step), n): pure in (key, step); step may be traced, n static."""
    return dist.sample(jax.random.fold_in(key, step), n)
