"""What a train step reads from the config, checked once when the engine is built (one `GanJaxError` naming the
field and the fix): the generator EMA's decay, PacGAN's pack size, what the critic sees (DiffAugment / ADA,
`Augmentation`), and the ACGAN head's weight. Used by gan_jax.engine.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections

from gan_jax import augment
from gan_jax.errors import GanJaxError


def ema_decay(cfg: ml_collections.ConfigDict) -> float:
    """train.ema_decay β of the generator EMA, checked: in [0, 1) (0 = no EMA)."""
    decay = float(cfg.train.get("ema_decay", 0.0))
    if not 0.0 <= decay < 1.0:
        raise GanJaxError(f"config.train.ema_decay={decay!r} is invalid: must be in [0, 1) (0 = no generator EMA)")
    return decay


def pack_size(cfg: ml_collections.ConfigDict) -> int:
    """loss.pack, checked: ≥ 1 and dividing data.batch_size."""
    pack = cfg.loss.get("pack", 1)
    if not (isinstance(pack, int) and pack >= 1):
        raise GanJaxError(f"config.loss.pack={pack!r} is invalid: must be an integer >= 1 (1 = no packing)")
    if cfg.data.batch_size % pack:
        raise GanJaxError(f"config.data.batch_size={cfg.data.batch_size} is not divisible by config.loss.pack={pack}: "
                         "the critic scores packs of loss.pack samples of one kind")
    return pack


class Augmentation(NamedTuple):
    """What the critic sees (config `augment`): the ops of `policy` (gan_jax.augment), each applied with ADA's
    adaptive probability p when `ada` (p = `initial_p` at step 0), p moved every `interval` generator steps
    toward E[sign f(real)] = `target` at `kimg` thousand real images for a change of 1."""

    policy: str = ""
    ada: bool = False
    target: float = 0.6
    interval: int = 4
    kimg: float = 500.0
    initial_p: float = 0.0


def augmentation(cfg: ml_collections.ConfigDict, data_shape: tuple[int, ...] | None = None) -> Augmentation:
    """cfg.augment, checked (against the data's shape when given); no augmentation for a config saved before the
    section existed."""
    section = cfg.get("augment")
    if section is None:
        return Augmentation()
    try:
        augment.parse_policy(section.policy, data_shape)
    except GanJaxError as err:
        raise GanJaxError(f"config.augment.policy: {err}") from None
    return Augmentation(section.policy, bool(section.ada), float(section.ada_target), int(section.ada_interval),
                        float(section.ada_kimg), float(section.get("ada_p", 0.0)))


def acgan_weight(cfg: ml_collections.ConfigDict) -> float:
    """loss.acgan_weight, checked: > 0 only for a class-conditional model."""
    weight = float(cfg.loss.get("acgan_weight", 0.0))
    if weight > 0 and not cfg.model.get("num_classes", 0):
        raise GanJaxError(f"config.loss.acgan_weight={weight} needs a class-conditional model: the auxiliary "
                          "classifier predicts the labels. Set model.num_classes to the number of classes of the "
                          "data, or loss.acgan_weight=0")
    return weight
