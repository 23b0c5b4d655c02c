"""The benchmarked GAN: the ring8 WGAN-GP of experiments/configs/ring8_wgan_gp.py, as numbers for the
hand-written JAX and PyTorch versions and as the engine's config (checked to agree)."""

from __future__ import annotations

BATCH, N_CRITIC, DEPTH, LATENT = 256, 5, 3, 2
PENALTY_WEIGHT, LEARNING_RATE, BETAS = 0.1, 1e-4, (0.5, 0.9)
RING_RADIUS, RING_STD, RING_MODES = 2.0, 0.02, 8


def ring8_config(width: int):
    """The engine config of the ring8 WGAN-GP with MLP width `width` (asserted to match the numbers above)."""
    from experiments.configs import common

    cfg = common.toy("ring8", "wgan_gp")
    cfg.model.width = width
    assert (cfg.data.batch_size, cfg.loss.n_critic, cfg.model.depth) == (BATCH, N_CRITIC, DEPTH)
    assert (cfg.loss.penalty_weight, cfg.optim.critic.b1, cfg.optim.critic.b2) == (PENALTY_WEIGHT, *BETAS)
    return cfg
