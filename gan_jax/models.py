"""Generator and critic networks (Flax Linen): MLPs for low-dimensional data, a DCGAN-style conv pair for images.

Every module is a plain Linen module; ``init`` returns a plain dict of variables that orbax can save.
``MLPClassifier`` (class logits and features) serves the classifier-based scores of :mod:`gan_jax.metrics`.

Generators, ``generator(z, y=None, train=False) -> x``::

    variables = gen.init(key, z)              # {"params": ...} (+ "batch_stats" with batch_norm); z: (n, latent_dim)
    x = gen.apply(variables, z)               # (n, d) for MLPGenerator, (n, H, W, C) in [-1, 1] for ConvGenerator
    x, updates = gen.apply(variables, z, train=True, mutable=["batch_stats"])  # batch statistics, running averages

Class-conditional networks (``num_classes > 0``) take int labels y (n,): the generator embeds y and concatenates
the embedding to z; the critic adds the projection term ⟨embed(y), φ(x)⟩ to its logit (Miyato & Koyama 2018).

Critics share one signature, ``critic(x, y=None, train=True) -> logits (n,)``::

    variables = critic.init(key, x)           # {"params": ...} (+ "batch_stats" with spectral_norm/batch_norm)
    # training step: update the power-iteration vectors / running statistics
    logits, updates = critic.apply(variables, x, train=True, mutable=["batch_stats"])
    variables = {"params": params, **updates}   # updates == {} for a critic without state
    # evaluation / gradient penalties: read-only, deterministic for fixed variables
    logits = critic.apply(variables, x, train=False)

``train`` means: spectral norm runs ``update_stats=train`` (one power-iteration step whose ``u``/``sigma`` are
written to "batch_stats" when True), batch norm runs ``use_running_average=not train``. A critic with
spectral_norm or batch_norm called with ``train=True`` needs ``mutable=["batch_stats"]``; the same call works
for every critic (it returns an empty dict of updates when there is no state). ``train`` has no effect on a
critic with neither option.
"""

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax import penalties
from gan_jax.registry import Registry

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
# Image sizes: size -> (side of the smallest feature map, number of stride-2 resolution changes).

IMAGE_SIZES: dict[int, tuple[int, int]] = {8: (4, 1), 16: (4, 2), 28: (7, 2), 32: (4, 3), 64: (4, 4)}


def _spatial_plan(image_size: int) -> tuple[int, int]:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size {image_size!r} is not supported; supported sizes: {tuple(IMAGE_SIZES)}")
    return IMAGE_SIZES[image_size]


def _check_rank(x: jax.Array, rank: int, where: str, layout: str) -> None:
    if x.ndim != rank:
        raise ValueError(f"{where} expects input of shape {layout}, got shape {x.shape}")


def _check_at_least(where: str, minimum: int, **values: int) -> None:
    for name, value in values.items():
        if value < minimum:
            raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}")


def _matrix_lecun_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """W ~ lecun_normal drawn as the (∏shape[:-1], shape[-1]) matrix, then reshaped: same fan_in, same law.

    Flax's default conv init, sampled this way because XLA on CPU compiles random draws of rank-3/4 shapes
    slowly (jax 0.10.2, 2-core CPU, measured: ~9 s CPU for a (4, 4, 4, 8) normal draw, ~0.9 s for (64, 8)).
    """
    return nn.initializers.lecun_normal()(key, (math.prod(shape[:-1]), shape[-1]), dtype).reshape(shape)


# ---------------------------------------------------------------------------------------------------------
# Building blocks, called inside a module's compact ``__call__`` (the layers become its submodules).


def _layer(
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
        x = nn.BatchNorm(use_running_average=not train, axis_name=batch_axis if train else None, dtype=layer.dtype,
                         name=f"{layer.name}_bn")(x)
    return x


def _stack(layers: list[nn.Module], x: jax.Array, activation: str, **norm: bool) -> jax.Array:
    """h ← a(`_layer`(layer, h, **norm)) for each layer in order: the hidden part of every network here."""
    act = ACTIVATIONS[activation]
    for layer in layers:
        x = act(_layer(layer, x, **norm))
    return x


def _dense_layers(widths: tuple[int, ...], dtype: Any) -> list[nn.Module]:
    """Dense layers hidden_0, hidden_1, … of the given widths."""
    return [nn.Dense(width, dtype=dtype, name=f"hidden_{i}") for i, width in enumerate(widths)]


def _check_labels(where: str, num_classes: int, y: jax.Array | None, n: int) -> None:
    """ValueError unless y is given (shape (n,)) exactly when the network is conditional (num_classes > 0)."""
    if num_classes and y is None:
        raise ValueError(f"{where}(num_classes={num_classes}) is class-conditional: pass labels y of shape ({n},)")
    if not num_classes and y is not None:
        raise ValueError(f"{where} is unconditional (num_classes=0) but got labels y; set model.num_classes")
    if y is not None and jnp.shape(y) != (n,):
        raise ValueError(f"{where}: labels y must have shape ({n},), got {jnp.shape(y)}")


def _with_label_embedding(z: jax.Array, y: jax.Array | None, num_classes: int, dtype: Any) -> jax.Array:
    """[z, e_y] with e_y a learnt embedding of y (dimension of z); z itself when unconditional."""
    if not num_classes:
        return z
    embedding = nn.Embed(num_classes, z.shape[-1], name="label_embedding")(y)
    return jnp.concatenate([z, embedding.astype(z.dtype)], axis=-1).astype(dtype)


def _critic_logit(x: jax.Array, dtype: Any, *, spectral_norm: bool, train: bool, y: jax.Array | None = None,
                  num_classes: int = 0) -> jax.Array:
    """f = w·φ + b (+ ⟨e_y, φ⟩, the projection term, when conditional), φ = flatten(x): float32 of shape (n,).

    w is spectrally normalised if asked; e_y is a learnt class embedding of φ's dimension (Miyato & Koyama 2018).
    """
    logit = nn.Dense(1, dtype=dtype, name="logit")
    x = x.reshape(x.shape[0], -1)
    f = _layer(logit, x, spectral_norm=spectral_norm, train=train)[:, 0].astype(jnp.float32)
    if num_classes:
        embedding = nn.Embed(num_classes, x.shape[-1], name="projection")(y)
        f = f + jnp.sum(embedding * x.astype(jnp.float32), axis=-1)
    return f


def _check_mlp(module: nn.Module, **widths: int) -> None:
    ACTIVATIONS.get(module.activation)  # ValueError naming the valid activations
    _check_at_least(type(module).__name__, 1, **widths)
    _check_at_least(type(module).__name__, 0, depth=module.depth)


# ---------------------------------------------------------------------------------------------------------
# MLPs.


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
        _check_rank(z, 2, "MLPGenerator", "(n, latent_dim)")
        _check_labels("MLPGenerator", self.num_classes, y, z.shape[0])
        h = _with_label_embedding(z, y, self.num_classes, self.dtype)
        h = _stack(_dense_layers((self.width,) * self.depth, self.dtype), h, self.activation,
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
        _check_rank(x, 2, "MLPCritic", "(n, d)")
        _check_labels("MLPCritic", self.num_classes, y, x.shape[0])
        layers = _dense_layers((self.width,) * self.depth, self.dtype)
        h = _stack(layers, x, self.activation, spectral_norm=self.spectral_norm, batch_norm=self.batch_norm,
                   batch_axis=self.batch_axis,
                   train=train)
        return _critic_logit(h, self.dtype, spectral_norm=self.spectral_norm, train=train, y=y,
                             num_classes=self.num_classes)


class MLPClassifier(nn.Module):
    """(W_out h + b_out, h), h = a(W_L … a(W_1 x + b_1) …): logits (n, num_classes), last hidden features h.

    ``x`` (n, ...) is flattened to (n, d); one hidden layer per entry of ``hidden``, float32 throughout.
    """

    num_classes: int
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"

    def __post_init__(self) -> None:
        ACTIVATIONS.get(self.activation)  # ValueError naming the valid activations
        if len(self.hidden) < 1 or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty tuple of positive widths, got {self.hidden}")
        _check_at_least("MLPClassifier", 1, num_classes=self.num_classes)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = _stack(_dense_layers(tuple(self.hidden), jnp.float32), x.reshape(x.shape[0], -1), self.activation)
        return nn.Dense(self.num_classes, name="output")(h), h


# ---------------------------------------------------------------------------------------------------------
# DCGAN-style convolutional pair (Radford et al. 2016): stride-2 4×4 (transposed) convolutions, channels
# doubling towards the smallest feature map.

_STRIDE_2 = dict(kernel_size=(4, 4), strides=(2, 2), padding="SAME", kernel_init=_matrix_lecun_normal)


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
        _spatial_plan(self.image_size)
        _check_at_least("ConvGenerator", 1, channels=self.channels, base_width=self.base_width)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array | None = None, train: bool = False) -> jax.Array:
        _check_rank(z, 2, "ConvGenerator", "(n, latent_dim)")
        _check_labels("ConvGenerator", self.num_classes, y, z.shape[0])
        side, n_up = _spatial_plan(self.image_size)
        features = self.base_width * 2**n_up
        h = _with_label_embedding(z, y, self.num_classes, self.dtype)
        norm = dict(batch_norm=self.batch_norm, batch_axis=self.batch_axis, train=train)
        h = _stack([nn.Dense(side * side * features, dtype=self.dtype, name="project")], h, "relu", **norm)
        h = h.reshape(z.shape[0], side, side, features)
        ups = [nn.ConvTranspose(self.base_width * 2 ** (n_up - 1 - i), **_STRIDE_2, dtype=self.dtype, name=f"up_{i}")
               for i in range(n_up)]
        h = _stack(ups, h, "relu", **norm)
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
        _spatial_plan(self.image_size)
        _check_at_least("ConvCritic", 1, base_width=self.base_width)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None, train: bool = True) -> jax.Array:
        size = self.image_size
        _check_rank(x, 4, "ConvCritic", f"(n, {size}, {size}, C)")
        _check_labels("ConvCritic", self.num_classes, y, x.shape[0])
        if x.shape[1:3] != (size, size):
            raise ValueError(f"ConvCritic(image_size={size}) expects (n, {size}, {size}, C) input, got {x.shape}")
        _, n_down = _spatial_plan(size)
        downs = [nn.Conv(self.base_width * 2**i, **_STRIDE_2, dtype=self.dtype, name=f"down_{i}")
                 for i in range(n_down)]
        h = _stack(downs, x, "leaky_relu", spectral_norm=self.spectral_norm, batch_norm=self.batch_norm,
                   batch_axis=self.batch_axis, train=train)
        return _critic_logit(h, self.dtype, spectral_norm=self.spectral_norm, train=train, y=y,
                             num_classes=self.num_classes)


# ---------------------------------------------------------------------------------------------------------
# Construction from a config.

# Compute dtypes a config may name (model.dtype). bfloat16 is the accelerator choice (TPU, recent GPUs);
# parameters, optimizer states and the networks' outputs stay float32 whatever the compute dtype.
COMPUTE_DTYPES: Registry[Any] = Registry(
    "model dtype", {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
)


def compute_dtype(name: str) -> Any:
    """The jnp dtype named by ``model.dtype``: ``COMPUTE_DTYPES[name]`` (ValueError naming the valid names)."""
    return COMPUTE_DTYPES[name]


_Pair = tuple[nn.Module, nn.Module]  # (generator, critic)


def _config_fields(model_cfg: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The attributes of ``model_cfg`` among ``names`` that it sets (the rest keep the module defaults)."""
    return {name: getattr(model_cfg, name) for name in names if hasattr(model_cfg, name)}


def _build_mlp(model_cfg: Any, data_shape: tuple[int, ...], generator_options: dict[str, Any],
               critic_options: dict[str, Any]) -> _Pair:
    if len(data_shape) != 1:
        raise ValueError(
            f"kind='mlp' needs a flat per-example data_shape (d,), got {data_shape}; "
            "use kind='conv' for (H, W, C) images"
        )
    body = _config_fields(model_cfg, ("width", "depth", "activation"))
    return (MLPGenerator(output_dim=data_shape[0], **body, **generator_options),
            MLPCritic(**body, **critic_options))


def _build_conv(model_cfg: Any, data_shape: tuple[int, ...], generator_options: dict[str, Any],
                critic_options: dict[str, Any]) -> _Pair:
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise ValueError(
            f"kind='conv' needs a square image data_shape (H, H, C), got {data_shape}; "
            "use kind='mlp' for flat (d,) data"
        )
    size, _, channels = data_shape
    body = _config_fields(model_cfg, ("base_width",))
    return (ConvGenerator(size, channels=channels, **body, **generator_options),
            ConvCritic(size, **body, **critic_options))


# model.kind -> builder (model_cfg, data_shape, generator options, critic options) -> (generator, critic).
KINDS: Registry[Callable[..., _Pair]] = Registry("model kind", {"mlp": _build_mlp, "conv": _build_conv})


def build(model_cfg: Any, data_shape: tuple[int, ...], batch_axis: str | None = None) -> tuple[nn.Module, nn.Module]:
    """(generator, critic) for per-example ``data_shape``, made by ``KINDS[model_cfg.kind]`` (an ml_collections config).

    model_cfg.kind: "mlp" needs a flat data_shape (d,) (images are not flattened: use "conv");
    "conv" needs square images (H, H, C) with H in IMAGE_SIZES. Fields width, depth, activation (mlp),
    base_width (conv), spectral_norm, batch_norm (critic), generator_batch_norm, num_classes (both networks
    class-conditional when > 0) and dtype (compute dtype) are used where set; unset ones keep the module defaults.
    latent_dim is not needed here: the generator takes its input width from ``init``'s z. ``batch_axis``: the
    mapped axis over which batch norm (where on) shares its batch statistics (the engine's data axis).
    """
    make = KINDS[getattr(model_cfg, "kind", None)]
    shared = dict(dtype=COMPUTE_DTYPES[getattr(model_cfg, "dtype", "float32")],
                  num_classes=int(getattr(model_cfg, "num_classes", 0) or 0), batch_axis=batch_axis)
    generator_options = dict(shared, batch_norm=bool(getattr(model_cfg, "generator_batch_norm", False)))
    critic_options = dict(shared, **_config_fields(model_cfg, ("spectral_norm", "batch_norm")))
    return make(model_cfg, tuple(int(d) for d in data_shape), generator_options, critic_options)


def check_critic_compatible(model_cfg: Any, penalty_name: str) -> None:
    """ValueError if batch_norm is on and ``penalty_name`` penalises per-example gradient norms ‖∇ₓf(xᵢ)‖.

    ``model_cfg`` is the model config (or a critic module); batch norm couples the examples of a batch, so
    ‖∇ₓf(xᵢ)‖ is no longer a per-example quantity (Gulrajani et al. 2017, WGAN-GP, §4 "No critic batch
    normalization").
    """
    penalises_gradients = penalty_name in penalties.PENALTIES and penalty_name != "none"  # all but "none" do
    if getattr(model_cfg, "batch_norm", False) and penalises_gradients:
        raise ValueError(
            f"batch_norm=True cannot be used with the {penalty_name!r} penalty: it penalises per-example "
            "gradient norms, which batch norm couples across the batch. Set batch_norm=False "
            "(use spectral_norm=True for a normalised critic)."
        )
