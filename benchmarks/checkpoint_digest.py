"""Blocking time of a checkpoint save with gan_jax's digests against orbax alone on the same state.

Per state, interleaved over `--repeats` rounds, it times:
  orbax alone  - `CheckpointManager.save` of the state and the config (the same items and options as gan_jax's,
                 without the digests), until it returns to the caller, and until the step is committed;
  gan_jax      - `Checkpointer.save` (state, config and the shard digests, hashed in orbax's background commit),
                 likewise;
  digests sync - `checkpoint_digests.state_digests(state)`: the hashing itself, which is what a save blocked on when the
                 digests were computed before orbax's save started.
The state is placed as the training loop places it (`parallel.replicate` over all devices), for
  (a) the ring8 WGAN-GP state, MLP width 512, depth 3, Adam (experiments/configs/ring8_wgan_gp.py, width 512);
  (b) the digits conv WGAN-GP state (experiments/configs/digits_wgan_gp.py).
Each save's blocking part is timed on the wall clock and as the CPU time of the calling thread (which a busy
machine's preemptions inflate much less). It prints one markdown row per state (medians, quartiles in
brackets; ratios of the medians, gan_jax / orbax alone) and writes the table to results/checkpoint_digest.md.
The target of issue 24: blocking time with digests <= 1.1x orbax alone. On a busy machine the quartiles are
wide: compare the ratio with them, and rerun with more repeats.

    python benchmarks/checkpoint_digest.py              # about 2 minutes on 2 CPU cores
    python benchmarks/checkpoint_digest.py --repeats 60 --out ''
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/checkpoint_digest.py` from anywhere
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from experiments.configs import common  # noqa: E402
from gan_jax import checkpoint  # noqa: E402
from gan_jax import checkpoint_digests  # noqa: E402
from gan_jax import engine as engine_lib  # noqa: E402
from gan_jax import parallel  # noqa: E402
from gan_jax.data import make_source  # noqa: E402

HEADER = ("| state | MiB | blocking ms: orbax alone | blocking ms: gan_jax (with digests) | blocking ratio | "
          "main-thread CPU ms while blocked: orbax alone | main-thread CPU ms: gan_jax | CPU ratio | "
          "committed ms: orbax alone | committed ms: gan_jax | digests computed synchronously, ms |")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _state(cfg):
    source = make_source(cfg.data)
    engine = engine_lib.make_engine(cfg, source.shape)
    state = engine_lib.create_state(cfg, engine, source.shape)
    return jax.block_until_ready(parallel.replicate(state, parallel.make_mesh(0)))


def _mib(state) -> float:
    leaves = [jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
              for x in jax.tree.leaves(state)]
    return sum(x.size * x.dtype.itemsize for x in leaves) / 2**20


def _timed(save, wait) -> dict[str, float]:
    """Seconds of one save: until `save()` returns (wall clock, and CPU time of this thread meanwhile, which a
    busy machine inflates less), and until `wait()` returns after it (committed)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    save()
    t1, c1 = time.perf_counter(), time.thread_time()
    wait()
    return {"blocking": t1 - t0, "cpu": c1 - c0, "committed": time.perf_counter() - t0}


def _ms(values: list[float]) -> str:
    """Median [first quartile–third quartile] in milliseconds."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{statistics.median(values) * 1e3:.1f} [{q1 * 1e3:.0f}–{q3 * 1e3:.0f}]"


def measure(name: str, cfg, repeats: int) -> str:
    """One markdown row: both savers' blocking, CPU and committed times, the ratios of the medians, the hashing."""
    state = _state(cfg)
    times = {(saver, metric): [] for saver in ("orbax", "gan_jax") for metric in ("blocking", "cpu", "committed")}
    times["digests"] = []
    with tempfile.TemporaryDirectory(prefix="gan_jax_digest_bench_") as root:
        saver = checkpoint.Checkpointer(os.path.join(root, "gan_jax"), cfg)
        manager = ocp.CheckpointManager(os.path.join(root, "orbax"), options=ocp.CheckpointManagerOptions(
            max_to_keep=cfg.train.max_to_keep, create=True, cleanup_tmp_directories=False))
        config = cfg.to_dict()
        for i in range(repeats + 1):  # round 0 warms up both (first saves create folders, compile slicing)
            s = state.replace(step=jnp.asarray(i + 1, jnp.int32))
            orbax_save = lambda: manager.save(i + 1, force=True, args=ocp.args.Composite(  # noqa: E731
                state=ocp.args.StandardSave(s), config=ocp.args.JsonSave(config)))
            rounds = [("orbax", orbax_save, manager.wait_until_finished),
                      ("gan_jax", lambda: saver.save(s), saver.wait)]
            for key, save, wait in (rounds if i % 2 else rounds[::-1]):
                measured = _timed(save, wait)
                for metric, seconds in measured.items():
                    if i:
                        times[(key, metric)].append(seconds)
            t0 = time.perf_counter()
            checkpoint_digests.state_digests(s)
            if i:
                times["digests"].append(time.perf_counter() - t0)
        saver.close()
        manager.close()
    median = {key: statistics.median(values) for key, values in times.items()}
    ratio = lambda metric: f"{median[('gan_jax', metric)] / median[('orbax', metric)]:.2f}x"  # noqa: E731
    cells = [name, f"{_mib(state):.2f}"]
    for metric in ("blocking", "cpu"):
        cells += [_ms(times[("orbax", metric)]), _ms(times[("gan_jax", metric)]), ratio(metric)]
    cells += [f"{median[('orbax', 'committed')] * 1e3:.1f}", f"{median[('gan_jax', 'committed')] * 1e3:.1f}",
              f"{median['digests'] * 1e3:.1f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed saves per state and saver (median reported)")
    parser.add_argument("--out", default=str(REPO / "results" / "checkpoint_digest.md"),
                        help="markdown file for the table ('' to only print it)")
    args = parser.parse_args()
    absl_logging.set_verbosity(absl_logging.WARNING)

    ring = common.toy("ring8", "wgan_gp")
    ring.model.width, ring.model.depth = 512, 3
    digits = common.images("digits", "wgan_gp")
    lines = [f"Checkpoint save blocking time, {_cpu_name()}, {os.cpu_count()} cores, load "
             f"{os.getloadavg()[0]:.1f}, {jax.device_count()} {jax.default_backend()} device(s), jax "
             f"{jax.__version__}, orbax-checkpoint {ocp.__version__}, median of {args.repeats} interleaved saves",
             "", HEADER, "|" + "---|" * 11]
    print("\n".join(lines), flush=True)
    for name, cfg in (("ring8 WGAN-GP MLP width 512 depth 3, Adam", ring), ("digits conv WGAN-GP, Adam", digits)):
        lines.append(measure(name, cfg, args.repeats))
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
