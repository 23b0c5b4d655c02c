"""Training the engine for the lecture scripts that train GANs (claims 2 and 6): the states and the generator's
samples at chosen generator steps, per seed, and the shared protocol's learning-rate step decay.

The protocol: the last `DECAY_FRACTION` of the generator steps at `DECAY_FACTOR` × the configured learning rates
(the engine's "step" schedule, both roles); experiments/lecture/mode_collapse.py's docstring gives the
measurements that chose it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.configs import common as configs
from gan_jax import engine as engine_lib
from gan_jax import parallel
from gan_jax.data import make_source

DECAY_FRACTION, DECAY_FACTOR = 0.25, 0.1


def with_step_decay(cfg: ml_collections.ConfigDict, decay_from: int, factor: float) -> ml_collections.ConfigDict:
    """A copy of `cfg` whose learning rates (both roles) are multiplied by `factor` from generator step `decay_from` on."""
    cfg = cfg.copy_and_resolve_references()
    configs.decay_learning_rates(cfg, decay_from, factor)
    return cfg


def train_states(cfg: ml_collections.ConfigDict, seeds: Sequence[int], at_steps: Sequence[int]):
    """(engine, [[state after each of at_steps] per seed], [non-finite steps skipped per seed]) of `cfg`'s run.

    One engine and compiled step serve every seed: the seed only sets the initial state (`cfg.seed`).
    """
    if list(at_steps) != sorted(at_steps) or min(at_steps) < 0:
        raise ValueError(f"at_steps must be non-negative and increasing, got {list(at_steps)}")
    source = make_source(cfg.data)
    mesh = parallel.make_mesh(1)
    arrays = parallel.replicate(source.arrays, mesh)
    engine = engine_lib.make_engine(cfg, source.shape)
    compiled = {}

    def advance(state, n: int):
        if n not in compiled:
            compiled[n] = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=n)
        return compiled[n](state, arrays)

    states, skipped = [], []
    for seed in seeds:
        run_cfg = cfg.copy_and_resolve_references()
        run_cfg.seed = int(seed)
        state = parallel.replicate(engine_lib.create_state(run_cfg, engine, source.shape), mesh)
        done, bad, per_step = 0, 0, []
        for target in at_steps:
            while done < target:
                n = min(cfg.train.steps_per_call, target - done)
                state, chunk = advance(state, n)
                bad += int(np.sum(chunk["nonfinite"]))
                done += n
            per_step.append(jax.tree.map(jnp.copy, state))  # the next call donates `state`
        states.append(per_step)
        skipped.append(bad)
    return engine, states, np.asarray(skipped)


def latents(seed: int, n: int, latent_dim: int) -> jax.Array:
    """The fixed latents of seed `seed` (key seed + 1, as gan_jax.trainer samples them)."""
    return jax.random.normal(jax.random.key(seed + 1), (n, latent_dim))


def train_and_sample(
    cfg: ml_collections.ConfigDict,
    seeds: Sequence[int],
    at_steps: Sequence[int],
    n_samples: int,
    decay_from: int | None = None,
    decay_factor: float = DECAY_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """G(z_seed) for `n_samples` fixed latents after each of `at_steps` generator steps, per seed.

    Steps from `decay_from` on use `decay_factor` × the configured learning rates (the engine's "step"
    schedule for both roles, `with_step_decay`); samples come from `sampling_params` (the EMA when on).

    Returns:
      samples (len(seeds), len(at_steps), n_samples, dim) and the number of non-finite (skipped) steps per seed.
    """
    if decay_from is not None:
        cfg = with_step_decay(cfg, decay_from, decay_factor)
    engine, states, skipped = train_states(cfg, seeds, at_steps)
    sampler = engine_lib.make_sampler(engine)
    samples = [[np.asarray(sampler(engine_lib.sampling_params(s), latents(seed, n_samples, cfg.model.latent_dim)))
                for s in per_step] for seed, per_step in zip(seeds, states)]
    return np.asarray(samples), skipped
