"""grid25, method wgan_clip (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg=None):
    return common.toy("grid25", "wgan_clip", arg)
