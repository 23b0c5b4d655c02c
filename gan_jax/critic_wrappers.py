"""What the critic scores besides one sample: packs of samples (PacGAN, Lin et al. 2018: `pack_samples`,
`packed_shape`) and, with an auxiliary-classifier head, the class too (ACGAN, Odena et al. 2017:
`AuxiliaryClassifierCritic`). The engine applies them as `loss.pack` and `loss.acgan_weight` say."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.errors import GanJaxError


def pack_samples(x: jax.Array, pack: int) -> jax.Array:
    """(B, *dims) → (B/m, *dims[:-1], m·dims[-1]): rows m·i … m·i+m−1 concatenated along the last axis.

    PacGAN packing: flat samples (B, d) become (B/m, m·d); images (B, H, W, C) become (B/m, H, W, m·C).
    """
    if pack == 1:
        return x
    if x.shape[0] % pack:
        raise ValueError(f"a batch of {x.shape[0]} samples cannot be split into packs of m={pack} samples")
    grouped = x.reshape(x.shape[0] // pack, pack, *x.shape[1:])
    return jnp.moveaxis(grouped, 1, -2).reshape(x.shape[0] // pack, *x.shape[1:-1], pack * x.shape[-1])


def packed_shape(data_shape: tuple[int, ...], pack: int) -> tuple[int, ...]:
    """The critic's per-example input shape for packs of `pack` samples: (*dims[:-1], pack·dims[-1])."""
    return (*data_shape[:-1], pack * data_shape[-1])


class AuxiliaryClassifierCritic(nn.Module):
    """(f(x[, y]), W·φ(x) + b): the critic's logit and class logits (n, K) from its features φ (ACGAN head).

    φ is the input of the critic's output layer, the submodule named "logit" that every critic of
    gan_jax.models ends in; it is read with `nn.intercept_methods`, so the networks need no change. The
    critic's variables sit under "critic", the head's under "classifier".
    """

    critic: nn.Module
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None, train: bool = True) -> tuple[jax.Array, jax.Array]:
        features = []

        def read_features(call, args, kwargs, context):
            if context.module.name == "logit" and context.method_name == "__call__":
                features.append(args[0])
            return call(*args, **kwargs)

        with nn.intercept_methods(read_features):
            logit = self.critic(x, y, train=train)
        if not features:
            raise GanJaxError(f"loss.acgan_weight > 0 needs a critic whose output layer is a submodule named "
                              f"'logit'; {type(self.critic).__name__} has none. Set loss.acgan_weight=0")
        phi = features[-1].reshape(x.shape[0], -1)
        head = nn.Dense(self.num_classes, dtype=getattr(self.critic, "dtype", jnp.float32), name="classifier")
        return logit, head(phi).astype(jnp.float32)
