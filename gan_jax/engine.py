"""The training engine: one state pytree and one pure, jitted, data-parallel train step.

Import it as `from gan_jax import engine as engine_lib`: the name `engine` is kept for the value
`make_engine` returns (an `Engine`, passed to every function here), and `train` for the CLI
(`experiments/train.py`, which calls `gan_jax.trainer`).

The critic f is the network that scores samples: a real number per sample (per pack, with PacGAN), higher
for samples it takes for data. For the logistic losses (minimax, non-saturating), σ(f) is the lecture's
discriminator D; for the Wasserstein loss, f is the potential of the Kantorovich-Rubinstein dual (kept near
1-Lipschitz by clipping or a penalty). The API, the config and the metrics (`critic_params`,
`optim.critic`, `critic_loss`) say critic for every loss.

One generator step at step t:
  1. `n_critic` critic updates (in `lax.scan`), each on a fresh real batch and fresh fakes:
     minimise loss.critic(f(x), f(G(z))) + λ·penalty;
  2. one generator update minimising loss.generator(f_k(G(z))), where f_k is the critic after
     `unroll_steps` = k further differentiable critic updates (Metz et al. 2016; k = 0: the plain GAN).
The real batches come from the data source: drawn inside the step from device-resident data (data.pipeline
"device"), or fed by the host (the "streamed" pipeline: `step(state, batches)` with the same records). With
`model.num_classes > 0` the pair is class-conditional: real batches carry their labels and the fakes' labels are
drawn per step (`data.fake_labels`: uniform, or the data's label frequencies).
A generator with batch norm (`model.generator_batch_norm`) keeps its running statistics in
`state.generator_state`: every generator forward pass in training normalises with its own batch's statistics
(train mode, as PyTorch's DCGAN does); the running averages are updated once per generator step, from the
generator update's batch, and averaged over devices like the critic's. Sampling uses the running averages; the
EMA generator samples with the raw generator's running statistics (its buffers are copied, not averaged, as in
StyleGAN2-ADA's and StudioGAN's EMA).
Every random draw is a pure function of (state.key, t), so a run resumed from a checkpoint repeats the
uninterrupted trajectory bit for bit. `K = train.steps_per_call` generator steps are fused in one call,
their random inputs drawn together (vectorised over the step index: the same numbers as K single draws).
A step whose losses or new parameters are not finite leaves the state unchanged and sets
`metrics["nonfinite"]`, so a NaN never reaches the state or a checkpoint.

Config choices read here besides the loss, penalty and model:
- `train.ema_decay` = β > 0 keeps a debiased exponential moving average of the generator parameters in the
  state (Yazıcı et al. 2019); `sampling_params(state)` is what to sample, plot and evaluate with.
- `loss.pack` = m > 1: PacGAN (Lin et al. 2018): the critic scores packs of m samples of one kind
  concatenated along the last (feature / channel) axis (`pack_samples`).
- `optim.<role>`: the optimizers and their learning-rate schedules (gan_jax.optimizers). Schedules count
  generator steps for both roles: the critic, updated n_critic times per generator step, uses the rate of
  its generator step for all of them. `loss.penalty_schedule`: the penalty's weight λ(t) over generator
  steps, by the same schedules (`optimizers.penalty_weight_schedule`), for all n_critic updates of step t.
- `augment.policy` (gan_jax.augment): the critic sees T(x) for every image x it scores, with fresh per-example
  draws: the reals and fakes of each critic update and, differentiably, the fakes of the generator update.
  The penalties are taken on what the critic sees: GP on interpolates between augmented reals and augmented
  fakes, R1 on augmented reals, R2 on augmented fakes (gradients with respect to the augmented images).
  `augment.ada`: ADA (Karras et al. 2020): each op applied with probability p, p in `state.augment_state`,
  moved every `augment.ada_interval` generator steps by `augment.ada_adjust` from r_t = E[sign(f(T(x_real)))]
  over the interval's critic updates (metrics `augment_p`, the p of the step, and `ada_real_sign`).
- `loss.acgan_weight` = λ > 0 (class-conditional models): ACGAN (Odena et al. 2017): a linear head on the
  critic's features predicts the class (`AuxiliaryClassifierCritic`); the critic adds λ·(CE(real) + CE(fake)),
  the generator λ·CE(fake), CE = losses.auxiliary_classifier_loss with the samples' labels.
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
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gan_jax import augment
from gan_jax import config as config_lib
from gan_jax import losses, models, penalties, step_settings
from gan_jax.critic_wrappers import AuxiliaryClassifierCritic, pack_samples, packed_shape
from gan_jax.data import DataSource
from gan_jax.errors import GanJaxError
from gan_jax.optimizers import make_optimizer, penalty_weight_schedule
from gan_jax.parallel import DATA_AXIS, DEFAULT_CPU_MATMULS, check_batch_divisible, compiler_options, replicated
from gan_jax.step_inputs import StepInputs, draw_step_inputs

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: what orbax saves."""

    step: jax.Array  # generator updates done (int32 scalar)
    generator_params: PyTree
    critic_params: PyTree
    critic_state: PyTree  # non-trained critic collections (spectral-norm vectors, batch stats); {} if none
    generator_state: PyTree  # non-trained generator collections (batch-norm statistics); {} if none
    generator_opt_state: PyTree
    critic_opt_state: PyTree
    key: jax.Array  # the run's key; step t draws from fold_in(key, t)
    # Debiased EMA of generator_params when train.ema_decay > 0 (sampling_params), else None (nothing saved).
    generator_ema_params: PyTree = None
    # ADA (augment.ada): {"p": augmentation probability, "real_signs": Σ sign(f(T(x_real))) over the current
    # interval} (float32 scalars), else {}.
    augment_state: PyTree = flax.struct.field(default_factory=dict)


def sampling_params(state: TrainState) -> PyTree:
    """The generator parameters to sample with: the EMA ones when train.ema_decay > 0, else the raw ones."""
    return state.generator_params if state.generator_ema_params is None else state.generator_ema_params


def ema_update(ema_params: PyTree, params: PyTree, step: jax.Array, decay: float) -> PyTree:
    """ē_t = ē_{t−1} + s_t·(θ_t − ē_{t−1}), s_t = (1−β)/(1−β^t): ē_t = Σ_{k≤t} (1−β)β^{t−k}θ_k / (1−β^t).

    The debiased EMA of optax.ema(β, debias=True), kept as its debiased value; `step` = t ≥ 1 counts the
    parameters averaged so far, so s_1 = 1 and θ_0 (the initialisation) gets no weight.
    """
    step_size = (1.0 - decay) / (1.0 - jnp.power(jnp.float32(decay), step.astype(jnp.float32)))
    return optax.incremental_update(params, ema_params, step_size)


class Engine(NamedTuple):
    """The static (non-array) pieces a config selects: modules, optimizers, loss and penalty."""

    generator: nn.Module
    critic: nn.Module  # an AuxiliaryClassifierCritic when acgan_weight > 0: it returns (logits, class logits)
    generator_opt: optax.GradientTransformation
    critic_opt: optax.GradientTransformation
    loss: losses.AdversarialLoss
    penalty: penalties.Penalty
    penalty_weight: optax.Schedule  # λ(t) over generator steps (loss.penalty_weight by loss.penalty_schedule)
    pack: int = 1  # PacGAN: the critic scores packs of this many samples (loss.pack)
    augmentation: step_settings.Augmentation = step_settings.Augmentation()  # what the critic sees (augment.*)
    acgan_weight: float = 0.0  # λ of the ACGAN terms (loss.acgan_weight); 0 = a plain critic


def make_engine(cfg: ml_collections.ConfigDict, data_shape: tuple[int, ...]) -> Engine:
    """The Engine (networks, optimizers, loss, penalty, pack) `cfg` selects for data of `data_shape`; ValueError
    naming the config field on an unknown name or an incompatible choice."""
    models.check_critic_compatible(cfg.model, cfg.loss.penalty)
    pack = step_settings.pack_size(cfg)
    step_settings.ema_decay(cfg)
    acgan_weight = step_settings.acgan_weight(cfg)
    generator, critic = models.build(cfg.model, data_shape, batch_axis=DATA_AXIS)
    if pack > 1:
        if cfg.model.get("num_classes", 0):
            raise GanJaxError(f"config.loss.pack={pack} cannot be combined with a class-conditional model "
                             f"(model.num_classes={cfg.model.num_classes}): a pack mixes the labels of m samples")
        critic = models.build(cfg.model, packed_shape(data_shape, pack), batch_axis=DATA_AXIS)[1]
    if acgan_weight > 0:
        critic = AuxiliaryClassifierCritic(critic, int(cfg.model.num_classes))
    return Engine(
        generator=generator,
        critic=critic,
        generator_opt=make_optimizer(cfg.optim.generator, path="optim.generator"),
        critic_opt=make_optimizer(cfg.optim.critic, cfg.loss.clip_value, differentiable=cfg.loss.unroll_steps > 0,
                                  updates_per_step=cfg.loss.n_critic, path="optim.critic"),
        loss=config_lib.lookup(losses.get, "loss.name", cfg.loss.name),
        penalty=config_lib.lookup(penalties.get, "loss.penalty", cfg.loss.penalty),
        penalty_weight=penalty_weight_schedule(cfg.loss),
        pack=pack,
        augmentation=step_settings.augmentation(cfg, data_shape),
        acgan_weight=acgan_weight,
    )


def create_state(cfg: ml_collections.ConfigDict, engine: Engine, data_shape: tuple[int, ...]) -> TrainState:
    """Fresh parameters and optimizer states from `cfg.seed` (the generator EMA starts at the initial parameters)."""
    key = jax.random.key(cfg.seed)
    init_key, run_key = jax.random.split(key)
    g_key, c_key = jax.random.split(init_key)
    z = jnp.zeros((1, cfg.model.latent_dim), jnp.float32)
    x = jnp.zeros((1, *packed_shape(data_shape, engine.pack)), jnp.float32)
    y = jnp.zeros((1,), jnp.int32) if engine.generator.num_classes else None
    g_vars = engine.generator.init(g_key, z, y)
    g_params = g_vars["params"]
    c_vars = engine.critic.init(c_key, x, y, train=False)
    c_params = c_vars["params"]
    non_params = lambda variables: {k: v for k, v in variables.items() if k != "params"}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        generator_params=g_params,
        critic_params=c_params,
        critic_state=non_params(c_vars),
        generator_state=non_params(g_vars),
        generator_opt_state=engine.generator_opt.init(g_params),
        critic_opt_state=engine.critic_opt.init(c_params),
        key=run_key,
        generator_ema_params=jax.tree.map(jnp.copy, g_params) if step_settings.ema_decay(cfg) > 0 else None,
        augment_state=({"p": jnp.float32(engine.augmentation.initial_p), "real_signs": jnp.zeros((), jnp.float32)}
                       if engine.augmentation.ada else {}),
    )


def _apply(module: nn.Module, params: PyTree, state: PyTree, train: bool, *args):
    """module(*args, train=train) and its updated non-trained collections (unchanged when not training)."""
    variables = {"params": params, **state}
    if train and state:
        out, new_state = module.apply(variables, *args, train=True, mutable=list(state))
        return out, dict(new_state)
    return module.apply(variables, *args, train=train), state


def _apply_critic(engine: Engine, params: PyTree, state: PyTree, x: jax.Array, train: bool,
                  labels: jax.Array | None = None):
    """Critic logits (n/m,) of the packs of m = engine.pack samples of x (n, *dims) (labels (n,) when
    conditional), and its updated non-trained collections (unchanged when not training)."""
    return _apply(engine.critic, params, state, train, pack_samples(x, engine.pack), labels)


def _scores(engine: Engine, out: Any) -> tuple[jax.Array, jax.Array | None]:
    """(logits, class logits) of a critic output: the ACGAN critic returns both, a plain one its logits only."""
    return out if engine.acgan_weight > 0 else (out, None)


def _generate(engine: Engine, params: PyTree, state: PyTree, z: jax.Array, labels: jax.Array | None,
              train: bool):
    """G(z[, labels]) and the generator's updated non-trained collections (batch-norm statistics)."""
    return _apply(engine.generator, params, state, train, z, labels)


def all_finite(tree: PyTree) -> jax.Array:
    """∧ over the floating-point leaves x of `tree` of all(isfinite(x)): a bool scalar (True for no such leaf).

    Traceable (the train step's NaN guard) and usable on host arrays (a restored checkpoint: `bool(...)`);
    integer leaves and PRNG keys cannot be non-finite and are skipped.
    """
    checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return functools.reduce(jnp.logical_and, checks, jnp.asarray(True))


def _keep_if(ok: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    """`new` where `ok`, else `old` (keys are never updated by a step, so they pass through)."""
    if jax.dtypes.issubdtype(new.dtype, jax.dtypes.prng_key):
        return new
    return jnp.where(ok, new, old)


def _ada_state(aug: step_settings.Augmentation, state: TrainState, real_signs: jax.Array, logits: int,
               images: int) -> dict[str, jax.Array]:
    """state.augment_state after this step: Σ sign f(T(x_real)) over the interval so far and, when the step ends
    an interval of `aug.interval` steps (`logits` real logits, `images` real images), p ← augment.ada_adjust(p, r_t)
    with r_t = Σ sign / logits, and the sum reset."""
    signs = state.augment_state["real_signs"] + jnp.sum(real_signs)
    p = state.augment_state["p"]
    moved = augment.ada_adjust(p, signs / logits, target=aug.target, images=images, kimg=aug.kimg)
    due = (state.step + 1) % aug.interval == 0
    return {"p": jnp.where(due, moved, p), "real_signs": jnp.where(due, jnp.zeros_like(signs), signs)}


def _local_step(cfg: ml_collections.ConfigDict, engine: Engine, state: TrainState,
                inputs: StepInputs) -> tuple[TrainState, dict[str, jax.Array]]:
    """One generator step on this device's share of the batch; gradients are averaged over `data`."""
    n_critic, unroll = cfg.loss.n_critic, cfg.loss.unroll_steps
    weight = engine.penalty_weight(state.step)  # λ at this generator step (a float when constant)
    unroll_loops = bool(cfg.train.get("unroll_loops", False))
    ema_decay, m = step_settings.ema_decay(cfg), engine.pack
    conditional = inputs.real_labels is not None
    g_params, g_state = state.generator_params, state.generator_state
    aug, acgan = engine.augmentation, engine.acgan_weight
    p = state.augment_state["p"] if aug.ada else None
    seen = lambda keys, x: augment.apply(keys, x, aug.policy, p)  # what the critic sees of images x

    def critic_objective(c_params, c_state, g_params, real, z, keys, real_y, fake_y, augment_keys):
        # The generator normalises with this batch's statistics; its running averages are not updated here.
        fake, _ = _generate(engine, g_params, g_state, z, fake_y, True)
        if aug.policy:
            real, fake = seen(augment_keys[:, 0], real), seen(augment_keys[:, 1], fake)
        labels = jnp.concatenate([real_y, fake_y]) if conditional else None
        # real and fake are packed apart (this device's batch is a multiple of m): no pack mixes the two.
        out, new_c_state = _apply_critic(engine, c_params, c_state, jnp.concatenate([real, fake]), True, labels)
        logits, class_logits = _scores(engine, out)
        real_logits, fake_logits = jnp.split(logits, 2)
        adversarial = engine.loss.critic(real_logits, fake_logits)
        # The penalty sees the packed critic on packed inputs: pack, then interpolate with one u per pack
        # (drawn from the key of the pack's first sample) — the same as interpolating the unpacked samples
        # with u shared within each pack and packing the result; norms are over all m·d inputs of a pack.
        critic_fn = lambda x, *y: _scores(
            engine, engine.critic.apply({"params": c_params, **new_c_state}, x, *y, train=False))[0]
        penalty = (engine.penalty(critic_fn, pack_samples(real, m), pack_samples(fake, m), keys[::m],
                                  (real_y, fake_y) if conditional else None)
                   if cfg.loss.penalty_weight > 0 else jnp.zeros(()))
        objective, terms = adversarial + weight * penalty, {"critic_loss": adversarial, "penalty": penalty}
        if acgan > 0:
            real_classes, fake_classes = jnp.split(class_logits, 2)
            terms["acgan_critic_loss"] = (losses.auxiliary_classifier_loss(real_classes, real_y)
                                          + losses.auxiliary_classifier_loss(fake_classes, fake_y))
            objective = objective + acgan * terms["acgan_critic_loss"]
        if aug.ada:
            terms["real_signs"] = jnp.sum(jnp.sign(real_logits))
        return objective, (new_c_state, terms)

    def critic_update(g_params, carry, inputs):
        c_params, c_state, c_opt_state = carry
        grads, (c_state, terms) = jax.grad(critic_objective, has_aux=True)(c_params, c_state, g_params, *inputs)
        grads, c_state = jax.lax.pmean((grads, c_state), DATA_AXIS)
        if aug.ada:  # a sum of ±1 and 0 over the global batch: exact, whatever the device count
            terms["real_signs"] = jax.lax.psum(terms["real_signs"], DATA_AXIS)
        updates, c_opt_state = engine.critic_opt.update(grads, c_opt_state, c_params)
        c_params = optax.apply_updates(c_params, updates)
        return (c_params, c_state, c_opt_state), terms

    split = lambda x: (None, None) if x is None else (x[:n_critic], x[n_critic:])
    per_update = (inputs.real, inputs.critic_noise, inputs.penalty_keys, inputs.real_labels,
                  inputs.critic_fake_labels, inputs.critic_augment_keys)
    critic_inputs, unrolled_inputs = zip(*map(split, per_update))

    critic_carry, critic_terms = jax.lax.scan(
        functools.partial(critic_update, g_params),
        (state.critic_params, state.critic_state, state.critic_opt_state),
        critic_inputs, unroll=unroll_loops)

    def generator_objective(g_params):
        carry = critic_carry
        if unroll:
            carry, _ = jax.lax.scan(functools.partial(critic_update, g_params), carry, unrolled_inputs,
                                    unroll=unroll_loops)
        c_params, c_state, _ = carry
        fake, new_g_state = _generate(engine, g_params, g_state, inputs.generator_noise, inputs.generator_labels,
                                      True)
        if aug.policy:
            fake = seen(inputs.generator_augment_keys, fake)
        out, _ = _apply_critic(engine, c_params, c_state, fake, False, inputs.generator_labels)
        logits, class_logits = _scores(engine, out)
        adversarial = engine.loss.generator(logits)
        objective, terms = adversarial, {"generator_loss": adversarial}
        if acgan > 0:
            terms["acgan_generator_loss"] = losses.auxiliary_classifier_loss(class_logits, inputs.generator_labels)
            objective = objective + acgan * terms["acgan_generator_loss"]
        return objective, (new_g_state, terms)

    g_grads, (new_g_state, generator_terms) = jax.grad(generator_objective, has_aux=True)(g_params)
    g_grads, new_g_state = jax.lax.pmean((g_grads, new_g_state), DATA_AXIS)
    g_updates, g_opt_state = engine.generator_opt.update(g_grads, state.generator_opt_state, g_params)
    c_params, c_state, c_opt_state = critic_carry
    new_g_params = optax.apply_updates(g_params, g_updates)
    new_state = state.replace(
        step=state.step + 1,
        generator_params=new_g_params,
        generator_state=new_g_state,
        generator_ema_params=(ema_update(state.generator_ema_params, new_g_params, state.step + 1, ema_decay)
                              if ema_decay > 0 else None),
        critic_params=c_params,
        critic_state=c_state,
        generator_opt_state=g_opt_state,
        critic_opt_state=c_opt_state,
    )
    real_signs = critic_terms.pop("real_signs", None)  # (n_critic,) with ADA
    metrics = {
        "critic_loss": jnp.mean(critic_terms.pop("critic_loss")),
        "generator_loss": generator_terms.pop("generator_loss"),  # the adversarial part, as critic_loss
        "penalty": jnp.mean(critic_terms.pop("penalty")),
        **{name: jnp.mean(values) for name, values in critic_terms.items()},
        **generator_terms,
    }
    metrics = jax.lax.pmean(metrics, DATA_AXIS)
    if aug.ada:  # the same on every device: not averaged (an average of equal numbers may round)
        logits = cfg.data.batch_size // m * n_critic
        new_state = new_state.replace(augment_state=_ada_state(
            aug, state, real_signs, logits * aug.interval, cfg.data.batch_size * n_critic * aug.interval))
        metrics.update(augment_p=p, ada_real_sign=jnp.sum(real_signs) / logits)
    finite = all_finite((metrics, new_state.generator_params, new_state.critic_params))
    new_state = jax.tree.map(functools.partial(_keep_if, finite), new_state, state)
    metrics["nonfinite"] = jnp.logical_not(finite)
    return new_state, metrics


TrainStep = Callable[[TrainState, PyTree], tuple[TrainState, dict[str, jax.Array]]]


def make_train_step(cfg: ml_collections.ConfigDict, engine: Engine, source: DataSource, mesh: Mesh,
                    steps_per_call: int | None = None) -> TrainStep:
    """`step(state, data) -> (state, metrics)`: K generator steps in one jitted, donated call.

    `data` is `source.arrays` placed on `mesh` (the device pipeline), or for a streamed source the K steps'
    fed real batches, a Batch of global arrays (K, U, B, ...) split along B (`pipeline.to_global`).
    The state is replicated on `mesh`; each step's batch is split along the batch axis over the mesh's `data`
    devices; metrics come back stacked, shape (K,). On CPU, matmuls compile as
    `cfg.train.cpu_matmuls` says (parallel.CPU_MATMULS); a step compiled with such options is a top-level
    jit (JAX refuses it inside another jit: call it directly, or set cpu_matmuls="xla_default").
    """
    k = steps_per_call or cfg.train.steps_per_call
    per_device = check_batch_divisible(cfg.data.batch_size, mesh)
    if per_device % engine.pack:
        raise GanJaxError(
            f"config.data.batch_size={cfg.data.batch_size} over {mesh.shape[DATA_AXIS]} devices is {per_device} "
            f"per device, not divisible by config.loss.pack={engine.pack}: each device packs its own samples")
    per_update, per_example = P(None, DATA_AXIS), P(DATA_AXIS)
    labelled = (per_update, per_update, per_example) if cfg.model.get("num_classes", 0) else (None, None, None)
    augmented = (per_update, per_example) if engine.augmentation.policy else (None, None)
    batch_spec = StepInputs(per_update, per_update, per_update, per_example, *labelled, *augmented)
    # check_vma=False: gradients are averaged explicitly with pmean (with it on, JAX would already psum
    # the gradients of the replicated parameters, and the pmean would scale them by the device count).
    sharded_step = jax.shard_map(
        functools.partial(_local_step, cfg, engine),
        mesh=mesh, in_specs=(P(), batch_spec), out_specs=(P(), P()), check_vma=False)

    def split_over_devices(inputs, leading_axes):
        # Each device computes only its own rows of the draws (with several processes, no process
        # materialises the global batch); threefry is partitionable, so the numbers do not depend on it.
        specs = jax.tree.map(lambda spec: NamedSharding(mesh, P(*([None] * leading_axes), *spec)), batch_spec,
                             is_leaf=lambda x: isinstance(x, P))
        return jax.lax.with_sharding_constraint(inputs, specs)

    def fused_steps(state, data):
        if k == 1:  # no loop: XLA:CPU runs convolutions inside a while loop several times slower
            step_data = jax.tree.map(lambda x: x[0], data) if source.streamed else data
            inputs = split_over_devices(draw_step_inputs(cfg, source, state, step_data), 0)
            state, metrics = sharded_step(state, inputs)
            return state, jax.tree.map(lambda m: m[None], metrics)
        # All K steps' draws at once, vectorised over the step index (the same numbers as K separate
        # draws, in one pass of the random-bit generator instead of K), then K steps in a loop.
        draw = lambda t, d: draw_step_inputs(cfg, source, state.replace(step=t), d)
        steps = state.step + jnp.arange(k)
        inputs = split_over_devices(jax.vmap(draw, in_axes=(0, 0 if source.streamed else None))(steps, data), 1)
        return jax.lax.scan(sharded_step, state, inputs)

    return jax.jit(fused_steps, donate_argnums=0, out_shardings=replicated(mesh),
                   compiler_options=compiler_options(mesh, cfg.train.get("cpu_matmuls", DEFAULT_CPU_MATMULS)))


def make_sampler(engine: Engine, mesh: Mesh | None = None) -> Callable[..., jax.Array]:
    """`sample(generator_params, z, labels=None, generator_state=None) -> G(z[, labels])`, jitted, in eval mode
    (batch norm with the running statistics of `generator_state`, e.g. `state.generator_state`); with `mesh`,
    the samples come back whole on every device of it (every process can read them)."""
    out_shardings = None if mesh is None else replicated(mesh)

    def sample(params, z, labels=None, generator_state=None):
        return _generate(engine, params, generator_state or {}, z, labels, False)[0]

    return jax.jit(sample, out_shardings=out_shardings)
