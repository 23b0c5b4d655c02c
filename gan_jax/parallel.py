"""Devices: a 1-D `data` mesh over every process's devices, global arrays on it, and multi-process start-up.

The train step runs under `jax.shard_map` over this mesh: the state is replicated, the batch axis is split
across devices, and gradients are averaged with `lax.pmean(..., DATA_AXIS)`. One device is the same code
path with a mesh of one; several processes (one per host) are the same code path with a mesh whose devices
are not all addressable here, so every array on it is built as a global `jax.Array` (`replicate`), never
with `jax.device_put` of a host array.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import threading
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gan_jax.errors import GanJaxError
from gan_jax.registry import Registry

DATA_AXIS = "data"

# How XLA:CPU compiles matrix products. jaxlib 0.10 hands them to YNNPACK fusions by default. On 2 Intel
# Xeon cores, XLA's own (Eigen) dots ran the engine's WGAN-GP step (one step per call) 1.18-1.31x faster at
# MLP width 128, 0.98-1.07x at width 64, 0.96x at 256, 0.93-1.03x at 512 and 0.98x on the digits conv step;
# with YNNPACK, 50 steps fused in a loop ran 0.88x the single-step call at width 512, with Eigen 0.97-1.04x
# (interleaved runs of benchmarks/train_speed.py; results/benchmarks.md).
# Reductions: XLA:CPU's own, with YNNPACK fusions off, split a reduction over more than 32 elements into a
# reduce-window tree, slow for batch norm's statistics (over all axes but the channels): forward + backward of
# flax's BatchNorm over DCGAN 64's seven activation shapes took 200 ms, 62 ms with YNNPACK's reductions and XLA's
# own dots ("eigen_ynn_reductions"; the whole DCGAN 64 step at batch 128 1.43 → 1.34 s, 2-core AMD EPYC,
# 2026-12-07). The image-scale configs use it; the MLP configs keep "eigen" (the same speed, and their recorded
# results were computed with it: the two round sums differently, so runs are not bitwise the same across modes).
CPU_MATMULS: Registry[dict[str, Any]] = Registry("CPU matmul mode", {
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},  # no YNNPACK fusions: XLA's own dots
    "eigen_ynn_reductions": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"},
    "xla_default": {},  # whatever this jaxlib does by default
})
DEFAULT_CPU_MATMULS = "eigen"


# JAX's own variables for a multi-process start-up outside a detected cluster. jax 0.10's
# `jax.distributed.initialize()` with no arguments does not read the last two ("Number of processes must be
# defined", tried with 2 local processes), so they are read here and passed explicitly.
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def distributed_arguments(parallel_cfg: Any, environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The `jax.distributed.initialize` keyword arguments `parallel_cfg` asks for, or None for one process.

    Explicit fields (`coordinator_address`, `num_processes`, `process_id`) win; with `distributed=True`
    and no fields, JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID are used where set, and
    whatever is still missing is left to JAX's cluster detection (Cloud TPU, SLURM). Raises GanJaxError
    naming the field for incomplete or out-of-range values.
    """
    environ = os.environ if environ is None else environ
    address = parallel_cfg.get("coordinator_address", "") or ""
    num = int(parallel_cfg.get("num_processes", 0) or 0)
    pid = int(parallel_cfg.get("process_id", -1))
    explicit = bool(address) or num > 0 or pid >= 0
    if not explicit and not parallel_cfg.get("distributed", False):
        return None
    if not explicit:  # distributed=True: JAX's variables, then cluster detection
        address = environ.get(ENV_COORDINATOR, "")
        num = int(environ.get(ENV_NUM_PROCESSES, "0") or 0)
        pid = int(environ.get(ENV_PROCESS_ID, "-1") or -1)
        if not (address or num > 0 or pid >= 0):
            return {}
    missing = [name for name, unset in (("coordinator_address", not address), ("num_processes", num <= 0),
                                       ("process_id", pid < 0)) if unset]
    if missing:
        raise GanJaxError(
            f"a multi-process run needs all of parallel.coordinator_address, parallel.num_processes and "
            f"parallel.process_id (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing: "
            f"{', '.join(missing)}. Example: --config.parallel.coordinator_address=10.0.0.1:1234 "
            "--config.parallel.num_processes=2 --config.parallel.process_id=0")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise GanJaxError(f"parallel.coordinator_address={address!r} is invalid: use HOST:PORT, e.g. 10.0.0.1:1234")
    if not 0 <= pid < num:
        raise GanJaxError(f"parallel.process_id={pid} is invalid: must be in 0..{num - 1} "
                          f"(parallel.num_processes={num})")
    return dict(coordinator_address=address, num_processes=num, process_id=pid)


def _listening(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at HOST:PORT."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def initialize_distributed(parallel_cfg: Any) -> bool:
    """Starts JAX's multi-process runtime as `parallel_cfg` asks (see `distributed_arguments`).

    Returns whether this is a multi-process run. On CPU, collectives go over gloo. jax 0.10 aborts the
    process (a C++ fatal error, exit 134) when the coordinator does not answer within its
    `initialization_timeout`, so a watchdog fires first, after `parallel.init_timeout_s` seconds: it prints
    one `gan_jax: error:` line saying what did not answer and ends the process with exit code 2 (the main
    thread is blocked inside the runtime, so the watchdog cannot raise into it).
    """
    kwargs = distributed_arguments(parallel_cfg)
    if kwargs is None:
        return False
    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeout = float(parallel_cfg.get("init_timeout_s", 300))
    address = kwargs.get("coordinator_address", "the cluster's coordinator")

    def give_up():
        reachable = _listening(address) if "coordinator_address" in kwargs else False
        reason = ("it accepts connections, but not all processes joined" if reachable else
                  "nothing answers at that address")
        message = (f"the multi-process start-up did not complete within parallel.init_timeout_s={timeout:g} s: "
                   f"coordinator {address}: {reason}. Start every process (process_id 0 is the coordinator) with "
                   "the same coordinator_address and num_processes, and check the host and port.")
        print(f"gan_jax: error: {message}", file=sys.stderr, flush=True)
        os._exit(2)

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:  # JAX's own deadline is later, so the watchdog's clear message comes first.
        jax.distributed.initialize(**kwargs, initialization_timeout=int(timeout) + 30)
    finally:
        watchdog.cancel()
    return True


def is_writer() -> bool:
    """Whether this process writes logs, figures and summaries (process 0 of a multi-process run)."""
    return jax.process_index() == 0


def writer_first(fn: Callable[[], Any], name: str) -> Any:
    """`fn()` on process 0, then on the other processes (a barrier between): for work that may write a
    shared cache, such as building the offline digits dataset on first use. One process: just `fn()`."""
    if jax.process_count() == 1:
        return fn()
    result = fn() if is_writer() else None
    multihost_utils.sync_global_devices(f"gan_jax:{name}")
    return result if is_writer() else fn()


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh named `data` over the first `num_devices` devices (0 = all devices of all processes)."""
    devices = jax.devices()
    if jax.process_count() > 1 and num_devices not in (0, len(devices)):
        raise GanJaxError(
            f"num_devices={num_devices} in a run of {jax.process_count()} processes: a multi-process mesh "
            f"spans every process's devices; use 0 (all {len(devices)}).")
    if num_devices < 0 or num_devices > len(devices):
        raise GanJaxError(
            f"num_devices={num_devices} but {len(devices)} device(s) are visible; use 0 (all) or a "
            f"number in 1..{len(devices)}. On CPU, simulate N devices with "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N.")
    if num_devices:
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_divisible(batch_size: int, devices: int | Mesh) -> int:
    """batch_size / n, the per-device batch over n devices (a count, or a mesh's size); GanJaxError unless n
    divides batch_size."""
    n = devices.size if isinstance(devices, Mesh) else int(devices)
    if n < 1:
        raise ValueError(f"device count must be >= 1, got {n}")
    if batch_size % n:
        lower, upper = (batch_size // n) * n, (batch_size // n + 1) * n
        raise GanJaxError(
            f"batch_size={batch_size} is not divisible by the {n} devices; use a multiple of {n} "
            f"(e.g. {lower or upper} or {upper}) or set parallel.num_devices.")
    return batch_size // n


def replicated(mesh: Mesh) -> NamedSharding:
    """Placement of an array copied whole onto every device of the mesh."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Placement of an array split along `batch_axis` over the mesh's `data` devices."""
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf of `tree` as a global array copied whole onto all devices of `mesh` (any process count).

    Each process supplies the same host value for its own devices (`jax.make_array_from_callback`); leaves
    already placed that way are returned as they are. Typed PRNG keys travel as their key data.
    """
    sharding = replicated(mesh)

    def placed(leaf) -> bool:  # by this function or a jit on `mesh` (not merely on equivalent devices)
        return isinstance(leaf, jax.Array) and leaf.sharding == sharding

    def place(leaf):
        if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            wrap = functools.partial(jax.random.wrap_key_data, impl=jax.random.key_impl(leaf))
            return jax.jit(wrap, out_shardings=sharding)(place(jax.random.key_data(leaf)))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    leaves, treedef = jax.tree.flatten(tree)
    fresh = [i for i, leaf in enumerate(leaves) if not placed(leaf)]
    # The new arrays pass through one jitted identity: a jit output's sharding (mesh axes of type Auto) is what a
    # train step returns, so a step called with the placed state and then with its own output compiles once,
    # not twice (measured: the ring8 smoke step compiled again on its second call, 7 s each, without this).
    moved = jax.jit(lambda arrays: arrays, out_shardings=sharding)([place(leaves[i]) for i in fresh])
    for i, array in zip(fresh, moved):
        leaves[i] = array
    return jax.tree.unflatten(treedef, leaves)


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
    options = CPU_MATMULS[cpu_matmuls]
    if mesh.devices.flat[0].platform != "cpu":
        return {}
    return {k: v for k, v in options.items() if _compile_option_known(k, v)}
