"""Presets shared by the experiment configs: one function per data family, methods chosen by name.

A config file is two lines: `def get_config(arg=None): return common.toy("ring8", "wgan_gp", arg)`.
`arg` names a variant (`VARIANTS`): none (or "full") is the run itself, "smoke" shrinks it to seconds (tests).
`toy` (2-D/1-D distributions, MLPs), `images` (small images, the "conv" pair) and `image_gan` (the field's
image-scale networks "dcgan", "resnet", "biggan" on prepared datasets) are the families.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import ml_collections

from gan_jax.config import base_config, set_fields
from gan_jax.registry import Registry

ConfigDict = ml_collections.ConfigDict  # what every get_config returns


class Method(NamedTuple):
    """The loss, penalty and optimizer settings that define a method in its paper (`optim`: optim.<role> fields)."""

    loss: str
    penalty: str = "none"
    n_critic: int = 1  # critic updates per generator update
    unroll: int = 0  # loss.unroll_steps
    clip: float = 0.0  # loss.clip_value
    optim: dict[str, Any] = dict(name="adam", learning_rate=1e-4, b1=0.5, b2=0.999)  # read, never changed


# Adam(3e-3, β1 = 0), chosen on the published ring/grid benchmarks in experiments/lecture/mode_collapse.py.
_FAST_ADAM = dict(name="adam", learning_rate=3e-3, b1=0.0, b2=0.999)

METHODS: Registry[Method] = Registry("method", {
    # Goodfellow et al. 2014, with the non-saturating generator loss they recommend in practice; Adam(1e-4, 0.5).
    "gan": Method("non_saturating"),
    # The same game with the saturating generator loss log(1 - D(G(z))) of the minimax formulation.
    "gan_minimax": Method("minimax"),
    # Metz et al. 2016: generator loss through 5 unrolled discriminator updates.
    "unrolled": Method("non_saturating", unroll=5),
    # Arjovsky et al. 2017: critic clipped to [-0.01, 0.01], RMSprop 5e-5, 5 critic steps.
    "wgan_clip": Method("wasserstein", n_critic=5, clip=0.01, optim=dict(name="rmsprop", learning_rate=5e-5)),
    # Gulrajani et al. 2017: gradient penalty (λ = 0.1 on toy data, 10 on images), Adam(1e-4, 0.5, 0.9).
    "wgan_gp": Method("wasserstein", "gp", n_critic=5,
                      optim=dict(name="adam", learning_rate=1e-4, b1=0.5, b2=0.9)),
    # Fedus et al. 2018 ("Many Paths to Equilibrium", NS-GAN-GP): the non-saturating GAN with the WGAN-GP
    # penalty on interpolates (λ = 0.1 on toy data). With _FAST_ADAM it keeps every mode of the ring in 2000
    # steps and of the grid in 4000, with ≥ 90 % / ≥ 80 % high-quality samples (experiments/lecture/mode_collapse.py).
    "gan_gp": Method("non_saturating", "gp", optim=_FAST_ADAM),
    # Control for gan_gp: the same GAN and optimizer without the penalty (it drops modes where gan_gp keeps them).
    "gan_fast": Method("non_saturating", optim=_FAST_ADAM),
    # Radford et al. 2016: the non-saturating GAN, Adam(2e-4, β = (0.5, 0.999)).
    "dcgan": Method("non_saturating", optim=dict(name="adam", learning_rate=2e-4, b1=0.5, b2=0.999)),
    # Miyato et al. 2018 as Mimicry's CIFAR-10 table trains SNGAN: hinge loss, 5 critic updates, Adam(2e-4,
    # β = (0, 0.9)), the rate decayed linearly to 0 over the 100k generator steps, for both networks.
    "sngan": Method("hinge", n_critic=5, optim=dict(name="adam", learning_rate=2e-4, b1=0.0, b2=0.9,
                                                    schedule="linear", decay_steps=100_000, alpha=0.0)),
    # StudioGAN's CIFAR-10 BigGAN (its configs/CIFAR10/BigGAN.yaml and defaults): hinge loss, 5 critic updates,
    # Adam(2e-4, β = (0.5, 0.999)).
    "biggan": Method("hinge", n_critic=5, optim=dict(name="adam", learning_rate=2e-4, b1=0.5, b2=0.999)),
})


def _apply_method(cfg: ml_collections.ConfigDict, method: str, penalty_weight: float) -> None:
    """cfg's loss and optim sections set to METHODS[method]; λ = penalty_weight when it has a penalty."""
    m = METHODS.get(method)
    cfg.loss.name, cfg.loss.penalty = m.loss, m.penalty
    cfg.loss.penalty_weight = penalty_weight if m.penalty != "none" else 0.0
    cfg.loss.n_critic, cfg.loss.unroll_steps, cfg.loss.clip_value = m.n_critic, m.unroll, m.clip
    for role in ("generator", "critic"):
        cfg.optim[role].update(m.optim)


# The image-scale networks of `image_gan`; their smoke runs need no prepared data (`_smoke`).
IMAGE_GAN_KINDS = ("dcgan", "resnet", "biggan")


def _smoke(cfg: ml_collections.ConfigDict) -> None:
    """A seconds-long run that exercises every part of the loop.

    With an image-scale network (IMAGE_GAN_KINDS) it trains on the built-in digits resized to the config's
    image size (32 where it takes the data's own), ten classes, offline, at channel multiplier 4 and batch 16,
    10 steps, one per call with the critic loop rolled (the smallest program to compile: compiling dominates a
    smoke run).
    """
    cfg.data.batch_size = 64
    cfg.model.width = 32
    cfg.model.base_width = 8
    cfg.train.steps = 20
    cfg.train.steps_per_call = 5
    if cfg.model.kind in IMAGE_GAN_KINDS:
        cfg.data.name, cfg.data.data_dir, cfg.data.batch_size = "digits", "", 16
        cfg.data.image_size = cfg.data.image_size or 32  # the digits are 8×8: the image kinds start at 32
        cfg.model.g_channels = cfg.model.d_channels = 4
        cfg.train.steps, cfg.train.steps_per_call, cfg.train.unroll_loops = 10, 1, False
    cfg.train.log_every = 5
    cfg.train.checkpoint_every = 10
    cfg.train.sample_every = 10
    cfg.train.eval_samples = 256


VARIANTS: Registry[Callable[[ml_collections.ConfigDict], None]] = Registry("config variant", {
    "full": lambda cfg: None,  # the run as configured
    "smoke": _smoke,
})


def toy(name: str, method: str, arg: str | None = None, **data_kwargs) -> ml_collections.ConfigDict:
    """The config of METHODS[method] on toy distribution `name` (kwargs: its parameters) in variant `arg`:
    MLP generator and critic of width 128, depth 3; 3000 generator updates.

    Width 128 keeps the default run to minutes on two CPU cores; the gan_toy setting of the WGAN-GP paper
    is width 512 (`--config.model.width=512`).
    """
    variant = VARIANTS.get(arg or "full")
    cfg = base_config()
    cfg.data.name = name
    cfg.data.kwargs = ml_collections.ConfigDict(data_kwargs)
    cfg.model.width = 128
    _apply_method(cfg, method, penalty_weight=0.1)
    cfg.train.steps = 3000
    cfg.train.checkpoint_every = 1000
    cfg.train.sample_every = 1000
    variant(cfg)
    return cfg


def decay_learning_rates(cfg: ml_collections.ConfigDict, decay_from: int, factor: float) -> None:
    """Both roles' learning rates × `factor` from generator step `decay_from` on (the "step" schedule), in place."""
    for role in ("generator", "critic"):
        cfg.optim[role].update(schedule="step", boundaries=(int(decay_from),), decay_factor=float(factor))


def _conv_schedule(cfg: ml_collections.ConfigDict, every: int, eval_samples: int) -> None:
    """One step per call, the critic loop unrolled; logs every 100 steps, checkpoints and figures `every` steps.

    XLA:CPU (jax 0.10) runs convolutions inside a while loop 4-7x slower (benchmarks/train_speed.py, digits conv
    step: 31 steps/s for one step per call against 14 with 10 fused; results/benchmarks.md), so the compiled step
    of a conv net has no loop at all.
    """
    cfg.train.steps_per_call = 1
    cfg.train.unroll_loops = True
    cfg.train.log_every = 100
    cfg.train.checkpoint_every = every
    cfg.train.sample_every = every
    cfg.train.eval_samples = eval_samples


def images(name: str, method: str, arg: str | None = None, image_size: int = 0,
           data_dir: str = "") -> ml_collections.ConfigDict:
    """The config of METHODS[method] on image dataset `name` in variant `arg`: DCGAN-style conv generator and
    critic, latent 64, batch 64, λ = 10."""
    variant = VARIANTS.get(arg or "full")
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
    _conv_schedule(cfg, every=1000, eval_samples=1000)
    variant(cfg)
    return cfg


def image_gan(name: str, kind: str, method: str, arg: str | None = None, *, image_size: int, latent_dim: int,
              batch_size: int, steps: int, data_dir: str = "", ema_decay: float = 0.0,
              fields: dict[str, Any] | None = None, **model: Any) -> ml_collections.ConfigDict:
    """The config of METHODS[method] with the `kind` networks of gan_jax.models ("dcgan", "resnet", "biggan") on the
    prepared image dataset `name` at image_size² (0: the dataset's own size) in variant `arg`; `model`: further model fields (num_classes,
    spectral_norm, ...). Generator EMA β = ema_decay (0: none); 10,000 samples for the final evaluation (the field
    reports 50,000: --config.train.eval_samples=50000). `fields`: any other fields by dotted name, set before the
    variant (a name the config lacks is an error).
    """
    variant = VARIANTS.get(arg or "full")
    cfg = base_config()
    cfg.data.name = name
    cfg.data.image_size = image_size
    cfg.data.data_dir = data_dir
    cfg.data.batch_size = batch_size
    cfg.model.kind = kind
    cfg.model.latent_dim = latent_dim
    cfg.model.update(model)
    _apply_method(cfg, method, penalty_weight=10.0)
    cfg.train.steps = steps
    cfg.train.ema_decay = ema_decay
    cfg.train.cpu_matmuls = "eigen_ynn_reductions"  # batch norm's statistics by YNNPACK (parallel.CPU_MATMULS)
    _conv_schedule(cfg, every=5000, eval_samples=10_000)
    set_fields(cfg, fields or {})
    variant(cfg)
    return cfg
