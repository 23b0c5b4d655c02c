"""Tests of gan_jax.data.pipeline: streamed host batches equal the device path's records, row by row."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from gan_jax import parallel
from gan_jax.data import images, pipeline

KEY = jax.random.key(7)


def reference_indices(key, batch_number, batch_size, size):
    """The device path's record indices of one batch (`images._stream_indices`)."""
    return np.asarray(images._stream_indices(key, batch_number, batch_size, size))


def make_records(size, shape=(3, 2, 3), labels=True, seed=0):
    """Records whose pixels encode their index (channel 0: m % 256, channel 1: m // 256) over random noise."""
    rng = np.random.default_rng(seed)
    records = []
    for m in range(size):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        image[..., 0, 0] = m % 256
        image[..., 1, 0] = m // 256
        records.append({"image": image, "label": (m * 7) % 10} if labels else {"image": image})
    return records


def expected_batch(records, key, batch_size, updates, first_step, n, rows):
    """Host batch of one fused call built from the reference indices, record by record."""
    lo, hi = rows
    idx = np.asarray([[reference_indices(key, s * updates + j, batch_size, len(records))[lo:hi]
                       for j in range(updates)] for s in range(first_step, first_step + n)])
    image = np.stack([np.asarray(records[i]["image"]) for i in idx.ravel()])
    if image.ndim == 3:
        image = image[..., None]
    out = {"image": image.reshape(idx.shape + image.shape[1:])}
    if "label" in records[0]:
        out["label"] = np.asarray([records[i]["label"] for i in idx.ravel()], np.int32).reshape(idx.shape)
    return out


def assert_batches_equal(got, want):
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize("size,batch_size", [(10, 4), (7, 7), (50, 3), (1797, 64)])
def test_epoch_index_equals_stream_indices(size, batch_size):
    index = pipeline.EpochIndex(KEY, size)
    numbers = [*range(0, 3 * size // batch_size + 3), 12_345, 2**31 - 2, 2**31 - 1]  # many epoch crossings
    want = np.stack([reference_indices(KEY, i, batch_size, size) for i in numbers])
    got = index.batches(numbers, batch_size)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(index.batches(numbers, batch_size, rows=(1, batch_size)), want[:, 1:])
    assert index[numbers[-1] * batch_size + batch_size - 1] == want[-1, -1]
    # Out-of-order access through a cache of two epochs recomputes evicted epochs identically.
    order = np.random.default_rng(0).permutation(len(numbers))
    for k in order:
        np.testing.assert_array_equal(index.batches([numbers[k]], batch_size)[0], want[k])


@pytest.mark.parametrize("schedule", [[(0, 3), (3, 1), (4, 2)], [(5, 1), (6, 4)]])
def test_streamed_batches_equal_records_at_reference_indices(schedule):
    records = make_records(10)
    outputs = {}
    for threads, prefetch in [(0, None), (1, None), (4, None), (3, 1)]:
        stream = pipeline.StreamedBatches(records, KEY, 4, 3, schedule, num_threads=threads, prefetch_steps=prefetch)
        outputs[threads] = list(stream)
        assert len(outputs[threads]) == len(schedule) == len(stream)
        assert stream.records_read == 4 * 3 * sum(n for _, n in schedule)  # each read once
    for (first, n), got in zip(schedule, outputs[1], strict=True):
        assert_batches_equal(got, expected_batch(records, KEY, 4, 3, first, n, (0, 4)))
    for threads in (0, 3, 4):  # the same numbers whatever the threads and the prefetch depth
        for got, want in zip(outputs[threads], outputs[1], strict=True):
            assert_batches_equal(got, want)


def test_invalid_arguments_raise():
    records = make_records(5)
    for kwargs in [dict(batch_size=6), dict(updates_per_step=0), dict(rows=(2, 2)), dict(rows=(0, 5)),
                   dict(schedule=[(0, 0)]), dict(schedule=[(-1, 2)])]:
        args = dict(batch_size=4, updates_per_step=2, schedule=[(0, 1)]) | kwargs
        with pytest.raises(ValueError):
            pipeline.StreamedBatches(records, KEY, **args)


def test_resume_in_the_middle_gives_the_tail_of_the_run():
    records = make_records(13, labels=False)
    full = list(pipeline.StreamedBatches(records, KEY, 5, 2, [(0, 5), (5, 5), (10, 2)], num_threads=2))
    resumed = list(pipeline.StreamedBatches(records, KEY, 5, 2, [(7, 3), (10, 2)], num_threads=2))
    steps = np.concatenate([b["image"] for b in full])
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in resumed]), steps[7:])
    assert "label" not in resumed[0]


def test_grayscale_records_get_a_channel_axis():
    records = make_records(9, shape=(4, 3), labels=True)
    (got,) = pipeline.StreamedBatches(records, KEY, 3, 2, [(2, 2)])
    assert got["image"].shape == (2, 2, 3, 4, 3, 1)
    assert_batches_equal(got, expected_batch(records, KEY, 3, 2, 2, 2, (0, 3)))


def test_processes_read_only_their_rows_and_together_the_whole_batch():
    records, schedule, updates = make_records(21), [(0, 2), (2, 3)], 3
    whole = list(pipeline.StreamedBatches(records, KEY, 8, updates, schedule))
    parts = []
    for rows in [(0, 4), (4, 8)]:
        stream = pipeline.StreamedBatches(records, KEY, 8, updates, schedule, rows=rows, num_threads=3)
        parts.append(list(stream))
        assert stream.records_read == 4 * updates * 5  # its rows × U × steps, nothing more
        for (first, n), got in zip(schedule, parts[-1]):
            assert_batches_equal(got, expected_batch(records, KEY, 8, updates, first, n, rows))
    for k, want in enumerate(whole):
        for name in want:
            np.testing.assert_array_equal(np.concatenate([parts[0][k][name], parts[1][k][name]], axis=2), want[name])


class Damaged(list):
    """Records of which one raises on read, as a corrupt file would."""

    def __init__(self, records, bad):
        super().__init__(records)
        self.bad = bad

    def __getitem__(self, index):
        if index == self.bad:
            raise OSError("checksum mismatch")
        return super().__getitem__(index)


@pytest.mark.parametrize("threads", [0, 4])
def test_a_damaged_record_raises_value_error_naming_it(threads):
    # Steps 0, 1 (U = 2, B = 4) read positions 0..15 of epoch 0; position 16, first read in step 2, is unread.
    bad = int(reference_indices(KEY, 4, 4, 20)[0])
    stream = pipeline.StreamedBatches(Damaged(make_records(20), bad), KEY, 4, 2, [(0, 1), (1, 1), (2, 3)],
                                      num_threads=threads)
    batches = iter(stream)
    next(batches), next(batches)  # the calls before it are delivered
    with pytest.raises(ValueError, match=rf"record {bad} .*OSError: checksum mismatch"):
        next(batches)


def fake_mesh(owners):
    """A stand-in for a 1-D mesh whose devices belong to processes `owners` (several processes can't be made here)."""
    devices = np.asarray([types.SimpleNamespace(process_index=p) for p in owners], dtype=object)
    return types.SimpleNamespace(axis_names=(parallel.DATA_AXIS,), devices=devices)


def test_process_rows():
    assert pipeline.process_rows(8, parallel.make_mesh(4)) == (0, 8)
    assert pipeline.process_rows(12, fake_mesh([0, 0, 1, 1]), process_index=0) == (0, 6)
    assert pipeline.process_rows(12, fake_mesh([0, 0, 1, 1]), process_index=1) == (6, 12)
    assert pipeline.process_rows(12, fake_mesh([0, 1, 1, 2]), process_index=1) == (3, 9)
    with pytest.raises(ValueError, match="not contiguous"):
        pipeline.process_rows(8, fake_mesh([0, 1, 0, 1]), process_index=0)
    with pytest.raises(ValueError, match="not divisible"):
        pipeline.process_rows(6, fake_mesh([0, 0, 1, 1]), process_index=0)
    with pytest.raises(ValueError, match="no device"):
        pipeline.process_rows(8, fake_mesh([0, 0, 1, 1]), process_index=2)


def test_to_global_on_four_devices():
    mesh = parallel.make_mesh(4)
    assert mesh.size == 4
    (batch,) = pipeline.StreamedBatches(make_records(16), KEY, 8, 2, [(0, 3)], rows=pipeline.process_rows(8, mesh))
    arrays = pipeline.to_global(batch, mesh)
    explicit = pipeline.to_global(batch, mesh, batch_size=8)
    for name in ("image", "label"):
        np.testing.assert_array_equal(np.asarray(explicit[name]), batch[name])
        array = arrays[name]
        assert array.shape == batch[name].shape and array.dtype == batch[name].dtype
        assert array.sharding.is_equivalent_to(NamedSharding(mesh, P(None, None, parallel.DATA_AXIS)), array.ndim)
        np.testing.assert_array_equal(np.asarray(array), batch[name])
        for shard in array.addressable_shards:  # device d holds rows 2d, 2d + 1 of every batch
            d = list(mesh.devices.flat).index(shard.device)
            np.testing.assert_array_equal(np.asarray(shard.data), batch[name][:, :, 2 * d:2 * d + 2])


@pytest.fixture(scope="module")
def digits_source(tmp_path_factory):
    return images._data_source("digits", "train", str(tmp_path_factory.mktemp("tfds")))


def test_tfds_digits_stream_equals_the_device_path(digits_source):
    size, batch_size, updates = len(digits_source), 64, 5
    pixels = np.stack([np.asarray(digits_source[i]["image"]) for i in range(size)])
    labels = np.asarray([digits_source[i]["label"] for i in range(size)], np.int32)
    assert size == 1797 and pixels.dtype == np.uint8 and pixels.shape == (size, 8, 8, 1)
    device = (jnp.asarray(pixels), jnp.asarray(labels))
    schedule, rows = [(4, 1), (5, 2)], (16, 48)  # batch numbers 20..34 cross the epoch boundary at 1797
    stream = pipeline.StreamedBatches(digits_source, KEY, batch_size, updates, schedule, rows=rows, num_threads=4)
    for (first, n), got in zip(schedule, stream, strict=True):
        assert got["image"].shape == (n, updates, 32, 8, 8, 1) and got["label"].dtype == np.int32
        for t in range(n):
            for j in range(updates):
                want_x, want_y = images.batch(device, KEY, (first + t) * updates + j, batch_size)
                np.testing.assert_array_equal(got["image"][t, j], np.asarray(want_x)[16:48])
                np.testing.assert_array_equal(got["label"][t, j], np.asarray(want_y)[16:48])
    assert stream.records_read == 32 * updates * 3
