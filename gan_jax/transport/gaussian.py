"""Closed forms: W_2 between Gaussians."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from gan_jax.transport._checks import _floats
from gan_jax.transport._gradients import _root


@jax.custom_jvp
def _sqrtm_psd(s: jax.Array) -> jax.Array:
    """S^{½} = Q diag(√max(λ, 0)) Qᵀ for symmetric S = Q diag(λ) Qᵀ."""
    lam, q = jnp.linalg.eigh(s)
    return (q * jnp.sqrt(jnp.maximum(lam, 0.0))) @ q.T


@_sqrtm_psd.defjvp
def _sqrtm_psd_jvp(primals, tangents):
    """d(S^{½}) solves X·dX + dX·X = dS: in the eigenbasis dX_ij = (QᵀdSQ)_ij / (√λ_i + √λ_j).

    Stable for repeated eigenvalues (a sum, not a difference, in the denominator); 0 where both are 0.
    """
    (s,), (ds,) = primals, tangents
    lam, q = jnp.linalg.eigh(s)
    root = jnp.sqrt(jnp.maximum(lam, 0.0))
    denom = root[:, None] + root[None, :]
    positive = denom > 0
    inv = jnp.where(positive, 1.0 / jnp.where(positive, denom, 1.0), 0.0)
    ds = 0.5 * (ds + ds.T)
    return (q * root) @ q.T, q @ ((q.T @ ds @ q) * inv) @ q.T


@jax.jit
def _gaussian_w2(m1, S1, m2, S2) -> jax.Array:
    m1, S1, m2, S2 = _floats(m1, S1, m2, S2)
    S1, S2 = 0.5 * (S1 + S1.T), 0.5 * (S2 + S2.T)
    r2 = _sqrtm_psd(S2)
    cross = jnp.trace(_sqrtm_psd(r2 @ S1 @ r2))
    w2_sq = jnp.sum((m1 - m2) ** 2) + jnp.trace(S1) + jnp.trace(S2) - 2.0 * cross
    return _root(jnp.maximum(w2_sq, 0.0), 2.0)


def gaussian_w2(m1: ArrayLike, S1: ArrayLike, m2: ArrayLike, S2: ArrayLike) -> jax.Array:
    """W_2(N(m1, S1), N(m2, S2)) with W_2² = ‖m1 − m2‖² + tr(S1 + S2 − 2(S2^{½} S1 S2^{½})^{½}).

    Square roots of the symmetric PSD matrices via eigh, negative eigenvalues clipped to 0.
    Args: means (d,), covariances (d, d). Returns the distance W_2.
    """
    shapes = [np.shape(v) for v in (m1, S1, m2, S2)]
    d = shapes[0][0] if len(shapes[0]) == 1 else -1
    if shapes != [(d,), (d, d), (d,), (d, d)]:
        raise ValueError(
            f"got m1.shape={shapes[0]}, S1.shape={shapes[1]}, m2.shape={shapes[2]}, S2.shape={shapes[3]}; "
            "expected means (d,) and covariances (d, d) of one dimension d."
        )
    return _gaussian_w2(m1, S1, m2, S2)
