"""The benchmarked ring8 WGAN-GP as a minimal hand-written JAX loop: plain jnp MLPs, jax.grad, optax.adam, a
vmap-grad penalty, n_critic critic updates in lax.scan; one jitted and donated step per call, compiled with the
engine's XLA options (so that engine / hand-written measures the engine, not the compiler flags)."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from benchmarks.flops import step_jaxpr_flops, xla_flops
from benchmarks.ring8 import (BATCH, BETAS, DEPTH, LATENT, LEARNING_RATE, N_CRITIC, PENALTY_WEIGHT, RING_MODES,
                              RING_RADIUS, RING_STD)


def _mlp_init(key: jax.Array, sizes: list[int]) -> list[tuple[jax.Array, jax.Array]]:
    """Dense layers of `sizes`: weights N(0, 1/fan_in), zero biases."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (m, n)) / math.sqrt(m), jnp.zeros(n)) for k, m, n in zip(keys, sizes, sizes[1:])]


def _mlp(params: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    """The MLP of `params` on `x`: ReLU between layers, none after the last."""
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def _ring8(key: jax.Array, n: int) -> jax.Array:
    """`n` samples of the ring of 8 Gaussians (radius RING_RADIUS, std RING_STD)."""
    angles = 2 * jnp.pi * jnp.arange(RING_MODES) / RING_MODES
    means = RING_RADIUS * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    k_mode, k_noise = jax.random.split(key)
    return means[jax.random.randint(k_mode, (n,), 0, RING_MODES)] + RING_STD * jax.random.normal(k_noise, (n, 2))


class HandWritten(NamedTuple):
    """The jitted step and its initial state, and the two updates it is made of with their arguments."""

    step: Callable  # (state) -> state, jitted, donated
    state: tuple
    critic_update: Callable  # one critic update, jitted (for FLOP counting)
    generator_update: Callable  # one generator update, jitted
    critic_args: tuple
    generator_args: tuple


def hand_written(width: int) -> HandWritten:
    """WGAN-GP in plain JAX: state = (generator, critic, their Adam states, key, step)."""
    hidden = [width] * DEPTH
    opt = optax.adam(LEARNING_RATE, *BETAS)

    def critic_loss(c, g, key):
        k_real, k_z, k_u = jax.random.split(key, 3)
        real, fake = _ring8(k_real, BATCH), _mlp(g, jax.random.normal(k_z, (BATCH, LATENT)))
        u = jax.random.uniform(k_u, (BATCH, 1))
        x_hat = u * real + (1 - u) * fake
        grads = jax.vmap(jax.grad(lambda x: _mlp(c, x[None])[0, 0]))(x_hat)
        penalty = jnp.mean((jnp.linalg.norm(grads, axis=1) - 1) ** 2)
        return jnp.mean(_mlp(c, fake)) - jnp.mean(_mlp(c, real)) + PENALTY_WEIGHT * penalty

    def critic_update(c, c_opt, g, key):
        updates, c_opt = opt.update(jax.grad(critic_loss)(c, g, key), c_opt, c)
        return optax.apply_updates(c, updates), c_opt

    def generator_update(g, g_opt, c, key):
        loss = lambda g: -jnp.mean(_mlp(c, _mlp(g, jax.random.normal(key, (BATCH, LATENT)))))
        updates, g_opt = opt.update(jax.grad(loss)(g), g_opt, g)
        return optax.apply_updates(g, updates), g_opt

    def step(state):
        g, c, g_opt, c_opt, key, t = state
        keys = jax.random.split(jax.random.fold_in(key, t), N_CRITIC + 1)
        (c, c_opt), _ = jax.lax.scan(lambda cc, k: (critic_update(*cc, g, k), None), (c, c_opt), keys[:-1])
        g, g_opt = generator_update(g, g_opt, c, keys[-1])
        return g, c, g_opt, c_opt, key, t + 1

    k_g, k_c, key = jax.random.split(jax.random.key(0), 3)
    g, c = _mlp_init(k_g, [LATENT, *hidden, 2]), _mlp_init(k_c, [2, *hidden, 1])
    state = (g, c, opt.init(g), opt.init(c), key, jnp.zeros((), jnp.int32))
    # The engine's XLA options (parallel.compiler_options), so that engine / hand-written measures the engine.
    from gan_jax import parallel

    options = parallel.compiler_options(parallel.make_mesh(1))
    return HandWritten(jax.jit(step, donate_argnums=0, compiler_options=options), state, jax.jit(critic_update),
                       jax.jit(generator_update),
                       (c, opt.init(c), g, key), (g, opt.init(g), c, key))


def hand_written_bench(width: int) -> tuple[HandWritten, float, dict[str, float]]:
    """The hand-written step at `width`, its compile seconds, and its FLOP counts (GFLOP per generator step)."""
    hw = hand_written(width)
    critic, _ = xla_flops(hw.critic_update, *hw.critic_args)
    generator, _ = xla_flops(hw.generator_update, *hw.generator_args)
    scanned, compile_s = xla_flops(hw.step, hw.state)
    flops = dict(
        critic=critic / 1e9, generator=generator / 1e9, pieces=(N_CRITIC * critic + generator) / 1e9,
        scanned=scanned / 1e9, jaxpr=step_jaxpr_flops(hw.step, hw.state) / 1e9,
        analytic=(N_CRITIC * 22 + 10) * 2 * BATCH * width**2 / 1e9)
    return hw, compile_s, flops
