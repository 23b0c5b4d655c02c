"""Optimal transport between empirical distributions, as pure jittable array functions.

One module per solver family:

* `one_d.wasserstein_1d`: exact W_p on the line from sorted samples (quantile functions).
* `sliced.sliced_wasserstein`: W_p averaged over random 1-D projections.
* `gaussian.gaussian_w2`: the closed form of W_2 between Gaussians.
* `network_simplex.emd`: exact discrete optimal transport ⟨γ*, C⟩ with its plan γ*, by a network simplex in
  JAX loops; `network_simplex.wasserstein_p`: W_p between two point clouds with uniform weights
  (Euclidean ground distance), via `emd`.
* `sinkhorn.sinkhorn`, `sinkhorn.sinkhorn_divergence`: entropic OT (log-domain, ε-scaling) and its
  debiased divergence.
(`_checks`: the shared input checks; `_gradients`: pieces with chosen derivatives.)

Convention: every function named after a distance returns the distance W_p = (min_γ ⟨γ, ‖x − y‖^p⟩)^{1/p},
not its p-th power. `emd` and `sinkhorn` take any cost matrix C and return the transport cost ⟨γ, C⟩
(as POT's `ot.emd2` / `ot.sinkhorn2`); with C = ‖x − y‖^p that cost is W_p^p. The iterative solvers
return NamedTuples (`EMDResult`, `SinkhornResult`, `SinkhornDivergenceResult`) holding the value, the
plan where there is one, `converged` (bool) and `n_iter` (int): a solve cut short by max_iter says so.

All functions work under `jit`, `vmap`, `grad` and `pmap`; called outside `jit`, each runs as one compiled
program. Gradients of the plan-based values follow the envelope theorem: ∂⟨γ*, C⟩/∂C = γ*,
∂/∂a = u − mean(u), ∂/∂b = v − mean(v) with (u, v) the optimal dual potentials (POT's convention).
Shape checks run at trace time; value checks (negative weights, unequal masses) run when the values are
concrete, i.e. outside `jit`.
"""

from gan_jax.transport.gaussian import gaussian_w2
from gan_jax.transport.network_simplex import EMDResult, emd, wasserstein_p
from gan_jax.transport.one_d import wasserstein_1d
from gan_jax.transport.sinkhorn import SinkhornDivergenceResult, SinkhornResult, sinkhorn, sinkhorn_divergence
from gan_jax.transport.sliced import sliced_wasserstein

__all__ = [
    "EMDResult",
    "SinkhornDivergenceResult",
    "SinkhornResult",
    "emd",
    "gaussian_w2",
    "sinkhorn",
    "sinkhorn_divergence",
    "sliced_wasserstein",
    "wasserstein_1d",
    "wasserstein_p",
]
