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

This file is the harness: flags, the interleaved timing loop, the report's file. The pieces it times and
renders are benchmarks/ring8.py (the benchmarked GAN), engine_steps.py, hand_written.py, torch_worker.py,
flops.py (FLOP counts and the matmul peak) and report.py (the markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/train_speed.py` from anywhere
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from benchmarks import flops, report  # noqa: E402
from benchmarks.engine_steps import EngineBench, digits_count_check, engine_bench, xla_default_matmuls  # noqa: E402
from benchmarks.hand_written import hand_written_bench  # noqa: E402
from benchmarks.ring8 import ring8_config  # noqa: E402
from benchmarks.torch_worker import TorchWorker, torch_timers, torch_version  # noqa: E402

PAUSE_S = 0.05  # between timed blocks, so one implementation's threads are idle when the next starts


class Runner(NamedTuple):
    """An implementation under test: `run(calls)` makes that many calls, waits for them, returns seconds."""

    name: str
    steps_per_call: int
    run: Callable[[int], float]


def stepping(name: str, steps_per_call: int, advance: Callable[[Any], Any], state: Any) -> Runner:
    """A Runner that applies the jitted `advance` to its latest state (after one untimed call from `state`)."""
    box = [jax.block_until_ready(advance(state))]

    def run(calls: int) -> float:
        t0, s = time.perf_counter(), box[0]
        for _ in range(calls):
            s = advance(s)
        box[0] = jax.block_until_ready(s)
        return time.perf_counter() - t0

    return Runner(name, steps_per_call, run)


def engine_runner(bench: EngineBench, name: str) -> Runner:
    """The compiled engine step `bench` as a Runner named `name`."""
    return stepping(name, bench.steps_per_call, bench.advance, bench.state)


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


def progress(message: str) -> None:
    """`message` on stderr with the time and the 1-minute load average."""
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}", file=sys.stderr, flush=True)


def bench_ring8(args, width: int, threads: int, torch_ver: str | None, notes: list[str]) -> dict[str, Any]:
    """Steps/s of every implementation at one width (interleaved), FLOP counts and compile seconds."""
    k, names = args.fused_k, report.impl_names(args.fused_k)
    cfg = ring8_config(width)
    cfg.model.dtype = args.dtype
    progress(f"width {width}: compiling the engine (K=1, K={k}) and the hand-written step")
    single, fused = engine_bench(cfg, 1), engine_bench(cfg, k)
    default = engine_bench(xla_default_matmuls(cfg), 1)
    hw, hw_compile, hw_flops = hand_written_bench(width)
    runners = [engine_runner(single, names[0]), engine_runner(fused, names[1]),
               stepping(names[2], 1, hw.step, hw.state), engine_runner(default, names[5])]
    compile_s = {names[0]: single.compile_s, names[1]: fused.compile_s, names[2]: hw_compile,
                 names[5]: default.compile_s}
    worker = None
    if torch_ver:
        budget = None if args.no_compile else args.compile_budget_s
        progress(f"width {width}: PyTorch" + ("" if budget is None else f", torch.compile (time box {budget:.0f} s)"))
        worker, timers, torch_compile_s = torch_timers(lambda: TorchWorker(width, threads), (names[3], names[4]),
                                                       budget, notes, f"at width {width}")
        runners += [Runner(name, 1, run) for name, run in timers.items()]
        compile_s.update(torch_compile_s)
    runners.append(Runner(flops.MATMUL, 1, flops.matmul_run()))
    progress(f"width {width}: timing {', '.join(r.name for r in runners)}")
    rates = measure(runners, args.repeats, args.block_s)
    if worker:
        worker.close()
    return dict(rates=rates, flops=hw_flops, compile_s=compile_s, jaxpr_engine=single.jaxpr_gflop,
                scanned_engine=single.scanned_xla_gflop, load=os.getloadavg()[0])


def bench_digits(args) -> dict[str, Any]:
    """Steps/s of the digits conv WGAN-GP engine step, K=1 and fused, and its FLOP counts."""
    from experiments.configs import common

    progress(f"digits conv WGAN-GP: compiling the engine (K=1, K={args.digits_k})")
    cfg = common.images("digits", "wgan_gp")
    cfg.model.dtype = args.dtype
    single, fused = engine_bench(cfg, 1), engine_bench(cfg, args.digits_k)
    default = engine_bench(xla_default_matmuls(cfg), 1)
    progress("digits conv WGAN-GP: timing")
    runners = [engine_runner(single, "engine K=1"), engine_runner(fused, f"engine K={args.digits_k}"),
               engine_runner(default, report.DEFAULT_MATMULS)]
    return dict(cfg=cfg, rates=measure(runners, args.repeats, args.block_s),
                gflop=single.jaxpr_gflop, scanned=single.scanned_xla_gflop, check=digits_count_check(cfg))


def devices_worker(width: int, steps_per_call: int, counts: list[int], repeats: int, block_s: float) -> None:
    """Prints one JSON line: steps/s of the engine on meshes of each device count in `counts`."""
    cfg = ring8_config(width)
    runners = [engine_runner(engine_bench(cfg, steps_per_call, num_devices=n), str(n)) for n in counts]
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


def parse_args(argv=None) -> argparse.Namespace:
    """The command line's flags, with --quick applied."""
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
    p.add_argument("--devices-worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.block_s, args.no_compile = 3, 0.4, True
        args.fused_k = min(args.fused_k, 20)
    return args


def main(argv=None) -> None:
    """Runs the benchmark the flags ask for, prints the report and writes it to --out."""
    args = parse_args(argv)
    if args.devices_worker:
        return devices_worker(128, args.fused_k, [int(c) for c in args.devices_worker.split(",")], args.repeats,
                              args.block_s)

    started = time.perf_counter()
    threads = os.cpu_count() or 1
    torch_ver = None if args.no_torch else torch_version()
    command = " ".join(["python benchmarks/train_speed.py", *(sys.argv[1:] if argv is None else argv)])
    header = ["# Training speed (benchmarks/train_speed.py)", "", *report.machine_lines(torch_ver, threads),
              f"- command: `{command}`", f"- engine compute dtype: {args.dtype} (parameters float32)"]
    progress("measuring the matmul peak")
    peak_start = flops.matmul_peak_gflops()
    notes: list[str] = []
    results = {w: bench_ring8(args, w, threads, torch_ver, notes) for w in map(int, args.widths.split(","))}
    digits = None if args.skip_digits else bench_digits(args)
    counts = [int(c) for c in args.devices.split(",") if c]
    scaling = None
    if counts:
        progress(f"width 128 on {counts} simulated CPU devices (subprocess)")
        scaling = run_devices(args, counts)
    peaks = (peak_start, flops.matmul_peak_gflops())
    text = report.render(args, header, results, digits, scaling, peaks, notes, time.perf_counter() - started)
    report.publish(text, args.out)


if __name__ == "__main__":
    main()
