r"""Train a GAN from a config: `python -m experiments.train --config=experiments/configs/ring8_wgan_gp.py`.

    python -m experiments.train --config=experiments/configs/ring8_wgan_gp.py --workdir=runs/ring8
    python -m experiments.train --config=experiments/configs/ring8_gan.py:smoke --config.train.steps=200

Running again with the same --workdir resumes from its newest valid checkpoint, bit for bit. The workdir
receives checkpoints/, metrics.jsonl, TensorBoard events (tb/), samples/*.png, config.json and summary.json.
SIGTERM/SIGINT save a checkpoint at the current step before exiting (exit code 143 / 130).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags
from tqdm import tqdm

from gan_jax import config as config_lib
from gan_jax import metrics as metrics_lib
from gan_jax import parallel, plotting
from gan_jax import engine as engine_lib
from gan_jax import checkpoint
from gan_jax import workdir as workdir_lib
from gan_jax.data import DataSource, make_source


def _error_exit(message: str) -> None:
    """One `gan_jax: error:` line on stderr, exit code 2.

    The process ends at once (`os._exit`): after a failed checkpoint read, orbax's background event loop
    would otherwise print tracebacks while the interpreter shuts down. Nothing is pending at this point (the
    checkpointer has waited for its saves; the kernel releases the workdir lock).
    """
    print(f"gan_jax: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)


def _flag_error(err: Exception) -> str:
    """The readable part of a flag-parsing error: a config file's own error line, a misspelt key's hint."""
    text = str(err).replace("\\n", "\n").replace("\\'", "'")
    if "Traceback (most recent call last)" in text:  # an error raised inside a config file's get_config
        text = text.split("Traceback (most recent call last)")[0] + text.strip().splitlines()[-1]
    if isinstance(err, (AttributeError, KeyError)):
        overrides = [a.split("=")[0] for a in sys.argv[1:] if a.startswith("--config.")]
        hint = text[text.find("Did you mean"):].rstrip("'") if "Did you mean" in text else "see the config file"
        text = f"unknown config key among {' '.join(overrides)}: {hint}"
    return text


# The config flag reads --config.* overrides from sys.argv when it is defined (at import), so a misspelt key
# fails here, before absl's parser runs.
try:
    _CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/ring8_best.py",
                                              "Experiment config file (append :smoke for the test variant).")
except (AttributeError, KeyError, ValueError, TypeError) as err:
    if __name__ != "__main__":
        raise
    _error_exit(_flag_error(err))
_WORKDIR = flags.DEFINE_string("workdir", "runs/ring8_best", "Output folder; reuse it to resume.")


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


class _MetricsLog:
    """metrics.jsonl plus TensorBoard events; on resume, entries after the restored step are dropped."""

    def __init__(self, workdir: str, resume_step: int):
        from tensorboardX import SummaryWriter

        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            kept = [line for line in self._read_lines() if json.loads(line)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a")
        self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=resume_step + 1)

    def _read_lines(self) -> list[str]:
        """The file's lines, each checked to be a JSON object with a step; ValueError naming the line."""
        with open(self.path) as f:
            lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
        for number, line in enumerate(lines, 1):
            try:
                if not isinstance(json.loads(line)["step"], int):
                    raise TypeError("step is not an integer")
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{self.path} line {number} is not a metrics entry ({type(err).__name__}: {err}); "
                    "repair or remove that line, or move the file away, and rerun. Nothing was written.") from None
        return lines

    def write(self, step: int, values: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def evaluate(cfg: ml_collections.ConfigDict, source: DataSource, samples: jax.Array, key: jax.Array,
             workdir: str) -> dict[str, float]:
    """{metric name: value} for generator `samples`: mode coverage on toy mixtures, sliced W₁ to real samples on
    unlabelled data, class coverage, Inception score and Fréchet distance on digits."""
    samples = jnp.asarray(samples)
    n = samples.shape[0]
    result: dict[str, float] = {}
    data_key, w_key = jax.random.split(key)
    if source.distribution is not None and source.distribution.means is not None:
        dist = source.distribution
        cover = metrics_lib.mode_coverage(samples, jnp.asarray(dist.means), dist.std)
        result.update(modes_captured=int(cover.modes_captured), n_modes=len(dist.means),
                      high_quality=float(cover.high_quality_fraction), mode_reverse_kl=float(cover.reverse_kl))
    if source.labels is None:
        real = source.sample(source.arrays, data_key, 0, n)
        result["sliced_w1"] = float(metrics_lib.sliced_w1(samples, real, w_key))
    elif source.name == "digits":
        images = jnp.asarray(source.arrays)
        params = metrics_lib.load_or_train_digits_classifier(workdir, images, source.labels, w_key)
        cover = metrics_lib.class_coverage(params, samples)
        result.update(classes_covered=int(cover.classes_covered),
                      class_reverse_kl=float(cover.reverse_kl),
                      inception_score=float(metrics_lib.inception_score(params, samples)),
                      frechet_distance=float(metrics_lib.frechet_distance(params, images[:n], samples)))
    return result


def _plot(path: str, source: DataSource, samples: np.ndarray, title: str) -> str:
    if len(source.shape) == 3:
        return plotting.image_grid(path, samples[:64])
    dist = source.distribution
    data = np.asarray(source.sample(source.arrays, jax.random.key(0), 0, len(samples)))
    centers = None if dist is None or dist.means is None else np.asarray(dist.means)
    return plotting.scatter_samples(path, samples, data=data, centers=centers, title=title)


def _build(cfg: ml_collections.ConfigDict, mesh) -> tuple[DataSource, engine_lib.Engine, engine_lib.TrainState]:
    """Data source, engine and a fresh state on `mesh`: every config check that needs them, nothing written."""
    source = parallel.writer_first(lambda: make_source(cfg.data), "data")
    engine = engine_lib.make_engine(cfg, source.shape)
    state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
    return source, engine, state


def restore_state(workdir: str, cfg: ml_collections.ConfigDict | None = None) -> engine_lib.TrainState:
    """The newest valid `TrainState` saved in `workdir`, read-only: safe beside a live run, writes nothing.

    The config comes from `workdir/config.json` by default. Raises checkpoint.NoValidCheckpointError when the
    workdir holds no committed, valid step.
    """
    if cfg is None:
        with open(os.path.join(workdir, "config.json")) as f:
            cfg = ml_collections.ConfigDict(json.load(f))
    source = make_source(cfg.data)
    engine = engine_lib.make_engine(cfg, source.shape)
    like = jax.eval_shape(lambda: engine_lib.create_state(cfg, engine, source.shape))
    return checkpoint.restore_readonly(workdir, like, cfg)[1]


# Settings that change when and where things are written, not the numbers the run computes.
_BOOKKEEPING = ("train.steps", "train.log_every", "train.checkpoint_every", "train.sample_every",
                "train.max_to_keep", "train.eval_samples", "parallel.")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def _report_config_changes(workdir: str, cfg: ml_collections.ConfigDict, start: int) -> None:
    """Lists on stderr every setting that differs from the previous segment's config.json."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        old, new = _flatten(json.load(f)), _flatten(json.loads(cfg.to_json()))  # tuples as JSON lists
    changed = sorted(k for k in set(old) | set(new) if old.get(k, "<absent>") != new.get(k, "<absent>"))
    if changed:
        print("resuming with changed settings (each segment's config is kept in config_history/): " + "; ".join(
            f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in changed), file=sys.stderr)
    if any(not k.startswith(_BOOKKEEPING) for k in changed):
        print(f"note: from step {start} this run is no longer bit for bit the run of either config alone.",
              file=sys.stderr)
    if "seed" in changed:
        print(f"note: seed {old.get('seed')} -> {new.get('seed')}: training continues the checkpoint's random "
              "stream (the old seed's); the new seed only draws the evaluation samples.", file=sys.stderr)
    if start >= cfg.train.steps:
        print(f"note: the checkpoint is at step {start} >= train.steps={cfg.train.steps}: nothing will train; "
              "raise --config.train.steps to continue.", file=sys.stderr)


def _save_config(workdir: str, cfg: ml_collections.ConfigDict, start: int) -> None:
    """config.json (this segment's) and config_history/<start step>.json (every segment's)."""
    text = cfg.to_json(indent=2)
    os.makedirs(os.path.join(workdir, "config_history"), exist_ok=True)
    for path in (os.path.join(workdir, "config_history", f"{start}.json"), os.path.join(workdir, "config.json")):
        with open(path, "w") as f:
            f.write(text)


def _refuse_structural_changes(workdir: str, cfg: ml_collections.ConfigDict) -> None:
    """IncompatibleCheckpointError, before anything is written or locked, when the workdir's last config.json
    differs from `cfg` in a field that shapes the saved state (the checkpoint restore checks it again)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return  # not ours to judge here: the workdir checks and the checkpoint restore report it
    diffs = config_lib.structural_differences(saved, json.loads(cfg.to_json()))
    if diffs:
        raise checkpoint.IncompatibleCheckpointError(
            f"{os.path.abspath(workdir)} holds a run of a differently shaped config: {'; '.join(diffs)}. Resume "
            "with the original values, or start the new config in a fresh --workdir. Nothing was changed on disk.")


def _crossed(step: int, previous: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (previous, step]: schedules count steps, not segments."""
    return every > 0 and step // every > previous // every


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
    _refuse_structural_changes(workdir, cfg)
    workdir = workdir_lib.prepare(workdir)  # refuses a file, a foreign folder, ... before writing anything
    with workdir_lib.acquire(workdir) as lock:  # one run per workdir; the kernel frees it if this process dies
        checkpointer = checkpoint.Checkpointer(workdir, cfg, lock=lock)
        try:
            return _train(cfg, workdir, checkpointer, mesh, source, engine, state, multi_process, progress)
        finally:
            checkpointer.close()  # waits for pending saves


def _train(cfg: ml_collections.ConfigDict, workdir: str, checkpointer: checkpoint.Checkpointer, mesh,
           source: DataSource, engine: engine_lib.Engine, state: engine_lib.TrainState, multi_process: bool,
           progress: bool) -> dict[str, Any]:
    """The training loop of `train_and_evaluate`, run while holding the workdir's lock."""
    writer = parallel.is_writer()
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        state = parallel.replicate(restored, mesh)
    start = int(state.step)
    log = _MetricsLog(workdir, start) if writer else None
    if writer:
        if start:
            print(f"resuming from checkpoint step {start} in {checkpointer.directory}", file=sys.stderr)
            _report_config_changes(workdir, cfg, start)
        _save_config(workdir, cfg, start)
        os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)

    arrays = parallel.replicate(source.arrays, mesh)
    k = cfg.train.steps_per_call
    steps = {k: engine_lib.make_train_step(cfg, engine, source, mesh)}
    sampler = engine_lib.make_sampler(engine, mesh)
    sample_noise = parallel.replicate(
        jax.random.normal(jax.random.key(cfg.seed + 1), (cfg.train.eval_samples, cfg.model.latent_dim)), mesh)
    # The generator's EMA parameters when train.ema_decay > 0, else its parameters.
    sample = lambda: np.asarray(sampler(engine_lib.sampling_params(state), sample_noise))

    bar = tqdm(total=cfg.train.steps, initial=start, desc="train", unit="step", disable=not (progress and writer),
               dynamic_ncols=True)
    step, t0 = start, time.perf_counter()
    try:
        with _StopRequest(multi_process) as stop:
            while step < cfg.train.steps:
                # Back onto multiples of K after a resume from another step (e.g. a run stopped at steps=23),
                # so logs and checkpoints fall where an uninterrupted run puts them.
                n = min(k - step % k, cfg.train.steps - step)
                if n not in steps:
                    steps[n] = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=n)
                state, chunk = steps[n](state, arrays)
                chunk = jax.device_get(chunk)
                if chunk["nonfinite"].any():
                    bad = step + int(np.argmax(chunk["nonfinite"]))
                    last = checkpointer.latest_step()
                    raise NonFiniteLossError(
                        f"non-finite loss or parameters at step {bad} (critic_loss={chunk['critic_loss'].tolist()}, "
                        f"generator_loss={chunk['generator_loss'].tolist()}); the state was not updated and not "
                        "saved. Last good checkpoint: "
                        f"{'step %d in %s' % (last, checkpointer.directory) if last is not None else 'none'}. "
                        "Lower the learning rates or raise the penalty weight.")
                previous, step = step, step + n
                bar.update(n)
                if log and (_crossed(step, previous, cfg.train.log_every) or step == cfg.train.steps):
                    values = {name: float(np.mean(v)) for name, v in chunk.items() if name != "nonfinite"}
                    values["steps_per_sec"] = (step - start) / (time.perf_counter() - t0)
                    log.write(step, values)
                    bar.set_postfix(critic=f"{values['critic_loss']:.3f}", generator=f"{values['generator_loss']:.3f}")
                if _crossed(step, previous, cfg.train.sample_every) and step < cfg.train.steps:
                    samples = sample()  # every process takes part in the computation; process 0 plots
                    if writer:
                        _plot(os.path.join(workdir, "samples", f"step_{step:07d}.png"), source, samples,
                              f"{source.name}, step {step}")
                if _crossed(step, previous, cfg.train.checkpoint_every):
                    checkpointer.save(state)
                if stop.requested():
                    checkpointer.save(state)
                    checkpointer.wait()
                    raise Preempted(stop.signum, step)
        checkpointer.save(state)
        checkpointer.wait()
    finally:
        bar.close()
        if log:
            log.close()

    samples = sample()
    summary = {
        "step": step,
        "workdir": os.path.abspath(workdir),
        "figure": os.path.abspath(os.path.join(workdir, "samples", "final.png")),
        "metrics_file": os.path.abspath(os.path.join(workdir, "metrics.jsonl")),
        "checkpoints": checkpointer.directory,
    }
    if writer:
        _plot(summary["figure"], source, samples, f"{source.name} after {step} steps")
        summary.update(evaluate(cfg, source, samples, jax.random.key(cfg.seed + 2), workdir))
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with any failure (config file, variant, override key or value) as one line."""
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1].split(":", 1)[0]
            if not os.path.isfile(path):
                _error_exit(f"config file {path!r} not found; the configs are experiments/configs/*.py "
                            "(e.g. --config=experiments/configs/ring8_wgan_gp.py)")
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as err:
        _error_exit(_flag_error(err))
    return []


def main(argv: list[str]) -> None:
    """Trains --config in --workdir and prints the summary; exit 2 with one `gan_jax: error:` line on a bad
    config or workdir, 128 + signal number after a preemption (its checkpoint saved)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; --verbosity=0 shows them
    try:
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except Preempted as err:
        print(f"gan_jax: {err}; rerun the same command to resume.", file=sys.stderr)
        sys.exit(128 + err.signum)
    except KeyboardInterrupt:  # before the training loop (inside it, Ctrl-C saves a checkpoint)
        print("gan_jax: interrupted before training started; nothing was trained or saved.", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except (ValueError, FloatingPointError) as err:
        _error_exit(str(err))
    except OSError as err:  # a file the run needs or writes: disk full, permissions, a path that is a file
        _error_exit(f"{err}. Checkpoints saved before this point are intact.")
    if not parallel.is_writer():
        return  # process 0 prints the summary
    print(json.dumps(summary, indent=2))
    print(f"done: samples {summary['figure']}, metrics {summary['metrics_file']}, "
          f"checkpoints {summary['checkpoints']}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
