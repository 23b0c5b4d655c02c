"""Input checks shared by the transport solvers (private), and the conversions every solver starts with.

Shape checks run at trace time; value checks (negative weights, unequal masses) run when the values are
concrete, i.e. outside `jit`.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def _concrete(x: ArrayLike) -> Optional[np.ndarray]:
    """The values of x as NumPy, or None when x is traced (inside jit / vmap / grad)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_p(p: float) -> float:
    if isinstance(p, jax.Array) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p must be a Python number (it fixes the formula at trace time); got {p!r}.")
    if not p >= 1:
        raise ValueError(f"p={p} is not allowed: W_p is a distance only for p >= 1; pass p >= 1 (e.g. p=1 or p=2).")
    return float(p)


def _check_points(x: ArrayLike, y: ArrayLike) -> tuple[int, int]:
    """Point clouds x (n, d), y (m, d), or 1-D samples read as d = 1; returns (n, m)."""
    sx, sy = np.shape(x), np.shape(y)
    dx, dy = (sx[1:] or (1,)), (sy[1:] or (1,))
    if len(sx) not in (1, 2) or len(sy) not in (1, 2) or dx != dy or 0 in (sx[0], sy[0]):
        raise ValueError(
            f"x.shape={sx} and y.shape={sy} must be point clouds (n, d) and (m, d) with the same dimension d "
            "and at least one point each."
        )
    return sx[0], sy[0]


def _check_weights(w: Optional[ArrayLike], n: int, name: str) -> Optional[np.ndarray]:
    """Weights must have shape (n,); concrete ones must be finite, ≥ 0, with a positive sum. Returns them."""
    if w is None:
        return None
    if np.shape(w) != (n,):
        raise ValueError(f"{name} has shape {np.shape(w)}; give one weight per point: shape ({n},).")
    values = _concrete(w)
    if values is not None:
        if np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError(
                f"{name} has negative or non-finite entries (min {values.min()}); weights must be finite and >= 0."
            )
        if not values.sum() > 0:
            raise ValueError(f"{name} sums to {values.sum()}; give at least one positive weight.")
    return values


def _check_weighted_points(
    x: ArrayLike, y: ArrayLike, x_weights: Optional[ArrayLike], y_weights: Optional[ArrayLike]
) -> None:
    """Point clouds x (n, d), y (m, d) (see `_check_points`) with optional weights (n,), (m,)."""
    n, m = _check_points(x, y)
    _check_weights(x_weights, n, "x_weights")
    _check_weights(y_weights, m, "y_weights")


def _check_marginals(a: ArrayLike, b: ArrayLike, cost: ArrayLike) -> tuple[int, int]:
    """Marginals a (n,), b (m,) for a cost (n, m); concrete masses must agree. Returns (n, m)."""
    shape = np.shape(cost)
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"cost has shape {shape}; expected a matrix (n, m) with n, m >= 1.")
    values_a, values_b = _check_weights(a, shape[0], "a"), _check_weights(b, shape[1], "b")
    if values_a is not None and values_b is not None:
        mass_a, mass_b = values_a.sum(dtype=np.float64), values_b.sum(dtype=np.float64)
        if not np.isclose(mass_a, mass_b, rtol=1e-5, atol=0.0):
            raise ValueError(
                f"a sums to {mass_a:.7g} but b sums to {mass_b:.7g}; balanced OT needs equal masses: normalise "
                "both, e.g. a / a.sum() and b / b.sum()."
            )
    return shape


def _floats(*arrays: Optional[ArrayLike]) -> tuple[Optional[jax.Array], ...]:
    """Arrays in one floating dtype (float32 unless an input is wider); None stays None."""
    present = [jnp.asarray(v) for v in arrays if v is not None]
    dtype = jnp.result_type(jnp.float32, *(v.dtype for v in present if jnp.issubdtype(v.dtype, jnp.inexact)))
    return tuple(None if v is None else jnp.asarray(v, dtype) for v in arrays)


def _as_points(x: jax.Array) -> jax.Array:
    return x[:, None] if x.ndim == 1 else x


def _uniform(n: int, dtype) -> jax.Array:
    return jnp.full((n,), 1.0 / n, dtype)
