"""A streamed, per-process host input pipeline for image records, built on grain.

It draws exactly the records of the device-resident path (`images.batch`): batch number i holds stream
positions P = i·B .. i·B + B − 1, and position P is record permutation(fold_in(key, P // N), N)[P % N].
The engine's step s, critic update j (of U per step) reads batch number i = s·U + j. Each process reads
only its rows [lo, hi) of every batch (`process_rows`); `to_global` assembles the global array.

grain reads the schedule's steps in background threads (`MapDataset.range(steps).map(read_step)
.to_iter_dataset(ReadOptions(num_threads, prefetch_buffer_size))`): one element is one step's U·(hi − lo)
records, so thread hand-offs are per step, not per record; elements come back in order whatever the thread
count, `prefetch_steps` of them read ahead of the consumer.
"""

from __future__ import annotations

import bisect
import collections
import functools
import itertools
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gan_jax.errors import GanJaxError
from gan_jax.parallel import DATA_AXIS, check_batch_divisible


@functools.partial(jax.jit, static_argnums=2)
def _permutation(key: jax.Array, epoch: jax.Array, size: int) -> jax.Array:
    """permutation(fold_in(key, epoch), size): the order of the records in epoch `epoch`."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), size)


class EpochIndex:
    """Record index at stream position P: permutation(fold_in(key, P // N), N)[P % N], as `images.batch`.

    Epoch permutations are computed once with JAX on the CPU backend and kept as numpy arrays, the
    `max_epochs` most recently used ones (at least the current and the next). Safe to share between threads.
    """

    def __init__(self, key: jax.Array, size: int, max_epochs: int = 2):
        if size < 1 or max_epochs < 2:
            raise ValueError(f"need size >= 1 and max_epochs >= 2, got size={size}, max_epochs={max_epochs}")
        self.size, self.max_epochs = int(size), int(max_epochs)
        try:  # host work: keep it off the accelerator (JAX_PLATFORMS without "cpu" leaves it where it is)
            self._key = jax.device_put(key, jax.local_devices(backend="cpu")[0])  # this process's own
        except RuntimeError:
            self._key = key
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> np.ndarray:
        """permutation(fold_in(key, epoch), N) as int32 numpy, computed on first use."""
        with self._lock:
            perm = self._cache.get(epoch)
            if perm is None:
                perm = np.asarray(_permutation(self._key, np.int32(epoch), self.size))
                self._cache[epoch] = perm
                while len(self._cache) > self.max_epochs:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(epoch)
            return perm

    def __getitem__(self, position: int) -> int:
        """The record at stream position P: permutation(P // N)[P % N]."""
        epoch, offset = divmod(int(position), self.size)
        return int(self.permutation(epoch)[offset])

    def batches(self, batch_numbers: Any, batch_size: int, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Records of rows [lo, hi) (default all B) of batches i: index[i·B + r], shape i.shape + (hi − lo,)."""
        lo, hi = rows or (0, batch_size)
        positions = np.asarray(batch_numbers, np.int64)[..., None] * batch_size + np.arange(lo, hi)
        epochs, offsets = np.divmod(positions, self.size)
        out = np.empty(positions.shape, np.int32)
        for epoch in np.unique(epochs):
            where = epochs == epoch
            out[where] = self.permutation(int(epoch))[offsets[where]]
        return out


def process_rows(batch_size: int, mesh: Mesh, process_index: int | None = None) -> tuple[int, int]:
    """Rows [lo, hi) of a global batch of B on this process's devices: B/D per device of the 1-D mesh, in order."""
    if tuple(mesh.axis_names) != (DATA_AXIS,):
        raise ValueError(f"expected a 1-D mesh with axis {DATA_AXIS!r}, got axes {tuple(mesh.axis_names)}")
    devices = list(np.asarray(mesh.devices).flat)
    per_device = check_batch_divisible(batch_size, len(devices))
    process = jax.process_index() if process_index is None else process_index
    mine = [p for p, device in enumerate(devices) if device.process_index == process]
    if not mine:
        raise ValueError(f"process {process} has no device in the mesh")
    if mine != list(range(mine[0], mine[0] + len(mine))):
        raise ValueError(f"process {process}'s devices are not contiguous in the mesh (positions {mine})")
    return mine[0] * per_device, (mine[-1] + 1) * per_device


def to_global(batch: dict[str, np.ndarray], mesh: Mesh, batch_size: int | None = None) -> dict[str, jax.Array]:
    """Each process's host batch (n, U, rows, ...) → global jax Arrays (n, U, B, ...) sharded P(None, None, "data").

    `batch_size` B is inferred (rows × processes' share of the mesh) unless given.
    """
    sharding = NamedSharding(mesh, P(None, None, DATA_AXIS))

    def place(value: np.ndarray) -> jax.Array:
        shape = None if batch_size is None else (*value.shape[:2], batch_size, *value.shape[3:])
        return jax.make_array_from_process_local_data(sharding, value, shape)

    return {name: place(value) for name, value in batch.items() if value is not None}


class StreamedBatches:
    """Host batches of a fused-call schedule: per call (first_step, n), records of rows [lo, hi) of batch
    numbers i = s·U + j for steps s ∈ [first_step, first_step + n), updates j < U, as
    {"image": uint8 (n, U, hi − lo, H, W, C), "label": int32 (n, U, hi − lo)} ("label" only if records have one).

    Args:
      records: random access: `len(records)` = N, `records[i]` a dict with "image" uint8 (H, W, C) or
        (H, W) and optionally "label" (e.g. `tfds.data_source(...)`, or a list of such dicts).
      key: the data key of the device path. batch_size: B, 1 ≤ B ≤ N. updates_per_step: U.
      schedule: the fused calls in order, each (first_step, n_steps).
      rows: this process's rows (lo, hi) of each batch (`process_rows`); default all B.
      num_threads: grain threads, each reading whole steps (0: read in the consumer's thread, no prefetch).
      prefetch_steps: steps read ahead of the consumer; default max(largest n, num_threads): one call ahead.
    """

    def __init__(self, records: Sequence[dict[str, Any]], key: jax.Array, batch_size: int,
                 updates_per_step: int, schedule: Sequence[tuple[int, int]], rows: tuple[int, int] | None = None,
                 *, num_threads: int = 8, prefetch_steps: int | None = None):
        self.records, self.size = records, len(records)
        self.batch_size, self.updates = int(batch_size), int(updates_per_step)
        self.lo, self.hi = rows or (0, self.batch_size)
        self.schedule = [(int(first), int(n)) for first, n in schedule]
        if not 1 <= self.batch_size <= self.size:
            raise GanJaxError(f"batch_size must be in [1, N={self.size}], got {batch_size}")
        if self.updates < 1 or not 0 <= self.lo < self.hi <= self.batch_size:
            raise ValueError(f"need updates_per_step >= 1 and 0 <= lo < hi <= B, got {updates_per_step}, {rows}")
        if any(first < 0 or n < 1 for first, n in self.schedule) or num_threads < 0:
            raise ValueError(f"need calls (first_step >= 0, n >= 1) and num_threads >= 0, got {schedule}")
        # The steps of the schedule in order: call c's steps are ordinals starts[c] .. starts[c + 1] − 1.
        self._starts = [0, *itertools.accumulate(n for _, n in self.schedule)]
        self.num_threads = num_threads
        self.prefetch_steps = prefetch_steps or max(num_threads, *(n for _, n in self.schedule), 1)
        # Steps in flight span ≤ (prefetch_steps + 1)·U·B stream positions: keep all their epochs.
        span = (self.prefetch_steps + 1) * self.updates * self.batch_size
        self.index = EpochIndex(key, self.size, max_epochs=2 + math.ceil(span / self.size))
        self._lock = threading.Lock()
        self._records_read = 0

    @property
    def records_read(self) -> int:
        """Records this object has read so far (each successful `records[i]` once)."""
        return self._records_read

    def step_indices(self, ordinal: int) -> np.ndarray:
        """Records (U, hi − lo) of the schedule's ordinal-th step s: index[(s·U + j)·B + r], lo ≤ r < hi."""
        call = bisect.bisect_right(self._starts, ordinal) - 1
        step = self.schedule[call][0] + ordinal - self._starts[call]
        return self.index.batches(step * self.updates + np.arange(self.updates), self.batch_size, (self.lo, self.hi))

    def _read(self, index: int) -> tuple[np.ndarray, int | None]:
        """(image (H, W, C) uint8, label or None) of records[index]; GanJaxError naming the record on failure."""
        try:
            example = self.records[index]
            image, label = np.asarray(example["image"]), example.get("label")
        except Exception as err:
            raise GanJaxError(f"reading record {index} failed: {type(err).__name__}: {err}") from err
        with self._lock:
            self._records_read += 1
        return self._checked(index, image, label)

    @staticmethod
    def _checked(index: int, image: np.ndarray, label: Any) -> tuple[np.ndarray, int | None]:
        """(image (H, W, C), label or None), GanJaxError naming the record unless it is a uint8 (H, W[, C]) image."""
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise GanJaxError(f"record {index}: expected a uint8 (H, W[, C]) image, got {image.dtype} {image.shape}")
        return (image[..., None] if image.ndim == 2 else image), (None if label is None else int(label))

    def _read_many(self, indices: list[int]) -> list[tuple[np.ndarray, int | None]]:
        """`_read` of each index; one batched `records.__getitems__` call where the source has one (tfds's
        array_record sources: 1.8x faster than record by record on the digits), record by record if it fails,
        so that the failing record is named."""
        getitems = getattr(self.records, "__getitems__", None)
        if getitems is None:
            return [self._read(i) for i in indices]
        try:
            examples = getitems(indices)
        except Exception:  # noqa: BLE001 — read again one by one: `_read` names the record that fails
            return [self._read(i) for i in indices]
        with self._lock:
            self._records_read += len(indices)
        return [self._checked(i, np.asarray(ex["image"]), ex.get("label")) for i, ex in zip(indices, examples)]

    def read_step(self, ordinal: int) -> dict[str, np.ndarray]:
        """The ordinal-th step of the schedule: {"image": (U, rows, H, W, C), "label": (U, rows)}."""
        indices = self.step_indices(ordinal)
        examples = self._read_many([int(i) for i in indices.flat])
        labels = [label for _, label in examples]
        try:
            batch = {"image": np.stack([image for image, _ in examples]).reshape(indices.shape + examples[0][0].shape)}
        except ValueError as err:
            raise GanJaxError(f"records {indices.ravel().tolist()} differ in image shape: {err}") from err
        if any(label is not None for label in labels):
            if None in labels:
                raise GanJaxError(f"of records {indices.ravel().tolist()} some have a 'label' and others not")
            batch["label"] = np.asarray(labels, np.int32).reshape(indices.shape)
        return batch

    def dataset(self) -> grain.IterDataset:
        """The grain pipeline: the schedule's steps in order, each read by one of the threads, prefetched."""
        steps = grain.MapDataset.range(self._starts[-1]).map(self.read_step)
        return steps.to_iter_dataset(grain.ReadOptions(num_threads=self.num_threads,
                                                       prefetch_buffer_size=self.prefetch_steps))

    def __len__(self) -> int:
        return len(self.schedule)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        steps = iter(self.dataset())
        try:
            for _, n in self.schedule:
                parts = [next(steps) for _ in range(n)]
                yield {name: (parts[0][name][None] if n == 1 else np.stack([p[name] for p in parts]))
                       for name in parts[0]}
        finally:
            steps.close()
