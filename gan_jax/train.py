"""The training engine: one state pytree and one pure, jitted, data-parallel train step.

One generator step at step t:
  1. `n_critic` critic updates (in `lax.scan`), each on a fresh real batch and fresh fakes:
     minimise loss.discriminator(f(x), f(G(z))) + λ·penalty;
  2. one generator update minimising loss.generator(f_k(G(z))), where f_k is the critic after
     `unroll_steps` = k further differentiable critic updates (Metz et al. 2016; k = 0: the plain GAN).
Every random draw is a pure function of (state.key, t), so a run resumed from a checkpoint repeats the
uninterrupted trajectory bit for bit. `K = train.steps_per_call` generator steps are fused in one call,
their random inputs drawn together (vectorised over the step index: the same numbers as K single draws).
A step whose losses or new parameters are not finite leaves the state unchanged and sets
`metrics["nonfinite"]`, so a NaN never reaches the state or a checkpoint.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, PartitionSpec as P

from gan_jax import losses, models, penalties
from gan_jax.data import DataSource
from gan_jax.parallel import DATA_AXIS, DEFAULT_CPU_MATMULS, check_batch_divisible, compiler_options, replicated

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: what orbax saves."""

    step: jax.Array  # generator updates done (int32 scalar)
    generator_params: PyTree
    critic_params: PyTree
    critic_state: PyTree  # non-trained critic collections (spectral-norm vectors, batch stats); {} if none
    generator_opt_state: PyTree
    critic_opt_state: PyTree
    key: jax.Array  # the run's key; step t draws from fold_in(key, t)


# eps_root > 0 keeps sqrt(ν) differentiable at ν = 0, needed when updates are differentiated (unrolling).
_OPTIMIZERS: dict[str, Callable[[ml_collections.ConfigDict, float], optax.GradientTransformation]] = {
    "adam": lambda c, eps_root: optax.adam(c.learning_rate, b1=c.b1, b2=c.b2, eps_root=eps_root),
    "rmsprop": lambda c, eps_root: optax.rmsprop(c.learning_rate, eps_in_sqrt=eps_root > 0),
    "sgd": lambda c, eps_root: optax.sgd(c.learning_rate),
}


def make_optimizer(opt_cfg: ml_collections.ConfigDict, clip_value: float = 0.0,
                   differentiable: bool = False) -> optax.GradientTransformation:
    """The optax optimizer named by `opt_cfg.name`, followed by weight clipping to [-c, c] when c > 0.

    `differentiable=True` makes the update smooth at zero gradients, so it can be differentiated through.
    """
    if opt_cfg.name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt_cfg.name!r}; valid names: {sorted(_OPTIMIZERS)}")
    opt = _OPTIMIZERS[opt_cfg.name](opt_cfg, 1e-8 if differentiable else 0.0)
    return optax.chain(opt, penalties.clip_weights(clip_value)) if clip_value > 0 else opt


class Engine(NamedTuple):
    """The static (non-array) pieces a config selects: modules, optimizers, loss and penalty."""

    generator: nn.Module
    critic: nn.Module
    generator_opt: optax.GradientTransformation
    critic_opt: optax.GradientTransformation
    loss: losses.AdversarialLoss
    penalty: penalties.Penalty


def make_engine(cfg: ml_collections.ConfigDict, data_shape: tuple[int, ...]) -> Engine:
    """Builds the engine's pieces from `cfg`; raises ValueError on unknown names or incompatible choices."""
    models.check_critic_compatible(cfg.model, cfg.loss.penalty)
    generator, critic = models.build(cfg.model, data_shape)
    return Engine(
        generator=generator,
        critic=critic,
        generator_opt=make_optimizer(cfg.optim.generator),
        critic_opt=make_optimizer(cfg.optim.critic, cfg.loss.clip_value, differentiable=cfg.loss.unroll_steps > 0),
        loss=losses.get(cfg.loss.name),
        penalty=penalties.get(cfg.loss.penalty),
    )


def create_state(cfg: ml_collections.ConfigDict, engine: Engine, data_shape: tuple[int, ...]) -> TrainState:
    """Fresh parameters and optimizer states from `cfg.seed`."""
    key = jax.random.key(cfg.seed)
    init_key, run_key = jax.random.split(key)
    g_key, c_key = jax.random.split(init_key)
    z = jnp.zeros((1, cfg.model.latent_dim), jnp.float32)
    x = jnp.zeros((1, *data_shape), jnp.float32)
    g_params = engine.generator.init(g_key, z)["params"]
    c_vars = engine.critic.init(c_key, x, train=False)
    c_params = c_vars["params"]
    c_state = {k: v for k, v in c_vars.items() if k != "params"}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        generator_params=g_params,
        critic_params=c_params,
        critic_state=c_state,
        generator_opt_state=engine.generator_opt.init(g_params),
        critic_opt_state=engine.critic_opt.init(c_params),
        key=run_key,
    )


def _apply_critic(engine: Engine, params: PyTree, state: PyTree, x: jax.Array, train: bool):
    """Critic logits (n,) and its updated non-trained collections (unchanged when not training)."""
    variables = {"params": params, **state}
    if train and state:
        logits, new_state = engine.critic.apply(variables, x, train=True, mutable=list(state))
        return logits, dict(new_state)
    return engine.critic.apply(variables, x, train=train), state


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves))


def _keep_if(ok: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """`new` where `ok`, else `old` (keys are never updated by a step, so they pass through)."""
    if jax.dtypes.issubdtype(new.dtype, jax.dtypes.prng_key):
        return new
    return jnp.where(ok, new, old)


class StepInputs(NamedTuple):
    """One generator step's random draws, for the global batch (sharded along the batch axis)."""

    real: jax.Array  # (n_critic + unroll_steps, B, *data_shape)
    critic_noise: jax.Array  # (n_critic + unroll_steps, B, latent_dim)
    penalty_keys: jax.Array  # (n_critic + unroll_steps, B) one key per example
    generator_noise: jax.Array  # (B, latent_dim)


def draw_step_inputs(cfg: ml_collections.ConfigDict, source: DataSource, state: TrainState,
                     arrays: PyTree) -> StepInputs:
    """The real batches, latents and penalty keys of step `state.step`: a pure function of (key, step)."""
    n_updates = cfg.loss.n_critic + cfg.loss.unroll_steps
    batch = cfg.data.batch_size
    data_key, noise_key = jax.random.split(state.key)
    step_key = jax.random.fold_in(noise_key, state.step)
    zc_key, pen_key, zg_key = jax.random.split(step_key, 3)
    indices = state.step * n_updates + jnp.arange(n_updates)
    real = jax.vmap(lambda i: source.sample(arrays, data_key, i, batch))(indices)
    latent = cfg.model.latent_dim
    return StepInputs(
        real=real,
        critic_noise=jax.random.normal(zc_key, (n_updates, batch, latent)),
        penalty_keys=jax.random.split(pen_key, (n_updates, batch)),
        generator_noise=jax.random.normal(zg_key, (batch, latent)),
    )


def _local_step(cfg: ml_collections.ConfigDict, engine: Engine, state: TrainState,
                inputs: StepInputs) -> tuple[TrainState, dict[str, jax.Array]]:
    """One generator step on this device's share of the batch; gradients are averaged over `data`."""
    n_critic, unroll = cfg.loss.n_critic, cfg.loss.unroll_steps
    weight = cfg.loss.penalty_weight
    unroll_loops = bool(cfg.train.get("unroll_loops", False))

    def critic_objective(c_params, c_state, g_params, real, z, keys):
        fake = engine.generator.apply({"params": g_params}, z)
        logits, new_c_state = _apply_critic(engine, c_params, c_state, jnp.concatenate([real, fake]), True)
        real_logits, fake_logits = jnp.split(logits, 2)
        adversarial = engine.loss.discriminator(real_logits, fake_logits)
        critic_fn = lambda x: _apply_critic(engine, c_params, new_c_state, x, False)[0]
        penalty = engine.penalty(critic_fn, real, fake, keys) if weight > 0 else jnp.zeros(())
        return adversarial + weight * penalty, (new_c_state, adversarial, penalty)

    def critic_update(g_params, carry, inputs):
        c_params, c_state, c_opt_state = carry
        real, z, keys = inputs
        grads, (c_state, adversarial, penalty) = jax.grad(critic_objective, has_aux=True)(
            c_params, c_state, g_params, real, z, keys)
        grads, c_state = jax.lax.pmean((grads, c_state), DATA_AXIS)
        updates, c_opt_state = engine.critic_opt.update(grads, c_opt_state, c_params)
        c_params = optax.apply_updates(c_params, updates)
        return (c_params, c_state, c_opt_state), (adversarial, penalty)

    split = lambda x: (x[:n_critic], x[n_critic:])
    (real_c, real_u), (z_c, z_u), (keys_c, keys_u) = map(split, inputs[:3])

    g_params = state.generator_params
    critic_carry, (d_losses, penalty_values) = jax.lax.scan(
        functools.partial(critic_update, g_params),
        (state.critic_params, state.critic_state, state.critic_opt_state),
        (real_c, z_c, keys_c), unroll=unroll_loops)

    def generator_objective(g_params):
        carry = critic_carry
        if unroll:
            carry, _ = jax.lax.scan(functools.partial(critic_update, g_params), carry, (real_u, z_u, keys_u),
                                    unroll=unroll_loops)
        c_params, c_state, _ = carry
        fake = engine.generator.apply({"params": g_params}, inputs.generator_noise)
        logits, _ = _apply_critic(engine, c_params, c_state, fake, False)
        return engine.loss.generator(logits)

    g_loss, g_grads = jax.value_and_grad(generator_objective)(g_params)
    g_grads = jax.lax.pmean(g_grads, DATA_AXIS)
    g_updates, g_opt_state = engine.generator_opt.update(g_grads, state.generator_opt_state, g_params)
    c_params, c_state, c_opt_state = critic_carry
    new_state = state.replace(
        step=state.step + 1,
        generator_params=optax.apply_updates(g_params, g_updates),
        critic_params=c_params,
        critic_state=c_state,
        generator_opt_state=g_opt_state,
        critic_opt_state=c_opt_state,
    )
    metrics = {
        "d_loss": jnp.mean(d_losses),
        "g_loss": g_loss,
        "penalty": jnp.mean(penalty_values),
    }
    metrics = jax.lax.pmean(metrics, DATA_AXIS)
    finite = _all_finite((metrics, new_state.generator_params, new_state.critic_params))
    new_state = jax.tree.map(functools.partial(_keep_if, finite), new_state, state)
    metrics["nonfinite"] = jnp.logical_not(finite)
    return new_state, metrics


TrainStep = Callable[[TrainState, PyTree], tuple[TrainState, dict[str, jax.Array]]]


def make_train_step(cfg: ml_collections.ConfigDict, engine: Engine, source: DataSource, mesh: Mesh,
                    steps_per_call: int | None = None) -> TrainStep:
    """`step(state, data_arrays) -> (state, metrics)`: K generator steps in one jitted, donated call.

    The state is replicated on `mesh`; each step's batch is drawn whole and split along the batch axis
    over the mesh's `data` devices; metrics come back stacked, shape (K,). On CPU, matmuls compile as
    `cfg.train.cpu_matmuls` says (parallel.CPU_MATMULS); a step compiled with such options is a top-level
    jit (JAX refuses it inside another jit: call it directly, or set cpu_matmuls="xla_default").
    """
    k = steps_per_call or cfg.train.steps_per_call
    check_batch_divisible(cfg.data.batch_size, mesh)
    batch_spec = StepInputs(real=P(None, DATA_AXIS), critic_noise=P(None, DATA_AXIS),
                            penalty_keys=P(None, DATA_AXIS), generator_noise=P(DATA_AXIS))
    # check_vma=False: gradients are averaged explicitly with pmean (with it on, JAX would already psum
    # the gradients of the replicated parameters, and the pmean would scale them by the device count).
    sharded_step = jax.shard_map(
        functools.partial(_local_step, cfg, engine),
        mesh=mesh, in_specs=(P(), batch_spec), out_specs=(P(), P()), check_vma=False)

    def fused_steps(state, arrays):
        if k == 1:  # no loop: XLA:CPU runs convolutions inside a while loop several times slower
            state, metrics = sharded_step(state, draw_step_inputs(cfg, source, state, arrays))
            return state, jax.tree.map(lambda m: m[None], metrics)
        # All K steps' draws at once, vectorised over the step index (the same numbers as K separate
        # draws, in one pass of the random-bit generator instead of K), then K steps in a loop.
        draw = lambda t: draw_step_inputs(cfg, source, state.replace(step=t), arrays)
        inputs = jax.vmap(draw)(state.step + jnp.arange(k))
        return jax.lax.scan(sharded_step, state, inputs)

    return jax.jit(fused_steps, donate_argnums=0, out_shardings=replicated(mesh),
                   compiler_options=compiler_options(mesh, cfg.train.get("cpu_matmuls", DEFAULT_CPU_MATMULS)))


def make_sampler(engine: Engine) -> Callable[[PyTree, jax.Array], jax.Array]:
    """`sample(generator_params, z) -> G(z)`, jitted."""
    return jax.jit(lambda params, z: engine.generator.apply({"params": params}, z))
