"""scikit-learn's 8x8 digits (shipped offline, read through tfds), conv WGAN-GP, λ = 10."""

from experiments.configs import common


def get_config(arg=None):
    return common.images("digits", "wgan_gp", arg)
