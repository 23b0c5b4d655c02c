"""Presets shared by the experiment configs: one function per data family, methods chosen by name.

A config file is two lines: `def get_config(arg=None): return common.toy("ring8", "wgan_gp", arg)`.
`arg == "smoke"` shrinks the run to seconds (tests); any other value is an error.
"""

from __future__ import annotations

import ml_collections

from gan_jax.config import base_config

# Each method: the loss, penalty and optimizer settings that define it in its paper.
METHODS = {
    # Goodfellow et al. 2014, with the non-saturating generator loss they recommend in practice.
    "gan": dict(loss="non_saturating", penalty="none", n_critic=1, unroll=0, clip=0.0,
                optim=dict(name="adam", learning_rate=1e-4, b1=0.5, b2=0.999)),
    # The same game with the saturating generator loss log(1 - D(G(z))) of the minimax formulation.
    "gan_minimax": dict(loss="minimax", penalty="none", n_critic=1, unroll=0, clip=0.0,
                        optim=dict(name="adam", learning_rate=1e-4, b1=0.5, b2=0.999)),
    # Metz et al. 2016: generator loss through 5 unrolled discriminator updates.
    "unrolled": dict(loss="non_saturating", penalty="none", n_critic=1, unroll=5, clip=0.0,
                     optim=dict(name="adam", learning_rate=1e-4, b1=0.5, b2=0.999)),
    # Arjovsky et al. 2017: critic clipped to [-0.01, 0.01], RMSprop 5e-5, 5 critic steps.
    "wgan_clip": dict(loss="wasserstein", penalty="none", n_critic=5, unroll=0, clip=0.01,
                      optim=dict(name="rmsprop", learning_rate=5e-5)),
    # Gulrajani et al. 2017: gradient penalty (λ = 0.1 on toy data, 10 on images), Adam(1e-4, 0.5, 0.9).
    "wgan_gp": dict(loss="wasserstein", penalty="gp", n_critic=5, unroll=0, clip=0.0,
                    optim=dict(name="adam", learning_rate=1e-4, b1=0.5, b2=0.9)),
    # Fedus et al. 2018 ("Many Paths to Equilibrium", NS-GAN-GP): the non-saturating GAN with the WGAN-GP
    # penalty on interpolates (λ = 0.1 on toy data). Adam(3e-3, β1 = 0) chosen on the published ring/grid
    # benchmarks in experiments/lecture/mode_collapse.py (there it keeps every mode of the ring in 2000 steps and
    # of the grid in 4000, with ≥ 90 % / ≥ 80 % high-quality samples).
    "gan_gp": dict(loss="non_saturating", penalty="gp", n_critic=1, unroll=0, clip=0.0,
                   optim=dict(name="adam", learning_rate=3e-3, b1=0.0, b2=0.999)),
    # Control for gan_gp: the same GAN and optimizer without the penalty (it drops modes where gan_gp keeps them).
    "gan_fast": dict(loss="non_saturating", penalty="none", n_critic=1, unroll=0, clip=0.0,
                     optim=dict(name="adam", learning_rate=3e-3, b1=0.0, b2=0.999)),
}


def _apply_method(cfg: ml_collections.ConfigDict, method: str, penalty_weight: float) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {sorted(METHODS)}")
    m = METHODS[method]
    cfg.loss.name, cfg.loss.penalty = m["loss"], m["penalty"]
    cfg.loss.penalty_weight = penalty_weight if m["penalty"] != "none" else 0.0
    cfg.loss.n_critic, cfg.loss.unroll_steps, cfg.loss.clip_value = m["n_critic"], m["unroll"], m["clip"]
    for role in ("generator", "critic"):
        cfg.optim[role].update(m["optim"])


def _check_arg(arg: str | None) -> bool:
    if arg not in (None, "", "smoke"):
        raise ValueError(f"unknown config variant {arg!r}; use no suffix or ':smoke'")
    return arg == "smoke"


def _smoke(cfg: ml_collections.ConfigDict) -> None:
    """A seconds-long run that exercises every part of the loop."""
    cfg.data.batch_size = 64
    cfg.model.width = 32
    cfg.model.base_width = 8
    cfg.train.steps = 20
    cfg.train.steps_per_call = 5
    cfg.train.log_every = 5
    cfg.train.checkpoint_every = 10
    cfg.train.sample_every = 10
    cfg.train.eval_samples = 256


def toy(name: str, method: str, arg: str | None = None, **data_kwargs) -> ml_collections.ConfigDict:
    """A 2-D/1-D toy run: MLP generator and critic of width 128, depth 3; 3000 generator updates.

    Width 128 keeps the default run to minutes on two CPU cores; the gan_toy setting of the WGAN-GP paper
    is width 512 (`--config.model.width=512`).
    """
    smoke = _check_arg(arg)
    cfg = base_config()
    cfg.data.name = name
    cfg.data.kwargs = ml_collections.ConfigDict(data_kwargs)
    cfg.model.width = 128
    _apply_method(cfg, method, penalty_weight=0.1)
    cfg.train.steps = 3000
    cfg.train.checkpoint_every = 1000
    cfg.train.sample_every = 1000
    if smoke:
        _smoke(cfg)
    return cfg


def images(name: str, method: str, arg: str | None = None, image_size: int = 0,
           data_dir: str = "") -> ml_collections.ConfigDict:
    """An image run: DCGAN-style conv generator and critic, latent 64, batch 64, λ = 10."""
    smoke = _check_arg(arg)
    cfg = base_config()
    cfg.data.name = name
    cfg.data.image_size = image_size
    cfg.data.data_dir = data_dir
    cfg.data.batch_size = 64
    cfg.model.kind = "conv"
    cfg.model.latent_dim = 64
    cfg.model.base_width = 32
    _apply_method(cfg, method, penalty_weight=10.0)
    cfg.train.steps = 4000
    # XLA:CPU (jax 0.10) runs convolutions inside a while loop 4-7x slower (benchmarks/train_speed.py, digits
    # conv step: 31 steps/s for one step per call against 14 with 10 fused; results/benchmarks.md): one step
    # per call, the critic loop unrolled, so the compiled step has no loop at all.
    cfg.train.steps_per_call = 1
    cfg.train.unroll_loops = True
    cfg.train.log_every = 100
    cfg.train.checkpoint_every = 1000
    cfg.train.sample_every = 1000
    cfg.train.eval_samples = 1000
    if smoke:
        _smoke(cfg)
    return cfg
