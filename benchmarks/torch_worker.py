"""PyTorch steps timed in a worker subprocess driven by JSON lines over stdin/stdout (so a stuck torch.compile can
be stopped): the client (`TorchWorker`, `torch_timers`), the request loop every worker runs (`serve_requests`),
and PyTorch's versions of the benchmarked ring8 WGAN-GP, eager and under torch.compile.

The ring8 step is the same math as benchmarks/hand_written.py: torch.autograd.grad(create_graph=True) for the
penalty in eager mode; torch.func gradients under torch.compile (Adam applied eagerly). A worker runs with
torch.set_num_threads(<threads>) and OMP_WAIT_POLICY=PASSIVE; `TorchWorker` starts one as

    python -m MODULE SPEC THREADS

MODULE benchmarks.torch_worker with SPEC the ring8 width, or benchmarks.torch_image_nets with SPEC the JSON spec
of an image GAN step.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.ring8 import (BATCH, BETAS, DEPTH, LATENT, LEARNING_RATE, N_CRITIC, PENALTY_WEIGHT, RING_MODES,
                              RING_RADIUS, RING_STD)

REPO = Path(__file__).resolve().parents[1]
# PyTorch's OpenMP threads spin at barriers by default; when other processes share the cores, a spinning
# thread waits for a descheduled one and 2-thread PyTorch runs up to 40x slower (measured on the project's
# 2-core machine at load 8). PASSIVE keeps PyTorch's numbers meaningful on a shared machine.
OMP_WAIT_POLICY = "PASSIVE"
WARMUP_TIMEOUT_S = 600.0  # for the worker's start and its first eager step


def serve_requests(threads: int, make_step: Callable[[bool], Callable[[], Any]]) -> None:
    """Times steps on request, one JSON line in and one out, until stdin ends.

    `make_step(False)` is the eager step (built at start), `make_step(True)` the torch.compile one (built and run
    once on {"cmd": "compile"}). Requests: {"cmd": "compile"} and {"cmd": "run", "impl": "eager"|"compile",
    "steps": n}; replies: {"seconds": s} (CUDA work synchronised before the clock stops) or {"error": message}.
    """
    import torch

    def sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    steps = {"eager": make_step(False)}
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            t0 = time.perf_counter()
            if msg["cmd"] == "compile":
                steps["compile"] = make_step(True)
                steps["compile"]()
            else:
                for _ in range(msg["steps"]):
                    steps[msg["impl"]]()
            sync()
            reply = {"seconds": time.perf_counter() - t0}
        except Exception as err:  # reported to the parent, which skips the column with this note
            reply = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]}
        print(json.dumps(reply), flush=True)


def ring8_step(width: int, compiled: bool) -> Callable[[], None]:
    """One generator step of the ring8 WGAN-GP at `width` in PyTorch: eager, or under torch.compile."""
    import torch
    from torch.func import functional_call, grad

    angles = 2 * math.pi * torch.arange(RING_MODES) / RING_MODES
    means = RING_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)

    def ring8(n):  # the data, as benchmarks.ring8 describes it
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

    return compiled_model() if compiled else eager_model()


class TorchWorker:
    """A `serve_requests` subprocess, `python -m module spec threads`; killed (its process group) when it overruns a
    deadline. Default: the ring8 step at width `spec`."""

    def __init__(self, spec: int | str, threads: int, module: str = "benchmarks.torch_worker"):
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS="1")  # no compile pool: one process to stop
        env.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, str(spec), str(threads)], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            start_new_session=True)

    def request(self, msg: dict, timeout: float) -> dict:
        """The worker's reply to `msg`, or {"error": why} if it exits or does not answer within `timeout` s."""
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # it has exited: its stdout is at EOF, read below
            pass
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

    def timer(self, impl: str, name: str) -> Callable[[int], float]:
        """`run(calls)`: seconds the worker takes for that many steps of `impl` ("eager" | "compile")."""

        def run(calls: int) -> float:
            reply = self.request({"cmd": "run", "impl": impl, "steps": calls}, timeout=600)
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")
            return reply["seconds"]

        return run

    def close(self, kill: bool = False) -> None:
        """Ends the worker: closes its stdin (it exits at EOF), or kills its process group."""
        if self.proc.poll() is None:
            if kill:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.stdin.close()
            self.proc.wait()


def torch_timers(start: Callable[[], TorchWorker], names: tuple[str, str], compile_budget_s: float | None,
                 notes: list[str], where: str) -> tuple[TorchWorker | None, dict[str, Callable[[int], float]],
                                                    dict[str, float]]:
    """(worker, {name: `run(calls)`} for PyTorch eager and torch.compile, {name: torch.compile's seconds}).

    `start()` starts the worker; its first eager step is run untimed (a worker that fails there is noted in `notes`
    and gives no timers). torch.compile (skipped when `compile_budget_s` is None) must build and run its first step
    within `compile_budget_s`, else it is noted and left out, and a fresh worker serves eager. `names`: (eager,
    compiled) column names; `where`: what the notes say was measured.
    """
    eager, compiled = names
    worker = start()
    reply = worker.request({"cmd": "run", "impl": "eager", "steps": 1}, timeout=WARMUP_TIMEOUT_S)
    if "error" in reply:
        notes.append(f"PyTorch {where} skipped: {reply['error']}")
        worker.close(kill=True)
        return None, {}, {}
    if compile_budget_s is None:
        return worker, {eager: worker.timer("eager", eager)}, {}
    reply = worker.request({"cmd": "compile"}, timeout=compile_budget_s)
    if "error" in reply:
        notes.append(f"torch.compile {where} skipped: {reply['error']}")
        worker.close(kill=True)
        worker = start()
        return worker, {eager: worker.timer("eager", eager)}, {}
    return (worker, {eager: worker.timer("eager", eager), compiled: worker.timer("compile", compiled)},
            {compiled: reply["seconds"]})


def torch_version() -> str | None:
    """The installed PyTorch's version, None when it is not installed."""
    try:
        import importlib.metadata as md

        return md.version("torch")
    except Exception:  # not installed
        return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serves PyTorch ring8 WGAN-GP steps over stdin/stdout.")
    parser.add_argument("width", type=int)
    parser.add_argument("threads", type=int)
    cli = parser.parse_args()
    serve_requests(cli.threads, functools.partial(ring8_step, cli.width))
