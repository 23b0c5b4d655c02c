"""scikit-learn's 8x8 digits (shipped offline, read through tfds), conv WGAN-GP, λ = 10."""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.images("digits", "wgan_gp", arg); arg: a common.VARIANTS name (none = the full run)."""
    return common.images("digits", "wgan_gp", arg)
