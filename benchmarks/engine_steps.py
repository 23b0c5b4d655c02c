"""gan_jax's engine step as benchmarked: compiled for a config, with its FLOP counts, XLA's memory analysis and
compile seconds; synthetic images for the image-scale steps (no prepared dataset needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

from benchmarks.flops import step_jaxpr_flops, xla_flops

if TYPE_CHECKING:
    from gan_jax.data import DataSource

MIB = 2**20


class XlaMemory(NamedTuple):
    """MiB of a compiled executable's buffers (XLA's `memory_analysis()`); `alias`: outputs in donated arguments."""

    temp: float
    argument: float
    output: float
    alias: float

    @property
    def total(self) -> float:
        """temp + argument + output."""
        return self.temp + self.argument + self.output


class EngineBench(NamedTuple):
    """An engine step ready to time: `advance(state) -> state` runs one jitted call from `state`."""

    advance: Callable[[Any], Any]
    state: Any
    steps_per_call: int
    compile_s: float
    jaxpr_gflop: float  # per generator step
    scanned_xla_gflop: float  # XLA's count of one whole call / steps per call (undercounts: scans once)
    memory: XlaMemory  # of the compiled call


def synthetic_images(count: int, size: int, channels: int = 3, seed: int = 0) -> DataSource:
    """A device-pipeline DataSource of `count` uniform random uint8 size×size×channels images, no labels: batches
    drawn by `images.batch` and mapped to [−1, 1] by `images.to_model_input`, as for a prepared dataset."""
    from gan_jax.data import Batch, DataSource, images

    pixels = np.random.default_rng(seed).integers(0, 256, (count, size, size, channels), dtype=np.uint8)
    return DataSource(name=f"synthetic {size}×{size}×{channels}", shape=(size, size, channels),
                      arrays=Batch(jnp.asarray(pixels)), sample=images.batch, to_input=images.to_model_input)


def compiled_step(cfg, steps_per_call: int, num_devices: int = 1,
                  source: DataSource | None = None) -> tuple[Callable, Any, Any]:
    """(jitted engine step of `steps_per_call` generator steps, initial state, data arrays) on `num_devices`;
    the data: `source` (a gan_jax.data.DataSource), or the one `cfg.data` names."""
    from gan_jax import engine as engine_lib, parallel
    from gan_jax.data import make_source

    source = source or make_source(cfg.data)
    engine = engine_lib.make_engine(cfg, source.shape)
    mesh = parallel.make_mesh(num_devices)
    step = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=steps_per_call)
    state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
    return step, state, parallel.replicate(source.arrays, mesh)


def xla_memory(jitted: Callable, *args: Any) -> XlaMemory:
    """XLA's `memory_analysis()` of `jitted` compiled for `args` (the executable is cached: no second compile)."""
    stats = jitted.lower(*args).compile().memory_analysis()
    return XlaMemory(stats.temp_size_in_bytes / MIB, stats.argument_size_in_bytes / MIB,
                     stats.output_size_in_bytes / MIB, stats.alias_size_in_bytes / MIB)


def engine_bench(cfg, steps_per_call: int, num_devices: int = 1,
                 source: DataSource | None = None) -> EngineBench:
    """The engine's jitted call of `steps_per_call` generator steps on a mesh of `num_devices`, compiled; the data:
    `source`, or the one `cfg.data` names."""
    step, state, arrays = compiled_step(cfg, steps_per_call, num_devices, source)
    gflop = step_jaxpr_flops(step, state, arrays) / steps_per_call / 1e9
    scanned, compile_s = xla_flops(step, state, arrays)
    return EngineBench(lambda s: step(s, arrays)[0], state, steps_per_call, compile_s, gflop,
                       scanned / (steps_per_call * 1e9), xla_memory(step, state, arrays))


def digits_count_check(cfg) -> tuple[float, float]:
    """(jaxpr count, XLA count) in GFLOP of the engine step with n_critic = 1, where XLA's count is exact."""
    cfg = cfg.copy_and_resolve_references()
    cfg.loss.n_critic = 1
    step, state, arrays = compiled_step(cfg, 1)
    return step_jaxpr_flops(step, state, arrays) / 1e9, xla_flops(step, state, arrays)[0] / 1e9


def xla_default_matmuls(cfg):
    """`cfg` with train.cpu_matmuls = "xla_default": the engine as XLA compiles it without gan_jax's CPU option."""
    cfg = cfg.copy_and_resolve_references()
    cfg.train.cpu_matmuls = "xla_default"
    return cfg
