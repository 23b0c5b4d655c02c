"""gan_jax's engine step as benchmarked: compiled for a config, with its FLOP counts and compile seconds."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from benchmarks.flops import step_jaxpr_flops, xla_flops


class EngineBench(NamedTuple):
    """An engine step ready to time: `advance(state) -> state` runs one jitted call from `state`."""

    advance: Callable[[Any], Any]
    state: Any
    steps_per_call: int
    compile_s: float
    jaxpr_gflop: float  # per generator step
    scanned_xla_gflop: float  # XLA's count of one whole call / steps per call (undercounts: scans once)


def compiled_step(cfg, steps_per_call: int, num_devices: int = 1) -> tuple[Callable, Any, Any]:
    """(jitted engine step of `steps_per_call` generator steps, initial state, data arrays) on `num_devices`."""
    from gan_jax import engine as engine_lib, parallel
    from gan_jax.data import make_source

    source = make_source(cfg.data)
    engine = engine_lib.make_engine(cfg, source.shape)
    mesh = parallel.make_mesh(num_devices)
    step = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=steps_per_call)
    state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
    return step, state, parallel.replicate(source.arrays, mesh)


def engine_bench(cfg, steps_per_call: int, num_devices: int = 1) -> EngineBench:
    """The engine's jitted call of `steps_per_call` generator steps on a mesh of `num_devices`, compiled."""
    step, state, arrays = compiled_step(cfg, steps_per_call, num_devices)
    gflop = step_jaxpr_flops(step, state, arrays) / steps_per_call / 1e9
    scanned, compile_s = xla_flops(step, state, arrays)
    return EngineBench(lambda s: step(s, arrays)[0], state, steps_per_call, compile_s, gflop,
                       scanned / (steps_per_call * 1e9))


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
