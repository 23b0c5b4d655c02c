"""A run's samples and what scores and draws them: the sample function on fixed latents (for evaluations and
figures, with the EMA parameters when there are any), the run's `scoring.Scorer` with the real data's cached
reference features, the classifier of labelled data, and the sample figure. Used by gan_jax.trainer while training
and by its read-only `evaluate_checkpoint`; the metrics are chosen by what the data have, never by their name.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gan_jax import engine as engine_lib
from gan_jax import metrics as metrics_lib
from gan_jax import parallel, plotting, scoring
from gan_jax import workdir as workdir_lib
from gan_jax.data import DataSource, images, toy

# Records of a labelled dataset the evaluation classifier is trained on (the first ones): all of the digits;
# for large datasets a fixed subset, so the classifier costs seconds and host memory stays bounded.
CLASSIFIER_RECORDS = 10_000
# The classifier's key is the same for every run (not cfg.seed), so runs of different seeds score in one feature space.
CLASSIFIER_SEED = 2
FIGURE_IMAGES = 64  # images in a sample grid (unconditional); conditional grids show FIGURE_COLUMNS per class
FIGURE_COLUMNS = 8
FIGURE_CLASSES = 16  # classes shown in a conditional grid (the first ones)


def evaluator(cfg: ml_collections.ConfigDict, source: DataSource, classifier: Any = None, *,
              write_cache: bool = True) -> scoring.Scorer:
    """`evaluate(generate)`: the run's `scoring.Scorer` (mode/class coverage, sliced W₁, eval.metrics in
    eval.extractor's features); the real data's reference features are cached in the data directory (written by
    process 0 when `write_cache`)."""
    return scoring.Scorer(cfg, source, jax.random.key(cfg.seed + 2), classifier=classifier,
                          cache_dir=_reference_cache_dir(cfg), write_cache=write_cache and parallel.is_writer())


def _reference_cache_dir(cfg: ml_collections.ConfigDict) -> str | None:
    """Where the real data's reference features are cached: the data directory (none for toy data)."""
    if cfg.data.name in toy.names():
        return None
    return cfg.data.data_dir or images.default_data_dir()


def run_classifier(cfg: ml_collections.ConfigDict, source: DataSource, workdir: str, *, write: bool = True) -> Any:
    """The classifier of the run's labelled data (cached in `workdir`; `write=False` never writes), or None."""
    if not source.num_classes:
        return None
    train = source.real_batch(range(min(CLASSIFIER_RECORDS, len(source.records))))
    return metrics_lib.load_or_train_classifier(workdir, train.x, train.y, jax.random.key(CLASSIFIER_SEED),
                                                num_classes=source.num_classes, write=write)


def plot_samples(path: workdir_lib.PathLike, source: DataSource, samples: np.ndarray, title: str,
                 conditional: bool) -> str:
    """The figure of `samples` at `path`: an image grid (one row per class when `conditional`), or a scatter over the
    data and its mode centres; returns the path written."""
    if len(source.shape) == 3:
        if conditional:  # the figure's samples are FIGURE_COLUMNS per class, one row per class
            return plotting.image_grid(path, samples, nrow=FIGURE_COLUMNS)
        return plotting.image_grid(path, samples[:FIGURE_IMAGES])
    dist = source.distribution
    data = np.asarray(source.sample(source.arrays, jax.random.key(0), 0, len(samples)).x)
    centers = None if dist is None or dist.means is None else np.asarray(dist.means)
    return plotting.scatter_samples(path, samples, data=data, centers=centers, title=title)


def make_sample_fn(cfg: ml_collections.ConfigDict, source: DataSource, engine: engine_lib.Engine, mesh,
                    current_state: Callable[[], engine_lib.TrainState]) -> Callable[[str], Any]:
    """`sample(kind)`: the generator's samples on fixed latents, with the EMA parameters when train.ema_decay > 0.

    "eval": `generate(start, stop)` (scoring.Generate) of the current state: samples start..stop-1 of
    train.eval_samples on fixed latents, and their labels (cycling over the classes) or None;
    "figure": the figure's samples (for a conditional model FIGURE_COLUMNS per class, one row per class).
    """
    sampler = engine_lib.make_sampler(engine, mesh)
    n_classes = int(cfg.model.get("num_classes", 0))
    n_eval = cfg.train.eval_samples
    # The latents of every eval sample are drawn at once (n × latent_dim floats: small); the samples never are.
    eval_noise = np.asarray(jax.random.normal(jax.random.key(cfg.seed + 1), (n_eval, cfg.model.latent_dim)))
    eval_labels = np.arange(n_eval, dtype=np.int32) % n_classes if n_classes else None
    if n_classes:
        shown = min(n_classes, FIGURE_CLASSES)
        fig_labels = parallel.replicate(jnp.repeat(jnp.arange(shown, dtype=jnp.int32), FIGURE_COLUMNS), mesh)
        fig_noise = parallel.replicate(jnp.tile(
            jax.random.normal(jax.random.key(cfg.seed + 3), (FIGURE_COLUMNS, cfg.model.latent_dim)), (shown, 1)),
            mesh)
    else:  # the first eval samples: all of them for a scatter, the first FIGURE_IMAGES for an image grid
        fig_labels = None
        fig_noise = parallel.replicate(jnp.asarray(eval_noise[:FIGURE_IMAGES] if len(source.shape) == 3
                                                   else eval_noise), mesh)

    def sample(kind: str):
        state = current_state()
        params = engine_lib.sampling_params(state)
        if kind == "eval":
            def generate(start: int, stop: int):
                labels = None if eval_labels is None else eval_labels[start:stop]
                z = parallel.replicate(jnp.asarray(eval_noise[start:stop]), mesh)
                y = None if labels is None else parallel.replicate(jnp.asarray(labels), mesh)
                return np.asarray(sampler(params, z, y, state.generator_state)), labels
            return generate
        return np.asarray(sampler(params, fig_noise, fig_labels, state.generator_state))

    return sample
