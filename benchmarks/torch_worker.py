"""PyTorch's versions of the benchmarked ring8 WGAN-GP, eager and under torch.compile, in a worker subprocess
driven by JSON lines over stdin/stdout (so a stuck torch.compile can be stopped).

The same math as benchmarks/hand_written.py: torch.autograd.grad(create_graph=True) for the penalty in eager
mode; torch.func gradients under torch.compile (Adam applied eagerly). The worker runs with
torch.set_num_threads(<threads>) and OMP_WAIT_POLICY=PASSIVE; it is started by `TorchWorker` as

    python -m benchmarks.torch_worker WIDTH THREADS
"""

from __future__ import annotations

import argparse
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
from typing import Callable

from benchmarks.ring8 import (BATCH, BETAS, DEPTH, LATENT, LEARNING_RATE, N_CRITIC, PENALTY_WEIGHT, RING_MODES,
                              RING_RADIUS, RING_STD)

REPO = Path(__file__).resolve().parents[1]
# PyTorch's OpenMP threads spin at barriers by default; when other processes share the cores, a spinning
# thread waits for a descheduled one and 2-thread PyTorch runs up to 40x slower (measured on the project's
# 2-core machine at load 8). PASSIVE keeps PyTorch's numbers meaningful on a shared machine.
OMP_WAIT_POLICY = "PASSIVE"


def serve(width: int, threads: int) -> None:
    """Times PyTorch steps at `width` on request, one JSON line in and one out, until stdin ends.

    Requests: {"cmd": "compile"} and {"cmd": "run", "impl": "eager"|"compile", "steps": n}; replies:
    {"seconds": s} or {"error": message}.
    """
    import torch
    from torch.func import functional_call, grad

    torch.set_num_threads(threads)
    torch.manual_seed(0)
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
    """A `serve` subprocess for one width; killed (its process group) when it overruns a deadline."""

    def __init__(self, width: int, threads: int):
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS="1")  # no compile pool: one process to stop
        env.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.torch_worker", str(width), str(threads)], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            start_new_session=True)

    def request(self, msg: dict, timeout: float) -> dict:
        """The worker's reply to `msg`, or {"error": why} if it exits or does not answer within `timeout` s."""
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
    serve(cli.width, cli.threads)
