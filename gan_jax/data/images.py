"""Image datasets through tensorflow-datasets, without TensorFlow: random-access uint8 records.

`open_records(name, split, data_dir)` is the random-access source of a dataset: "digits" is scikit-learn's 8×8
digits, written once as a local tfds dataset (`sklearn_digits`, array_record format); a name prepared from an
image folder by `experiments.prepare_images` is read from its ArrayRecord files (gan_jax.data.folders); any
other name is read with tfds's random-access data source from a dataset the user has prepared in array_record
format. Data directory: the `data_dir` argument, else $GAN_JAX_DATA_DIR, else
$XDG_CACHE_HOME/gan_jax/tensorflow_datasets (~/.cache/gan_jax/tensorflow_datasets).

Pixels stay uint8 until they reach the model: `to_model_input(pixels, image_size)` (on the device, inside the
train step, for both input pipelines) maps them to [−1, 1] and resizes. `load` is the same for a whole split.
`batch(images, key, step, n)` draws the step-th batch of an epoch-shuffled stream: pure in (key, step).
"""

from __future__ import annotations

import functools
import numbers
import operator
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from gan_jax.errors import GanJaxError
from gan_jax.parallel import check_batch_divisible

DIGITS = "digits"
DATA_DIR_ENV = "GAN_JAX_DATA_DIR"


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8×8 digits: one split "train" of 1,797 images in scikit-learn's order.

    The source pixels v ∈ {0..16} are stored as uint8 round(v · 255/16) ∈ {0..255}.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "sklearn.datasets.load_digits, pixels rescaled 0..16 -> 0..255."}
    # Nothing is downloaded, so there is no checksums file beside the code. Declaring no code path also
    # skips tfds 4.9.10's lookup of it, which imports `importlib_resources` (absent on Python >= 3.9).
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn's 8x8 handwritten digits (UCI optdigits), pixels round(v * 255 / 16).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        del dl_manager  # the data ship inside scikit-learn: nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        from sklearn.datasets import load_digits  # only needed while building

        digits = load_digits()
        pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        for i, (image, label) in enumerate(zip(pixels, digits.target)):
            yield i, {"image": image, "label": int(label)}


def default_data_dir() -> str:
    """$GAN_JAX_DATA_DIR if set, else $XDG_CACHE_HOME (default ~/.cache)/gan_jax/tensorflow_datasets."""
    if os.environ.get(DATA_DIR_ENV):
        return os.path.expanduser(os.environ[DATA_DIR_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.expanduser(os.path.join(cache, "gan_jax", "tensorflow_datasets"))


def prepare_command(name: str, data_dir: str) -> str:
    """The shell command that prepares tfds dataset `name` in `data_dir` for `load` (array_record)."""
    return (
        'python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare(file_format='array_record')\""
    )


def _data_source(name: str, split: str, data_dir: str) -> Any:
    """tfds random-access source of `split`; digits are built on first use, other data must exist."""
    from gan_jax.data import folders  # an image folder prepared by experiments.prepare_images

    prepared = folders.open_records(name, data_dir, split)
    if prepared is not None:
        return prepared
    if name == DIGITS:
        builder = SklearnDigits(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            builder.download_and_prepare()
        return builder.as_data_source(split=split)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise GanJaxError(
            f"unknown dataset {name!r}: {data_dir} holds no image folder of that name and tfds has no such dataset; "
            f"prepare a folder of images with `python -m experiments.prepare_images --src=<folder> --name={name}` "
            f"(or point --config.data.data_dir at where it was prepared), or use {DIGITS!r} (built in) or a tfds "
            "dataset name (tfds.list_builders())"
        ) from err
    try:
        return builder.as_data_source(split=split)
    except Exception as err:
        if builder.is_prepared():
            raise
        raise FileNotFoundError(
            f"dataset {name!r} is not prepared in {data_dir}; prepare it once (needs network) with:\n"
            f"  {prepare_command(name, data_dir)}"
        ) from err


def _check_image_size(image_size: Any) -> None:
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1
    ):
        raise GanJaxError(f"image_size must be None or an int >= 1, got {image_size!r}")


def open_records(name: str = DIGITS, split: str = "train", data_dir: str | os.PathLike | None = None) -> Any:
    """The random-access source of a split: `len(src)`, `src[i]` → {"image": uint8 (H, W[, C]), "label": int}.

    Reads nothing but metadata (a streamed run reads each record when its batch needs it). Raises
    FileNotFoundError (not prepared; the message gives the command) or GanJaxError (unknown name, or a dataset
    without an "image" feature).
    """
    data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir else default_data_dir()
    source = _data_source(name, split, data_dir)
    if len(source) == 0:
        raise GanJaxError(f"dataset {name!r} split {split!r} in {data_dir} holds no examples")
    first = source[0]
    if "image" not in first:
        raise GanJaxError(f"dataset {name!r} split {split!r} needs an 'image' feature; found {sorted(first)}")
    return source


def record_image(record: dict[str, Any]) -> np.ndarray:
    """The record's pixels as uint8 (H, W, C): a channel axis is added to grayscale (H, W)."""
    pixels = np.asarray(record["image"])
    if pixels.dtype != np.uint8:
        raise GanJaxError(f"expected uint8 pixels, got dtype {pixels.dtype}")
    return pixels[..., None] if pixels.ndim == 2 else pixels


def read_records(source: Any, indices: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels uint8 (n, H, W, C) and labels int32 (n,) (None if unlabelled) of records `indices` (default all)."""
    indices = range(len(source)) if indices is None else indices
    examples = [source[int(i)] for i in indices]
    pixels = np.stack([record_image(ex) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], np.int32) if "label" in examples[0] else None
    return pixels, labels


def to_model_input(pixels: jax.Array, image_size: int | None = None) -> jax.Array:
    """x = 2·p/255 − 1 ∈ [−1, 1] float32 for uint8 pixels p (n, H, W, C), resized to image_size² if given.

    Resizing is jax.image.resize(method="linear") (bilinear, half-pixel centres), clipped to [−1, 1]. Both input
    pipelines call this on the device, so the same records give the same numbers either way.
    """
    x = jnp.asarray(pixels).astype(jnp.float32) * jnp.float32(2.0 / 255.0) - jnp.float32(1.0)
    if image_size and x.shape[-3:-1] != (image_size, image_size):
        shape = (*x.shape[:-3], image_size, image_size, x.shape[-1])
        x = jnp.clip(jax.image.resize(x, shape, method="linear"), -1.0, 1.0)
    return x


def load(
    name: str = DIGITS,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Images x = 2·pixel/255 − 1 ∈ [−1, 1] (N, H, W, C) float32 and labels (N,) int32 of a tfds split.

    Args:
      name: "digits" (scikit-learn 8×8 digits, built locally on first use; split "train", 1,797
        images; tfds slicing such as "train[:80%]" works) or a tfds image dataset with "image" and
        "label" features prepared in `data_dir` in array_record format (e.g. "mnist").
      data_dir: tfds data directory; default `default_data_dir()`.
      image_size: if set, images are resized to (image_size, image_size) with
        jax.image.resize(method="linear") (e.g. 8 → 16 for digits, 28 → 32 for MNIST), clipped to [−1, 1].

    Raises:
      FileNotFoundError: the dataset is not prepared in `data_dir`; the message gives the command.
      GanJaxError: unknown dataset name, or a dataset without "image"/"label" features.
    """
    _check_image_size(image_size)
    pixels, labels = read_records(open_records(name, split, data_dir))
    if labels is None:
        raise GanJaxError(f"dataset {name!r} split {split!r} needs a 'label' feature for load(); it has none")
    return to_model_input(pixels, image_size), jnp.asarray(labels)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _stream_indices(key: jax.Array, step: jax.Array, n: int, size: int) -> jax.Array:
    """Indices at stream positions step·n + i, i < n; epoch e is permutation(fold_in(key, e), size)."""
    step = jnp.asarray(step, jnp.int32)
    # step·n = (q·size + r)·n, so epoch = q·n + ⌊r·n / size⌋ with r·n < size·n: no int32 overflow.
    q, r = step // size, step % size
    epoch = q * n + (r * n) // size
    position = (r * n) % size + jnp.arange(n)  # < 2·size since n ≤ size: at most one epoch boundary
    this_epoch = jax.random.permutation(jax.random.fold_in(key, epoch), size)
    next_epoch = jax.random.permutation(jax.random.fold_in(key, epoch + 1), size)
    return jnp.where(position < size, this_epoch[position % size], next_epoch[position % size])


def batch(images: Any, key: jax.Array, step: jax.Array | int, n: int, *, n_devices: int | None = None) -> Any:
    """Examples at positions step·n .. step·n + n − 1 of the stream whose epoch e is a permutation
    from fold_in(key, e).

    Args:
      images: an array (N, ...) or a pytree of arrays with the same leading N (e.g. (images, labels)).
      step: the batch number; may be traced. n: batch size, static, 1 ≤ n ≤ N.
      n_devices: if given, n must be divisible by it (data-parallel sharding; parallel.check_batch_divisible).
    """
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(images)}
    if len(sizes) != 1:
        raise ValueError(f"images leaves must share one leading size N, got sizes {sorted(sizes)}")
    (size,) = sizes
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be a static Python int (static_argnums under jit), got {n!r}") from None
    if not 1 <= n <= size:
        raise GanJaxError(f"batch size n must be in [1, N={size}], got {n}")
    if n_devices is not None:
        check_batch_divisible(n, n_devices)
    if size * n >= 2**31:
        raise GanJaxError(f"N × n must be < 2**31 (int32 stream positions), got {size} × {n}")
    indices = _stream_indices(key, step, n, size)
    return jax.tree.map(lambda leaf: jnp.take(leaf, indices, axis=0), images)
