"""MLP generator, critic and classifier for low-dimensional data (points (n, d); images are flattened by the
classifier only)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.models.layers import (ACTIVATIONS, check_at_least, check_labels, check_rank, critic_logit, dense_layers,
                                   stack, with_label_embedding)


def _check_mlp(module: nn.Module, **widths: int) -> None:
    ACTIVATIONS.get(module.activation)  # an error naming the valid activations
    check_at_least(type(module).__name__, 1, **widths)
    check_at_least(type(module).__name__, 0, depth=module.depth)


class MLPGenerator(nn.Module):
    """G(z[, y]) = W_out·a(… a(W_1 [z, e_y] + b_1) …) + b_out, ``depth`` hidden layers of ``width`` units."""

    output_dim: int = 2
    width: int = 512
    depth: int = 3
    activation: str = "relu"
    batch_norm: bool = False  # batch norm after each hidden layer (running statistics in "batch_stats")
    batch_axis: str | None = None  # with batch_norm: the mapped axis whose devices share batch statistics
    num_classes: int = 0  # > 0: class-conditional G(z, y)
    dtype: Any = jnp.float32  # compute dtype; parameters are float32, the output is float32

    def __post_init__(self) -> None:
        _check_mlp(self, output_dim=self.output_dim, width=self.width)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None, train: bool = False) -> jax.Array:
        check_rank(z, 2, "MLPGenerator", "(n, latent_dim)")
        check_labels("MLPGenerator", self.num_classes, y, z.shape[0])
        h = with_label_embedding(z, y, self.num_classes, self.dtype)
        h = stack(dense_layers((self.width,) * self.depth, self.dtype), h, self.activation,
                  batch_norm=self.batch_norm, batch_axis=self.batch_axis, train=train)
        return nn.Dense(self.output_dim, dtype=self.dtype, name="output")(h).astype(jnp.float32)


class MLPCritic(nn.Module):
    """f(x) = w_out·a(… a(W_1 x + b_1) …) + b_out ∈ ℝ, ``depth`` hidden layers (+ spectral/batch norm)."""

    width: int = 512
    depth: int = 3
    activation: str = "relu"
    spectral_norm: bool = False
    batch_norm: bool = False
    batch_axis: str | None = None  # with batch_norm: the mapped axis whose devices share batch statistics
    num_classes: int = 0  # > 0: class-conditional f(x, y) with a projection term
    dtype: Any = jnp.float32  # compute dtype; parameters are float32, the logits are float32

    def __post_init__(self) -> None:
        _check_mlp(self, width=self.width)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None, train: bool = True) -> jax.Array:
        check_rank(x, 2, "MLPCritic", "(n, d)")
        check_labels("MLPCritic", self.num_classes, y, x.shape[0])
        layers = dense_layers((self.width,) * self.depth, self.dtype)
        h = stack(layers, x, self.activation, spectral_norm=self.spectral_norm, batch_norm=self.batch_norm,
                  batch_axis=self.batch_axis, train=train)
        return critic_logit(h, self.dtype, spectral_norm=self.spectral_norm, train=train, y=y,
                            num_classes=self.num_classes)


class MLPClassifier(nn.Module):
    """(W_out h + b_out, h), h = a(W_L … a(W_1 x + b_1) …): logits (n, num_classes), last hidden features h.

    ``x`` (n, ...) is flattened to (n, d); one hidden layer per entry of ``hidden``, float32 throughout.
    """

    num_classes: int
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"

    def __post_init__(self) -> None:
        ACTIVATIONS.get(self.activation)  # an error naming the valid activations
        if len(self.hidden) < 1 or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty tuple of positive widths, got {self.hidden}")
        check_at_least("MLPClassifier", 1, num_classes=self.num_classes)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = stack(dense_layers(tuple(self.hidden), jnp.float32), x.reshape(x.shape[0], -1), self.activation)
        return nn.Dense(self.num_classes, name="output")(h), h
