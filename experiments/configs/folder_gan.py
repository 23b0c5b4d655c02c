"""An image folder prepared with `python -m experiments.prepare_images --src=DIR --name=NAME`: conv WGAN-GP.

    python -m experiments.prepare_images --src=~/my_photos --name=my_photos --image_size=32
    python -m experiments.train --config=experiments/configs/folder_gan.py --config.data.name=my_photos

Images are streamed from disk when they do not fit data.device_budget_mb (data.pipeline=auto); a folder with
class sub-folders can train a class-conditional pair with --config.model.num_classes=<its number of classes>.
"""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.images("my_images", "wgan_gp", arg) with batch norm in the generator; data.name is the prepared name."""
    cfg = common.images("my_images", "wgan_gp", arg)
    cfg.model.generator_batch_norm = True
    return cfg
