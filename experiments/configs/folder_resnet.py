r"""SNGAN (the ResNet pair of gan_jax.models.resnet, spectral norm in the critic, hinge loss, Mimicry's CIFAR-10
protocol) on an image folder prepared with experiments.prepare_images, at the size it was prepared at: the resnet
kind supports 32, 48, 64 and 128 (Mimicry's published widths at each; another size is refused with the list, or set
--config.data.image_size to resize).

    python -m experiments.prepare_images --src=~/my_photos --name=my_images --image_size=64
    python -m experiments.train --config=experiments/configs/folder_resnet.py --config.data.name=my_images

A folder with class sub-folders trains a class-conditional pair with --config.model.num_classes=<its classes>.
`:smoke` trains a tiny copy on the built-in digits at 32×32 (seconds, nothing to prepare).
"""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.image_gan("my_images", "resnet", "sngan", arg, ...); data.name is the prepared folder's name."""
    return common.image_gan("my_images", "resnet", "sngan", arg, image_size=0, latent_dim=128, batch_size=64,
                            steps=100_000, spectral_norm=True)
