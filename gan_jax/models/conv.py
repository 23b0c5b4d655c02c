"""The DCGAN-style convolutional pair of the digits/folder configs (kind "conv"): stride-2 4×4 (transposed)
convolutions with channels doubling towards the smallest feature map, batch norm optional in either network."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.models.layers import (as_matrix_draw, check_at_least, check_image_input, check_image_size, check_labels,
                                   check_rank, critic_logit, stack, with_label_embedding)

# Image sizes: size -> (side of the smallest feature map, number of stride-2 resolution changes).
IMAGE_SIZES: dict[int, tuple[int, int]] = {8: (4, 1), 16: (4, 2), 28: (7, 2), 32: (4, 3), 64: (4, 4)}

# W ~ lecun_normal drawn as the (∏shape[:-1], shape[-1]) matrix, then reshaped: same fan_in, same law.
_matrix_lecun_normal = as_matrix_draw(nn.initializers.lecun_normal())

_STRIDE_2 = dict(kernel_size=(4, 4), strides=(2, 2), padding="SAME", kernel_init=_matrix_lecun_normal)


def _spatial_plan(where: str, image_size: int) -> tuple[int, int]:
    check_image_size(where, image_size, IMAGE_SIZES)
    return IMAGE_SIZES[image_size]


class ConvGenerator(nn.Module):
    """G(z[, y]) = tanh(conv3×3(ReLU(BN(convT↑2(… ReLU(BN(reshape(W [z, e_y] + b))) …))))) ∈ [−1, 1]^{H×W×C}.

    BN (batch norm, as in DCGAN) only with ``batch_norm=True``.
    """

    image_size: int
    channels: int = 1
    base_width: int = 64
    batch_norm: bool = False
    batch_axis: str | None = None  # with batch_norm: the mapped axis whose devices share batch statistics
    num_classes: int = 0  # > 0: class-conditional G(z, y)
    dtype: Any = jnp.float32  # compute dtype; parameters are float32, the output is float32

    def __post_init__(self) -> None:
        _spatial_plan("ConvGenerator", self.image_size)
        check_at_least("ConvGenerator", 1, channels=self.channels, base_width=self.base_width)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None, train: bool = False) -> jax.Array:
        check_rank(z, 2, "ConvGenerator", "(n, latent_dim)")
        check_labels("ConvGenerator", self.num_classes, y, z.shape[0])
        side, n_up = _spatial_plan("ConvGenerator", self.image_size)
        features = self.base_width * 2**n_up
        h = with_label_embedding(z, y, self.num_classes, self.dtype)
        norm = dict(batch_norm=self.batch_norm, batch_axis=self.batch_axis, train=train)
        h = stack([nn.Dense(side * side * features, dtype=self.dtype, name="project")], h, "relu", **norm)
        h = h.reshape(z.shape[0], side, side, features)
        ups = [nn.ConvTranspose(self.base_width * 2 ** (n_up - 1 - i), **_STRIDE_2, dtype=self.dtype, name=f"up_{i}")
               for i in range(n_up)]
        h = stack(ups, h, "relu", **norm)
        to_image = nn.Conv(self.channels, (3, 3), kernel_init=_matrix_lecun_normal, dtype=self.dtype,
                           name="to_image")
        return jnp.tanh(to_image(h)).astype(jnp.float32)


class ConvCritic(nn.Module):
    """f(x) = w·flatten(lrelu(conv↓2(… lrelu(conv↓2(x)) …))) + b ∈ ℝ; optional spectral/batch norm."""

    image_size: int
    base_width: int = 64
    spectral_norm: bool = False
    batch_norm: bool = False
    batch_axis: str | None = None  # with batch_norm: the mapped axis whose devices share batch statistics
    num_classes: int = 0  # > 0: class-conditional f(x, y) with a projection term
    dtype: Any = jnp.float32  # compute dtype; parameters are float32, the logits are float32

    def __post_init__(self) -> None:
        _spatial_plan("ConvCritic", self.image_size)
        check_at_least("ConvCritic", 1, base_width=self.base_width)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None, train: bool = True) -> jax.Array:
        check_image_input("ConvCritic", x, self.image_size)
        check_labels("ConvCritic", self.num_classes, y, x.shape[0])
        _, n_down = _spatial_plan("ConvCritic", self.image_size)
        downs = [nn.Conv(self.base_width * 2**i, **_STRIDE_2, dtype=self.dtype, name=f"down_{i}")
                 for i in range(n_down)]
        h = stack(downs, x, "leaky_relu", spectral_norm=self.spectral_norm, batch_norm=self.batch_norm,
                  batch_axis=self.batch_axis, train=train)
        return critic_logit(h, self.dtype, spectral_norm=self.spectral_norm, train=train, y=y,
                            num_classes=self.num_classes)
