"""Any tfds image dataset you have prepared (default mnist), conv WGAN-GP at 28x28.

    python -m experiments.train --config=experiments/configs/tfds_wgan_gp.py \
        --config.data.data_dir=~/tensorflow_datasets --config.data.name=mnist
"""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.images("mnist", "wgan_gp", arg, image_size=28); arg: a common.VARIANTS name (none = the full run)."""
    return common.images("mnist", "wgan_gp", arg, image_size=28)
