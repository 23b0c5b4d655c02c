"""Pieces with chosen derivatives (private): roots and ground costs with finite gradients at 0, and the
envelope-theorem gradient shared by the plan-based solvers (`emd`, `sinkhorn`)."""

import functools
import inspect
from typing import Callable

import jax
import jax.numpy as jnp


def _root(cost: jax.Array, p: float) -> jax.Array:
    """cost^{1/p} for cost ≥ 0, with gradient 0 instead of ∞ at cost = 0 (double where)."""
    if p == 1.0:
        return cost
    positive = cost > 0
    return jnp.where(positive, jnp.where(positive, cost, 1.0) ** (1.0 / p), 0.0)


def _ground_cost(x: jax.Array, y: jax.Array, p: float) -> jax.Array:
    """C_ij = ‖x_i − y_j‖^p, with finite gradients where x_i = y_j."""
    sq = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    if p == 2.0:
        return sq
    positive = sq > 0
    return jnp.where(positive, jnp.where(positive, sq, 1.0) ** (p / 2.0), 0.0)


def _envelope_vjp(solve: Callable) -> Callable:
    """solve(a, b, cost, *options, static) → (value, γ, u, v, converged, n_iter) as a function returning
    (value, γ, converged, n_iter), differentiated by the envelope theorem.

    ∂value/∂a = u − mean(u), ∂value/∂b = v − mean(v), ∂value/∂C = γ for the optimal plan γ and dual
    potentials (u, v) (POT's convention); nothing flows through γ (piecewise constant for exact OT, dropped
    to first order for entropic OT), the flags, or the options. The last argument of solve is static.
    """
    n_args = len(inspect.signature(solve).parameters)

    def fwd(*args):
        value, plan, u, v, converged, n_iter = solve(*args)
        return (value, plan, converged, n_iter), (plan, u, v)

    def bwd(_static, residuals, cotangents):
        plan, u, v = residuals
        g_value = cotangents[0]
        grads = (g_value * (u - jnp.mean(u)), g_value * (v - jnp.mean(v)), g_value * plan)
        return grads + (None,) * (n_args - 4)

    primal = jax.custom_vjp(functools.wraps(solve)(lambda *args: fwd(*args)[0]), nondiff_argnums=(n_args - 1,))
    primal.defvjp(fwd, bwd)
    return primal
