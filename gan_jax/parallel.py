"""Devices: a 1-D `data` mesh, replicated/sharded placements, and multi-host start-up.

The train step runs under `jax.shard_map` over this mesh: the state is replicated, the batch axis is split
across devices, and gradients are averaged with `lax.pmean(..., DATA_AXIS)`. One device is the same code
path with a mesh of one.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


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
