"""Layers every network of gan_jax.models is built from: normalised dense/conv layers, (conditional) batch norm,
self-attention, the residual blocks of the ResNet generators and critics, initialisers and input checks.

Conventions (NHWC images, float32 parameters, compute in the module's ``dtype``):

- ``apply_layer(layer, x, spectral_norm=..., batch_norm=..., train=...)`` wraps a Dense/Conv/Embed: with spectral
  norm (Miyato et al. 2018), W̃ = W/σ(W) with σ from one power-iteration step per call on the persistent vector u,
  stored in "batch_stats" as ``{name}_sn/{name}/kernel/u`` (and ``…/sigma``). flax's ``nn.SpectralNorm`` does it: a
  kernel of shape (…, c_out) is flattened to the matrix (∏…, c_out) (a conv kernel (kh, kw, c_in, c_out) to
  (kh·kw·c_in, c_out)); u is (1, c_out); one step is v ← W u/‖W u‖, u ← Wᵀv/‖Wᵀv‖, σ = vᵀW u, stored only when
  ``train`` (a read-only call still takes one step from the stored u, without storing it: deterministic).
- Batch norm normalises with the batch's statistics when ``train`` (over the devices of ``batch_axis`` too) and
  with its running averages otherwise.
- User-fixable problems (sizes, widths, labels) raise ``GanJaxError``; malformed inputs (a bug) ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.errors import GanJaxError
from gan_jax.models.convolution import conv_general_dilated
from gan_jax.registry import Registry

Initializer = Callable[..., jax.Array]  # (key, shape, dtype) -> array

# ---------------------------------------------------------------------------------------------------------
# Activations, by the name a config gives (model.activation).

ACTIVATIONS: Registry[Callable[[jax.Array], jax.Array]] = Registry("activation", {
    "relu": jax.nn.relu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, negative_slope=0.2),  # DCGAN slope (Radford et al. 2016)
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    "swish": jax.nn.swish,
})


# ---------------------------------------------------------------------------------------------------------
# Checks.


def check_rank(x: jax.Array, rank: int, where: str, layout: str) -> None:
    """ValueError unless x has `rank` axes (a malformed call, not a config problem)."""
    if x.ndim != rank:
        raise ValueError(f"{where} expects input of shape {layout}, got shape {x.shape}")


def check_at_least(where: str, minimum: int, **values: int) -> None:
    """GanJaxError naming the first of `values` below `minimum`."""
    for name, value in values.items():
        if value < minimum:
            raise GanJaxError(f"{where}: {name} must be >= {minimum}, got {value}")


def check_labels(where: str, num_classes: int, y: jax.Array | None, n: int) -> None:
    """GanJaxError unless y is given exactly when the network is conditional (num_classes > 0); ValueError
    unless it has shape (n,)."""
    if num_classes and y is None:
        raise GanJaxError(f"{where}(num_classes={num_classes}) is class-conditional: pass labels y of shape ({n},)")
    if not num_classes and y is not None:
        raise GanJaxError(f"{where} is unconditional (num_classes=0) but got labels y; set model.num_classes")
    if y is not None and jnp.shape(y) != (n,):
        raise ValueError(f"{where}: labels y must have shape ({n},), got {jnp.shape(y)}")


def check_image_size(where: str, image_size: int, supported: Any) -> None:
    """GanJaxError naming the supported sizes unless image_size is one of them."""
    if image_size not in supported:
        raise GanJaxError(f"{where}: image_size {image_size!r} is not supported; supported sizes: {tuple(supported)} "
                          "(set data.image_size to one of them: images are resized)")


def check_image_input(where: str, x: jax.Array, image_size: int) -> None:
    """ValueError unless x is a batch of image_size² images (n, H, W, C)."""
    check_rank(x, 4, where, f"(n, {image_size}, {image_size}, C)")
    if x.shape[1:3] != (image_size, image_size):
        raise ValueError(f"{where}(image_size={image_size}) expects (n, {image_size}, {image_size}, C) input, "
                         f"got {x.shape}")


def check_attention(where: str, channels: int, heads: int) -> None:
    """GanJaxError unless 8·heads divides the channels: θ, φ have C/8 channels and g C/2, split over the heads."""
    if heads < 1 or channels % (8 * heads):
        valid = [h for h in range(1, channels // 8 + 1) if channels % (8 * h) == 0]
        raise GanJaxError(
            f"{where}: model.attention_heads={heads} does not fit the {channels} channels at the attention "
            f"resolution: the channels must be divisible by 8·heads (θ, φ take C/8 channels, g C/2, split over the "
            f"heads); heads that fit: {', '.join(map(str, valid)) or 'none (change the channel width)'}")


# ---------------------------------------------------------------------------------------------------------
# Initialisers. XLA on CPU compiles random draws of rank-3/4 shapes slowly (jax 0.10.2, 2-core CPU, measured:
# ~9 s CPU for a (4, 4, 4, 8) normal draw, ~0.9 s for (64, 8)), so conv kernels are drawn as the matrix
# (∏shape[:-1], shape[-1]) and reshaped: for i.i.d. entries that is the same law.


def as_matrix_draw(init: Initializer) -> Initializer:
    """init drawn on the (∏shape[:-1], shape[-1]) matrix, reshaped to shape (for laws of i.i.d. entries)."""

    def draw(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return init(key, (math.prod(shape[:-1]), shape[-1]), dtype).reshape(shape)

    return draw


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel (…, c_in, c_out): c_in·∏… and c_out·∏… (PyTorch's for convs, dense, embeddings)."""
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def xavier_uniform(gain: float = 1.0) -> Initializer:
    """W ~ U(±gain·√(6/(fan_in + fan_out))) (Glorot & Bengio 2010; PyTorch's xavier_uniform_ with the same fans)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        limit = gain * math.sqrt(6.0 / sum(_fans(shape)))
        return as_matrix_draw(lambda k, s, d: jax.random.uniform(k, s, d, -limit, limit))(key, shape, dtype)

    return init


def orthogonal(gain: float = 1.0) -> Initializer:
    """W = gain·Q, Q with orthonormal rows or columns of the (∏shape[:-1], shape[-1]) matrix (Saxe et al. 2014)."""
    return nn.initializers.orthogonal(scale=gain)  # draws the matrix and reshapes


def normal(stddev: float) -> Initializer:
    """W ~ N(0, stddev²) entrywise (DCGAN: 0.02)."""
    return as_matrix_draw(nn.initializers.normal(stddev))


class WeightInit(NamedTuple):
    """How a network initialises its weights: kernels and embeddings, and the gain of its residual 3×3 convs."""

    kernel: Callable[[float], Initializer]  # gain -> initializer
    residual_gain: float


WEIGHT_INITS: Registry[WeightInit] = Registry("weight init", {
    # SNGAN (Miyato et al.'s chainer code, reproduced by Mimicry): Glorot-uniform, gain √2 inside residual blocks.
    "xavier": WeightInit(xavier_uniform, math.sqrt(2.0)),
    # BigGAN (Brock et al. 2019, BigGAN-PyTorch and StudioGAN's "ortho"): orthogonal, gain 1 everywhere.
    "orthogonal": WeightInit(orthogonal, 1.0),
})


# ---------------------------------------------------------------------------------------------------------
# Normalised layers, called inside a module's compact ``__call__`` (the layers become its submodules).


def batch_normalise(x: jax.Array, *, train: bool, batch_axis: str | None, dtype: Any, name: str, momentum: float = 0.99,
               affine: bool = True) -> jax.Array:
    """BN(x) = (x − μ)/√(σ² + ε)·γ + β over all axes but the last; μ, σ² of the batch when training (over
    `batch_axis`'s devices too), the running averages r ← momentum·r + (1 − momentum)·batch otherwise; γ, β only
    if `affine`."""
    return nn.BatchNorm(use_running_average=not train, axis_name=batch_axis if train else None, momentum=momentum,
                        use_scale=affine, use_bias=affine, dtype=dtype, name=name)(x)


def apply_layer(
    layer: nn.Module, x: jax.Array, *, spectral_norm: bool = False, batch_norm: bool = False, train: bool = False,
    batch_axis: str | None = None,
) -> jax.Array:
    """y = BN(layer_W̃(x)), W̃ = W / σ_max(W) if spectral_norm (power iteration), BN only if batch_norm.

    With ``batch_axis`` (a mapped axis name, e.g. the engine's data axis), BN's batch statistics are taken over
    the examples of every device along it (synchronised batch norm), so they do not depend on the device count.
    """
    if spectral_norm:
        x = nn.SpectralNorm(layer, name=f"{layer.name}_sn")(x, update_stats=train)
    else:
        x = layer(x)
    if batch_norm:
        x = batch_normalise(x, train=train, batch_axis=batch_axis, dtype=layer.dtype, name=f"{layer.name}_bn")
    return x


def stack(layers: list[nn.Module], x: jax.Array, activation: str, **norm: Any) -> jax.Array:
    """h ← a(`apply_layer`(layer, h, **norm)) for each layer in order: the hidden part of the MLP/conv networks."""
    act = ACTIVATIONS[activation]
    for layer in layers:
        x = act(apply_layer(layer, x, **norm))
    return x


def dense_layers(widths: tuple[int, ...], dtype: Any) -> list[nn.Module]:
    """Dense layers hidden_0, hidden_1, … of the given widths."""
    return [nn.Dense(width, dtype=dtype, name=f"hidden_{i}") for i, width in enumerate(widths)]


def with_label_embedding(z: jax.Array, y: jax.Array | None, num_classes: int, dtype: Any) -> jax.Array:
    """[z, e_y] with e_y a learnt embedding of y (dimension of z); z itself when unconditional."""
    if not num_classes:
        return z
    embedding = nn.Embed(num_classes, z.shape[-1], name="label_embedding")(y)
    return jnp.concatenate([z, embedding.astype(z.dtype)], axis=-1).astype(dtype)


def critic_logit(
    features: jax.Array, dtype: Any, *, spectral_norm: bool, train: bool, y: jax.Array | None = None,
    num_classes: int = 0, use_bias: bool = True, kernel_init: Initializer = nn.linear.default_kernel_init,
    embedding_init: Initializer = nn.linear.default_embed_init, normalise_projection: bool = False,
) -> jax.Array:
    """f = w·φ (+ b) (+ ⟨e_y, φ⟩, the projection term, when conditional), φ = flatten(features): float32 (n,).

    w is spectrally normalised if asked, the class embedding e_y (φ's dimension, Miyato & Koyama 2018) if
    ``normalise_projection`` (SNGAN/BigGAN's projection critics; the mlp/conv critics keep it plain).
    """
    logit = nn.Dense(1, use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, name="logit")
    phi = features.reshape(features.shape[0], -1)
    f = apply_layer(logit, phi, spectral_norm=spectral_norm, train=train)[:, 0].astype(jnp.float32)
    if num_classes:
        embed = nn.Embed(num_classes, phi.shape[-1], embedding_init=embedding_init, name="projection")
        embedding = apply_layer(embed, y, spectral_norm=normalise_projection, train=train)
        f = f + jnp.sum(embedding * phi.astype(jnp.float32), axis=-1)
    return f


# ---------------------------------------------------------------------------------------------------------
# Blocks of the image networks: a layer factory, conditional batch norm, self-attention, residual blocks.

# Batch-norm momentum of the image networks: PyTorch's default (running ← 0.9·running + 0.1·batch), which the
# reference implementations (Mimicry, StudioGAN, BigGAN-PyTorch) train with.
IMAGE_BN_MOMENTUM = 0.9


class Layers(NamedTuple):
    """How one network makes its dense/conv layers: compute dtype, spectral norm or not, weight init, train mode."""

    dtype: Any
    spectral_norm: bool
    init: WeightInit
    train: bool

    def conv(self, x: jax.Array, features: int, kernel: int, name: str, *, residual: bool = False,
             use_bias: bool = True) -> jax.Array:
        """conv_{kernel×kernel}(x), stride 1, "SAME" padding; init gain: the residual gain if `residual`, else 1."""
        gain = self.init.residual_gain if residual else 1.0
        layer = nn.Conv(features, (kernel, kernel), padding="SAME", use_bias=use_bias, dtype=self.dtype,
                        kernel_init=self.init.kernel(gain), conv_general_dilated=conv_general_dilated, name=name)
        return apply_layer(layer, x, spectral_norm=self.spectral_norm, train=self.train)

    def dense(self, x: jax.Array, features: int, name: str, *, use_bias: bool = True) -> jax.Array:
        """W x (+ b), init gain 1."""
        layer = nn.Dense(features, use_bias=use_bias, dtype=self.dtype, kernel_init=self.init.kernel(1.0), name=name)
        return apply_layer(layer, x, spectral_norm=self.spectral_norm, train=self.train)


def upsample_2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour ×2 upsampling of (n, H, W, C) to (n, 2H, 2W, C)."""
    n, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, 2, w, 2, c)).reshape(n, 2 * h, 2 * w, c)


def _pool_2x(x: jax.Array, reduce: Callable[..., jax.Array]) -> jax.Array:
    n, h, w, c = x.shape
    return reduce(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def avg_pool_2x(x: jax.Array) -> jax.Array:
    """2×2 average pooling, stride 2."""
    return _pool_2x(x, jnp.mean)


def max_pool_2x(x: jax.Array) -> jax.Array:
    """2×2 max pooling, stride 2."""
    return _pool_2x(x, jnp.max)


class ConditionalBatchNorm(nn.Module):
    """y = (x − μ_B)/√(σ²_B + ε) · (1 + W_γ c) + W_β c, per example from its condition c (n, d) (de Vries et al.
    2017; Miyato & Koyama 2018 with c = one-hot(y); BigGAN with c = [shared embedding(y), z chunk]).

    With no condition (c = None) it is plain batch norm with learnt γ, β. The batch statistics are shared by all
    examples of the batch (only the gain and bias are per class). ``spectral_norm`` normalises W_γ, W_β (BigGAN).
    """

    spectral_norm: bool = False
    weight_init: str = "xavier"
    batch_axis: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, condition: jax.Array | None = None, train: bool = False) -> jax.Array:
        h = batch_normalise(x, train=train, batch_axis=self.batch_axis, dtype=self.dtype, name="norm",
                       momentum=IMAGE_BN_MOMENTUM, affine=condition is None)
        if condition is None:
            return h
        layers = Layers(self.dtype, self.spectral_norm, WEIGHT_INITS[self.weight_init], train)
        c = condition.astype(self.dtype)
        gain = layers.dense(c, x.shape[-1], "gain", use_bias=False)[:, None, None, :]
        bias = layers.dense(c, x.shape[-1], "bias", use_bias=False)[:, None, None, :]
        return h * (1 + gain) + bias


class SelfAttention(nn.Module):
    """x + γ·W_o[softmax(θ(x)ᵀφ(x↓)) g(x↓)] per head, θ, φ: C → C/8, g: C → C/2 (1×1 convs, no bias), x↓ the 2×2
    max-pooled map, γ learnt from 0 (SAGAN, Zhang et al. 2019, as BigGAN's code has it; one head there).

    The C/8 and C/2 channels are split over ``heads`` heads, each with its own softmax over the H·W/4 pooled
    positions; logits are not scaled by 1/√d (as SAGAN/BigGAN). The softmax is taken in float32.
    """

    heads: int = 1
    spectral_norm: bool = False
    weight_init: str = "xavier"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n, h, w, c = x.shape
        check_attention(type(self).__name__, c, self.heads)
        layers = Layers(self.dtype, self.spectral_norm, WEIGHT_INITS[self.weight_init], train)
        project = lambda v, features, name: layers.conv(v, features, 1, name, use_bias=False)  # noqa: E731
        split = lambda v: v.reshape(n, -1, self.heads, v.shape[-1] // self.heads)  # noqa: E731  (n, L, heads, d)
        theta = split(project(x, c // 8, "theta"))
        phi = split(max_pool_2x(project(x, c // 8, "phi")))
        g = split(max_pool_2x(project(x, c // 2, "g")))
        logits = jnp.einsum("nqhd,nkhd->nhqk", theta, phi)
        attention = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(g.dtype)
        attended = jnp.einsum("nhqk,nkhd->nqhd", attention, g).reshape(n, h, w, c // 2)
        gamma = self.param("gamma", nn.initializers.zeros, ())
        return x + gamma.astype(self.dtype) * project(attended, c, "out")


class UpBlock(nn.Module):
    """h = conv₂(ReLU(BN₂(conv₁(up(ReLU(BN₁(x, c)))), c))) + up(conv_sc(x)): the generator's residual block of
    SNGAN and BigGAN (3×3 convs, nearest ×2 upsampling, 1×1 shortcut).

    The 1×1 shortcut is applied before the nearest upsampling, which gives the same numbers at a quarter of the cost.
    """

    features: int
    spectral_norm: bool = False
    weight_init: str = "xavier"
    batch_axis: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, condition: jax.Array | None = None, train: bool = False) -> jax.Array:
        layers = Layers(self.dtype, self.spectral_norm, WEIGHT_INITS[self.weight_init], train)
        norm = lambda name: ConditionalBatchNorm(  # noqa: E731
            spectral_norm=self.spectral_norm, weight_init=self.weight_init, batch_axis=self.batch_axis,
            dtype=self.dtype, name=name)
        h = jax.nn.relu(norm("bn_1")(x, condition, train))
        h = layers.conv(upsample_2x(h), self.features, 3, "conv_1", residual=True)
        h = jax.nn.relu(norm("bn_2")(h, condition, train))
        h = layers.conv(h, self.features, 3, "conv_2", residual=True)
        return h + upsample_2x(layers.conv(x, self.features, 1, "shortcut"))


class DownBlock(nn.Module):
    """h = pool(conv₂(ReLU(conv₁(ReLU(x))))) + conv_sc(pool(x)): the critic's residual block of SNGAN and BigGAN
    (3×3 convs, 2×2 average pooling when ``downsample``).

    ``first``: the "optimized" first block (no activation on the image input). The 1×1 shortcut exists when the
    width or the resolution changes (else the identity); it is applied after the pooling (the same function as
    before it, at a quarter of the cost). ``hidden``: conv₁'s width (SNGAN: the input's, BigGAN: ``features``).
    """

    features: int
    hidden: int
    downsample: bool = True
    first: bool = False
    spectral_norm: bool = True
    weight_init: str = "xavier"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers = Layers(self.dtype, self.spectral_norm, WEIGHT_INITS[self.weight_init], train)
        pool = avg_pool_2x if self.downsample else (lambda v: v)
        h = x if self.first else jax.nn.relu(x)
        h = layers.conv(h, self.hidden, 3, "conv_1", residual=True)
        h = pool(layers.conv(jax.nn.relu(h), self.features, 3, "conv_2", residual=True))
        shortcut = pool(x)
        if self.downsample or x.shape[-1] != self.features:
            shortcut = layers.conv(shortcut, self.features, 1, "shortcut")
        return h + shortcut
