"""Data: toy 2-D/1-D distributions (`toy`), image records through tensorflow-datasets (`images`), image folders
(`folders`), the streamed host pipeline (`pipeline`), and `make_source`, which turns `config.data` into the
`DataSource` the engine and the trainer read.

Two input pipelines (`config.data.pipeline`), one batch for each (seed, step):
- `device`: the data live in device memory (toys are drawn there; images are held as uint8) and the train
  step draws its batch inside `jit` with `sample(arrays, key, index, n)`;
- `streamed`: image records stay on disk; each process reads its devices' rows of every batch on the host
  (`pipeline.StreamedBatches`, the same record indices as the device path) and feeds them to the step.
`auto` (the default) picks `device` when the dataset, as held on a device (uint8 pixels + int32 labels), fits
`config.data.device_budget_mb`, else `streamed`. Pixels become floats in [−1, 1] on the device in both
(`images.to_model_input`), so the two pipelines train to the same numbers.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gan_jax.config import PIPELINES
from gan_jax.data import images, toy
from gan_jax.errors import GanJaxError


class Batch(NamedTuple):
    """Examples as the data give them: x (n, *dims) (uint8 pixels for images, floats for toys), labels y (n,)."""

    x: jax.Array
    y: Optional[jax.Array] = None  # int32 class labels; None for unlabelled data


class DataSource(NamedTuple):
    """A dataset as the engine sees it.

    `sample(arrays, key, index, n) -> Batch` is pure in (key, index) (the device pipeline; None when streamed);
    `to_input(x)` maps what a Batch holds to the model's input (uint8 pixels → [−1, 1], resized; identity for toys).
    """

    name: str
    shape: tuple[int, ...]  # per-example shape the models see
    arrays: Any  # what `sample` reads on the device: Batch(pixels uint8, labels) for images, () for toys
    sample: Optional[Callable[[Any, jax.Array, jax.Array, int], Batch]]
    distribution: Optional[toy.ToyDistribution] = None  # set for toy data (centres, std, log_prob)
    labels: Optional[np.ndarray] = None  # every record's label when they are read (device pipeline), else None
    num_classes: int = 0  # classes in the labels (0: unlabelled)
    records: Any = None  # the random-access image records (images.open_records); None for toys
    pipeline: str = "device"  # the pipeline that runs: "device" or "streamed"
    to_input: Callable[[jax.Array], jax.Array] = lambda x: x
    label_frequencies: Optional[np.ndarray] = None  # (num_classes,) when data.fake_labels="data"

    @property
    def streamed(self) -> bool:
        return self.pipeline == "streamed"

    def real_batch(self, indices: Any) -> Batch:
        """Host Batch of records `indices`, as model input (floats) with labels: what evaluation compares with."""
        if self.records is None:
            raise ValueError(f"{self.name!r} is a toy distribution: it has no records")
        pixels, labels = images.read_records(self.records, indices)
        return Batch(np.asarray(self.to_input(pixels)), labels)


def _toy_source(data_cfg: ml_collections.ConfigDict) -> DataSource:
    if data_cfg.get("pipeline", "auto") == "streamed":
        raise GanJaxError(f"config.data.pipeline='streamed' needs image records; the toy distribution "
                          f"{data_cfg.name!r} is drawn on the device: use data.pipeline=auto or device")
    dist = toy.get(data_cfg.name, **dict(data_cfg.kwargs))
    return DataSource(
        name=data_cfg.name, shape=(dist.dim,), arrays=(),
        sample=lambda arrays, key, index, n: Batch(toy.batch(dist, key, index, n)),
        distribution=dist)


def device_bytes(records: Any) -> int:
    """Bytes the records take in device memory as the device pipeline holds them: uint8 pixels + int32 labels."""
    first = records[0]
    per_example = images.record_image(first).nbytes + (4 if "label" in first else 0)
    return len(records) * per_example


def choose_pipeline(data_cfg: ml_collections.ConfigDict, records: Any) -> str:
    """data.pipeline, with "auto" resolved: "device" if device_bytes(records) ≤ data.device_budget_mb MiB."""
    choice = data_cfg.get("pipeline", "auto")
    if choice not in PIPELINES:
        raise GanJaxError(f"config.data.pipeline={choice!r} is invalid: use one of {', '.join(PIPELINES)}")
    if choice != "auto":
        return choice
    return "device" if device_bytes(records) <= float(data_cfg.device_budget_mb) * 2**20 else "streamed"


def _all_labels(records: Any, labels: Optional[np.ndarray]) -> np.ndarray:
    """Every record's label: `labels` when the records were read, else one pass over the records."""
    if labels is not None:
        return labels
    return np.asarray([records[i]["label"] for i in range(len(records))], np.int64)


def _num_classes(records: Any, labels: Optional[np.ndarray]) -> int:
    """Classes of labelled records: the label feature's num_classes (tfds metadata), else max label + 1."""
    info = getattr(records, "dataset_info", None)
    if info is not None and "label" in info.features and getattr(info.features["label"], "num_classes", None):
        return int(info.features["label"].num_classes)
    return int(_all_labels(records, labels).max()) + 1


def make_source(data_cfg: ml_collections.ConfigDict) -> DataSource:
    """A toy distribution when `data_cfg.name` is one of `toy.names()`, else an image dataset's records.

    The device pipeline reads every record into host memory once (uint8) for the device; the streamed one
    reads only metadata here.
    """
    if data_cfg.name in toy.names():
        return _toy_source(data_cfg)
    try:
        records = images.open_records(data_cfg.name, split=data_cfg.split, data_dir=data_cfg.data_dir or None)
        images._check_image_size(data_cfg.image_size or None)
    except FileNotFoundError as err:  # a tfds dataset that is not prepared: the message gives the command
        raise GanJaxError(f"data.name={data_cfg.name!r}: {err}") from None
    except GanJaxError as err:
        raise GanJaxError(f"data.name={data_cfg.name!r}: {err}; toy distributions: {', '.join(toy.names())}") from None
    pipeline = choose_pipeline(data_cfg, records)
    first = images.record_image(records[0])
    image_size = data_cfg.image_size or None
    shape = (image_size, image_size, first.shape[-1]) if image_size else tuple(first.shape)
    labelled = "label" in records[0]
    arrays, labels = (), None
    if pipeline == "device":
        pixels, labels = images.read_records(records)
        arrays = Batch(jnp.asarray(pixels), None if labels is None else jnp.asarray(labels))
    num_classes = _num_classes(records, labels) if labelled else 0
    frequencies = None
    if labelled and data_cfg.get("fake_labels", "uniform") == "data":
        frequencies = np.bincount(_all_labels(records, labels), minlength=num_classes) / len(records)
    return DataSource(
        name=data_cfg.name, shape=shape, arrays=arrays,
        sample=images.batch if pipeline == "device" else None,
        labels=None if labels is None else np.asarray(labels), num_classes=num_classes, records=records,
        pipeline=pipeline, to_input=lambda x: images.to_model_input(x, image_size),
        label_frequencies=frequencies)
