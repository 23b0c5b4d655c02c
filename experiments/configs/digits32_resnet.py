r"""The class-conditional SNGAN ResNet pair (gan_jax.models.resnet: conditional batch norm in G, projection critic with
spectral norm) on scikit-learn's 8×8 digits resized to 32×32, sized to train on two CPU cores: channel multiplier
16 (a quarter of the published 64), batch 32, 2 critic updates per generator step, 2000 generator steps, the SNGAN
protocol's hinge loss and Adam(2e-4, β = (0, 0.9)) decayed linearly to 0 over the run, generator EMA 0.99.
Offline: nothing to prepare.

    python -m experiments.train --config=experiments/configs/digits32_resnet.py --workdir=runs/digits32_resnet
"""

from experiments.configs import common

STEPS = 2000
# An EMA horizon of 1/(1 − β) = 100 steps, 5 % of the run. At β = 0.999 the average still weighs in the first half of
# the run, whose generator barely used the labels (its sample grids at steps 500 and 1000): per-class accuracy 0.56
# after this config's 2000 steps, 2026-12-06.
EMA_DECAY = 0.99
CPU_SIZE = {"loss.n_critic": 2, "train.checkpoint_every": 500, "train.sample_every": 500,
            "train.eval_samples": 1000}  # with batch 32 and 16 channels, what fits two CPU cores (digits32_biggan too)


def get_config(arg: str | None = None) -> common.ConfigDict:
    """common.image_gan("digits", "resnet", "sngan", arg, ...) at 32×32, ten classes; arg: a common.VARIANTS name."""
    return common.image_gan("digits", "resnet", "sngan", arg, image_size=32, latent_dim=128, batch_size=32,
                            steps=STEPS, ema_decay=EMA_DECAY, num_classes=10, spectral_norm=True, g_channels=16,
                            d_channels=16, fields={**CPU_SIZE, "optim.generator.decay_steps": STEPS,
                                                         "optim.critic.decay_steps": STEPS})
