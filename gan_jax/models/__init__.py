"""Generator and critic networks (Flax Linen), built from a config by ``model.kind`` through one registry, ``KINDS``:

- "mlp" (mlp.py): MLPs for low-dimensional data; ``MLPClassifier`` (class logits and features) serves the
  classifier-based scores of :mod:`gan_jax.metrics`;
- "conv" (conv.py): a DCGAN-style conv pair for small images (8–64), batch norm optional in either network;
- "dcgan" (dcgan.py): DCGAN (Radford et al. 2016) at 32 and 64;
- "resnet" (resnet.py): the SNGAN ResNet (Miyato et al. 2018) at 32, 48, 64, 128;
- "biggan" (biggan.py): BigGAN-style (Brock et al. 2019) at 32, 64, 128;
- layers.py: the shared pieces (spectral norm, conditional batch norm, self-attention, residual blocks).

Every module is a plain Linen module; ``init`` returns a plain dict of variables that orbax can save.

Generators, ``generator(z, y=None, train=False) -> x``::

    variables = gen.init(key, z)              # {"params": ...} (+ "batch_stats" with batch norm); z: (n, latent_dim)
    x = gen.apply(variables, z)               # (n, d) for MLPGenerator, (n, H, W, C) in [-1, 1] for image generators
    x, updates = gen.apply(variables, z, train=True, mutable=["batch_stats"])  # batch statistics, running averages

Class-conditional networks (``num_classes > 0``) take int labels y (n,): the MLP, conv and dcgan generators embed y
and concatenate the embedding to z, the resnet and biggan generators condition their batch norm on it; every critic
adds the projection term ⟨embed(y), φ(x)⟩ to its logit (Miyato & Koyama 2018).

Critics share one signature, ``critic(x, y=None, train=True) -> logits (n,)``::

    variables = critic.init(key, x)           # {"params": ...} (+ "batch_stats" with spectral_norm/batch_norm)
    # training step: update the power-iteration vectors / running statistics
    logits, updates = critic.apply(variables, x, train=True, mutable=["batch_stats"])
    variables = {"params": params, **updates}   # updates == {} for a critic without state
    # evaluation / gradient penalties: read-only, deterministic for fixed variables
    logits = critic.apply(variables, x, train=False)

``train`` means: spectral norm runs ``update_stats=train`` (one power-iteration step whose ``u``/``sigma`` are
written to "batch_stats" when True), batch norm runs ``use_running_average=not train``. A network with spectral
norm or batch norm called with ``train=True`` needs ``mutable=["batch_stats"]``; the same call works for every
network (it returns an empty dict of updates when there is no state). Images are NHWC; parameters are float32 and
outputs float32 whatever the compute dtype (``model.dtype``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gan_jax import config as config_lib
from gan_jax import penalties
from gan_jax.errors import GanJaxError
from gan_jax.models import biggan, dcgan, resnet
from gan_jax.models.conv import IMAGE_SIZES, ConvCritic, ConvGenerator
from gan_jax.models.layers import ACTIVATIONS
from gan_jax.models.mlp import MLPClassifier, MLPCritic, MLPGenerator
from gan_jax.registry import Registry

__all__ = [
    "ACTIVATIONS", "COMPUTE_DTYPES", "IMAGE_SIZES", "KINDS", "ConvCritic", "ConvGenerator", "MLPClassifier",
    "MLPCritic", "MLPGenerator", "build", "check_critic_compatible", "compute_dtype",
]

# Compute dtypes a config may name (model.dtype). bfloat16 is the accelerator choice (TPU, recent GPUs);
# parameters, optimizer states and the networks' outputs stay float32 whatever the compute dtype.
COMPUTE_DTYPES: Registry[Any] = Registry(
    "model dtype", {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
)


def compute_dtype(name: str) -> Any:
    """The jnp dtype named by ``model.dtype``: ``COMPUTE_DTYPES[name]`` (an error naming the valid names)."""
    return COMPUTE_DTYPES[name]


_Pair = tuple[nn.Module, nn.Module]  # (generator, critic)


def _config_fields(model_cfg: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The attributes of ``model_cfg`` among ``names`` that it sets (the rest keep the module defaults)."""
    return {name: getattr(model_cfg, name) for name in names if hasattr(model_cfg, name)}


def _image_shape(kind: str, data_shape: tuple[int, ...]) -> tuple[int, int]:
    """(size, channels) of square images (H, H, C); GanJaxError otherwise."""
    if len(data_shape) != 3 or data_shape[0] != data_shape[1]:
        raise GanJaxError(f"kind={kind!r} needs a square image data_shape (H, H, C), got {data_shape}; "
                          "use kind='mlp' for flat (d,) data")
    return data_shape[0], data_shape[2]


def _build_mlp(model_cfg: Any, data_shape: tuple[int, ...], shared: dict[str, Any]) -> _Pair:
    if len(data_shape) != 1:
        raise GanJaxError(
            f"kind='mlp' needs a flat per-example data_shape (d,), got {data_shape}; "
            "use kind='conv' (or 'dcgan', 'resnet', 'biggan') for (H, W, C) images"
        )
    body = _config_fields(model_cfg, ("width", "depth", "activation"))
    return (MLPGenerator(output_dim=data_shape[0], **body, **shared,
                         batch_norm=bool(getattr(model_cfg, "generator_batch_norm", False))),
            MLPCritic(**body, **shared, **_config_fields(model_cfg, ("spectral_norm", "batch_norm"))))


def _build_conv(model_cfg: Any, data_shape: tuple[int, ...], shared: dict[str, Any]) -> _Pair:
    size, channels = _image_shape("conv", data_shape)
    body = _config_fields(model_cfg, ("base_width",))
    return (ConvGenerator(size, channels=channels, **body, **shared,
                          batch_norm=bool(getattr(model_cfg, "generator_batch_norm", False))),
            ConvCritic(size, **body, **shared, **_config_fields(model_cfg, ("spectral_norm", "batch_norm"))))


def _channels(model_cfg: Any, field: str, default: int) -> int:
    """model.g_channels / d_channels, 0 (or unset) meaning the architecture's published multiplier."""
    return int(getattr(model_cfg, field, 0) or 0) or default


def _build_dcgan(model_cfg: Any, data_shape: tuple[int, ...], shared: dict[str, Any]) -> _Pair:
    size, channels = _image_shape("dcgan", data_shape)
    return (dcgan.DCGANGenerator(size, channels=channels, ch=_channels(model_cfg, "g_channels", dcgan.DEFAULT_CHANNELS),
                                 **shared),
            dcgan.DCGANCritic(size, ch=_channels(model_cfg, "d_channels", dcgan.DEFAULT_CHANNELS), **shared,
                              **_config_fields(model_cfg, ("spectral_norm", "batch_norm"))))


def _residual_pair(kind: str, generator: type, critic: type, default_channels: int, generator_fields: tuple[str, ...]):
    """The builder of a ResNet-style kind (resnet, biggan): the pair with the config's widths and attention."""

    def build_pair(model_cfg: Any, data_shape: tuple[int, ...], shared: dict[str, Any]) -> _Pair:
        size, channels = _image_shape(kind, data_shape)
        if getattr(model_cfg, "batch_norm", False):
            raise GanJaxError(f"config.model.batch_norm=True: kind={kind!r} has no batch norm in its critic (spectral "
                              "norm normalises it: model.spectral_norm); set model.batch_norm=False")
        resolution = int(getattr(model_cfg, "attention_resolution", -1))
        attention = dict(attention_resolution=(generator.default_attention_resolution(size) if resolution < 0
                                               else resolution),
                         attention_heads=int(getattr(model_cfg, "attention_heads", 1)))
        dtype, num_classes, batch_axis = shared["dtype"], shared["num_classes"], shared["batch_axis"]
        gen = generator(size, channels=channels, ch=_channels(model_cfg, "g_channels", default_channels),
                        num_classes=num_classes, batch_axis=batch_axis, dtype=dtype, **attention,
                        **_config_fields(model_cfg, generator_fields))
        if hasattr(model_cfg, "latent_dim"):
            gen.latent_chunks(int(model_cfg.latent_dim))
        return gen, critic(size, ch=_channels(model_cfg, "d_channels", default_channels), num_classes=num_classes,
                           dtype=dtype, spectral_norm=bool(getattr(model_cfg, "spectral_norm", True)), **attention)

    return build_pair


# model.kind -> builder (model_cfg, data_shape, shared options) -> (generator, critic).
KINDS: Registry[Callable[..., _Pair]] = Registry("model kind", {
    "mlp": _build_mlp,
    "conv": _build_conv,
    "dcgan": _build_dcgan,
    "resnet": _residual_pair("resnet", resnet.ResNetGenerator, resnet.ResNetCritic, resnet.DEFAULT_CHANNELS, ()),
    "biggan": _residual_pair("biggan", biggan.BigGANGenerator, biggan.BigGANCritic, biggan.DEFAULT_CHANNELS,
                             ("shared_embedding_dim", "hierarchical_latent")),
})


def build(model_cfg: Any, data_shape: tuple[int, ...], batch_axis: str | None = None) -> tuple[nn.Module, nn.Module]:
    """(generator, critic) for per-example ``data_shape``, made by ``KINDS[model_cfg.kind]`` (an ml_collections config).

    model_cfg.kind: "mlp" needs a flat data_shape (d,) (images are not flattened: use an image kind); "conv",
    "dcgan", "resnet", "biggan" need square images (H, H, C) of a size the kind supports. Fields read where set
    (unset ones keep the module defaults): num_classes (both networks class-conditional when > 0), dtype (compute
    dtype), spectral_norm and batch_norm (the critic's; resnet/biggan critics take no batch norm); mlp: width,
    depth, activation, generator_batch_norm; conv: base_width, generator_batch_norm; dcgan, resnet, biggan:
    g_channels, d_channels (channel multipliers, 0 = the published ones), and for resnet/biggan
    attention_resolution (-1 = the architecture's default, 0 = none), attention_heads, and for biggan
    shared_embedding_dim, hierarchical_latent (latent_dim must then split into equal chunks). The dcgan, resnet and
    biggan generators always have batch norm, as published. latent_dim is not needed otherwise: the generator
    takes its input width from ``init``'s z. ``batch_axis``: the mapped axis over which batch norm (where on)
    shares its batch statistics (the engine's data axis).
    """
    make = config_lib.lookup(KINDS.get, "model.kind", getattr(model_cfg, "kind", None))
    shared = dict(dtype=config_lib.lookup(COMPUTE_DTYPES.get, "model.dtype", getattr(model_cfg, "dtype", "float32")),
                  num_classes=int(getattr(model_cfg, "num_classes", 0) or 0), batch_axis=batch_axis)
    return make(model_cfg, tuple(int(d) for d in data_shape), shared)


def check_critic_compatible(model_cfg: Any, penalty_name: str) -> None:
    """GanJaxError if batch_norm is on and ``penalty_name`` penalises per-example gradient norms ‖∇ₓf(xᵢ)‖.

    ``model_cfg`` is the model config (or a critic module); batch norm couples the examples of a batch, so
    ‖∇ₓf(xᵢ)‖ is no longer a per-example quantity (Gulrajani et al. 2017, WGAN-GP, §4 "No critic batch
    normalization").
    """
    penalises_gradients = penalty_name in penalties.PENALTIES and penalty_name != "none"  # all but "none" do
    if getattr(model_cfg, "batch_norm", False) and penalises_gradients:
        raise GanJaxError(
            f"batch_norm=True cannot be used with the {penalty_name!r} penalty: it penalises per-example "
            "gradient norms, which batch norm couples across the batch. Set batch_norm=False "
            "(use spectral_norm=True for a normalised critic)."
        )
