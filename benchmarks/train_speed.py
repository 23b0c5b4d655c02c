"""Training speed: gan_jax's engine against a hand-written JAX loop, PyTorch, and the machine's matmul peak.

One run on one machine measures generator steps/s of the ring8 WGAN-GP (MLP generator and critic of depth 3,
batch 256, n_critic 5, λ = 0.1, Adam(1e-4, 0.5, 0.9)) at widths 64, 128 and 512, implemented as
  engine K=1, K=k   gan_jax.engine.make_train_step with 1 and k generator steps per jitted call;
  engine K=1, XLA default matmuls
                    the same with train.cpu_matmuls = "xla_default" (YNNPACK fusions in jax 0.10);
  hand-written JAX  plain jnp MLPs, jax.grad, optax.adam, vmap-grad penalty, n_critic in lax.scan,
                    one jitted and donated step per call, compiled with the engine's XLA options;
  PyTorch eager     the same math with torch.autograd.grad(create_graph=True) for the penalty;
  torch.compile     the same math as torch.func gradients under torch.compile (time-boxed);
timed interleaved (implementation order rotated each repeat) after compilation. It then times the digits conv
WGAN-GP engine step, and the width-128 engine step on 1, 2 and 4 simulated CPU devices (a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4). Achieved GFLOP/s are set against a 2048×2048 float32
`jnp.dot` measured in the same run: its best, and the one timed in the same interleaved repeat. The report goes
to results/benchmarks.md and to stdout.

    python benchmarks/train_speed.py           # about 10 minutes on 2 busy CPU cores, less when idle
    python benchmarks/train_speed.py --quick   # about 4 minutes: fewer, shorter repeats, no torch.compile

The PyTorch columns need PyTorch (`pip install torch==2.13.0`, a CPU build on the project machines); without
it they are skipped. PyTorch runs in a worker subprocess (so a stuck torch.compile can be stopped) with
torch.set_num_threads(number of cores) and OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/train_speed.py` from anywhere
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

# The ring8 WGAN-GP of experiments/configs/ring8_wgan_gp.py; the hand-written and PyTorch versions use these.
BATCH, N_CRITIC, DEPTH, LATENT = 256, 5, 3, 2
PENALTY_WEIGHT, LEARNING_RATE, BETAS = 0.1, 1e-4, (0.5, 0.9)
RING_RADIUS, RING_STD, RING_MODES = 2.0, 0.02, 8
PAUSE_S = 0.05  # between timed blocks, so one implementation's threads are idle when the next starts
# PyTorch's OpenMP threads spin at barriers by default; when other processes share the cores, a spinning
# thread waits for a descheduled one and 2-thread PyTorch runs up to 40x slower (measured on the project's
# 2-core machine at load 8). PASSIVE keeps PyTorch's numbers meaningful on a shared machine.
OMP_WAIT_POLICY = "PASSIVE"


# --------------------------------------------------------------------------------------------------------
# Timing.


class Runner(NamedTuple):
    """An implementation under test: `run(calls)` makes that many calls, waits for them, returns seconds."""

    name: str
    steps_per_call: int
    run: Callable[[int], float]


def measure(runners: list[Runner], repeats: int, block_s: float) -> dict[str, list[float]]:
    """Generator steps/s of each runner, `repeats` blocks of about `block_s` each, interleaved.

    Each runner is called once more (after its compile) to size its block; repeat i starts at runner i mod n,
    so slow drift of the machine's load spreads over all implementations alike.
    """
    calls = {}
    for r in runners:
        calls[r.name] = max(1, round(block_s / max(r.run(1), 1e-9)))
    rates: dict[str, list[float]] = {r.name: [] for r in runners}
    for i in range(repeats):
        shift = i % len(runners)
        for r in runners[shift:] + runners[:shift]:
            time.sleep(PAUSE_S)
            seconds = r.run(calls[r.name])
            rates[r.name].append(calls[r.name] * r.steps_per_call / seconds)
    return rates


def median_spread(values: list[float]) -> str:
    """'median [min–max]' with 3 significant digits."""
    if not values:
        return "–"
    return f"{_sig(statistics.median(values))} [{_sig(min(values))}–{_sig(max(values))}]"


def paired_ratio(a: list[float], b: list[float]) -> list[float]:
    """Per-repeat ratios a_i / b_i: blocks of one repeat ran close in time, so drift cancels."""
    return [x / y for x, y in zip(a, b)] if a and b else []


def _sig(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# FLOPs and the matmul peak.


MATMUL, MATMUL_N = "2048² matmul", 2048
MATMUL_GFLOP = 2 * MATMUL_N**3 / 1e9


def matmul_runner() -> Runner:
    """A 2048×2048 float32 `jnp.dot` as a Runner: its rate (calls/s) × MATMUL_GFLOP is GFLOP/s."""
    ka, kb = jax.random.split(jax.random.key(0))
    a, b = jax.random.normal(ka, (MATMUL_N, MATMUL_N)), jax.random.normal(kb, (MATMUL_N, MATMUL_N))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()

    def run(calls: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            dot(a, b).block_until_ready()
        return time.perf_counter() - t0

    return Runner(MATMUL, 1, run)


def matmul_peak_gflops(repeats: int = 10) -> float:
    """Best-of-`repeats` GFLOP/s of the 2048×2048 float32 `jnp.dot`."""
    runner = matmul_runner()
    return MATMUL_GFLOP / min(runner.run(1) for _ in range(repeats))


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
    """`jaxpr_flops` of the traced `step(*args)` (a jitted step is traced unjitted: JAX refuses to nest a jit
    that carries compiler options)."""
    return jaxpr_flops(jax.make_jaxpr(getattr(step, "__wrapped__", step))(*args).jaxpr)


def digits_count_check(cfg) -> tuple[float, float]:
    """(jaxpr count, XLA count) in GFLOP of the engine step with n_critic = 1, where XLA's count is exact."""
    from gan_jax import engine as engine_lib, parallel
    from gan_jax.data import make_source

    cfg = cfg.copy_and_resolve_references()
    cfg.loss.n_critic = 1
    source = make_source(cfg.data)
    engine = engine_lib.make_engine(cfg, source.shape)
    mesh = parallel.make_mesh(1)
    step = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=1)
    args = (parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh),
            parallel.replicate(source.arrays, mesh))
    return step_jaxpr_flops(step, *args) / 1e9, xla_flops(step, *args)[0] / 1e9


# --------------------------------------------------------------------------------------------------------
# (a) gan_jax's engine.


def ring8_config(width: int):
    from experiments.configs import common

    cfg = common.toy("ring8", "wgan_gp")
    cfg.model.width = width
    assert (cfg.data.batch_size, cfg.loss.n_critic, cfg.model.depth) == (BATCH, N_CRITIC, DEPTH)
    assert (cfg.loss.penalty_weight, cfg.optim.critic.b1, cfg.optim.critic.b2) == (PENALTY_WEIGHT, *BETAS)
    return cfg


class EngineBench(NamedTuple):
    runner: Runner
    compile_s: float
    jaxpr_gflop: float  # per generator step
    scanned_xla_gflop: float  # XLA's count of one whole call / steps per call (undercounts: scans once)


def engine_bench(cfg, steps_per_call: int, name: str, num_devices: int = 1) -> EngineBench:
    """The engine's jitted call of `steps_per_call` generator steps on a mesh of `num_devices`."""
    from gan_jax import engine as engine_lib, parallel
    from gan_jax.data import make_source

    source = make_source(cfg.data)
    engine = engine_lib.make_engine(cfg, source.shape)
    mesh = parallel.make_mesh(num_devices)
    step = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=steps_per_call)
    state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
    arrays = parallel.replicate(source.arrays, mesh)
    gflop = step_jaxpr_flops(step, state, arrays) / steps_per_call / 1e9
    scanned, compile_s = xla_flops(step, state, arrays)
    scanned /= steps_per_call * 1e9
    box = [jax.block_until_ready(step(state, arrays)[0])]

    def run(calls: int) -> float:
        t0, s = time.perf_counter(), box[0]
        for _ in range(calls):
            s, _ = step(s, arrays)
        box[0] = jax.block_until_ready(s)
        return time.perf_counter() - t0

    return EngineBench(Runner(name, steps_per_call, run), compile_s, gflop, scanned)


# --------------------------------------------------------------------------------------------------------
# (b) The same GAN as a minimal hand-written JAX loop.


def _mlp_init(key: jax.Array, sizes: list[int]) -> list[tuple[jax.Array, jax.Array]]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (m, n)) / math.sqrt(m), jnp.zeros(n)) for k, m, n in zip(keys, sizes, sizes[1:])]


def _mlp(params: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def _ring8(key: jax.Array, n: int) -> jax.Array:
    angles = 2 * jnp.pi * jnp.arange(RING_MODES) / RING_MODES
    means = RING_RADIUS * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    k_mode, k_noise = jax.random.split(key)
    return means[jax.random.randint(k_mode, (n,), 0, RING_MODES)] + RING_STD * jax.random.normal(k_noise, (n, 2))


class HandWritten(NamedTuple):
    step: Callable  # (state) -> state, jitted, donated
    state: tuple
    critic_update: Callable  # one critic update, jitted (for FLOP counting)
    generator_update: Callable  # one generator update, jitted
    critic_args: tuple
    generator_args: tuple


def hand_written(width: int) -> HandWritten:
    """WGAN-GP in plain JAX: state = (generator, critic, their Adam states, key, step)."""
    hidden = [width] * DEPTH
    opt = optax.adam(LEARNING_RATE, *BETAS)

    def critic_loss(c, g, key):
        k_real, k_z, k_u = jax.random.split(key, 3)
        real, fake = _ring8(k_real, BATCH), _mlp(g, jax.random.normal(k_z, (BATCH, LATENT)))
        u = jax.random.uniform(k_u, (BATCH, 1))
        x_hat = u * real + (1 - u) * fake
        grads = jax.vmap(jax.grad(lambda x: _mlp(c, x[None])[0, 0]))(x_hat)
        penalty = jnp.mean((jnp.linalg.norm(grads, axis=1) - 1) ** 2)
        return jnp.mean(_mlp(c, fake)) - jnp.mean(_mlp(c, real)) + PENALTY_WEIGHT * penalty

    def critic_update(c, c_opt, g, key):
        updates, c_opt = opt.update(jax.grad(critic_loss)(c, g, key), c_opt, c)
        return optax.apply_updates(c, updates), c_opt

    def generator_update(g, g_opt, c, key):
        loss = lambda g: -jnp.mean(_mlp(c, _mlp(g, jax.random.normal(key, (BATCH, LATENT)))))
        updates, g_opt = opt.update(jax.grad(loss)(g), g_opt, g)
        return optax.apply_updates(g, updates), g_opt

    def step(state):
        g, c, g_opt, c_opt, key, t = state
        keys = jax.random.split(jax.random.fold_in(key, t), N_CRITIC + 1)
        (c, c_opt), _ = jax.lax.scan(lambda cc, k: (critic_update(*cc, g, k), None), (c, c_opt), keys[:-1])
        g, g_opt = generator_update(g, g_opt, c, keys[-1])
        return g, c, g_opt, c_opt, key, t + 1

    k_g, k_c, key = jax.random.split(jax.random.key(0), 3)
    g, c = _mlp_init(k_g, [LATENT, *hidden, 2]), _mlp_init(k_c, [2, *hidden, 1])
    state = (g, c, opt.init(g), opt.init(c), key, jnp.zeros((), jnp.int32))
    # The engine's XLA options (parallel.compiler_options), so that engine / hand-written measures the engine.
    from gan_jax import parallel

    options = parallel.compiler_options(parallel.make_mesh(1))
    return HandWritten(jax.jit(step, donate_argnums=0, compiler_options=options), state, jax.jit(critic_update),
                       jax.jit(generator_update),
                       (c, opt.init(c), g, key), (g, opt.init(g), c, key))


def hand_written_bench(width: int) -> tuple[Runner, float, dict[str, float]]:
    """The hand-written step as a Runner, its compile seconds, and its FLOP counts (GFLOP per generator step)."""
    hw = hand_written(width)
    critic, _ = xla_flops(hw.critic_update, *hw.critic_args)
    generator, _ = xla_flops(hw.generator_update, *hw.generator_args)
    scanned, compile_s = xla_flops(hw.step, hw.state)
    flops = dict(
        critic=critic / 1e9, generator=generator / 1e9, pieces=(N_CRITIC * critic + generator) / 1e9,
        scanned=scanned / 1e9, jaxpr=step_jaxpr_flops(hw.step, hw.state) / 1e9,
        analytic=(N_CRITIC * 22 + 10) * 2 * BATCH * width**2 / 1e9)
    box = [jax.block_until_ready(hw.step(hw.state))]

    def run(calls: int) -> float:
        t0, s = time.perf_counter(), box[0]
        for _ in range(calls):
            s = hw.step(s)
        box[0] = jax.block_until_ready(s)
        return time.perf_counter() - t0

    return Runner("hand-written JAX", 1, run), compile_s, flops


# --------------------------------------------------------------------------------------------------------
# (c, d) PyTorch, eager and torch.compile, in a worker subprocess driven by JSON lines over stdin/stdout.


def torch_worker(width: int, threads: int) -> None:
    """Serves {"cmd": "compile"} and {"cmd": "run", "impl": "eager"|"compile", "steps": n} until EOF."""
    import torch
    from torch.func import functional_call, grad

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    angles = 2 * math.pi * torch.arange(RING_MODES) / RING_MODES
    means = RING_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)

    def ring8(n):
        return means[torch.randint(0, RING_MODES, (n,))] + RING_STD * torch.randn(n, 2)

    def mlp(d_in, d_out):
        sizes, layers = [d_in] + [width] * DEPTH, []
        for m, n in zip(sizes, sizes[1:]):
            layers += [torch.nn.Linear(m, n), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(width, d_out))

    def adam(params):
        return torch.optim.Adam(params, lr=LEARNING_RATE, betas=BETAS, fused=True)

    def eager_model():
        generator, critic = mlp(LATENT, 2), mlp(2, 1)
        g_opt, c_opt = adam(generator.parameters()), adam(critic.parameters())

        def step():
            critic.requires_grad_(True)
            for _ in range(N_CRITIC):
                real = ring8(BATCH)
                with torch.no_grad():
                    fake = generator(torch.randn(BATCH, LATENT))
                u = torch.rand(BATCH, 1)
                x_hat = (u * real + (1 - u) * fake).requires_grad_(True)
                (g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
                penalty = ((g.norm(dim=1) - 1) ** 2).mean()
                loss = critic(fake).mean() - critic(real).mean() + PENALTY_WEIGHT * penalty
                c_opt.zero_grad(set_to_none=True)
                loss.backward()
                c_opt.step()
            critic.requires_grad_(False)
            loss = -critic(generator(torch.randn(BATCH, LATENT))).mean()
            g_opt.zero_grad(set_to_none=True)
            loss.backward()
            g_opt.step()

        return step

    def compiled_model():
        generator, critic = mlp(LATENT, 2), mlp(2, 1)
        g_opt, c_opt = adam(generator.parameters()), adam(critic.parameters())
        f = lambda c, x: functional_call(critic, c, (x,)).squeeze(-1)

        def critic_grads(c, g, real, z, u):
            fake = functional_call(generator, g, (z,))
            x_hat = u * real + (1 - u) * fake

            def loss(c):
                gx = grad(lambda x: f(c, x).sum())(x_hat)
                penalty = ((gx.norm(dim=1) - 1) ** 2).mean()
                return f(c, fake).mean() - f(c, real).mean() + PENALTY_WEIGHT * penalty

            return grad(loss)(c)

        def generator_grads(g, c, z):
            return grad(lambda g: -f(c, functional_call(generator, g, (z,))).mean())(g)

        critic_grads, generator_grads = torch.compile(critic_grads), torch.compile(generator_grads)

        def apply(module, opt, grads):
            for name, p in module.named_parameters():
                p.grad = grads[name]
            opt.step()

        def step():
            g = {k: v.detach() for k, v in generator.named_parameters()}
            for _ in range(N_CRITIC):
                c = {k: v.detach() for k, v in critic.named_parameters()}
                apply(critic, c_opt, critic_grads(c, g, ring8(BATCH), torch.randn(BATCH, LATENT),
                                                  torch.rand(BATCH, 1)))
            c = {k: v.detach() for k, v in critic.named_parameters()}
            apply(generator, g_opt, generator_grads(g, c, torch.randn(BATCH, LATENT)))

        return step

    steps = {"eager": eager_model()}
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "compile":
                t0 = time.perf_counter()
                steps["compile"] = compiled_model()
                steps["compile"]()
                reply = {"seconds": time.perf_counter() - t0}
            else:
                t0 = time.perf_counter()
                for _ in range(msg["steps"]):
                    steps[msg["impl"]]()
                reply = {"seconds": time.perf_counter() - t0}
        except Exception as err:  # reported to the parent, which skips the column with this note
            reply = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]}
        print(json.dumps(reply), flush=True)


class TorchWorker:
    """A `torch_worker` subprocess for one width; killed (its process group) when it overruns a deadline."""

    def __init__(self, width: int, threads: int):
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS="1")  # no compile pool: one process to stop
        env.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--torch-worker", str(width), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            start_new_session=True)

    def request(self, msg: dict, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close(kill=True)
            return {"error": f"no answer within {timeout:.0f} s (stopped)"}
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace").strip().splitlines()[-1:]
            return {"error": f"worker exited: {tail[0] if tail else 'no message'}"[:300]}
        return json.loads(line)

    def runner(self, impl: str, name: str) -> Runner:
        def run(calls: int) -> float:
            reply = self.request({"cmd": "run", "impl": impl, "steps": calls}, timeout=600)
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")
            return reply["seconds"]

        return Runner(name, 1, run)

    def close(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            if kill:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.stdin.close()
            self.proc.wait()


def torch_version() -> str | None:
    try:
        import importlib.metadata as md

        return md.version("torch")
    except Exception:  # not installed
        return None


# --------------------------------------------------------------------------------------------------------
# The multi-device step (run in a subprocess that simulates 4 CPU devices).


def devices_worker(width: int, steps_per_call: int, counts: list[int], repeats: int, block_s: float) -> None:
    """Prints one JSON line: steps/s of the engine on meshes of each device count in `counts`."""
    cfg = ring8_config(width)
    runners = [engine_bench(cfg, steps_per_call, str(n), num_devices=n).runner for n in counts]
    print(json.dumps(measure(runners, repeats, block_s)), flush=True)


def run_devices(args, counts: list[int]) -> dict[str, list[float]] | str:
    """Steps/s per device count from a `devices_worker` subprocess, or the reason it failed."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={max(counts)}",
               JAX_PLATFORMS="cpu")
    cmd = [sys.executable, __file__, "--devices-worker", ",".join(map(str, counts)), "--fused-k",
           str(args.fused_k), "--repeats", str(args.repeats), "--block-s", str(args.block_s)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "timed out after 600 s"
    if done.returncode:
        return f"failed: {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------
# The report.


def machine_lines(torch_ver: str | None, threads: int) -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    import flax

    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: `uname -m` = {platform.machine()}, CPU: {cpu}, cores: {os.cpu_count()}",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
        f"optax {optax.__version__}, torch {torch_ver or 'not installed (pip install torch==2.13.0)'}",
        f"- PyTorch threads: torch.set_num_threads({threads}) (= cores)" if torch_ver else "- PyTorch: skipped",
        f"- load average (1, 5, 15 min) at start: {load}",
    ]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def goal_row(goal: str, ratios: list[float], target: float, unit: str = "×") -> list[str]:
    if not ratios:
        return [goal, f"≥ {target:g}{unit}", "–", "not measured"]
    med = statistics.median(ratios)
    return [goal, f"≥ {target:g}{unit}", f"{med:.2f}{unit} [{min(ratios):.2f}–{max(ratios):.2f}]",
            "met" if med >= target else "**not met**"]


# --------------------------------------------------------------------------------------------------------
# Main.


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 repeats of 0.4 s, no torch.compile (≈ 4 min)")
    p.add_argument("--widths", default="64,128,512", help="MLP widths (default 64,128,512)")
    p.add_argument("--fused-k", type=int, default=50, help="generator steps per call of the fused engine")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per implementation")
    p.add_argument("--block-s", type=float, default=1.0, help="seconds per timed block (at least one call)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    p.add_argument("--compile-budget-s", type=float, default=150.0,
                   help="time box for torch.compile's first call per width (then skipped)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--skip-digits", action="store_true", help="skip the digits conv step")
    p.add_argument("--dtype", default="float32", help="the engine's compute dtype (model.dtype), e.g. bfloat16; "
                   "parameters stay float32 (the hand-written and PyTorch columns are float32)")
    p.add_argument("--digits-k", type=int, default=10, help="steps per call of the fused digits step")
    p.add_argument("--devices", default="1,2,4", help="simulated device counts ('' to skip)")
    p.add_argument("--out", default=str(REPO / "results" / "benchmarks.md"), help="markdown report path")
    p.add_argument("--torch-worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help=argparse.SUPPRESS)
    p.add_argument("--devices-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.block_s, args.no_compile = 3, 0.4, True
        args.fused_k = min(args.fused_k, 20)
    return args


def bench_ring8(args, width: int, threads: int, torch_ver: str | None, notes: list[str]) -> dict[str, Any]:
    """Steps/s of every implementation at one width (interleaved), FLOP counts and compile seconds."""
    k, names = args.fused_k, impl_names(args.fused_k)
    cfg = ring8_config(width)
    cfg.model.dtype = args.dtype
    _progress(f"width {width}: compiling the engine (K=1, K={k}) and the hand-written step")
    single, fused = engine_bench(cfg, 1, names[0]), engine_bench(cfg, k, names[1])
    default = engine_bench(xla_default_matmuls(cfg), 1, names[5])
    hw_runner, hw_compile, flops = hand_written_bench(width)
    runners = [single.runner, fused.runner, hw_runner, default.runner]
    compile_s = {names[0]: single.compile_s, names[1]: fused.compile_s, names[2]: hw_compile,
                 names[5]: default.compile_s}
    worker = None
    if torch_ver:
        worker = TorchWorker(width, threads)
        runners.append(worker.runner("eager", names[3]))
        if not args.no_compile:
            _progress(f"width {width}: torch.compile (time box {args.compile_budget_s:.0f} s)")
            reply = worker.request({"cmd": "compile"}, timeout=args.compile_budget_s)
            if "error" in reply:
                notes.append(f"torch.compile at width {width} skipped: {reply['error']}")
                worker.close(kill=True)
                worker = TorchWorker(width, threads)
                runners[-1] = worker.runner("eager", names[3])
            else:
                compile_s[names[4]] = reply["seconds"]
                runners.append(worker.runner("compile", names[4]))
    runners.append(matmul_runner())
    _progress(f"width {width}: timing {', '.join(r.name for r in runners)}")
    rates = measure(runners, args.repeats, args.block_s)
    if worker:
        worker.close()
    return dict(rates=rates, flops=flops, compile_s=compile_s, jaxpr_engine=single.jaxpr_gflop,
                scanned_engine=single.scanned_xla_gflop, load=os.getloadavg()[0])


def bench_digits(args) -> dict[str, Any]:
    """Steps/s of the digits conv WGAN-GP engine step, K=1 and fused, and its FLOP counts."""
    from experiments.configs import common

    _progress(f"digits conv WGAN-GP: compiling the engine (K=1, K={args.digits_k})")
    cfg = common.images("digits", "wgan_gp")
    cfg.model.dtype = args.dtype
    single = engine_bench(cfg, 1, "engine K=1")
    fused = engine_bench(cfg, args.digits_k, f"engine K={args.digits_k}")
    default = engine_bench(xla_default_matmuls(cfg), 1, DEFAULT_MATMULS)
    _progress("digits conv WGAN-GP: timing")
    runners = [single.runner, fused.runner, default.runner]
    return dict(cfg=cfg, rates=measure(runners, args.repeats, args.block_s),
                gflop=single.jaxpr_gflop, scanned=single.scanned_xla_gflop, check=digits_count_check(cfg))


DEFAULT_MATMULS = "engine K=1, XLA default matmuls"


def impl_names(k: int) -> list[str]:
    return ["engine K=1", f"engine K={k}", "hand-written JAX", "PyTorch eager", "torch.compile", DEFAULT_MATMULS]


def xla_default_matmuls(cfg):
    """`cfg` with train.cpu_matmuls = "xla_default": the engine as XLA compiles it without gan_jax's CPU option."""
    cfg = cfg.copy_and_resolve_references()
    cfg.train.cpu_matmuls = "xla_default"
    return cfg


def render(args, header: list[str], results: dict[int, dict[str, Any]], digits: dict[str, Any] | None,
           scaling: dict[str, list[float]] | str | None, peaks: tuple[float, float], notes: list[str],
           seconds: float) -> str:
    """The markdown report."""
    k, names = args.fused_k, impl_names(args.fused_k)
    peak = max(*peaks, *[MATMUL_GFLOP * max(r["rates"][MATMUL]) for r in results.values()])
    lines = [*header, "", "## ring8 WGAN-GP: generator steps/s (median [min–max] of "
             f"{args.repeats} interleaved blocks of ≈ {args.block_s:g} s)", "",
             "MLP generator and critic, depth 3, batch 256, n_critic 5, λ = 0.1, Adam(1e-4, 0.5, 0.9); "
             "one generator step = 5 critic updates + 1 generator update.", ""]
    rows = [[str(w), f"{r['flops']['pieces']:.3g}", *[median_spread(r["rates"].get(n, [])) for n in names],
             f"{r['load']:.1f}"] for w, r in results.items()]
    lines += table(["width", "GFLOP/step", *names, "load (1 min)"], rows)

    pairs = [(names[1], names[3]), (names[1], names[4]), (names[1], names[0]), (names[0], names[2]),
             (names[1], names[2]), (names[0], names[5])]
    lines += ["", f"## Ratios (median [min–max] of per-repeat ratios; engine = K={k} fused unless named)", ""]
    rows = [[str(w), *[median_spread(paired_ratio(r["rates"][a], r["rates"].get(b, []))) for a, b in pairs]]
            for w, r in results.items()]
    lines += table(["width", "engine / PyTorch eager", "engine / torch.compile", f"K={k} / K=1",
                    "engine K=1 / hand-written", f"engine K={k} / hand-written",
                    "engine K=1 / same with XLA default matmuls"], rows)
    lines += ["", "The engine (and the hand-written step, compiled with the same options) runs CPU matmuls through "
              "XLA's own dots (`train.cpu_matmuls = \"eigen\"`, gan_jax.parallel.CPU_MATMULS); the last column sets "
              "that against this jaxlib's default (YNNPACK fusions in jax 0.10)."]

    lines += ["", f"## Achieved GFLOP/s against the matmul peak ({peak:.1f} GFLOP/s: best 2048×2048 float32 "
              "`jnp.dot` of the run)", ""]
    rows = []
    for w, r in results.items():
        f, matmul = r["flops"], r["rates"][MATMUL]
        cells = []
        for n in names[:3]:
            achieved = f["pieces"] * statistics.median(r["rates"][n])
            paired = [100 * f["pieces"] * x / (MATMUL_GFLOP * m) for x, m in zip(r["rates"][n], matmul)]
            cells.append(f"{achieved:.3g} ({100 * achieved / peak:.0f} % · {statistics.median(paired):.0f} %)")
        rows.append([str(w), *cells, f"{MATMUL_GFLOP * statistics.median(matmul):.3g}"])
    lines += table(["width", *[f"{n}: GFLOP/s (% best peak · % same-time matmul)" for n in names[:3]],
                    "same-time matmul GFLOP/s"], rows)
    lines += ["", "'% best peak': of the best 2048² matmul of the run. '% same-time matmul': median over repeats of "
              "the step's GFLOP/s over the GFLOP/s of the 2048² matmul timed in the same interleaved repeat, so a "
              "busy machine slows both sides alike.", ""]
    rows = [[str(w), f"{r['flops']['critic']:.3g}", f"{r['flops']['generator']:.3g}", f"{r['flops']['pieces']:.3g}",
             f"{r['jaxpr_engine']:.3g}", f"{r['flops']['analytic']:.3g}", f"{r['scanned_engine']:.3g}"]
            for w, r in results.items()]
    lines += table(["width", "critic update", "generator update", f"step = {N_CRITIC}×critic + gen",
                    "jaxpr count (engine)", "analytic 120·2Bw²", "XLA on scanned step"], rows)
    lines += ["", "FLOPs per generator step, GFLOP. The step count used for GFLOP/s is XLA's `cost_analysis()` of "
              "the hand-written critic update and generator update compiled separately "
              f"({N_CRITIC} × critic + generator). Cross-checks: the engine's own jaxpr with every dot_general "
              "counted (scan bodies × their length); and the analytic count of the width² matmuls only "
              "(a critic update runs 22 batch-256 width×width matmul passes: 2 to generate the fakes, 4 forward "
              "and 8 backward on real+fake, 2 + 2 + 4 for the penalty's forward, input gradient and its "
              "parameter gradient — ReLU masks carry no gradient — and a generator update 10). "
              "'XLA on scanned step' is cost_analysis of the whole step, which counts the n_critic scan body "
              "once and so undercounts."]

    if digits:
        cfg = digits["cfg"]
        lines += ["", "## digits conv WGAN-GP (experiments/configs/common.images('digits', 'wgan_gp'))", "",
                  f"8×8×1 images, DCGAN-style conv pair base width {cfg.model.base_width}, latent "
                  f"{cfg.model.latent_dim}, batch {cfg.data.batch_size}, n_critic {cfg.loss.n_critic}, "
                  f"λ = {cfg.loss.penalty_weight:g}. GFLOP/step = {digits['gflop']:.3g}: the engine's jaxpr "
                  "with every dot_general and convolution counted (taps on padding and on transposed-convolution "
                  "holes skipped). Check against XLA where its count is exact (n_critic = 1, no repeated scan "
                  f"body): jaxpr {digits['check'][0]:.3g} vs XLA {digits['check'][1]:.3g} GFLOP. XLA on the "
                  f"n_critic = 5 step says {digits['scanned']:.3g} (scan body counted once).", ""]
        rows = [[n, median_spread(v), f"{digits['gflop'] * statistics.median(v):.3g} "
                 f"({100 * digits['gflop'] * statistics.median(v) / peak:.0f} %)"] for n, v in digits["rates"].items()]
        lines += table(["engine", "generator steps/s", "GFLOP/s (% peak)"], rows)

    if scaling is not None:
        counts = [int(c) for c in args.devices.split(",")]
        cores = os.cpu_count()
        lines += ["", f"## Data-parallel engine step on simulated CPU devices (width 128, K={k})", "",
                  f"`XLA_FLAGS=--xla_force_host_platform_device_count={max(counts)}` in a subprocess; mesh of the "
                  f"first n devices, batch 256 split over them. The simulated devices share the machine's {cores} "
                  f"cores, so no speed-up is expected beyond {cores} devices: this measures the cost of the "
                  "sharded code path, not real scaling.", ""]
        if isinstance(scaling, str):
            lines.append(f"skipped: {scaling}")
        else:
            base = scaling[str(counts[0])]
            rows = [[c, median_spread(v), median_spread(paired_ratio(v, base))] for c, v in scaling.items()]
            lines += table(["devices", "generator steps/s", f"speed-up vs {counts[0]}"], rows)

    lines += ["", "## Goals", ""]
    ratio = lambda w, a, b: paired_ratio(results[w]["rates"].get(a, []), results[w]["rates"].get(b, []))
    rows = []
    if 512 in results:
        rows.append(goal_row("engine ≥ 1.5× PyTorch eager, width 512", ratio(512, names[1], names[3]), 1.5))
    if 128 in results:
        rows.append(goal_row("engine ≥ 2.5× PyTorch eager, width 128", ratio(128, names[1], names[3]), 2.5))
    rows += [goal_row(f"engine ahead of torch.compile, width {w}", ratio(w, names[1], names[4]), 1.0) for w in results]
    if 512 in results:
        gflop, rt = results[512]["flops"]["pieces"], results[512]["rates"]
        rows.append(goal_row("engine ≥ 70 % of the best matmul peak, width 512",
                             [100 * gflop * x / peak for x in rt[names[1]]], 70, " %"))
        rows.append(goal_row("engine ≥ 70 % of the same-time matmul, width 512",
                             [100 * gflop * x / (MATMUL_GFLOP * m) for x, m in zip(rt[names[1]], rt[MATMUL])],
                             70, " %"))
    if 64 in results:
        rows.append(goal_row(f"K={k} fused ≥ 1.1× K=1, width 64", ratio(64, names[1], names[0]), 1.1))
    if 512 in results:
        rows += [goal_row(f"{n} within 10 % of hand-written JAX, width 512", ratio(512, n, names[2]), 0.9)
                 for n in names[:2]]
    lines += table(["goal", "target", "measured (median [min–max])", "status"], rows)

    compile_rows = [f"{n} at width {w}: {s:.1f} s" for w, r in results.items() for n, s in r["compile_s"].items()]
    lines += ["", "## Notes", "",
              f"- trace + compile seconds: {'; '.join(compile_rows)}.",
              "- Timing: compile excluded; each block ends with `jax.block_until_ready` (JAX) or runs synchronously "
              "(PyTorch); the engine's metrics stay on the device, as in a training loop between logs.",
              f"- PyTorch: OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', OMP_WAIT_POLICY)} (threads sleep "
              "instead of spinning at barriers, so a shared machine does not stall them); Adam(fused=True); penalty "
              "via autograd.grad(create_graph=True); critic parameters frozen during the generator update. "
              "torch.compile compiles the critic- and generator-gradient functions (torch.func.grad, penalty as the "
              "gradient of the summed critic) and applies Adam eagerly.",
              *[f"- {n}" for n in notes],
              f"- load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; matmul peak at start/end "
              f"{peaks[0]:.1f}/{peaks[1]:.1f} GFLOP/s (best of 10 each); total run time {seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.torch_worker:
        return torch_worker(args.torch_worker, args.threads)
    if args.devices_worker:
        return devices_worker(128, args.fused_k, [int(c) for c in args.devices_worker.split(",")], args.repeats,
                              args.block_s)

    started = time.perf_counter()
    threads = os.cpu_count() or 1
    torch_ver = None if args.no_torch else torch_version()
    command = " ".join(["python benchmarks/train_speed.py", *(sys.argv[1:] if argv is None else argv)])
    header = ["# Training speed (benchmarks/train_speed.py)", "", *machine_lines(torch_ver, threads),
              f"- command: `{command}`", f"- engine compute dtype: {args.dtype} (parameters float32)"]
    _progress("measuring the matmul peak")
    peak_start = matmul_peak_gflops()
    notes: list[str] = []
    results = {w: bench_ring8(args, w, threads, torch_ver, notes) for w in map(int, args.widths.split(","))}
    digits = None if args.skip_digits else bench_digits(args)
    counts = [int(c) for c in args.devices.split(",") if c]
    scaling = None
    if counts:
        _progress(f"width 128 on {counts} simulated CPU devices (subprocess)")
        scaling = run_devices(args, counts)
    peaks = (peak_start, matmul_peak_gflops())
    text = render(args, header, results, digits, scaling, peaks, notes, time.perf_counter() - started)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
