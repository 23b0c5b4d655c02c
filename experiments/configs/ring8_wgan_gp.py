"""ring8, method wgan_gp (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.toy("ring8", "wgan_gp", arg); arg: a common.VARIANTS name (none = the full run)."""
    return common.toy("ring8", "wgan_gp", arg)
