"""Cost of the checkpoint digests: SHA-256 of every array leaf, against the time of the save it protects.

For each state it times, interleaved over `--repeats` rounds, `gan_jax.checkpoint.state_digests(state)` alone,
the blocking part of `Checkpointer.save(state)` (which includes the digests), and the whole save until it is
committed on disk (`save` + `wait`), and prints one markdown row per state:
  (a) the ring8 WGAN-GP state, MLP width 512, depth 3, Adam (experiments/configs/ring8_wgan_gp.py, width 512);
  (b) the digits conv WGAN-GP state (experiments/configs/digits_wgan_gp.py).

    python benchmarks/checkpoint_digest.py              # about a minute on 2 CPU cores
    python benchmarks/checkpoint_digest.py --repeats 20
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
import numpy as np  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from experiments.configs import common  # noqa: E402
from gan_jax import checkpoint  # noqa: E402
from gan_jax import engine as engine_lib  # noqa: E402
from gan_jax.data import make_source  # noqa: E402


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
    return engine_lib.create_state(cfg, engine, source.shape)


def _nbytes(state) -> int:
    return sum(int(np.asarray(checkpoint._host_bytes(leaf)).nbytes) for leaf in jax.tree.leaves(state))


def measure(name: str, cfg, repeats: int) -> str:
    """One markdown row: state size, median digest / blocking save / committed save times, and the ratios."""
    state = jax.block_until_ready(_state(cfg))
    digest_s, blocking_s, total_s = [], [], []
    with tempfile.TemporaryDirectory(prefix="gan_jax_digest_bench_") as workdir:
        saver = checkpoint.Checkpointer(workdir, cfg)
        for i in range(repeats + 1):  # round 0 warms up (first save creates folders, compiles nothing)
            s = state.replace(step=jnp.asarray(i + 1, jnp.int32))
            t0 = time.perf_counter()
            checkpoint.state_digests(s)
            t1 = time.perf_counter()
            saver.save(s)
            t2 = time.perf_counter()
            saver.wait()
            t3 = time.perf_counter()
            if i:
                digest_s.append(t1 - t0)
                blocking_s.append(t2 - t1)
                total_s.append(t3 - t1)
        saver.close()
    d, b, t = (statistics.median(x) * 1e3 for x in (digest_s, blocking_s, total_s))
    return (f"| {name} | {_nbytes(state) / 2**20:.2f} | {d:.2f} | {b:.1f} | {t:.1f} | {100 * d / t:.1f} % | "
            f"{100 * d / b:.1f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed saves per state (median reported)")
    args = parser.parse_args()
    absl_logging.set_verbosity(absl_logging.WARNING)

    ring = common.toy("ring8", "wgan_gp")
    ring.model.width, ring.model.depth = 512, 3
    digits = common.images("digits", "wgan_gp")
    header = (f"checkpoint digests, {_cpu_name()}, {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.1f}, jax {jax.__version__}, median of {args.repeats} saves")
    print(header)
    print("| state | MiB | digest ms | save ms (blocking, incl. digest) | save ms (until committed) "
          "| digest / committed save | digest / blocking save |")
    print("|---|---|---|---|---|---|---|")
    print(measure("ring8 WGAN-GP MLP width 512 depth 3, Adam", ring, args.repeats), flush=True)
    print(measure("digits conv WGAN-GP, Adam", digits, args.repeats), flush=True)


if __name__ == "__main__":
    main()
