"""The SNGAN ResNet (Miyato et al. 2018) as Mimicry and StudioGAN reproduce it: kind "resnet"; its classes, with
other tables and defaults, are BigGAN's too (gan_jax.models.biggan).

Generator: dense z → bottom×bottom map, up-sampling residual blocks (BN-ReLU-up-conv3×3-BN-ReLU-conv3×3, 1×1
shortcut), BN-ReLU-conv3×3 to the image, tanh. Critic: an "optimized" first down-sampling block, residual blocks
(ReLU-conv3×3-ReLU-conv3×3, average pooling where the table says), ReLU, global sum pooling, a dense logit with
spectral norm on every layer (``spectral_norm``). Class-conditional (``num_classes > 0``): conditional batch norm in
the generator's blocks (per-class gains and biases, Miyato & Koyama 2018's cGAN-PD) and the projection term
⟨e_y, φ(x)⟩ in the critic.

Widths are multiples of the channel multiplier ch (64 by default) given per image size by ``PLANS``; with ch = 64
they are the published ones (Mimicry's SNGAN 32/48/64/128): at 32×32 (CIFAR-10) 256 generator channels and 128
critic channels, 4,276,739 and 1,053,825 parameters for 3-channel images and a 128-d latent (Mimicry's
SNGANGenerator32 / SNGANDiscriminator32). Two choices differ from Mimicry without changing a parameter: nearest
upsampling (as Miyato et al.'s chainer code, StudioGAN and BigGAN; Mimicry's is bilinear), and the shortcut's 1×1
convolution taken on the other side of the up/down-sampling (the same function, a quarter of the cost).

Initialisation as Mimicry: Glorot-uniform, gain √2 for the residual 3×3 convolutions and 1 elsewhere; the
conditional gains and biases follow it too (Mimicry draws gains from N(1, 0.02) and zero biases).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.errors import GanJaxError
from gan_jax.models.layers import (IMAGE_BN_MOMENTUM, WEIGHT_INITS, DownBlock, Layers, SelfAttention, UpBlock,
                                   batch_normalise, check_at_least, check_attention, check_image_input,
                                   check_image_size, check_labels, check_rank, critic_logit)


class Plan(NamedTuple):
    """The widths of one image size, as multiples of the channel multiplier ch."""

    bottom: int  # side of the generator's first feature map
    generator: tuple[int, ...]  # the first map's width, then each up-sampling block's output width
    critic: tuple[int, ...]  # each critic block's output width
    downsample: tuple[bool, ...]  # whether each critic block halves the side

    def generator_resolutions(self) -> tuple[int, ...]:
        """Side of each generator block's output."""
        return tuple(self.bottom * 2 ** (i + 1) for i in range(len(self.generator) - 1))

    def critic_resolutions(self, image_size: int) -> tuple[int, ...]:
        """Side of each critic block's output."""
        sides, side = [], image_size
        for down in self.downsample:
            side //= 2 if down else 1
            sides.append(side)
        return tuple(sides)


DEFAULT_CHANNELS = 64  # with which PLANS gives Mimicry's widths

# Mimicry's SNGAN nets (ngf/ndf = 256/128 at 32, 512/1024 at 48, 1024/1024 at 64 and 128), with ch = 64.
PLANS: dict[int, Plan] = {
    32: Plan(4, (4, 4, 4, 4), (2, 2, 2, 2), (True, True, False, False)),
    48: Plan(6, (8, 4, 2, 1), (1, 2, 4, 8, 16), (True, True, True, True, False)),
    64: Plan(4, (16, 8, 4, 2, 1), (1, 2, 4, 8, 16), (True, True, True, True, True)),
    128: Plan(4, (16, 16, 8, 4, 2, 1), (1, 2, 4, 8, 16, 16), (True, True, True, True, True, False)),
}


def attention_index(where: str, resolution: int, resolutions: tuple[int, ...]) -> int | None:
    """The first block whose output side is `resolution` (None for 0: no attention); GanJaxError if none is."""
    if not resolution:
        return None
    if resolution not in resolutions:
        raise GanJaxError(f"{where}: model.attention_resolution={resolution} is not the side of a block's output; "
                          f"valid: {', '.join(map(str, sorted(set(resolutions))))} (or 0: no attention)")
    return resolutions.index(resolution)


class _ResNetModule(nn.Module):
    """Fields and checks the generator and critic share."""

    PLANS: ClassVar[dict[int, Plan]] = PLANS

    @staticmethod
    def default_attention_resolution(image_size: int) -> int:
        """Where the architecture puts self-attention by default (0: nowhere; SNGAN has none)."""
        del image_size
        return 0

    def plan(self) -> Plan:
        check_image_size(type(self).__name__, self.image_size, self.PLANS)
        check_at_least(type(self).__name__, 1, channel_multiplier=self.ch)
        return self.PLANS[self.image_size]

    def attention_at(self, resolutions: tuple[int, ...], widths: tuple[int, ...]) -> int | None:
        """The block followed by self-attention (None: none), its width checked against the heads."""
        index = attention_index(type(self).__name__, self.attention_resolution, resolutions)
        if index is not None:
            check_attention(type(self).__name__, widths[index], self.attention_heads)
        return index

    def attend(self, h: jax.Array, train: bool) -> jax.Array:
        """The network's self-attention block "attention" applied to h (called from the compact __call__)."""
        return SelfAttention(heads=self.attention_heads, spectral_norm=self.spectral_norm,
                             weight_init=self.weight_init, dtype=self.dtype, name="attention")(h, train)


class ResNetGenerator(_ResNetModule):
    """G(z[, y]) = tanh(conv(ReLU(BN(B_k(… B_1(reshape(W z₀), c_1) …, c_k))))), B_i the up-sampling residual blocks
    with conditional batch norm on c_i (``layers.UpBlock``), self-attention after the block at
    ``attention_resolution`` (0: none).

    Conditions c_i: one-hot(y) (``shared_embedding_dim`` = 0) or a learnt shared embedding of y, concatenated with
    the i-th chunk of z when ``hierarchical_latent`` (z = [z₀, z_1, …, z_k] split evenly; BigGAN); no condition
    (plain batch norm) for an unconditional, non-hierarchical generator.
    """

    image_size: int
    channels: int = 3
    ch: int = DEFAULT_CHANNELS  # channel multiplier
    num_classes: int = 0
    shared_embedding_dim: int = 0
    hierarchical_latent: bool = False
    spectral_norm: bool = False
    weight_init: str = "xavier"
    attention_resolution: int = 0
    attention_heads: int = 1
    batch_axis: str | None = None  # the mapped axis whose devices share batch statistics
    dtype: Any = jnp.float32  # compute dtype; parameters are float32, the output is float32

    def __post_init__(self) -> None:
        self.widths()
        WEIGHT_INITS.get(self.weight_init)
        check_at_least(type(self).__name__, 1, channels=self.channels)
        check_at_least(type(self).__name__, 0, shared_embedding_dim=self.shared_embedding_dim)
        super().__post_init__()

    def widths(self) -> tuple[int, ...]:
        """The first map's width and each block's output width."""
        plan = self.plan()
        widths = tuple(self.ch * m for m in plan.generator)
        self.attention_at(plan.generator_resolutions(), widths[1:])
        return widths

    def latent_chunks(self, latent_dim: int) -> int:
        """How many chunks z is split into: one per block and one for the first map (hierarchical), else 1."""
        if not self.hierarchical_latent:
            return 1
        chunks = len(self.plan().generator)
        if latent_dim % chunks:
            below = chunks * max(1, latent_dim // chunks)
            raise GanJaxError(f"{type(self).__name__}: model.latent_dim={latent_dim} cannot be split into {chunks} "
                              f"equal chunks (hierarchical latents: one per generator block and one for the first "
                              f"map at {self.image_size}×{self.image_size}); use a multiple of {chunks}, e.g. "
                              f"{below} or {below + chunks}")
        return chunks

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None, train: bool = False) -> jax.Array:
        where = type(self).__name__
        check_rank(z, 2, where, "(n, latent_dim)")
        check_labels(where, self.num_classes, y, z.shape[0])
        plan, widths = self.plan(), self.widths()
        layers = Layers(self.dtype, self.spectral_norm, WEIGHT_INITS[self.weight_init], train)
        chunks = jnp.split(z, self.latent_chunks(z.shape[-1]), axis=-1)
        label = None
        if self.num_classes:
            label = (nn.Embed(self.num_classes, self.shared_embedding_dim, embedding_init=layers.init.kernel(1.0),
                              name="shared")(y)
                     if self.shared_embedding_dim else jax.nn.one_hot(y, self.num_classes))
        attention = self.attention_at(plan.generator_resolutions(), widths[1:])

        h = layers.dense(chunks[0].astype(self.dtype), plan.bottom**2 * widths[0], "stem")
        h = h.reshape(z.shape[0], plan.bottom, plan.bottom, widths[0])
        for i, width in enumerate(widths[1:]):
            parts = [c for c in (label, chunks[i + 1] if self.hierarchical_latent else None) if c is not None]
            condition = jnp.concatenate([p.astype(self.dtype) for p in parts], axis=-1) if parts else None
            h = UpBlock(width, spectral_norm=self.spectral_norm, weight_init=self.weight_init,
                        batch_axis=self.batch_axis, dtype=self.dtype, name=f"block_{i}")(h, condition, train)
            if i == attention:
                h = self.attend(h, train)
        h = jax.nn.relu(batch_normalise(h, train=train, batch_axis=self.batch_axis, dtype=self.dtype, name="bn_out",
                                        momentum=IMAGE_BN_MOMENTUM))
        return jnp.tanh(layers.conv(h, self.channels, 3, "to_image")).astype(jnp.float32)


class ResNetCritic(_ResNetModule):
    """f(x[, y]) = w·φ + b (+ ⟨e_y, φ⟩), φ = Σ_{h,w} ReLU(D_k(… D_1(x) …)), D_i the down-sampling residual blocks
    (``layers.DownBlock``, D_1 the optimized block), self-attention after the first block at
    ``attention_resolution`` (0: none); every layer spectrally normalised with ``spectral_norm``.

    ``wide``: the blocks' first convolution already has the block's output width (SAGAN/BigGAN), else the input's
    (SNGAN).
    """

    image_size: int
    ch: int = DEFAULT_CHANNELS  # channel multiplier
    num_classes: int = 0
    spectral_norm: bool = True
    wide: bool = False
    weight_init: str = "xavier"
    attention_resolution: int = 0
    attention_heads: int = 1
    dtype: Any = jnp.float32  # compute dtype; parameters are float32, the logits are float32

    def __post_init__(self) -> None:
        self.widths()
        WEIGHT_INITS.get(self.weight_init)
        super().__post_init__()

    def widths(self) -> tuple[int, ...]:
        """Each block's output width."""
        plan = self.plan()
        widths = tuple(self.ch * m for m in plan.critic)
        self.attention_at(plan.critic_resolutions(self.image_size), widths)
        return widths

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None, train: bool = True) -> jax.Array:
        where = type(self).__name__
        check_image_input(where, x, self.image_size)
        check_labels(where, self.num_classes, y, x.shape[0])
        plan, widths = self.plan(), self.widths()
        attention = self.attention_at(plan.critic_resolutions(self.image_size), widths)
        h = x.astype(self.dtype)
        for i, (width, down) in enumerate(zip(widths, plan.downsample)):
            hidden = width if (self.wide or i == 0) else h.shape[-1]
            h = DownBlock(width, hidden, downsample=down, first=i == 0, spectral_norm=self.spectral_norm,
                          weight_init=self.weight_init, dtype=self.dtype, name=f"block_{i}")(h, train)
            if i == attention:
                h = self.attend(h, train)
        phi = jnp.sum(jax.nn.relu(h), axis=(1, 2))
        init = WEIGHT_INITS[self.weight_init].kernel(1.0)
        return critic_logit(phi, self.dtype, spectral_norm=self.spectral_norm, train=train, y=y,
                            num_classes=self.num_classes, kernel_init=init, embedding_init=init,
                            normalise_projection=self.spectral_norm)
