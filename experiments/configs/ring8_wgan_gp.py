"""ring8, method wgan_gp (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg=None):
    return common.toy("ring8", "wgan_gp", arg)
