r"""DCGAN (Radford et al. 2016) on CelebA at 64×64: the networks of gan_jax.models.dcgan with batch norm in both
(ngf = ndf = 64, z ∈ ℝ¹⁰⁰), the non-saturating loss, Adam(2e-4, β = (0.5, 0.999)), batch 128, 8,000 generator
steps (PyTorch's DCGAN tutorial: 5 epochs of CelebA's 202,599 images).

    python -c "import tensorflow_datasets as tfds; tfds.builder('celeb_a', data_dir='$HOME/.cache/gan_jax/tensorflow_datasets').download_and_prepare(file_format='array_record')"
    python -m experiments.train --config=experiments/configs/celeba64_dcgan.py --workdir=runs/celeba64_dcgan

tfds's celeb_a holds the aligned 178×218 faces, resized here to 64×64 (the aspect ratio is not kept). For the
tutorial's centre crop, prepare the image folder once and train on it instead:

    python -m experiments.prepare_images --src=img_align_celeba --name=celeba64 --image_size=64
    python -m experiments.train --config=experiments/configs/celeba64_dcgan.py --config.data.name=celeba64

A run without the prepared dataset stops at once with the command that prepares it. `:smoke` trains a tiny copy
on the built-in digits (seconds, no download).
"""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.image_gan("celeb_a", "dcgan", "dcgan", arg, ...); arg: a common.VARIANTS name (none = the full run)."""
    return common.image_gan("celeb_a", "dcgan", "dcgan", arg, image_size=64, latent_dim=100, batch_size=128,
                            steps=8_000, batch_norm=True)
