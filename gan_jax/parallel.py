"""Devices: a 1-D `data` mesh, replicated/sharded placements, and multi-host start-up.

The train step runs under `jax.shard_map` over this mesh: the state is replicated, the batch axis is split
across devices, and gradients are averaged with `lax.pmean(..., DATA_AXIS)`. One device is the same code
path with a mesh of one.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# How XLA:CPU compiles matrix products. jaxlib 0.10 hands them to YNNPACK fusions by default. On 2 Intel
# Xeon cores, XLA's own (Eigen) dots ran the engine's WGAN-GP step (one step per call) 1.18-1.31x faster at
# MLP width 128, 0.98-1.07x at width 64, 0.96x at 256, 0.93-1.03x at 512 and 0.98x on the digits conv step;
# with YNNPACK, 50 steps fused in a loop ran 0.88x the single-step call at width 512, with Eigen 0.97-1.04x
# (interleaved runs of benchmarks/train_speed.py; results/benchmarks.md).
CPU_MATMULS = {
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},  # no YNNPACK fusions: XLA's own dots
    "xla_default": {},  # whatever this jaxlib does by default
}
DEFAULT_CPU_MATMULS = "eigen"


def maybe_initialize_distributed(enabled: bool) -> None:
    """Calls `jax.distributed.initialize()` (multi-host: one process per host) when `enabled`."""
    if enabled:
        jax.distributed.initialize()


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh named `data` over the first `num_devices` devices (0 = all devices of all hosts)."""
    devices = jax.devices()
    if num_devices < 0 or num_devices > len(devices):
        raise ValueError(
            f"num_devices={num_devices} but {len(devices)} device(s) are visible; use 0 (all) or a "
            f"number in 1..{len(devices)}. On CPU, simulate N devices with "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N.")
    if num_devices:
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """Raises ValueError unless the global batch splits evenly over the mesh's devices."""
    n = mesh.size
    if batch_size % n:
        lower, upper = (batch_size // n) * n, (batch_size // n + 1) * n
        raise ValueError(
            f"batch_size={batch_size} is not divisible by the {n} devices of the mesh; use a multiple "
            f"of {n} (e.g. {lower or upper} or {upper}) or set parallel.num_devices.")


def replicated(mesh: Mesh) -> NamedSharding:
    """Placement of an array copied whole onto every device of the mesh."""
    return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
    """Places every leaf of `tree` on all devices of `mesh`."""
    return jax.device_put(tree, replicated(mesh))


@functools.cache
def _compile_option_known(name: str, value: Any) -> bool:
    """Whether this jaxlib's CPU compiler accepts the option `name=value` (a jaxlib may drop it)."""
    try:
        jax.jit(lambda x: x, backend="cpu", compiler_options={name: value}).lower(np.float32(0)).compile()
    except Exception:  # XlaRuntimeError: "No such compile option"
        return False
    return True


def compiler_options(mesh: Mesh, cpu_matmuls: str = DEFAULT_CPU_MATMULS) -> dict[str, Any]:
    """XLA compiler options for a step jitted over `mesh`: CPU_MATMULS[cpu_matmuls] on CPU, none elsewhere.

    Options this jaxlib does not know are left out, so a newer jaxlib compiles with its own defaults.
    """
    if cpu_matmuls not in CPU_MATMULS:
        raise ValueError(f"unknown cpu_matmuls {cpu_matmuls!r}; valid names: {sorted(CPU_MATMULS)}")
    if mesh.devices.flat[0].platform != "cpu":
        return {}
    return {k: v for k, v in CPU_MATMULS[cpu_matmuls].items() if _compile_option_known(k, v)}
