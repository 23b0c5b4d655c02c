"""ring8, method gan_minimax (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg=None):
    return common.toy("ring8", "gan_minimax", arg)
