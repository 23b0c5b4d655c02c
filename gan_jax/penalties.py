"""Critic regularisers: gradient penalties (WGAN-GP, one-sided GP, R1, R2) and weight clipping.

Every penalty has one signature, `penalty(critic_fn, real, fake, key, labels=None) -> scalar`, returns the
UNWEIGHTED value (the training step multiplies by its weight) and is chosen by name with `get` from
the registry `PENALTIES`.
`critic_fn` maps a batch x of shape (n, *dims) to logits of shape (n,). For a class-conditional critic, pass
`labels=(real_labels, fake_labels)` (int arrays (n,)) and a `critic_fn(x, y)`: R1 scores the reals under their
labels, R2 the fakes under theirs, and the interpolates of GP take the real sample's label (x̂ = u·x + (1−u)·x̃
is scored as f(x̂, y_real), the choice of StudioGAN's conditional WGAN-GP).

Input gradients are taken per example, as ∇ₓ f(x[i:i+1]) (a vmap of the gradient of the critic applied
to a batch of one). This is exact for any critic that scores examples independently, the only kind a
gradient penalty is defined for; a critic that couples the batch (batch norm) must not be used with
these penalties (Gulrajani et al. 2017 use layer norm instead). Taking the gradient of Σᵢ f(x)ᵢ would
give the same value for independent critics and a silently wrong one for coupled critics.
"""

from typing import Callable

import chex
import jax
import jax.numpy as jnp
import optax

from gan_jax.registry import Registry

CriticFn = Callable[..., jax.Array]  # critic_fn(x) -> (n,), or critic_fn(x, y) with labels
Labels = tuple[jax.Array, jax.Array] | None  # (real_labels, fake_labels) for a conditional critic
Penalty = Callable[..., jax.Array]  # penalty(critic_fn, real, fake, key, labels=None) -> scalar


def _check_pair(real: jax.Array, fake: jax.Array) -> tuple[jax.Array, jax.Array]:
    """real and fake as float arrays of the same shape (n, *dims)."""
    real, fake = jnp.asarray(real), jnp.asarray(fake)
    if real.shape != fake.shape or real.ndim == 0:
        raise ValueError(
            f"real has shape {real.shape} and fake has shape {fake.shape}; "
            "penalties need two batches of the same shape (n, *dims)."
        )
    dtype = jnp.result_type(real, fake, float)
    return real.astype(dtype), fake.astype(dtype)


def _input_gradients(critic_fn: CriticFn, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """∇ₓ f(x_i[, y_i]) for each example, flattened to (n, prod(dims))."""
    if y is None:
        grads = jax.vmap(jax.grad(lambda xi: jnp.reshape(critic_fn(xi[None]), ())))(x)
    else:
        grads = jax.vmap(jax.grad(lambda xi, yi: jnp.reshape(critic_fn(xi[None], yi[None]), ())))(x, y)
    return grads.reshape(x.shape[0], -1)


def _labels_of(labels: Labels, which: int) -> jax.Array | None:
    """labels[which] (0: real, 1: fake), or None for an unconditional critic."""
    return None if labels is None else labels[which]


def _safe_norm(v: jax.Array) -> jax.Array:
    """‖vᵢ‖ per row, with a zero (not NaN) gradient where vᵢ = 0 (double-where trick)."""
    squared = jnp.sum(jnp.square(v), axis=-1)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def _per_example_uniform(key: chex.PRNGKey, x: jax.Array) -> jax.Array:
    """u_i ~ U[0, 1] shaped (n, 1, ..., 1) to broadcast over x; u_i drawn from keys[i].

    `key` is one key (split into n per-example keys) or an array of n keys. Drawing per example makes a
    batch split across devices (each device given its examples' keys) draw the same u as the whole batch.
    """
    n = x.shape[0]
    keys = jnp.asarray(key)
    if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) and keys.ndim == 1:
        if keys.shape[0] != n:
            raise ValueError(f"got {keys.shape[0]} per-example keys for a batch of {n}; pass one key or n keys")
    else:
        keys = jax.random.split(key, n)
    u = jax.vmap(lambda k: jax.random.uniform(k, dtype=x.dtype))(keys)
    return u.reshape((n,) + (1,) * (x.ndim - 1))


def gradient_penalty(
    critic_fn: CriticFn,
    real: jax.Array,
    fake: jax.Array,
    key: chex.PRNGKey,
    labels: Labels = None,
    *,
    target: float = 1.0,
    one_sided: bool = False,
) -> jax.Array:
    """GP = E[(‖∇f(x̂)‖/target − 1)²], x̂ = u·real + (1−u)·fake, u ~ U[0, 1] per example.

    `key`: one key, or one key per example (shape (n,)) so that sharded batches draw the same u.

    one_sided=True penalises only norms above target: E[max(0, ‖∇f(x̂)‖/target − 1)²].
    Dividing by target (as TF-GAN's wasserstein_gradient_penalty does) keeps the penalty's scale, and so
    its weight, independent of the target; for target=1 it is WGAN-GP's E[(‖∇f(x̂)‖ − 1)²].
    """
    real, fake = _check_pair(real, fake)
    u = _per_example_uniform(key, real)
    interpolates = u * real + (1.0 - u) * fake
    excess = _safe_norm(_input_gradients(critic_fn, interpolates, _labels_of(labels, 0))) / target - 1.0
    if one_sided:
        excess = jnp.maximum(excess, 0.0)
    return jnp.mean(jnp.square(excess))


def _half_mean_squared_gradient(critic_fn: CriticFn, x: jax.Array, y: jax.Array | None) -> jax.Array:
    """½ E ‖∇f(x[, y])‖²."""
    return 0.5 * jnp.mean(jnp.sum(jnp.square(_input_gradients(critic_fn, x, y)), axis=-1))


def r1_penalty(critic_fn: CriticFn, real: jax.Array, fake: jax.Array, key: chex.PRNGKey,
               labels: Labels = None) -> jax.Array:
    """R1 = ½ E_real ‖∇f(x)‖² (Mescheder et al. 2018); fake and key are unused."""
    real, fake = _check_pair(real, fake)
    return _half_mean_squared_gradient(critic_fn, real, _labels_of(labels, 0))


def r2_penalty(critic_fn: CriticFn, real: jax.Array, fake: jax.Array, key: chex.PRNGKey,
               labels: Labels = None) -> jax.Array:
    """R2 = ½ E_fake ‖∇f(x)‖² (Mescheder et al. 2018); real and key are unused."""
    real, fake = _check_pair(real, fake)
    return _half_mean_squared_gradient(critic_fn, fake, _labels_of(labels, 1))


def one_sided_gradient_penalty(critic_fn: CriticFn, real: jax.Array, fake: jax.Array,
                               key: chex.PRNGKey, labels: Labels = None) -> jax.Array:
    """GP₊ = E[max(0, ‖∇f(x̂)‖ − 1)²] on interpolates x̂ (Gulrajani et al. 2017, App.; Petzka et al. 2018)."""
    return gradient_penalty(critic_fn, real, fake, key, labels, one_sided=True)


def no_penalty(critic_fn: CriticFn, real: jax.Array, fake: jax.Array, key: chex.PRNGKey,
               labels: Labels = None) -> jax.Array:
    """0 (of real's dtype): the "none" entry, so that every step adds a penalty term of one signature."""
    real, fake = _check_pair(real, fake)
    return jnp.zeros((), real.dtype)


PENALTIES: Registry[Penalty] = Registry(
    "penalty",
    {
        "none": no_penalty,
        "gp": gradient_penalty,
        "gp_one_sided": one_sided_gradient_penalty,
        "r1": r1_penalty,
        "r2": r2_penalty,
    },
)
get = PENALTIES.get  # get(name) -> Penalty, called as penalty(critic_fn, real, fake, key[, labels]); ValueError if unknown
names = PENALTIES.names  # names() -> the registered names, in the order above


def clip_weights(clip_value: float) -> optax.GradientTransformation:
    """updates' = clip(params + updates, −c, c) − params, so the new params lie in [−c, c] (WGAN clipping).

    Chain it after the optimizer, e.g. optax.chain(optax.rmsprop(5e-5), clip_weights(0.01)), and pass
    params to update(). The bound holds up to the rounding of the final params + updates' addition.
    """
    if not clip_value > 0:
        raise ValueError(f"clip_value must be > 0, got {clip_value!r}.")

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: optax.Updates, state: optax.EmptyState, params: optax.Params = None):
        if params is None:
            raise ValueError("clip_weights needs the current params: call update(updates, state, params).")
        clipped = jax.tree_util.tree_map(
            lambda u, p: jnp.clip(p + u, -clip_value, clip_value) - p, updates, params
        )
        return clipped, state

    return optax.GradientTransformation(init_fn, update_fn)
