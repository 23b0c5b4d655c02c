"""1-D two-Gaussian mixture, WGAN-GP: the mixture of the mode-covering vs mode-seeking discussion."""

from experiments.configs import common


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.toy("two_gaussians_1d", "wgan_gp", arg) with a 1-D latent; arg: a common.VARIANTS name."""
    cfg = common.toy("two_gaussians_1d", "wgan_gp", arg)
    cfg.model.latent_dim = 1
    return cfg
