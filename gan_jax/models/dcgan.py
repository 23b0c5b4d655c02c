"""DCGAN (Radford et al. 2016) as the field reproduces it (PyTorch's dcgan example, dcgan.torch): kind "dcgan".

Generator: z (and a label embedding when conditional) → 4×4 map of 8·ch (64×64) or 4·ch (32×32) channels, then 4×4
stride-2 transposed convolutions halving the channels, each followed by batch norm and ReLU, and a last transposed
convolution to the image with tanh. Critic: 4×4 stride-2 convolutions doubling the channels from ch, LeakyReLU(0.2),
batch norm after all but the first (``batch_norm``, Radford's critic) or spectral norm (``spectral_norm``), and a
logit over the flattened 4×4 map (the reference's final 4×4 "valid" convolution) plus the projection term when
conditional. No layer has a bias (the references drop them: batch norm cancels them); weights ~ N(0, 0.02).

Widths at 64×64 with ch = 64: G 512 → 256 → 128 → 64 → C, D 64 → 128 → 256 → 512 → 1: PyTorch's DCGAN example
(nz = 100, ngf = ndf = 64), 3,576,704 and 2,765,568 parameters.

The critic's batch norm, when on, normalises real and fake examples together: the engine scores them in one batch
(the references call the critic on each separately).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.models.convolution import conv_general_dilated
from gan_jax.models.layers import (ACTIVATIONS, IMAGE_BN_MOMENTUM, apply_layer, batch_normalise, check_at_least,
                                   check_image_input, check_image_size, check_labels, check_rank, critic_logit,
                                   normal, with_label_embedding)

# image size -> channel multipliers of the feature maps from 4×4 upwards (the critic reads them in reverse).
WIDTHS: dict[int, tuple[int, ...]] = {32: (4, 2, 1), 64: (8, 4, 2, 1)}
DEFAULT_CHANNELS = 64  # ngf = ndf of the reference

_INIT = normal(0.02)
# PyTorch's 4×4 stride-2 (transposed) convolutions with padding 1, each halving or doubling the side: the input
# padded by 1 (conv); the transposed one as the convolution of the input dilated by 2 and padded by 4 − 1 − 1 = 2
# (flax's ConvTranspose without kernel flip: one convolution path; on CPU, convolution.conv_general_dilated computes it
# as four 2×2 convolutions of the undilated input, one per output phase, and the strided one with its fast kernel
# gradient and its input gradient by the same phases).
_CONV = dict(kernel_size=(4, 4), use_bias=False, kernel_init=_INIT, conv_general_dilated=conv_general_dilated)
_DOWN = dict(_CONV, strides=(2, 2), padding=((1, 1), (1, 1)))
_UP = dict(_CONV, input_dilation=(2, 2), padding=((2, 2), (2, 2)))


def _widths(where: str, image_size: int, ch: int) -> tuple[int, ...]:
    check_image_size(where, image_size, WIDTHS)
    check_at_least(where, 1, channel_multiplier=ch)
    return tuple(ch * m for m in WIDTHS[image_size])


class DCGANGenerator(nn.Module):
    """G(z[, y]) = tanh(convT↑2(ReLU(BN(… ReLU(BN(reshape(W [z, e_y]))) …)))) ∈ [−1, 1]^{H×W×C}."""

    image_size: int
    channels: int = 3
    ch: int = DEFAULT_CHANNELS
    num_classes: int = 0  # > 0: class-conditional G(z, y) (label embedding concatenated to z)
    batch_axis: str | None = None  # the mapped axis whose devices share batch statistics
    dtype: Any = jnp.float32  # compute dtype; parameters are float32, the output is float32

    def __post_init__(self) -> None:
        _widths("DCGANGenerator", self.image_size, self.ch)
        check_at_least("DCGANGenerator", 1, channels=self.channels)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None, train: bool = False) -> jax.Array:
        check_rank(z, 2, "DCGANGenerator", "(n, latent_dim)")
        check_labels("DCGANGenerator", self.num_classes, y, z.shape[0])
        widths = _widths("DCGANGenerator", self.image_size, self.ch)
        norm = lambda h, name: jax.nn.relu(batch_normalise(  # noqa: E731
            h, train=train, batch_axis=self.batch_axis, dtype=self.dtype, name=name, momentum=IMAGE_BN_MOMENTUM))
        h = with_label_embedding(z, y, self.num_classes, self.dtype)
        # The reference's 4×4 transposed convolution of the 1×1 latent map: a dense layer to the 4×4 map.
        h = nn.Dense(16 * widths[0], use_bias=False, kernel_init=_INIT, dtype=self.dtype, name="project")(h)
        h = norm(h.reshape(z.shape[0], 4, 4, widths[0]), "project_bn")
        for i, width in enumerate(widths[1:]):
            h = norm(nn.Conv(width, **_UP, dtype=self.dtype, name=f"up_{i}")(h), f"up_{i}_bn")
        to_image = nn.Conv(self.channels, **_UP, dtype=self.dtype, name="to_image")
        return jnp.tanh(to_image(h)).astype(jnp.float32)


class DCGANCritic(nn.Module):
    """f(x[, y]) = w·flatten(lrelu(BN(conv↓2(… lrelu(conv↓2(x)) …)))) (+ ⟨e_y, ·⟩) ∈ ℝ, BN and/or spectral norm
    optional (no BN on the first layer)."""

    image_size: int
    ch: int = DEFAULT_CHANNELS
    spectral_norm: bool = False
    batch_norm: bool = False
    num_classes: int = 0  # > 0: class-conditional f(x, y) with a projection term
    batch_axis: str | None = None  # with batch_norm: the mapped axis whose devices share batch statistics
    dtype: Any = jnp.float32  # compute dtype; parameters are float32, the logits are float32

    def __post_init__(self) -> None:
        _widths("DCGANCritic", self.image_size, self.ch)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None, train: bool = True) -> jax.Array:
        check_image_input("DCGANCritic", x, self.image_size)
        check_labels("DCGANCritic", self.num_classes, y, x.shape[0])
        h = x
        for i, width in enumerate(reversed(_widths("DCGANCritic", self.image_size, self.ch))):
            h = apply_layer(nn.Conv(width, **_DOWN, dtype=self.dtype, name=f"down_{i}"), h,
                            spectral_norm=self.spectral_norm, train=train)
            if self.batch_norm and i > 0:
                h = batch_normalise(h, train=train, batch_axis=self.batch_axis, dtype=self.dtype,
                                    name=f"down_{i}_bn", momentum=IMAGE_BN_MOMENTUM)
            h = ACTIVATIONS["leaky_relu"](h)
        return critic_logit(h, self.dtype, spectral_norm=self.spectral_norm, train=train, y=y,
                            num_classes=self.num_classes, use_bias=False, kernel_init=_INIT, embedding_init=_INIT,
                            normalise_projection=self.spectral_norm)
