"""The training loop as a library: `train_and_evaluate(config, workdir)`, `restore_state`, `evaluate_checkpoint`.

`experiments/train.py` only defines flags and calls `train_and_evaluate`; tests and notebooks import this module.
Running again with the same workdir resumes from its newest valid checkpoint, bit for bit. The workdir (a local
path, or a URL such as gs://...: see gan_jax.workdir) receives checkpoints/, metrics.jsonl, TensorBoard events
(tb/), samples/*.png, config.json, config_history/ and summary.json. SIGTERM/SIGINT at any moment of a run end it
with `Preempted`, whose message says what is saved (while training: a checkpoint of the current step, saved
first). A segment's config is recorded (config.json, config_history/) once its first checkpoint is on disk, so a
segment that fails before then leaves no record.

Periodic work runs from one table, `PERIODIC`: (name, config field giving every how many generator steps,
action). An action runs after the fused call that crosses a multiple of its period; "log" also after the last
step. The final figure, evaluation and checkpoint follow the loop. The run's samples, scorer, classifier and
figures are gan_jax.run_samples'.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from gan_jax import checkpoint
from gan_jax import config as config_lib
from gan_jax import engine as engine_lib
from gan_jax import disk_full, parallel, run_records, run_samples, scoring, step_inputs
from gan_jax import workdir as workdir_lib
from gan_jax.data import Batch, DataSource, make_source, pipeline, toy
from gan_jax.errors import GanJaxError
from gan_jax.preemption import Preempted, StopRequest

BEST_DIR = "best"  # in the workdir: the checkpoint of the best step by config.eval.best_metric


class NonFiniteLossError(GanJaxError):
    """A train step produced a NaN/Inf loss or parameter (the message names the step, the last good checkpoint
    and the fix)."""


# ------------------------------------------------------------------------------------------------------------
# Building and restoring.


def _check_labels(cfg: ml_collections.ConfigDict, source: DataSource) -> None:
    """GanJaxError unless model.num_classes is 0 or the number of classes of the data's labels."""
    wanted = int(cfg.model.get("num_classes", 0))
    if not wanted:
        return
    if not source.num_classes:
        raise GanJaxError(f"config.model.num_classes={wanted} asks for a class-conditional model, but dataset "
                          f"{source.name!r} has no labels: set --config.model.num_classes=0 or use labelled data")
    if wanted != source.num_classes:
        raise GanJaxError(f"config.model.num_classes={wanted} but dataset {source.name!r} has {source.num_classes} "
                          f"classes: set --config.model.num_classes={source.num_classes}")


def _build(cfg: ml_collections.ConfigDict, mesh) -> tuple[DataSource, engine_lib.Engine, engine_lib.TrainState]:
    """Data source, engine and a fresh state on `mesh`: every config check that needs them, nothing written."""
    source = parallel.writer_first(lambda: make_source(cfg.data), "data")
    _check_labels(cfg, source)
    engine = engine_lib.make_engine(cfg, source.shape)
    state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
    return source, engine, state


def _readonly_pieces(workdir: str, cfg: ml_collections.ConfigDict | None):
    """(config, data source, engine, abstract state) of a workdir's run, reading only metadata of the records."""
    cfg = config_lib.config_from_dict(run_records.read_config(workdir).to_dict()) if cfg is None else cfg
    data_cfg = cfg.data.copy_and_resolve_references()
    if data_cfg.name not in toy.names():
        data_cfg.pipeline = "streamed"  # only the records' metadata is read
    source = make_source(data_cfg)
    engine = engine_lib.make_engine(cfg, source.shape)
    like = jax.eval_shape(lambda: engine_lib.create_state(cfg, engine, source.shape))
    return cfg, source, engine, like


def restore_state(workdir: str, cfg: ml_collections.ConfigDict | None = None) -> engine_lib.TrainState:
    """The newest valid `TrainState` saved in `workdir`, read-only: safe beside a live run, writes nothing.

    The config comes from `workdir/config.json` by default. Raises checkpoint.NoValidCheckpointError when the
    workdir holds no committed, valid step.
    """
    cfg, _, _, like = _readonly_pieces(workdir, cfg)
    return checkpoint.restore_readonly(workdir, like, cfg)[1]


def evaluate_checkpoint(workdir: str, *, step: int | str = "latest",
                        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """{step, extractor, metric: value, ...} of a saved step of `workdir` ("latest", "best" or a number),
    read-only: safe beside a live run, writes nothing (the reference features are not cached either).

    `overrides`: dotted config fields to change for this evaluation only, e.g. {"eval.metrics": "fid,kid",
    "train.eval_samples": 50000, "eval.extractor": "inception"}. Runs in this one process on its devices.
    """
    cfg = config_lib.config_from_dict(run_records.read_config(workdir).to_dict())
    for field, value in (overrides or {}).items():
        section, name = field.split(".")
        cfg[section][name] = type(cfg[section][name])(value)
    cfg.parallel = config_lib.base_config().parallel  # one process, its devices
    config_lib.validate(cfg)
    cfg, source, engine, like = _readonly_pieces(workdir, cfg)
    scoring.check(cfg, source)
    path = workdir_lib.as_path(workdir) / BEST_DIR if step == "best" else workdir
    number = None if step in ("latest", "best") else int(step)
    saved_step, state = checkpoint.restore_readonly(path, like, cfg, step=number)
    mesh = parallel.make_mesh(0)
    state = parallel.replicate(state, mesh)
    classifier = run_samples.run_classifier(cfg, source, workdir, write=False)
    sample = run_samples.make_sample_fn(cfg, source, engine, mesh, lambda: state)
    scores = run_samples.evaluator(cfg, source, classifier, write_cache=False)(sample("eval"))
    return {"workdir": os.fspath(workdir_lib.as_path(workdir)), "step": int(saved_step),
            "samples": int(cfg.train.eval_samples), **scores}


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
        self.evaluate: Callable[[], dict[str, Any]] = dict  # the run's scores of the current state
        self.best: _BestStep | None = None  # with config.eval.best_metric
        self.config_recorded = False  # whether this segment's config is in config.json and config_history/

    def steps_per_sec(self) -> float:
        return (self.step - self.start) / (time.perf_counter() - self.t0)

    def save(self, wait: bool = False) -> None:
        """Saves a checkpoint of the current step (asynchronously unless `wait`). The segment's first checkpoint
        is waited for and then its config recorded: a segment that fails before it leaves the records as they
        were, and the run it resumes from is not taken for a changed one."""
        self.checkpointer.save(self.state)
        if wait or not self.config_recorded:
            self.checkpointer.wait()
        if not self.config_recorded and self.step > self.start:
            if self.writer:
                run_records.save_config(self.workdir, self.cfg, self.start)
            self.config_recorded = True


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
        path = workdir_lib.as_path(loop.workdir) / "samples" / f"step_{loop.step:07d}.png"
        run_samples.plot_samples(path, loop.source, samples, f"{loop.source.name}, step {loop.step}",
                                 bool(loop.cfg.model.get("num_classes", 0)))


def _evaluate_action(loop: _Loop) -> None:
    values = loop.evaluate()  # every process generates; process 0 writes
    if loop.best is not None:
        loop.best.offer(loop.state, loop.step, values)
    if loop.writer:
        loop.log.write(loop.step, {f"eval/{name}": value for name, value in values.items()
                                   if isinstance(value, (int, float))})


class _BestStep:
    """The best step by config.eval.best_metric, kept in workdir/best/ (its own checkpoint folder, one step, and
    best.json) beside the latest steps, whatever max_to_keep rotates out of checkpoints/."""

    def __init__(self, cfg: ml_collections.ConfigDict, workdir: str):
        self.metric = str(cfg.eval.best_metric)
        self.lower = self.metric.rsplit("/", 1)[-1] in scoring.LOWER_IS_BETTER
        folder = workdir_lib.as_path(workdir) / BEST_DIR
        self.record = folder / "best.json"
        best_cfg = cfg.copy_and_resolve_references()
        best_cfg.train.max_to_keep = 1
        self.checkpointer = checkpoint.Checkpointer(folder, best_cfg)
        self.value = None
        if self.record.exists():  # a resumed run continues from the best so far
            self.value = json.loads(self.record.read_text())["value"]

    def offer(self, state: engine_lib.TrainState, step: int, values: dict[str, Any]) -> None:
        """Saves `state` as the best step when values[metric] beats the best so far (every process takes part)."""
        value = values.get(self.metric)
        if value is None or not np.isfinite(value):
            return
        if self.value is not None and (value >= self.value if self.lower else value <= self.value):
            return
        self.checkpointer.save(state)
        self.checkpointer.wait()
        self.value = float(value)
        if parallel.is_writer():
            with workdir_lib.atomic_write(self.record) as f:
                json.dump({"metric": self.metric, "value": self.value, "step": step}, f)

    def close(self) -> None:
        self.checkpointer.close()


def _checkpoint_action(loop: _Loop) -> None:
    loop.save()


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
    workdir = workdir_lib.resolve(workdir)  # an empty --workdir (the current directory) is refused first
    config_lib.validate(cfg)
    multi_process = parallel.initialize_distributed(cfg.parallel)
    with StopRequest(multi_process) as stop:  # from here a signal ends the run with a line on what is saved
        mesh = parallel.make_mesh(cfg.parallel.num_devices)
        parallel.check_batch_divisible(cfg.data.batch_size, mesh)
        source, engine, state = _build(cfg, mesh)
        scoring.check(cfg, source)
        stop.check()
        workdir = workdir_lib.prepare(workdir)  # refuses a file, a foreign folder, ... before writing anything
        run_records.refuse_structural_changes(workdir, cfg)  # a gan_jax workdir's config.json (prepare wrote none)
        state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
        # One run per workdir (the kernel frees the lock if this process dies); a full disk is one error line.
        with workdir_lib.acquire(workdir) as lock, disk_full.disk_full_as_error(workdir, state_bytes):
            checkpointer = checkpoint.Checkpointer(workdir, cfg, lock=lock)
            try:
                return _train(cfg, workdir, checkpointer, mesh, source, engine, state, stop, progress)
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
        source.records, step_inputs.data_key(key), cfg.data.batch_size, cfg.loss.n_critic + cfg.loss.unroll_steps,
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
           source: DataSource, engine: engine_lib.Engine, state: engine_lib.TrainState, stop: StopRequest,
           progress: bool) -> dict[str, Any]:
    """The training loop of `train_and_evaluate`, run while holding the workdir's lock; `stop`: its signals."""
    writer, root = parallel.is_writer(), workdir_lib.as_path(workdir)
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        state = parallel.replicate(restored, mesh)
    start = int(state.step)
    if start:
        stop.status = (f"during start-up: nothing was trained; checkpoint step {start} in {checkpointer.directory} "
                       "is as it was; rerun the same command to resume")
    stop.check()
    if writer:
        print(_describe_data(source), file=sys.stderr)
    log = run_records.MetricsLog(workdir, start) if writer else None
    if writer:
        if start:
            print(f"resuming from checkpoint step {start} in {checkpointer.directory}", file=sys.stderr)
            run_records.report_config_changes(workdir, cfg, start)
        (root / "samples").mkdir(parents=True, exist_ok=True)

    calls = schedule(start, cfg.train.steps, cfg.train.steps_per_call)
    feed, streamed = _data_feed(cfg, source, state, mesh, calls)
    steps = {}
    sample = run_samples.make_sample_fn(cfg, source, engine, mesh, lambda: loop.state)
    classifier = parallel.writer_first(lambda: run_samples.run_classifier(cfg, source, workdir), "classifier")
    loop = _Loop(cfg, workdir, checkpointer, source, state, sample, log, start)
    evaluate = run_samples.evaluator(cfg, source, classifier)
    loop.evaluate = lambda: evaluate(sample("eval"))
    loop.best = _BestStep(cfg, workdir) if cfg.eval.get("best_metric") else None
    stop.check()  # the end of start-up: a signal from here on is answered with a checkpoint
    loop.bar = tqdm(total=cfg.train.steps, initial=start, desc="train", unit="step",
                    disable=not (progress and writer), dynamic_ncols=True)
    try:
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
                loop.save(wait=True)
                raise Preempted(stop.signum, f"at step {loop.step}: checkpoint at step {loop.step} saved in "
                                             f"{checkpointer.directory}; rerun the same command to resume")
        loop.save(wait=True)
    finally:
        loop.bar.close()
        if log:
            log.close()

    step = loop.step
    stop.status = (f"during the final evaluation: training finished and step {step} is saved in "
                   f"{checkpointer.directory}; rerun the same command to evaluate")
    if writer:
        print(f"evaluating step {step}: {cfg.train.eval_samples} samples", file=sys.stderr)
    stop.immediate = True  # the training is saved and nothing is being written: a signal stops at once
    stop.check()
    figure = sample("figure")
    scores = loop.evaluate()
    stop.immediate = False  # the best step, the figure and summary.json are written whole
    if loop.best is not None:
        loop.best.offer(loop.state, step, scores)
        loop.best.close()
    summary = {
        "step": step,
        "workdir": os.fspath(root),
        "figure": os.fspath(root / "samples" / "final.png"),
        "metrics_file": os.fspath(root / "metrics.jsonl"),
        "checkpoints": checkpointer.directory,
        "pipeline": source.pipeline,
    }
    if streamed is not None:
        summary["records_read"] = streamed.records_read  # by this process
        print(f"process {jax.process_index()}: read {streamed.records_read} records", file=sys.stderr)
    if writer:
        run_samples.plot_samples(summary["figure"], source, figure, f"{source.name} after {step} steps",
                                 bool(cfg.model.get("num_classes", 0)))
        summary.update(scores)
        with workdir_lib.atomic_write(root / "summary.json") as f:
            json.dump(summary, f, indent=2)
    stop.status = f"after the run finished: step {step} is saved in {checkpointer.directory} and evaluated"
    return summary
