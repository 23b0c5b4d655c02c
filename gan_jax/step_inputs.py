"""One generator step's inputs: its real batches and random draws (latents, penalty keys, fake labels,
augmentation keys), a pure function of the run's key and the step, so a resumed run draws what the
uninterrupted one drew; `data_key` is the real-batch stream the streamed input pipeline reads too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from gan_jax.data import DataSource

if TYPE_CHECKING:
    from gan_jax.engine import TrainState


class StepInputs(NamedTuple):
    """One generator step's inputs, for the global batch (sharded along the batch axis)."""

    real: jax.Array  # (n_critic + unroll_steps, B, *data_shape): model input (floats)
    critic_noise: jax.Array  # (n_critic + unroll_steps, B, latent_dim)
    penalty_keys: jax.Array  # (n_critic + unroll_steps, B) one key per example
    generator_noise: jax.Array  # (B, latent_dim)
    real_labels: jax.Array | None = None  # (n_critic + unroll_steps, B) int32 when conditional, else None
    critic_fake_labels: jax.Array | None = None  # (n_critic + unroll_steps, B) labels of the critic's fakes
    generator_labels: jax.Array | None = None  # (B,) labels of the generator update's fakes
    # With augment.policy: per-example keys of the augmentations, else None.
    critic_augment_keys: jax.Array | None = None  # (n_critic + unroll_steps, B, 2): of T(real), T(fake)
    generator_augment_keys: jax.Array | None = None  # (B,): of T(fake) in the generator update


def data_key(run_key: jax.Array) -> jax.Array:
    """The key of the real-batch stream of a run with `state.key` = run_key: batch i holds the records
    images.batch(..., data_key, i, B) draws (the streamed pipeline reads the same ones)."""
    return jax.random.split(run_key)[0]


def draw_fake_labels(source: DataSource, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Labels of generated samples: uniform over the classes, or with the data's label frequencies."""
    if source.label_frequencies is None:
        return jax.random.randint(key, shape, 0, source.num_classes, jnp.int32)
    logits = jnp.log(jnp.asarray(source.label_frequencies, jnp.float32))
    return jax.random.categorical(key, logits, shape=shape).astype(jnp.int32)


def draw_step_inputs(cfg: ml_collections.ConfigDict, source: DataSource, state: "TrainState",
                     data: Any) -> StepInputs:
    """Step `state.step`'s real batches and random draws: a pure function of (key, step).

    `data` is the device-resident dataset (`source.arrays`), or, for a streamed source, this step's fed Batch
    (U, B, ...) of the records the device path would draw.
    """
    n_updates = cfg.loss.n_critic + cfg.loss.unroll_steps
    batch = cfg.data.batch_size
    data_key_, noise_key = jax.random.split(state.key)  # data_key_ == data_key(state.key)
    step_key = jax.random.fold_in(noise_key, state.step)
    zc_key, pen_key, zg_key = jax.random.split(step_key, 3)
    if source.streamed:
        raw = data
    else:
        indices = state.step * n_updates + jnp.arange(n_updates)
        raw = jax.vmap(lambda i: source.sample(data, data_key_, i, batch))(indices)
    latent = cfg.model.latent_dim
    labels = {}
    if cfg.model.get("num_classes", 0):
        yc_key, yg_key = jax.random.split(jax.random.fold_in(step_key, 1))  # the other draws keep their keys
        labels = dict(real_labels=raw.y, critic_fake_labels=draw_fake_labels(source, yc_key, (n_updates, batch)),
                      generator_labels=draw_fake_labels(source, yg_key, (batch,)))
    augmented = {}
    if cfg.get("augment") is not None and cfg.augment.policy:  # checked by engine.make_engine
        ca_key, ga_key = jax.random.split(jax.random.fold_in(step_key, 2))
        augmented = dict(critic_augment_keys=jax.random.split(ca_key, (n_updates, batch, 2)),
                         generator_augment_keys=jax.random.split(ga_key, batch))
    return StepInputs(
        real=source.to_input(raw.x),
        critic_noise=jax.random.normal(zc_key, (n_updates, batch, latent)),
        penalty_keys=jax.random.split(pen_key, (n_updates, batch)),
        generator_noise=jax.random.normal(zg_key, (batch, latent)),
        **labels,
        **augmented,
    )
