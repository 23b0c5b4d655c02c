"""The InceptionV3 that FID uses — pytorch-fid's port of TensorFlow's 2015-12-05 graph — in Flax, with its weights
read from pytorch-fid's file without PyTorch.

    from gan_jax import inception
    params = inception.load(inception.weights_path(None))   # the file named by $GAN_JAX_INCEPTION_WEIGHTS
    extract = inception.make_extractor(params, batch_size=50)
    pool, logits = extract(images)   # (n, 2048) and (n, 1008) NumPy float32 of images (n, h, w, 3) in [−1, 1]

The weights are pytorch-fid's release `pt_inception-2015-12-05-6726825d.pth` (WEIGHTS_URL); gan_jax never downloads
them. `load` reads the torch `state_dict` in either of torch.save's formats (the legacy stream of pickles the 2019
release uses, and the zip archive of torch >= 1.6) with `gan_jax.torch_files`: a restricted unpickler and NumPy.

Conventions, each as pytorch-fid computes `InceptionV3([3], resize_input=True, normalize_input=True)`:
* Input: images in [−1, 1], NHWC, any height and width, three channels (gan_jax's own pixel convention,
  x = 2·p/255 − 1, as `data.images.to_model_input` makes it). pytorch-fid takes [0, 1] and maps it to 2x − 1 after
  resizing; bilinear weights sum to one, so resizing [−1, 1] images is the same map.
* Resize: bilinear to 299×299 as `F.interpolate(mode="bilinear", align_corners=False)`: half-pixel centres,
  no antialiasing (unlike `jax.image.resize`, which antialiases when it shrinks).
* The FID blocks: average pools that do not count the zero padding (count_include_pad=False) in Mixed_5b-5d, 6b-6e
  and 7b, and a max pool in Mixed_7c's pool branch; batch norm with running statistics and eps = 0.001.
* Features: the 2048-d global average pool. Logits: pool · W of the 1008-class fc layer *without its bias*, the
  logits the Inception Score is computed from by the TF reference (openai/improved-gan takes `pool_3 · W` from the
  graph's `softmax/logits/MatMul`) and by torch-fidelity (its `logits_unbiased`, fed to `isc`). All 1008 classes are
  kept, as both references keep them. The classifier's own logits are `logits + params["params"]["fc"]["bias"]`.
TF's original FID code differs slightly (it feeds uint8 pixels, maps them by (p − 128)/128 and resizes like TF1);
numbers agree with pytorch-fid's, not bitwise with TF's.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import unflatten_dict
from jax.sharding import Mesh

from gan_jax import parallel
from gan_jax.errors import GanJaxError
from gan_jax.torch_files import read_state_dict

Params = dict[str, Any]  # Flax variables {"params": …, "batch_stats": …} of InceptionV3

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
# pytorch-fid publishes only the first 8 hex digits (in the file name, checked by torch.hub). The full digest of the
# 95,628,359-byte file is recorded by other projects that pin it, e.g. genforce/genforce's metrics/inception.py next
# to this URL, and equals that of torch-fidelity's copy weights-inception-2015-12-05-6726825d.pth.
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_ENV = "GAN_JAX_INCEPTION_WEIGHTS"
WEIGHTS_CONFIG = "config.eval.inception_weights"

INPUT_SIZE = 299
POOL_FEATURES = 2048
NUM_CLASSES = 1008
BN_EPSILON = 1e-3
PRECISION = jax.lax.Precision.HIGHEST  # float32 products on every backend (no bf16/TF32 passes on TPU/GPU)

_WHERE = (f"download {WEIGHTS_URL} (pytorch-fid's release, 95.6 MB) and set {WEIGHTS_CONFIG} or ${WEIGHTS_ENV} "
          "to the file's path")


# --- the network ------------------------------------------------------------------------------------------------

class ConvBN(nn.Module):
    """relu(BN(conv(x))): torchvision's BasicConv2d (conv without bias, batch norm with running statistics)."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, self.kernel, self.stride, padding=[(p, p) for p in self.padding],
                    use_bias=False, precision=PRECISION, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _max_pool(x: jax.Array) -> jax.Array:
    """3×3 max pool, stride 2, no padding."""
    return nn.max_pool(x, (3, 3), (2, 2))


def _pool_3x3(x: jax.Array, kind: str) -> jax.Array:
    """3×3 pool at stride 1 with one pixel of padding: "avg" averages only the pixels inside the image
    (count_include_pad=False, as TF), "max" ignores the padding."""
    if kind == "max":
        return nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b-5d: [1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg pool→1×1] concatenated."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b5 = ConvBN(64, (5, 5), padding=(2, 2), name="branch5x5_2")(ConvBN(48, name="branch5x5_1")(x))
        b3 = ConvBN(64, name="branch3x3dbl_1")(x)
        b3 = ConvBN(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = ConvBN(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        pool = ConvBN(self.pool_features, name="branch_pool")(_pool_3x3(x, "avg"))
        return jnp.concatenate([ConvBN(64, name="branch1x1")(x), b5, b3, pool], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a (35 → 17): [3×3 /2 | 1×1→3×3→3×3 /2 | max pool /2] concatenated."""

    @nn.compact
    def __call__(self, x):
        b3 = ConvBN(384, (3, 3), stride=2, name="branch3x3")(x)
        dbl = ConvBN(64, name="branch3x3dbl_1")(x)
        dbl = ConvBN(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
        dbl = ConvBN(96, (3, 3), stride=2, name="branch3x3dbl_3")(dbl)
        return jnp.concatenate([b3, dbl, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b-6e: [1×1 | 1×1→1×7→7×1 | 1×1→7×1→1×7→7×1→1×7 | avg pool→1×1] concatenated."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7, row, col = self.channels_7x7, dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b7 = ConvBN(c7, name="branch7x7_1")(x)
        b7 = ConvBN(c7, **row, name="branch7x7_2")(b7)
        b7 = ConvBN(192, **col, name="branch7x7_3")(b7)
        dbl = ConvBN(c7, name="branch7x7dbl_1")(x)
        for i, (features, shape) in enumerate([(c7, col), (c7, row), (c7, col), (192, row)], start=2):
            dbl = ConvBN(features, **shape, name=f"branch7x7dbl_{i}")(dbl)
        pool = ConvBN(192, name="branch_pool")(_pool_3x3(x, "avg"))
        return jnp.concatenate([ConvBN(192, name="branch1x1")(x), b7, dbl, pool], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a (17 → 8): [1×1→3×3 /2 | 1×1→1×7→7×1→3×3 /2 | max pool /2] concatenated."""

    @nn.compact
    def __call__(self, x):
        b3 = ConvBN(320, (3, 3), stride=2, name="branch3x3_2")(ConvBN(192, name="branch3x3_1")(x))
        b7 = ConvBN(192, name="branch7x7x3_1")(x)
        b7 = ConvBN(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = ConvBN(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = ConvBN(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b/7c: [1×1 | 1×1→(1×3, 3×1) | 1×1→3×3→(1×3, 3×1) | pool→1×1] concatenated; the pool is an
    average (7b, FIDInceptionE_1) or a max (7c, FIDInceptionE_2)."""

    pool: str

    @nn.compact
    def __call__(self, x):
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b3 = ConvBN(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate([ConvBN(384, **row, name="branch3x3_2a")(b3),
                              ConvBN(384, **col, name="branch3x3_2b")(b3)], axis=-1)
        dbl = ConvBN(448, name="branch3x3dbl_1")(x)
        dbl = ConvBN(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(dbl)
        dbl = jnp.concatenate([ConvBN(384, **row, name="branch3x3dbl_3a")(dbl),
                               ConvBN(384, **col, name="branch3x3dbl_3b")(dbl)], axis=-1)
        pool = ConvBN(192, name="branch_pool")(_pool_3x3(x, self.pool))
        return jnp.concatenate([ConvBN(320, name="branch1x1")(x), b3, dbl, pool], axis=-1)


class UnbiasedLogits(nn.Module):
    """pool · W: the fc layer's 1008 logits without its bias (the bias is kept in the params, unused here)."""

    @nn.compact
    def __call__(self, pool):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (pool.shape[-1], NUM_CLASSES))
        self.param("bias", nn.initializers.zeros_init(), (NUM_CLASSES,))
        return jnp.dot(pool, kernel, precision=PRECISION)


class InceptionV3(nn.Module):
    """pytorch-fid's FID InceptionV3 on 299×299×3 inputs in [−1, 1] → (2048-d average pool, 1008 unbiased logits).

    Module names are the state_dict's (`Mixed_5b.branch1x1.conv.weight` is params Mixed_5b/branch1x1/conv/kernel).
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = ConvBN(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = ConvBN(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = _max_pool(ConvBN(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x))
        x = ConvBN(80, name="Conv2d_3b_1x1")(x)
        x = _max_pool(ConvBN(192, (3, 3), name="Conv2d_4a_3x3")(x))
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, name=name)(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(channels_7x7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg", name="Mixed_7b")(x)
        x = InceptionE("max", name="Mixed_7c")(x)
        pool = jnp.mean(x, axis=(1, 2))
        return pool, UnbiasedLogits(name="fc")(pool)


def network(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pool (n, 2048), logits (n, 1008)) = InceptionV3(x) for inputs x (n, 299, 299, 3) in [−1, 1]."""
    return InceptionV3().apply(params, x)


def resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of PyTorch's bilinear resize along one axis (align_corners=False, no antialias):
    output i reads s = max(σ·(i + ½) − ½, 0), σ = size_in/size_out, as (1 − f)·x[⌊s⌋] + f·x[⌊s⌋ + 1] with
    f = s − ⌊s⌋, the upper index clamped to the last pixel.

    σ is a float32 and s is σ·(i + ½) − ½ rounded once to float32, as torch's CPU kernels compute it (a fused
    multiply-add): the weights then equal torch's bitwise (checked against F.interpolate of unit impulses).
    """
    scale = np.float32(size_in) / np.float32(size_out)
    source = np.maximum((np.float64(scale) * (np.arange(size_out) + 0.5) - 0.5).astype(np.float32), 0)
    low = np.minimum(source.astype(np.int64), size_in - 1)
    frac = np.clip(source - low.astype(np.float32), 0, 1)
    weights = np.zeros((size_out, size_in), np.float32)
    rows = np.arange(size_out)
    np.add.at(weights, (rows, low), 1 - frac)
    np.add.at(weights, (rows, np.minimum(low + 1, size_in - 1)), frac)
    return weights


def resize(images: jax.Array, size: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)) -> jax.Array:
    """y = R_h · x · R_wᵀ per image and channel, R = resize_matrix: `F.interpolate(x, size, mode="bilinear",
    align_corners=False)` for NHWC images, up or down."""
    (h, w), (out_h, out_w) = images.shape[1:3], size
    if (h, w) == (out_h, out_w):  # R = I: torch copies too
        return images
    y = jnp.einsum("oh,nhwc->nowc", resize_matrix(h, out_h), images, precision=PRECISION)
    return jnp.einsum("pw,nowc->nopc", resize_matrix(w, out_w), y, precision=PRECISION)


def _check_images(shape: tuple[int, ...]) -> None:
    """GanJaxError unless `shape` is (n, height, width, 3)."""
    if len(shape) != 4 or shape[-1] != 3:
        raise GanJaxError(f"Inception features need images of shape (n, height, width, 3), got {tuple(shape)}; "
                          "repeat a grayscale channel first: jnp.repeat(x, 3, axis=-1)")


def features(params: Params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pool (n, 2048), logits (n, 1008)) = network(resize₂₉₉(images)) for float images (n, h, w, 3) in [−1, 1].

    Pure and jittable (`make_extractor` is the batched, sharded, compiled form); the logits leave out the fc bias
    (see the module docstring). GanJaxError at trace time for images that are not (n, h, w, 3).
    """
    _check_images(images.shape)
    return network(params, resize(jnp.asarray(images, jnp.float32)))


def make_extractor(params: Params, batch_size: int = 50,
                   mesh: Mesh | None = None) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
    """`extract(images) -> (pool, logits)`, NumPy float32, of any number of images (n, h, w, 3) in [−1, 1]: `features`
    compiled over this process's devices, batch_size images a call (rounded up to a multiple of the device count)
    split along the batch axis; the last batch is padded and the padding dropped; two batches in flight.

    `resize` and `network` are compiled apart, so one compilation of the network serves every input size. On CPU
    both use gan_jax's compiler options (`parallel.compiler_options`: XLA's own dots and convolutions, measured
    1.4-1.8x faster than jaxlib's default in one run on 2 busy cores, and compiled in about half the time).

    Feed a stream batch by batch (`for x in batches: stats = merge(stats, extract(x)[0])`). In a multi-process run
    each process extracts its own images and the statistics are merged afterwards: `mesh` (default: all local
    devices) must hold only this process's devices.
    """
    mesh = mesh or Mesh(np.asarray(jax.local_devices()), (parallel.DATA_AXIS,))
    batch = math.ceil(batch_size / mesh.size) * mesh.size
    rows, options = parallel.batch_sharded(mesh), parallel.compiler_options(mesh)
    params = parallel.replicate(params, mesh)
    resize_step = jax.jit(resize, out_shardings=rows, compiler_options=options)
    network_step = jax.jit(network, out_shardings=(rows, rows), compiler_options=options)

    def extract(images: Any) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images, np.float32)
        _check_images(images.shape)
        pool, logits = [np.zeros((0, POOL_FEATURES), np.float32)], [np.zeros((0, NUM_CLASSES), np.float32)]
        pending = []

        def collect(n: int, outputs: tuple[jax.Array, jax.Array]) -> None:
            pool.append(np.asarray(outputs[0])[:n])
            logits.append(np.asarray(outputs[1])[:n])

        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            padded = np.pad(chunk, [(0, batch - len(chunk)), (0, 0), (0, 0), (0, 0)])
            pending.append((len(chunk), network_step(params, resize_step(jax.device_put(padded, rows)))))
            if len(pending) > 1:
                collect(*pending.pop(0))
        for item in pending:
            collect(*item)
        return np.concatenate(pool), np.concatenate(logits)

    return extract


# --- the weights file -------------------------------------------------------------------------------------------

def weights_path(configured: str | None) -> str:
    """The weights file: `configured` (config.eval.inception_weights) if set, else $GAN_JAX_INCEPTION_WEIGHTS."""
    path = configured or os.environ.get(WEIGHTS_ENV, "")
    if not path:
        raise GanJaxError(f"no Inception weights file is configured: {_WHERE}")
    return os.path.expanduser(path)


def file_sha256(path: str) -> str:
    """The SHA-256 hex digest of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(path: str, sha256: str | None = WEIGHTS_SHA256) -> Params:
    """The Flax variables of InceptionV3 from pytorch-fid's weights file, read without PyTorch.

    The file's SHA-256 must equal `sha256` (None: not checked, for files of other weights in the same layout).
    Conv weights OIHW → HWIO, fc (out, in) → (in, out), BN weight/bias → params scale/bias and running
    mean/var → batch_stats; the file's `num_batches_tracked` counters are ignored. GanJaxError for a missing file,
    a wrong digest, or a state_dict whose keys or shapes are not exactly the FID network's.
    """
    if not os.path.isfile(path):
        raise GanJaxError(f"Inception weights file {path!r} does not exist: {_WHERE}")
    if sha256 is not None and (actual := file_sha256(path)) != sha256.lower():
        raise GanJaxError(f"Inception weights file {path!r} has SHA-256 {actual}, expected {sha256.lower()} "
                          f"({WEIGHTS_FILE}): the file is damaged or another one; {_WHERE}")
    state = read_state_dict(path)
    expected = _expected_layout()
    tensors = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    for name, keys in (("missing", expected.keys() - tensors.keys()), ("unexpected", tensors.keys() - expected)):
        if keys:
            raise GanJaxError(f"{path!r} is not the FID Inception's state_dict: {len(keys)} {name} key(s): "
                              f"{', '.join(sorted(keys)[:5])}{' …' if len(keys) > 5 else ''}")
    flat = {}
    for key, (flax_path, shape) in expected.items():
        array = tensors[key]
        if array.dtype.kind != "f" or array.shape != _torch_shape(shape):
            raise GanJaxError(f"{path!r}: {key} is {array.dtype} {tuple(array.shape)}, the FID Inception needs "
                              f"float {_torch_shape(shape)}")
        if array.ndim > 1:  # OIHW -> HWIO, (out, in) -> (in, out)
            array = np.transpose(array, (*range(2, array.ndim), 1, 0))
        flat[flax_path] = jnp.asarray(array, jnp.float32)
    return unflatten_dict(flat)


# The state_dict's name for each Flax leaf: (collection, leaf) -> torch suffix.
_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch layout of a Flax shape: HWIO → OIHW, (in, out) → (out, in), vectors unchanged."""
    return flax_shape if len(flax_shape) < 2 else (flax_shape[-1], flax_shape[-2], *flax_shape[:-2])


@functools.cache
def _expected_layout() -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """torch key → (Flax variable path, Flax shape) of every variable of InceptionV3 (traced, not computed)."""
    shapes = jax.eval_shape(InceptionV3().init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
    layout = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        names = tuple(entry.key for entry in path)
        layout[".".join((*names[1:-1], _TORCH_LEAF[names[0], names[-1]]))] = (names, tuple(leaf.shape))
    return layout
