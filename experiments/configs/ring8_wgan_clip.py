"""ring8, method wgan_clip (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.toy("ring8", "wgan_clip", arg); arg: a common.VARIANTS name (none = the full run)."""
    return common.toy("ring8", "wgan_clip", arg)
