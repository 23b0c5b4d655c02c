"""Tests of gan_jax.data.images: the local digits tfds dataset, the generic tfds path, epoch-shuffled batches."""

import math
import socket
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from gan_jax import parallel
from gan_jax.data import images

KEY = jax.random.key(0)


def tensorflow_modules():
    """Imported TensorFlow modules; tensorflow_datasets / tensorflow_metadata are other packages."""
    return sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def digits(digits_dir):
    return images.load("digits", data_dir=digits_dir)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_digits_end_to_end_matches_sklearn(digits, digits_dir):
    x, labels = digits
    reference = load_digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == jnp.float32
    assert labels.shape == (1797,) and labels.dtype == jnp.int32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(labels, reference.target)  # scikit-learn's order is kept
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.bincount(reference.target, minlength=10))
    # Stored pixels round(v·255/16) for v ∈ {0..16}, read back as p/127.5 − 1.
    expected = np.round(reference.images * 255 / 16) / 127.5 - 1
    np.testing.assert_allclose(x[..., 0], expected, atol=1e-6)
    np.testing.assert_allclose(x[..., 0], reference.images / 8 - 1, atol=0.5 / 127.5 + 1e-6)
    # Written once as a tfds array_record dataset under data_dir.
    written = digits_dir / "sklearn_digits" / "1.0.0"
    assert list(written.glob("sklearn_digits-train.array_record-*"))
    assert (written / "dataset_info.json").exists()
    assert tensorflow_modules() == []


def forbid_rebuild(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("digits rebuilt although already prepared")

    monkeypatch.setattr(images.SklearnDigits, "_generate_examples", fail)


def test_digits_reuses_the_prepared_data(digits_dir, monkeypatch, no_network):
    forbid_rebuild(monkeypatch)
    x, labels = images.load("digits", split="train[:100]", data_dir=digits_dir)
    assert x.shape == (100, 8, 8, 1)
    np.testing.assert_array_equal(labels, load_digits().target[:100])
    # The registered builder name works through tfds directly, too.
    source = tfds.data_source("sklearn_digits", split="train", data_dir=digits_dir, download=False)
    assert len(source) == 1797


def test_default_data_dir_env_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_JAX_DATA_DIR", str(tmp_path / "env"))
    assert images.default_data_dir() == str(tmp_path / "env")
    monkeypatch.delenv("GAN_JAX_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert images.default_data_dir() == str(tmp_path / "cache" / "gan_jax" / "tensorflow_datasets")


def test_load_uses_env_data_dir(digits_dir, monkeypatch):
    monkeypatch.setenv("GAN_JAX_DATA_DIR", str(digits_dir))
    forbid_rebuild(monkeypatch)
    assert images.load(split="train[:10]")[0].shape == (10, 8, 8, 1)


def test_resize_to_16_is_bilinear_with_half_pixel_centres(digits, digits_dir):
    x8 = np.asarray(digits[0][:20, :, :, 0], np.float64)
    x16, _ = images.load("digits", split="train[:20]", data_dir=digits_dir, image_size=16)
    assert x16.shape == (20, 16, 16, 1)
    assert float(x16.min()) >= -1.0 and float(x16.max()) <= 1.0
    # Output pixel j sits at input coordinate (j + ½)/2 − ½; linear interpolation, edges clamped.
    coords = (np.arange(16) + 0.5) / 2 - 0.5
    interp = lambda row: np.interp(coords, np.arange(8), row)  # noqa: E731
    expected = np.apply_along_axis(interp, 2, np.apply_along_axis(interp, 1, x8))
    np.testing.assert_allclose(x16[..., 0], expected, atol=1e-5)


def test_generic_tfds_dataset_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        x, labels = images.load("mnist", split="train", data_dir=tmp_path)
        x32, _ = images.load("mnist", split="test", data_dir=tmp_path, image_size=32)
    assert x.shape == (12, 28, 28, 1) and x.dtype == jnp.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0 and float(x.max()) > float(x.min())
    assert labels.shape == (12,) and labels.dtype == jnp.int32
    assert set(np.asarray(labels).tolist()) <= set(range(10))
    assert x32.shape == (12, 32, 32, 1)
    assert tensorflow_modules() == []


def test_missing_dataset_names_the_prepare_command(tmp_path, monkeypatch, no_network):
    def no_download(*args, **kwargs):
        raise AssertionError("download_and_prepare called")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    empty = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as err:
        images.load("mnist", data_dir=empty)
    message = str(err.value)
    assert f"'mnist' is not prepared in {empty}" in message
    assert (
        "python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('mnist', data_dir='{empty}').download_and_prepare(file_format='array_record')\""
    ) in message
    assert not empty.exists() or not any(empty.rglob("*"))  # nothing written
    assert tensorflow_modules() == []


def test_unknown_dataset_and_bad_image_size(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'no_such_images'.*'digits'"):
        images.load("no_such_images", data_dir=tmp_path)
    with pytest.raises(ValueError, match="image_size must be None or an int >= 1, got 0"):
        images.load("digits", data_dir=tmp_path, image_size=0)


# --- batch: one (N, n) throughout, as each pair is one XLA compilation ------------------------------

SIZE, N_BATCH = 50, 16  # 50 is not a multiple of 16, so batches straddle epoch boundaries


def stream_reference(key, n_positions, size):
    """Positions 0 .. n_positions−1 of the stream: epoch e is permutation(fold_in(key, e), size)."""
    n_epochs = math.ceil(n_positions / size)
    epochs = [np.asarray(jax.random.permutation(jax.random.fold_in(key, e), size)) for e in range(n_epochs)]
    return np.concatenate(epochs)[:n_positions]


def test_batch_epochs_are_permutations_and_follow_the_stream():
    size, n = SIZE, N_BATCH
    data = jnp.arange(size)
    steps = 3 * math.ceil(size / n)  # 12 batches = 192 positions: 3 full epochs and part of a 4th
    stream = np.concatenate([np.asarray(images.batch(data, KEY, step, n)) for step in range(steps)])
    for e in range(len(stream) // size):
        np.testing.assert_array_equal(np.sort(stream[e * size:(e + 1) * size]), np.arange(size))
    np.testing.assert_array_equal(stream, stream_reference(KEY, steps * n, size))
    assert not np.array_equal(stream[:size], stream[size:2 * size])  # reshuffled each epoch


def test_batch_determinism_and_keys():
    data = jnp.arange(SIZE)
    a = images.batch(data, KEY, 5, N_BATCH)
    np.testing.assert_array_equal(a, images.batch(data, jax.random.key(0), 5, N_BATCH))
    assert not np.array_equal(a, images.batch(data, jax.random.key(1), 5, N_BATCH))
    assert not np.array_equal(a, images.batch(data, KEY, 6, N_BATCH))


def test_batch_jit_with_traced_step_and_pytrees():
    size, n = SIZE, N_BATCH
    data = (jnp.arange(size * 4, dtype=jnp.float32).reshape(size, 2, 2), jnp.arange(size) * 10)
    jitted = jax.jit(images.batch, static_argnums=3)
    reference = stream_reference(KEY, 20 * n, size)
    for step in (0, 3, 19):
        x, labels = jitted(data, KEY, jnp.int32(step), n)
        idx = reference[step * n:(step + 1) * n]
        np.testing.assert_array_equal(labels, idx * 10)
        np.testing.assert_array_equal(x, np.asarray(data[0])[idx])


def test_batch_far_steps_do_not_overflow():
    size, n, step = SIZE, N_BATCH, 10**9  # step·n = 1.6·10¹⁰ overflows int32
    position = step * n
    epoch, offset = divmod(position, size)
    perms = [np.asarray(jax.random.permutation(jax.random.fold_in(KEY, e), size)) for e in (epoch, epoch + 1)]
    expected = np.concatenate(perms)[offset:offset + n]
    np.testing.assert_array_equal(images.batch(jnp.arange(size), KEY, step, n), expected)


def test_batch_vmap_and_pmap_over_steps():
    data = jnp.arange(SIZE)
    expected = stream_reference(KEY, 4 * N_BATCH, SIZE).reshape(4, N_BATCH)
    batch = lambda s: images.batch(data, KEY, s, N_BATCH)  # noqa: E731
    np.testing.assert_array_equal(jax.vmap(batch)(jnp.arange(4)), expected)
    np.testing.assert_array_equal(jax.pmap(batch)(jnp.arange(4)), expected)


def test_batch_errors():
    data = jnp.arange(10)
    with pytest.raises(ValueError, match=r"batch size n must be in \[1, N=10\], got 11"):
        images.batch(data, KEY, 0, 11)
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by the 4 devices; use a multiple of 4"):
        images.batch(data, KEY, 0, 6, n_devices=4)
    with pytest.raises(ValueError, match="share one leading size"):
        images.batch((data, jnp.arange(9)), KEY, 0, 3)
    with pytest.raises(TypeError, match="static Python int"):
        jax.jit(images.batch)(data, KEY, 0, 3)
    assert parallel.check_batch_divisible(8, 4) == 2
    with pytest.raises(ValueError, match=r"e\.g\. 28 or 32"):
        parallel.check_batch_divisible(30, 4)
