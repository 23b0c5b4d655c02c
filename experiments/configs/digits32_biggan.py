r"""The class-conditional BigGAN-style pair (gan_jax.models.biggan: shared class embedding, hierarchical latents,
self-attention at 16×16, orthogonal init, spectral norm in both networks, projection critic) on scikit-learn's 8×8
digits resized to 32×32, at digits32_resnet's CPU size (channel multiplier 16, batch 32, 2 critic updates, 2000
generator steps), with cifar10_biggan's hinge loss and Adam(2e-4, β = (0.5, 0.999)) and a generator EMA 0.99.
Offline: nothing to prepare.

    python -m experiments.train --config=experiments/configs/digits32_biggan.py --workdir=runs/digits32_biggan
"""

from experiments.configs import common
from experiments.configs.digits32_resnet import CPU_SIZE, EMA_DECAY, STEPS


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.image_gan("digits", "biggan", "biggan", arg, ...) at 32×32, ten classes; arg: a common.VARIANTS name."""
    return common.image_gan("digits", "biggan", "biggan", arg, image_size=32, latent_dim=80, batch_size=32,
                            steps=STEPS, ema_decay=EMA_DECAY, num_classes=10, spectral_norm=True, g_channels=16,
                            d_channels=16, fields=CPU_SIZE)
