"""ring8, method unrolled (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg=None):
    return common.toy("ring8", "unrolled", arg)
