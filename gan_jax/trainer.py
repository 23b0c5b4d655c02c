"""The training loop as a library: `train_and_evaluate(config, workdir)`, `restore_state`, `evaluate`.

`experiments/train.py` only defines flags and calls `train_and_evaluate`; tests and notebooks import this module.
Running again with the same workdir resumes from its newest valid checkpoint, bit for bit. The workdir
receives checkpoints/, metrics.jsonl, TensorBoard events (tb/), samples/*.png, config.json, config_history/ and
summary.json. SIGTERM/SIGINT save a checkpoint at the current step and raise `Preempted`.

Periodic work runs from one table, `PERIODIC`: (name, config field giving every how many generator steps,
action). An action runs after the fused call that crosses a multiple of its period; "log" also after the last
step. The final figure, evaluation and checkpoint follow the loop.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from gan_jax import checkpoint
from gan_jax import config as config_lib
from gan_jax import engine as engine_lib
from gan_jax import metrics as metrics_lib
from gan_jax import parallel, plotting, run_records
from gan_jax import workdir as workdir_lib
from gan_jax.data import Batch, DataSource, make_source, pipeline, toy

# Records of a labelled dataset the evaluation classifier is trained on (the first ones): all of the digits;
# for large datasets a fixed subset, so the classifier costs seconds and host memory stays bounded.
CLASSIFIER_RECORDS = 10_000
FIGURE_IMAGES = 64  # images in a sample grid (unconditional); conditional grids show FIGURE_COLUMNS per class
FIGURE_COLUMNS = 8
FIGURE_CLASSES = 16  # classes shown in a conditional grid (the first ones)


class NonFiniteLossError(FloatingPointError):
    """A train step produced a NaN/Inf loss or parameter."""


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint of the current step has been saved."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"signal {signum} received: saved checkpoint at step {step}")
        self.signum, self.step = signum, step


class _StopRequest:
    """Records SIGTERM/SIGINT so the loop can checkpoint between fused calls, then restores the old handlers.

    One process: Python handlers record the signal. Several processes: SIGTERM is left to JAX's runtime,
    whose preemption service tells every process (`multihost_utils.reached_preemption_sync_point`), so all
    save the same step; SIGINT (Ctrl-C) is turned into a SIGTERM to this process to take the same path.
    """

    def __init__(self, multi_process: bool):
        self.multi_process = multi_process
        self.signum = None
        self._calls = 0  # fused calls so far: the sync point's step counter, the same on every process
        self._previous = {}

    def __enter__(self):
        handlers = {signal.SIGINT: self._forward_as_sigterm} if self.multi_process else {
            signal.SIGTERM: self._record, signal.SIGINT: self._record}
        for sig, handler in handlers.items():
            self._previous[sig] = signal.signal(sig, handler)
        return self

    def _record(self, signum, frame):
        del frame
        self.signum = signum

    def _forward_as_sigterm(self, signum, frame):
        del signum, frame
        os.kill(os.getpid(), signal.SIGTERM)

    def requested(self) -> bool:
        """Whether to save and stop now; call once after every fused call, on every process."""
        self._calls += 1
        if self.multi_process and multihost_utils.reached_preemption_sync_point(self._calls):
            self.signum = signal.SIGTERM
        return self.signum is not None

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------------------------
# Evaluation: the metrics are chosen by what the data have, never by their name.


def _flat(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x.reshape(x.shape[0], -1)


def real_examples(source: DataSource, n: int, key: jax.Array) -> Batch:
    """n real examples to compare samples with: toy draws from `key`, else the first n records (model input)."""
    if source.records is None:
        return source.sample(source.arrays, key, 0, n)
    return source.real_batch(range(min(n, len(source.records))))


def evaluate(cfg: ml_collections.ConfigDict, source: DataSource, samples: jax.Array, key: jax.Array,
             workdir: str, sample_labels: jax.Array | None = None) -> dict[str, float]:
    """{metric name: value} for generator `samples` (drawn for `sample_labels` when conditional).

    Every dataset: sliced W₁ to as many real examples. Toy mixtures: mode coverage, high-quality share,
    reverse KL of the mode histogram. Labelled images: class coverage, the classifier Inception-style score and
    Fréchet distance from a classifier trained on this dataset (cached in the workdir by a digest of the data),
    and for a conditional generator the classifier's mean per-class accuracy on the samples.
    """
    del cfg
    samples = jnp.asarray(samples)
    n = samples.shape[0]
    result: dict[str, float] = {}
    data_key, w_key = jax.random.split(key)
    dist = source.distribution
    if dist is not None and dist.means is not None:
        cover = metrics_lib.mode_coverage(samples, jnp.asarray(dist.means), dist.std)
        result.update(modes_captured=int(cover.modes_captured), n_modes=len(dist.means),
                      high_quality=float(cover.high_quality_fraction), mode_reverse_kl=float(cover.reverse_kl))
    real = real_examples(source, n, data_key)
    result["sliced_w1"] = float(metrics_lib.sliced_w1(_flat(samples), _flat(real.x), w_key))
    if source.num_classes:
        train = source.real_batch(range(min(CLASSIFIER_RECORDS, len(source.records))))
        params = metrics_lib.load_or_train_classifier(workdir, train.x, train.y, w_key,
                                                      num_classes=source.num_classes)
        cover = metrics_lib.class_coverage(params, samples)
        result.update(classes_covered=int(cover.classes_covered),
                      class_reverse_kl=float(cover.reverse_kl),
                      inception_score=float(metrics_lib.inception_score(params, samples)),
                      frechet_distance=float(metrics_lib.frechet_distance(params, jnp.asarray(real.x), samples)))
        if sample_labels is not None:
            result["class_accuracy"] = float(metrics_lib.class_accuracy(params, samples, jnp.asarray(sample_labels)))
    return result


def _plot(path: str, source: DataSource, samples: np.ndarray, title: str, conditional: bool) -> str:
    if len(source.shape) == 3:
        if conditional:  # the figure's samples are FIGURE_COLUMNS per class, one row per class
            return plotting.image_grid(path, samples, nrow=FIGURE_COLUMNS)
        return plotting.image_grid(path, samples[:FIGURE_IMAGES])
    dist = source.distribution
    data = np.asarray(source.sample(source.arrays, jax.random.key(0), 0, len(samples)).x)
    centers = None if dist is None or dist.means is None else np.asarray(dist.means)
    return plotting.scatter_samples(path, samples, data=data, centers=centers, title=title)


# ------------------------------------------------------------------------------------------------------------
# Building and restoring.


def _check_labels(cfg: ml_collections.ConfigDict, source: DataSource) -> None:
    """ValueError unless model.num_classes is 0 or the number of classes of the data's labels."""
    wanted = int(cfg.model.get("num_classes", 0))
    if not wanted:
        return
    if not source.num_classes:
        raise ValueError(f"config.model.num_classes={wanted} asks for a class-conditional model, but dataset "
                         f"{source.name!r} has no labels: set --config.model.num_classes=0 or use labelled data")
    if wanted != source.num_classes:
        raise ValueError(f"config.model.num_classes={wanted} but dataset {source.name!r} has {source.num_classes} "
                         f"classes: set --config.model.num_classes={source.num_classes}")


def _build(cfg: ml_collections.ConfigDict, mesh) -> tuple[DataSource, engine_lib.Engine, engine_lib.TrainState]:
    """Data source, engine and a fresh state on `mesh`: every config check that needs them, nothing written."""
    source = parallel.writer_first(lambda: make_source(cfg.data), "data")
    _check_labels(cfg, source)
    engine = engine_lib.make_engine(cfg, source.shape)
    state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
    return source, engine, state


def restore_state(workdir: str, cfg: ml_collections.ConfigDict | None = None) -> engine_lib.TrainState:
    """The newest valid `TrainState` saved in `workdir`, read-only: safe beside a live run, writes nothing.

    The config comes from `workdir/config.json` by default. Raises checkpoint.NoValidCheckpointError when the
    workdir holds no committed, valid step.
    """
    cfg = run_records.read_config(workdir) if cfg is None else cfg
    data_cfg = cfg.data.copy_and_resolve_references()
    if data_cfg.name not in toy.names():
        data_cfg.pipeline = "streamed"  # only the records' metadata is read
    source = make_source(data_cfg)
    engine = engine_lib.make_engine(cfg, source.shape)
    like = jax.eval_shape(lambda: engine_lib.create_state(cfg, engine, source.shape))
    return checkpoint.restore_readonly(workdir, like, cfg)[1]


# ------------------------------------------------------------------------------------------------------------
# The loop.


def schedule(start: int, total: int, k: int) -> list[tuple[int, int]]:
    """The fused calls (first step, steps) from `start` to `total`: back onto multiples of k after a resume from
    another step (e.g. a run stopped at steps=23), so logs and checkpoints fall where an uninterrupted run puts
    them."""
    calls, step = [], start
    while step < total:
        n = min(k - step % k, total - step)
        calls.append((step, n))
        step += n
    return calls


def _crossed(step: int, previous: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (previous, step]: schedules count steps, not segments."""
    return every > 0 and step // every > previous // every


class _Loop:
    """What the periodic actions read and write while training: the run's pieces and the latest fused call."""

    def __init__(self, cfg, workdir, checkpointer, source, state, sample, log, start):
        self.cfg, self.workdir, self.checkpointer, self.source = cfg, workdir, checkpointer, source
        self.state, self.sample, self.log = state, sample, log
        self.writer = parallel.is_writer()
        self.start, self.step, self.chunk, self.t0 = start, start, None, time.perf_counter()
        self.bar = None

    def steps_per_sec(self) -> float:
        return (self.step - self.start) / (time.perf_counter() - self.t0)


def _log_action(loop: _Loop) -> None:
    if not loop.log:
        return
    values = {name: float(np.mean(v)) for name, v in loop.chunk.items() if name != "nonfinite"}
    values["steps_per_sec"] = loop.steps_per_sec()
    loop.log.write(loop.step, values)
    if loop.bar is not None:
        loop.bar.set_postfix(critic=f"{values['critic_loss']:.3f}", generator=f"{values['generator_loss']:.3f}")


def _figure_action(loop: _Loop) -> None:
    samples = loop.sample("figure")  # every process takes part in the computation; process 0 plots
    if loop.writer:
        _plot(os.path.join(loop.workdir, "samples", f"step_{loop.step:07d}.png"), loop.source, samples,
              f"{loop.source.name}, step {loop.step}", bool(loop.cfg.model.get("num_classes", 0)))


def _evaluate_action(loop: _Loop) -> None:
    samples, labels = loop.sample("eval")
    if loop.writer:
        values = evaluate(loop.cfg, loop.source, samples, jax.random.key(loop.cfg.seed + 2), loop.workdir, labels)
        loop.log.write(loop.step, {f"eval/{name}": value for name, value in values.items()})


def _checkpoint_action(loop: _Loop) -> None:
    loop.checkpointer.save(loop.state)


class Periodic(NamedTuple):
    """A periodic action: runs when a fused call crosses a multiple of config.train.<every>; 0 = never (in loop)."""

    name: str
    every: str  # the train.* field holding the period in generator steps
    action: Callable[[_Loop], None]
    at_last_step: bool  # also after the last training step (the others have their own final version)


PERIODIC: tuple[Periodic, ...] = (
    Periodic("log", "log_every", _log_action, at_last_step=True),
    Periodic("figure", "sample_every", _figure_action, at_last_step=False),
    Periodic("evaluate", "eval_every", _evaluate_action, at_last_step=False),
    Periodic("checkpoint", "checkpoint_every", _checkpoint_action, at_last_step=False),
)


def _due(periodic: Periodic, cfg: ml_collections.ConfigDict, step: int, previous: int) -> bool:
    last = step == cfg.train.steps
    if last and not periodic.at_last_step:
        return False
    return _crossed(step, previous, int(cfg.train.get(periodic.every, 0))) or (last and periodic.at_last_step)


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Trains `cfg.train.steps` generator steps (resuming from `workdir`), evaluates, and returns the summary.

    With several processes (`cfg.parallel`), every process runs this with the same config; all of them
    train and take part in checkpoint saves and restores, and only process 0 writes logs, figures,
    config.json and summary.json (the others return the same summary without writing it).
    """
    config_lib.validate(cfg)
    multi_process = parallel.initialize_distributed(cfg.parallel)
    mesh = parallel.make_mesh(cfg.parallel.num_devices)
    parallel.check_batch_divisible(cfg.data.batch_size, mesh)
    source, engine, state = _build(cfg, mesh)
    run_records.refuse_structural_changes(workdir, cfg)
    workdir = workdir_lib.prepare(workdir)  # refuses a file, a foreign folder, ... before writing anything
    with workdir_lib.acquire(workdir) as lock:  # one run per workdir; the kernel frees it if this process dies
        checkpointer = checkpoint.Checkpointer(workdir, cfg, lock=lock)
        try:
            return _train(cfg, workdir, checkpointer, mesh, source, engine, state, multi_process, progress)
        finally:
            checkpointer.close()  # waits for pending saves


def _data_feed(cfg: ml_collections.ConfigDict, source: DataSource, state: engine_lib.TrainState, mesh,
               calls: list[tuple[int, int]]):
    """One `data` argument per fused call of `calls`: the resident dataset, or the streamed host batches."""
    if not source.streamed:
        arrays = parallel.replicate(source.arrays, mesh)
        return (arrays for _ in calls), None
    # The run's key from this process's copy (the state is replicated), as a host value for the reader.
    key = jax.random.wrap_key_data(np.asarray(jax.random.key_data(state.key).addressable_data(0)),
                                   impl=jax.random.key_impl(state.key))
    batches = pipeline.StreamedBatches(
        source.records, engine_lib.data_key(key), cfg.data.batch_size, cfg.loss.n_critic + cfg.loss.unroll_steps,
        calls, rows=pipeline.process_rows(cfg.data.batch_size, mesh), num_threads=int(cfg.data.read_threads),
        prefetch_steps=max(int(cfg.data.prefetch) * int(cfg.train.steps_per_call), int(cfg.data.read_threads)))
    feed = (pipeline.to_global(b, mesh, cfg.data.batch_size) for b in batches)
    return (Batch(b["image"], b.get("label")) for b in feed), batches


def _describe_data(source: DataSource) -> str:
    if source.records is None:
        return f"data: {source.name} (toy distribution, drawn on the device)"
    first = source.records[0]
    classes = f"{source.num_classes} classes" if source.num_classes else "unlabelled"
    return (f"data: {source.name}, {len(source.records)} records of {'×'.join(map(str, np.shape(first['image'])))} "
            f"uint8, {classes}, model input {'×'.join(map(str, source.shape))}; pipeline: {source.pipeline}")


def _train(cfg: ml_collections.ConfigDict, workdir: str, checkpointer: checkpoint.Checkpointer, mesh,
           source: DataSource, engine: engine_lib.Engine, state: engine_lib.TrainState, multi_process: bool,
           progress: bool) -> dict[str, Any]:
    """The training loop of `train_and_evaluate`, run while holding the workdir's lock."""
    writer = parallel.is_writer()
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        state = parallel.replicate(restored, mesh)
    start = int(state.step)
    log = run_records.MetricsLog(workdir, start) if writer else None
    if writer:
        print(_describe_data(source), file=sys.stderr)
        if start:
            print(f"resuming from checkpoint step {start} in {checkpointer.directory}", file=sys.stderr)
            run_records.report_config_changes(workdir, cfg, start)
        run_records.save_config(workdir, cfg, start)
        os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)

    calls = schedule(start, cfg.train.steps, cfg.train.steps_per_call)
    feed, streamed = _data_feed(cfg, source, state, mesh, calls)
    steps = {}
    sample = _make_sample_fn(cfg, source, engine, mesh, lambda: loop.state)
    loop = _Loop(cfg, workdir, checkpointer, source, state, sample, log, start)
    loop.bar = tqdm(total=cfg.train.steps, initial=start, desc="train", unit="step",
                    disable=not (progress and writer), dynamic_ncols=True)
    try:
        with _StopRequest(multi_process) as stop:
            for (first, n), data in zip(calls, feed):
                if n not in steps:
                    steps[n] = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=n)
                loop.state, chunk = steps[n](loop.state, data)
                chunk = jax.device_get(chunk)
                if chunk["nonfinite"].any():
                    bad = first + int(np.argmax(chunk["nonfinite"]))
                    last = checkpointer.latest_step()
                    raise NonFiniteLossError(
                        f"non-finite loss or parameters at step {bad} (critic_loss={chunk['critic_loss'].tolist()}, "
                        f"generator_loss={chunk['generator_loss'].tolist()}); the state was not updated and not "
                        "saved. Last good checkpoint: "
                        f"{'step %d in %s' % (last, checkpointer.directory) if last is not None else 'none'}. "
                        "Lower the learning rates or raise the penalty weight.")
                previous, loop.step, loop.chunk = first, first + n, chunk
                loop.bar.update(n)
                for periodic in PERIODIC:
                    if _due(periodic, cfg, loop.step, previous):
                        periodic.action(loop)
                if stop.requested():
                    checkpointer.save(loop.state)
                    checkpointer.wait()
                    raise Preempted(stop.signum, loop.step)
        checkpointer.save(loop.state)
        checkpointer.wait()
    finally:
        loop.bar.close()
        if log:
            log.close()

    step = loop.step
    figure, (samples, labels) = sample("figure"), sample("eval")
    summary = {
        "step": step,
        "workdir": os.path.abspath(workdir),
        "figure": os.path.abspath(os.path.join(workdir, "samples", "final.png")),
        "metrics_file": os.path.abspath(os.path.join(workdir, "metrics.jsonl")),
        "checkpoints": checkpointer.directory,
        "pipeline": source.pipeline,
    }
    if streamed is not None:
        summary["records_read"] = streamed.records_read  # by this process
        print(f"process {jax.process_index()}: read {streamed.records_read} records", file=sys.stderr)
    if writer:
        _plot(summary["figure"], source, figure, f"{source.name} after {step} steps",
              bool(cfg.model.get("num_classes", 0)))
        summary.update(evaluate(cfg, source, samples, jax.random.key(cfg.seed + 2), workdir, labels))
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _make_sample_fn(cfg: ml_collections.ConfigDict, source: DataSource, engine: engine_lib.Engine, mesh,
                    current_state: Callable[[], engine_lib.TrainState]) -> Callable[[str], Any]:
    """`sample(kind)`: the generator's samples on fixed latents, with the EMA parameters when train.ema_decay > 0.

    "eval": (train.eval_samples samples, their labels or None), labels cycling over the classes;
    "figure": the figure's samples (for a conditional model FIGURE_COLUMNS per class, one row per class).
    """
    sampler = engine_lib.make_sampler(engine, mesh)
    n_classes = int(cfg.model.get("num_classes", 0))
    n_eval = cfg.train.eval_samples
    eval_noise = parallel.replicate(
        jax.random.normal(jax.random.key(cfg.seed + 1), (n_eval, cfg.model.latent_dim)), mesh)
    eval_labels = parallel.replicate(jnp.arange(n_eval, dtype=jnp.int32) % n_classes, mesh) if n_classes else None
    if n_classes:
        shown = min(n_classes, FIGURE_CLASSES)
        fig_labels = parallel.replicate(jnp.repeat(jnp.arange(shown, dtype=jnp.int32), FIGURE_COLUMNS), mesh)
        fig_noise = parallel.replicate(jnp.tile(
            jax.random.normal(jax.random.key(cfg.seed + 3), (FIGURE_COLUMNS, cfg.model.latent_dim)), (shown, 1)),
            mesh)
    else:  # the first eval samples: all of them for a scatter, the first FIGURE_IMAGES for an image grid
        fig_labels, fig_noise = None, eval_noise[:FIGURE_IMAGES] if len(source.shape) == 3 else eval_noise

    def sample(kind: str):
        state = current_state()
        params = engine_lib.sampling_params(state)
        if kind == "eval":
            return np.asarray(sampler(params, eval_noise, eval_labels, state.generator_state)), (
                None if eval_labels is None else np.asarray(eval_labels))
        return np.asarray(sampler(params, fig_noise, fig_labels, state.generator_state))

    return sample
