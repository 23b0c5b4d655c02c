r"""SNGAN on CIFAR-10 (Miyato et al. 2018) with the protocol of Mimicry's CIFAR-10 table: the ResNet pair of
gan_jax.models.resnet (256 generator / 128 critic channels, spectral norm in the critic), hinge loss, 5 critic
updates per generator step, Adam(2e-4, β = (0, 0.9)) decayed linearly to 0, batch 64, 100k generator steps.

    python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10', data_dir='$HOME/.cache/gan_jax/tensorflow_datasets').download_and_prepare(file_format='array_record')"
    python -m experiments.train --config=experiments/configs/cifar10_sngan.py --workdir=runs/cifar10_sngan

A run without the prepared dataset stops at once with the command that prepares it. `:smoke` trains a tiny copy
on the built-in digits (seconds, no download).
"""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.image_gan("cifar10", "resnet", "sngan", arg, ...); arg: a common.VARIANTS name (none = the full run)."""
    return common.image_gan("cifar10", "resnet", "sngan", arg, image_size=32, latent_dim=128, batch_size=64,
                            steps=100_000, spectral_norm=True)
