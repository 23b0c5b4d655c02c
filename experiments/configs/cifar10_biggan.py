r"""Class-conditional BigGAN-style GAN on CIFAR-10 (Brock et al. 2019) as StudioGAN's CIFAR-10 BigGAN: the networks
of gan_jax.models.biggan (ch 96, shared class embedding of 128, hierarchical latents z ∈ ℝ⁸⁰, self-attention at
16×16, spectral norm in both networks, projection critic), hinge loss, 5 critic updates per generator step,
Adam(2e-4, β = (0.5, 0.999)), batch 64, 100k generator steps, generator EMA 0.9999 (StudioGAN starts its EMA at
step 1000; here it is debiased from step 1).

    python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10', data_dir='$HOME/.cache/gan_jax/tensorflow_datasets').download_and_prepare(file_format='array_record')"
    python -m experiments.train --config=experiments/configs/cifar10_biggan.py --workdir=runs/cifar10_biggan

A run without the prepared dataset stops at once with the command that prepares it. `:smoke` trains a tiny copy
on the built-in digits (seconds, no download). `:diffaug` is the full run with DiffAugment (Zhao et al. 2020,
gan_jax.augment) and the policy of the authors' BigGAN CIFAR-10 run, translation and cutout
(data-efficient-gans, DiffAugment-biggan-cifar/scripts/DiffAugment-biggan-cifar10.sh), on the reals and fakes
the critic scores; the other settings stay this config's:

    python -m experiments.train --config=experiments/configs/cifar10_biggan.py:diffaug --workdir=runs/biggan_da
"""

from experiments.configs import common

DIFFAUGMENT_POLICY = "translation,cutout"  # the DiffAugment authors' BigGAN CIFAR-10 policy


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.image_gan("cifar10", "biggan", "biggan", arg, ...); arg: a common.VARIANTS name (none = the full run),
    or "diffaug": the full run with augment.policy = DIFFAUGMENT_POLICY."""
    diffaug = arg == "diffaug"
    cfg = common.image_gan("cifar10", "biggan", "biggan", None if diffaug else arg, image_size=32, latent_dim=80,
                           batch_size=64, steps=100_000, ema_decay=0.9999, num_classes=10, spectral_norm=True)
    if diffaug:
        cfg.augment.policy = DIFFAUGMENT_POLICY
    return cfg
