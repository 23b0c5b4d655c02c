"""ring8, method gan_minimax (see experiments/configs/common.py)."""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.toy("ring8", "gan_minimax", arg); arg: a common.VARIANTS name (none = the full run)."""
    return common.toy("ring8", "gan_minimax", arg)
