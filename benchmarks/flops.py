"""FLOP counts of a jitted step (XLA's `cost_analysis()` and a count of the matmuls in its jaxpr) and the
machine's matmul peak they are set against (a 2048×2048 float32 `jnp.dot`)."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

MATMUL, MATMUL_N = "2048² matmul", 2048
MATMUL_GFLOP = 2 * MATMUL_N**3 / 1e9


def matmul_run() -> Callable[[int], float]:
    """`run(calls)`: seconds for that many 2048×2048 float32 `jnp.dot`s, compiled first.

    calls/s × MATMUL_GFLOP is GFLOP/s.
    """
    ka, kb = jax.random.split(jax.random.key(0))
    a, b = jax.random.normal(ka, (MATMUL_N, MATMUL_N)), jax.random.normal(kb, (MATMUL_N, MATMUL_N))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()

    def run(calls: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            dot(a, b).block_until_ready()
        return time.perf_counter() - t0

    return run


def matmul_peak_gflops(repeats: int = 10) -> float:
    """Best-of-`repeats` GFLOP/s of the 2048×2048 float32 `jnp.dot`."""
    run = matmul_run()
    return MATMUL_GFLOP / min(run(1) for _ in range(repeats))


def xla_flops(jitted: Callable, *args: Any) -> tuple[float, float]:
    """(XLA's `cost_analysis()` FLOP count, seconds to trace and compile); a scan body is counted once.

    The executable is cached, so a later call of `jitted` on the same shapes does not compile again.
    """
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"]), seconds


def _sub_jaxprs(value: Any) -> list[Any]:
    """The jaxprs held by an equation parameter (a jaxpr, a closed jaxpr, or a sequence of them)."""
    if hasattr(value, "eqns"):
        return [value]
    if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        return [value.jaxpr]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def _conv_flops(eqn: Any) -> float:
    """2·(multiply-adds that touch a real input element): taps on padding or dilation holes are skipped."""
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    lhs, rhs, out = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
    taps = 1
    for i, (ls, rs, os_) in enumerate(zip(lhs_spec[2:], rhs_spec[2:], out_spec[2:])):
        size, kernel, n_out = lhs[ls], rhs[rs], out[os_]
        stride, (pad_lo, _) = p["window_strides"][i], p["padding"][i]
        lhs_dil, rhs_dil = p["lhs_dilation"][i], p["rhs_dilation"][i]
        taps *= sum(1 for o in range(n_out) for k in range(kernel)
                    if (c := o * stride + k * rhs_dil - pad_lo) >= 0 and c % lhs_dil == 0 and c // lhs_dil < size)
    batch_and_features = math.prod(out) // math.prod(out[d] for d in out_spec[2:])
    return 2.0 * batch_and_features * rhs[rhs_spec[1]] * taps


def jaxpr_flops(jaxpr: Any) -> float:
    """2·(multiply-adds) of every dot_general and convolution in `jaxpr`, scan bodies × their length.

    Counts only matmuls and convolutions (elementwise work is a few % here); convolution taps that fall on
    padding or on the holes of a dilated (transposed) convolution are not counted. `cond` counts its costliest
    branch, `while` its body once.
    """
    total = 0.0
    for eqn in jaxpr.eqns:
        name, params = eqn.primitive.name, eqn.params
        out_size = math.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
        if name == "dot_general":
            (lhs_contract, _), _ = params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            total += 2.0 * out_size * math.prod(lhs_shape[d] for d in lhs_contract)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "scan":
            total += params["length"] * jaxpr_flops(params["jaxpr"].jaxpr)
        elif name == "cond":
            total += max(jaxpr_flops(b.jaxpr) for b in params["branches"])
        else:
            total += sum(jaxpr_flops(j) for v in params.values() for j in _sub_jaxprs(v))
    return total


def step_jaxpr_flops(step: Callable, *args: Any) -> float:
    """`jaxpr_flops` of the traced `step(*args)`.

    A jitted step is traced unjitted: JAX refuses to nest a jit that carries compiler options.
    """
    return jaxpr_flops(jax.make_jaxpr(getattr(step, "__wrapped__", step))(*args).jaxpr)
