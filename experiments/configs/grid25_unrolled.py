"""grid25, method unrolled (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg=None):
    return common.toy("grid25", "unrolled", arg)
