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
from ml_collections import config_flags
from tqdm import tqdm

from gan_jax import config as config_lib
from gan_jax import metrics as metrics_lib
from gan_jax import parallel, plotting
from gan_jax import train as engine_lib
from gan_jax.checkpoint import Checkpointer
from gan_jax.data import DataSource, make_source

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/ring8_wgan_gp.py",
                                          "Experiment config file (append :smoke for the test variant).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/ring8_wgan_gp", "Output folder; reuse it to resume.")


class NonFiniteLossError(FloatingPointError):
    """A train step produced a NaN/Inf loss or parameter."""


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint of the current step has been saved."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"signal {signum} received: saved checkpoint at step {step}")
        self.signum, self.step = signum, step


class _SignalFlag:
    """Records SIGTERM/SIGINT so the loop can checkpoint between fused calls, then restores the old handlers."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def _record(self, signum, frame):
        del frame
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _MetricsLog:
    """metrics.jsonl plus TensorBoard events; on resume, entries after the restored step are dropped."""

    def __init__(self, workdir: str, resume_step: int):
        from tensorboardX import SummaryWriter

        self.path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self._file = open(self.path, "a")
        self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=resume_step + 1)

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
    """Sample-quality numbers for `samples` of the generator, chosen by what the data provide."""
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


def _restore(cfg: ml_collections.ConfigDict, workdir: str, mesh):
    """Data source, engine, the newest valid state in `workdir` (or a fresh one) and its checkpointer."""
    source = make_source(cfg.data)
    engine = engine_lib.make_engine(cfg, source.shape)
    state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
    os.makedirs(workdir, exist_ok=True)
    checkpointer = Checkpointer(workdir, cfg)
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        state = parallel.replicate(restored, mesh)
    return source, engine, state, checkpointer


def restore_state(workdir: str, cfg: ml_collections.ConfigDict | None = None) -> engine_lib.TrainState:
    """The newest valid `TrainState` saved in `workdir` (config from `workdir/config.json` by default)."""
    if cfg is None:
        with open(os.path.join(workdir, "config.json")) as f:
            cfg = ml_collections.ConfigDict(json.load(f))
    _, _, state, checkpointer = _restore(cfg, workdir, parallel.make_mesh(1))
    checkpointer.close()
    return state


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Trains `cfg.train.steps` generator steps (resuming from `workdir`), evaluates, and returns the summary."""
    config_lib.validate(cfg)
    parallel.maybe_initialize_distributed(cfg.parallel.distributed)
    mesh = parallel.make_mesh(cfg.parallel.num_devices)
    parallel.check_batch_divisible(cfg.data.batch_size, mesh)
    source, engine, state, checkpointer = _restore(cfg, workdir, mesh)
    start = int(state.step)
    if start:
        print(f"resuming from checkpoint step {start} in {checkpointer.directory}", file=sys.stderr)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(cfg.to_json(indent=2))

    arrays = parallel.replicate(source.arrays, mesh)
    k = cfg.train.steps_per_call
    steps = {k: engine_lib.make_train_step(cfg, engine, source, mesh)}
    sampler = engine_lib.make_sampler(engine)
    sample_noise = jax.random.normal(jax.random.key(cfg.seed + 1), (cfg.train.eval_samples, cfg.model.latent_dim))
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)

    log = _MetricsLog(workdir, start)
    bar = tqdm(total=cfg.train.steps, initial=start, desc="train", unit="step", disable=not progress,
               dynamic_ncols=True)
    step, t0 = start, time.perf_counter()
    try:
        with _SignalFlag() as stop:
            while step < cfg.train.steps:
                n = min(k, cfg.train.steps - step)
                if n not in steps:
                    steps[n] = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=n)
                state, chunk = steps[n](state, arrays)
                chunk = jax.device_get(chunk)
                if chunk["nonfinite"].any():
                    bad = step + int(np.argmax(chunk["nonfinite"]))
                    last = checkpointer.latest_step()
                    raise NonFiniteLossError(
                        f"non-finite loss or parameters at step {bad} "
                        f"(d_loss={chunk['d_loss'].tolist()}, g_loss={chunk['g_loss'].tolist()}); the state was "
                        f"not updated and not saved. Last good checkpoint: "
                        f"{'step %d in %s' % (last, checkpointer.directory) if last is not None else 'none'}. "
                        "Lower the learning rates or raise the penalty weight.")
                step += n
                bar.update(n)
                if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                    values = {name: float(np.mean(v)) for name, v in chunk.items() if name != "nonfinite"}
                    values["steps_per_sec"] = (step - start) / (time.perf_counter() - t0)
                    log.write(step, values)
                    bar.set_postfix(d=f"{values['d_loss']:.3f}", g=f"{values['g_loss']:.3f}")
                if cfg.train.sample_every and step % cfg.train.sample_every == 0 and step < cfg.train.steps:
                    samples = np.asarray(sampler(state.generator_params, sample_noise))
                    _plot(os.path.join(workdir, "samples", f"step_{step:07d}.png"), source, samples,
                          f"{source.name}, step {step}")
                if step % cfg.train.checkpoint_every == 0:
                    checkpointer.save(state)
                if stop.signum is not None:
                    checkpointer.save(state)
                    checkpointer.wait()
                    raise Preempted(stop.signum, step)
        checkpointer.save(state)
        checkpointer.wait()
    finally:
        bar.close()
        log.close()
        checkpointer.close()

    samples = np.asarray(sampler(state.generator_params, sample_noise))
    figure = _plot(os.path.join(workdir, "samples", "final.png"), source, samples,
                   f"{source.name} after {step} steps")
    summary = {
        "step": step,
        "workdir": os.path.abspath(workdir),
        "figure": os.path.abspath(figure),
        "metrics_file": os.path.abspath(log.path),
        "checkpoints": checkpointer.directory,
        **evaluate(cfg, source, samples, jax.random.key(cfg.seed + 2), workdir),
    }
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; --verbosity=0 shows them
    try:
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except Preempted as err:
        print(f"gan_jax: {err}; rerun the same command to resume.", file=sys.stderr)
        sys.exit(128 + err.signum)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"gan_jax: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=2))
    print(f"done: samples {summary['figure']}, metrics {summary['metrics_file']}, "
          f"checkpoints {summary['checkpoints']}")


if __name__ == "__main__":
    app.run(main)
