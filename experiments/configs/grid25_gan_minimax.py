"""grid25, method gan_minimax (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg=None):
    return common.toy("grid25", "gan_minimax", arg)
