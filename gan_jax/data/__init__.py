"""Data: toy 2-D/1-D distributions (`toy`), image datasets through tensorflow-datasets (`images`), and
`make_source`, which turns `config.data` into one pure sampler the train step calls inside `jit`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gan_jax.data import images, toy


class DataSource(NamedTuple):
    """A dataset as the engine sees it: `sample(arrays, key, index, n)` is pure in (key, index)."""

    name: str
    shape: tuple[int, ...]  # per-example shape
    arrays: Any  # device arrays `sample` reads (the images), or () for toy distributions
    sample: Callable[[Any, jax.Array, jax.Array, int], jax.Array]
    distribution: Optional[toy.ToyDistribution] = None  # set for toy data (centres, std, log_prob)
    labels: Optional[np.ndarray] = None  # set for labelled image data


def make_source(data_cfg: ml_collections.ConfigDict) -> DataSource:
    """A toy distribution when `data_cfg.name` is one of `toy.names()`, else an image dataset via tfds."""
    if data_cfg.name in toy.names():
        dist = toy.get(data_cfg.name, **dict(data_cfg.kwargs))
        return DataSource(
            name=data_cfg.name, shape=(dist.dim,), arrays=(),
            sample=lambda arrays, key, index, n: toy.batch(dist, key, index, n),
            distribution=dist)
    try:
        pixels, labels = images.load(data_cfg.name, split=data_cfg.split, data_dir=data_cfg.data_dir or None,
                                     image_size=data_cfg.image_size or None)
    except ValueError as err:
        raise ValueError(f"data.name={data_cfg.name!r}: {err}; toy distributions: {', '.join(toy.names())}") from None
    return DataSource(
        name=data_cfg.name, shape=tuple(pixels.shape[1:]), arrays=jnp.asarray(pixels),
        sample=images.batch, labels=np.asarray(labels))
