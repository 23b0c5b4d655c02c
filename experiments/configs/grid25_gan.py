"""grid25, method gan (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg=None):
    return common.toy("grid25", "gan", arg)
