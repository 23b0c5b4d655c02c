"""BigGAN-style networks (Brock et al. 2019): kind "biggan", the ResNet pair of gan_jax.models.resnet with BigGAN's
tables and choices, as StudioGAN's big_resnet builds them.

- Generator: a shared class embedding (``shared_embedding_dim``, 128) and hierarchical latents: z is split into one
  chunk for the first map and one per block, and each block's conditional batch norm takes its gains 1 + W_γ c and
  biases W_β c from c = [shared embedding(y), z chunk]; spectral norm on every layer of G too (not the shared
  embedding); self-attention after the block at ``attention_resolution``.
- Critic: projection discriminator (Miyato & Koyama 2018) with spectral norm, wide residual blocks (the first conv
  of a block already has the block's width), self-attention after the first block at ``attention_resolution``.
- Orthogonal initialisation of every weight.

Defaults, from StudioGAN's CIFAR-10 BigGAN (src/configs/CIFAR10/BigGAN.yaml: z 80, shared 128, g/d_conv_dim 96,
attention after G's block 2 and D's block 1, i.e. at 16×16): ch = 96 and self-attention at half the image side
(16 at 32, 32 at 64, 64 at 128 — BigGAN's own placement at 128×128). Widths per size are StudioGAN's; at 32×32, for
3-channel images, 10 classes and z of 80: 9,416,196 generator and 2,415,170 critic parameters, as StudioGAN's.
"""

from __future__ import annotations

from typing import ClassVar

from gan_jax.models.resnet import Plan, ResNetCritic, ResNetGenerator

# StudioGAN's big_resnet widths (g_conv_dim / d_conv_dim = ch) and critic down-sampling.
PLANS: dict[int, Plan] = {
    32: Plan(4, (4, 4, 4, 4), (2, 2, 2, 2), (True, True, False, False)),
    64: Plan(4, (16, 8, 4, 2, 1), (1, 2, 4, 8, 16), (True, True, True, True, False)),
    128: Plan(4, (16, 16, 8, 4, 2, 1), (1, 2, 4, 8, 16, 16), (True, True, True, True, True, False)),
}
DEFAULT_CHANNELS = 96


def default_attention_resolution(image_size: int) -> int:
    """Half the image side: after the generator's second-to-last block and the critic's first."""
    return image_size // 2


class BigGANGenerator(ResNetGenerator):
    """``ResNetGenerator`` with BigGAN's tables and defaults: shared embedding, hierarchical z, spectral norm,
    orthogonal init, ch = 96."""

    PLANS: ClassVar[dict[int, Plan]] = PLANS
    default_attention_resolution = staticmethod(default_attention_resolution)

    ch: int = DEFAULT_CHANNELS
    shared_embedding_dim: int = 128
    hierarchical_latent: bool = True
    spectral_norm: bool = True
    weight_init: str = "orthogonal"


class BigGANCritic(ResNetCritic):
    """``ResNetCritic`` with BigGAN's tables and defaults: wide blocks, orthogonal init, ch = 96."""

    PLANS: ClassVar[dict[int, Plan]] = PLANS
    default_attention_resolution = staticmethod(default_attention_resolution)

    ch: int = DEFAULT_CHANNELS
    wide: bool = True
    weight_init: str = "orthogonal"
