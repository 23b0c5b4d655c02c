"""Sliced Wasserstein: W_p averaged over random 1-D projections."""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gan_jax.transport._checks import _as_points, _check_p, _check_weighted_points, _floats
from gan_jax.transport._gradients import _root
from gan_jax.transport.one_d import _wasserstein_1d_cost


@functools.partial(jax.jit, static_argnames=("n_projections", "p"))
def _sliced_wasserstein(x, y, key, wx, wy, n_projections: int, p: float) -> jax.Array:
    x, y, wx, wy = _floats(x, y, wx, wy)
    x, y = _as_points(x), _as_points(y)
    z = jax.random.normal(key, (n_projections, x.shape[1]), x.dtype)
    directions = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    costs = jax.vmap(lambda px, py: _wasserstein_1d_cost(px, py, p, wx, wy))(directions @ x.T, directions @ y.T)
    return _root(jnp.mean(costs), p)


def sliced_wasserstein(
    x: ArrayLike,
    y: ArrayLike,
    key: jax.Array,
    n_projections: int = 50,
    p: float = 2,
    x_weights: Optional[ArrayLike] = None,
    y_weights: Optional[ArrayLike] = None,
) -> jax.Array:
    """SW_p(μ, ν) = (1/L Σ_l W_p^p(θ_l#μ, θ_l#ν))^{1/p}, θ_l = z_l/‖z_l‖, z = jax.random.normal(key, (L, d)).

    The definition of POT's `ot.sliced_wasserstein_distance` (the same directions give the same value).
    Args:
      x, y: point clouds (n, d), (m, d).
      key: PRNG key for the L = n_projections random directions.
      x_weights, y_weights: non-negative weights, normalised here; None = uniform.
    """
    p = _check_p(p)
    if not isinstance(n_projections, (int, np.integer)) or n_projections < 1:
        raise ValueError(f"n_projections={n_projections!r}; give a positive int (e.g. 50).")
    _check_weighted_points(x, y, x_weights, y_weights)
    return _sliced_wasserstein(x, y, key, x_weights, y_weights, n_projections=int(n_projections), p=p)
