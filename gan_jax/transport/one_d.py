"""Optimal transport on the line: exact W_p from sorted samples (quantile functions)."""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gan_jax.transport._checks import _check_p, _check_weights, _floats, _uniform
from gan_jax.transport._gradients import _root


def _abs(d: jax.Array) -> jax.Array:
    """|d| with derivative sign(d), i.e. 0 at d = 0 (jnp.abs takes 1 there): W is not differentiable
    where matched samples coincide, and 0 is the subgradient that keeps equal inputs at a stationary point."""
    return jnp.sign(d) * d


def _order_key(x: jax.Array) -> jax.Array:
    """Signed integers with the order of the floats x (IEEE bits, magnitude bits flipped when negative).

    The map is its own inverse. XLA sorts a single integer operand with a plain comparison, 5–10× faster
    on CPU than a float sort, whose comparator orders NaNs (measured at n = 4096, 2-core CPU).
    """
    int_type = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[x.dtype.itemsize]
    bits = lax.bitcast_convert_type(x, int_type)
    return jnp.where(bits < 0, bits ^ jnp.iinfo(int_type).max, bits)


@jax.custom_jvp
def _sort(x: jax.Array) -> jax.Array:
    """x sorted along the last axis (NaN-free input)."""
    return lax.bitcast_convert_type(_order_key(jnp.sort(_order_key(x), axis=-1)), x.dtype)


@_sort.defjvp
def _sort_jvp(primals, tangents):
    """Tangents follow the sorting permutation (computed only when differentiating)."""
    (x,), (t,) = primals, tangents
    order = jnp.argsort(x, axis=-1)
    return jnp.take_along_axis(x, order, axis=-1), jnp.take_along_axis(t, order, axis=-1)


@functools.lru_cache(maxsize=64)
def _uniform_quantile_grid(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells of [0, 1] cut at {i/n} ∪ {j/m}: lengths and the sample index of each quantile function.

    i/n and j/m are correctly rounded, so equal fractions compare equal and the grid is exact.
    """
    cdf_x, cdf_y = np.arange(1, n + 1) / n, np.arange(1, m + 1) / m
    levels = np.union1d(cdf_x, cdf_y)
    lengths = np.diff(levels, prepend=0.0)
    ix = np.minimum(np.searchsorted(cdf_x, levels), n - 1)
    iy = np.minimum(np.searchsorted(cdf_y, levels), m - 1)
    return lengths, ix, iy


def _wasserstein_1d_cost(x: jax.Array, y: jax.Array, p: float, wx: Optional[jax.Array], wy: Optional[jax.Array]):
    """W_p^p = ∫₀¹ |F⁻¹(t) − G⁻¹(t)|^p dt on the cells between the levels of the two step CDFs."""
    n, m = x.shape[0], y.shape[0]
    if wx is None and wy is None:
        lengths, ix, iy = _uniform_quantile_grid(n, m)
        return jnp.sum(jnp.asarray(lengths, x.dtype) * _abs(_sort(x)[ix] - _sort(y)[iy]) ** p)
    wx = _uniform(n, x.dtype) if wx is None else wx
    wy = _uniform(m, y.dtype) if wy is None else wy
    ox, oy = jnp.argsort(x), jnp.argsort(y)
    xs, ys = x[ox], y[oy]
    cdf_x = jnp.cumsum(wx[ox]) / jnp.sum(wx)
    cdf_y = jnp.cumsum(wy[oy]) / jnp.sum(wy)
    levels = _sort(jnp.concatenate([cdf_x, cdf_y]))
    lengths = jnp.diff(levels, prepend=jnp.zeros((1,), levels.dtype))
    ix = jnp.minimum(jnp.searchsorted(lax.stop_gradient(cdf_x), lax.stop_gradient(levels)), n - 1)
    iy = jnp.minimum(jnp.searchsorted(lax.stop_gradient(cdf_y), lax.stop_gradient(levels)), m - 1)
    return jnp.sum(lengths * _abs(xs[ix] - ys[iy]) ** p)


@functools.partial(jax.jit, static_argnames=("p",))
def _wasserstein_1d(x, y, wx, wy, p: float) -> jax.Array:
    x, y, wx, wy = _floats(x, y, wx, wy)
    return _root(_wasserstein_1d_cost(x, y, p, wx, wy), p)


def wasserstein_1d(
    x: ArrayLike,
    y: ArrayLike,
    p: float = 1,
    x_weights: Optional[ArrayLike] = None,
    y_weights: Optional[ArrayLike] = None,
) -> jax.Array:
    """W_p(μ, ν) = (∫₀¹ |F⁻¹(t) − G⁻¹(t)|^p dt)^{1/p} between weighted 1-D samples (exact, by sorting).

    Args:
      x, y: samples, shapes (n,) and (m,); n and m may differ.
      p: order, p >= 1.
      x_weights, y_weights: non-negative weights (n,), (m,), normalised here; None = uniform.
    Returns: the distance W_p (the same value as `scipy.stats.wasserstein_distance` for p = 1).
    """
    p = _check_p(p)
    if len(np.shape(x)) != 1 or len(np.shape(y)) != 1 or 0 in (np.size(x), np.size(y)):
        raise ValueError(
            f"x.shape={np.shape(x)} and y.shape={np.shape(y)} must be non-empty 1-D samples (n,) and (m,)."
        )
    _check_weights(x_weights, np.shape(x)[0], "x_weights")
    _check_weights(y_weights, np.shape(y)[0], "y_weights")
    return _wasserstein_1d(x, y, x_weights, y_weights, p=p)
