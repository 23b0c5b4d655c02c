"""Image-scale GAN steps: gan_jax's engine against the same networks in PyTorch eager and under torch.compile, with
the compiled step's memory from XLA.

The steps, as their configs train them (networks, loss, batch, n_critic, Adam; one generator step per jitted call
with the critic loop unrolled, `train.unroll_loops`):
  sngan32  experiments/configs/cifar10_sngan.py: SNGAN ResNet 32×32 (256 generator / 128 critic channels, spectral
           norm in the critic), hinge loss, batch 64, n_critic 5, Adam(2e-4, β = (0, 0.9));
  dcgan64  experiments/configs/celeba64_dcgan.py: DCGAN 64×64 (ngf = ndf = 64, batch norm in both), the
           non-saturating loss, batch 128, n_critic 1, Adam(2e-4, β = (0.5, 0.999)).
PyTorch runs the same networks layer for layer (benchmarks/torch_image_nets.py) in a worker subprocess
(benchmarks/torch_worker.py), on CUDA when JAX runs on a GPU. Both sides see synthetic data: DATA_COUNT uniform
random uint8 images of the step's size held on the device, real batches drawn from them inside the step. Timing is
train_speed.measure's: generator steps/s in interleaved blocks after compilation, median [min–max]; ratios are per
repeat. The engine's memory is XLA's `memory_analysis()` of the compiled step (temp + argument + output buffers).
The report goes to results/image_speed.md and to stdout.

    python benchmarks/image_speed.py                   # the configs' widths: ≈ 30 min on 2 idle CPU cores
    python benchmarks/image_speed.py --quick           # ≈ 2 min: channel multiplier 8, 2 short repeats, no compile
    python benchmarks/image_speed.py --dtype bfloat16  # engine model.dtype=bfloat16, PyTorch under autocast
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/image_speed.py` from anywhere
    sys.path.insert(0, str(REPO))
# On a GPU the PyTorch worker shares the device: JAX must not take most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import ml_collections  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.engine_steps import engine_bench, synthetic_images  # noqa: E402
from benchmarks.torch_worker import TorchWorker, torch_timers, torch_version  # noqa: E402
from benchmarks.train_speed import Runner, engine_runner, measure, progress  # noqa: E402
from experiments.configs import celeba64_dcgan, cifar10_sngan  # noqa: E402

STEPS = {"sngan32": cifar10_sngan.get_config, "dcgan64": celeba64_dcgan.get_config}
CHANNELS = 3  # RGB, as CIFAR-10 and CelebA
DATA_COUNT = 1024  # synthetic images held on the device, each side
ENGINE, EAGER, COMPILED = "gan_jax engine", "PyTorch eager", "torch.compile"
QUICK_CHANNELS = 8  # --quick's channel multiplier (the configs': 64)


def step_config(name: str, dtype: str, channels: int) -> ml_collections.ConfigDict:
    """STEPS[name]'s config with model.dtype = `dtype` and, if `channels`, both channel multipliers set to it."""
    cfg = STEPS[name]()
    cfg.model.dtype = dtype
    if channels:
        cfg.model.g_channels = cfg.model.d_channels = channels
    return cfg


def torch_spec(cfg: ml_collections.ConfigDict, device: str) -> dict[str, Any]:
    """The spec of benchmarks/torch_image_nets.py for the GAN `cfg` trains (widths read from gan_jax's modules)."""
    from gan_jax import models

    required = {"loss.penalty": (cfg.loss.penalty, "none"), "loss.unroll_steps": (cfg.loss.unroll_steps, 0),
                   "loss.pack": (cfg.loss.pack, 1), "model.num_classes": (cfg.model.num_classes, 0),
                   "train.ema_decay": (cfg.train.ema_decay, 0.0), "augment.policy": (cfg.augment.policy, ""),
                   "optim.generator.name": (cfg.optim.generator.name, "adam"),
                   "optim.critic.name": (cfg.optim.critic.name, "adam")}
    for field, (value, supported) in required.items():
        if value != supported:
            raise ValueError(f"config.{field}={value!r}: the PyTorch step supports only {supported!r}")
    size = cfg.data.image_size
    generator, critic = models.build(cfg.model, (size, size, CHANNELS))
    adam = lambda role: {k: float(cfg.optim[role][k]) for k in ("learning_rate", "b1", "b2")}  # noqa: E731
    return dict(kind=cfg.model.kind, image_size=size, channels=CHANNELS, latent_dim=cfg.model.latent_dim,
                g_ch=generator.ch, d_ch=critic.ch, spectral_norm=bool(critic.spectral_norm),
                batch_norm=bool(getattr(critic, "batch_norm", False)), loss=cfg.loss.name, n_critic=cfg.loss.n_critic,
                batch_size=cfg.data.batch_size, generator_optim=adam("generator"), critic_optim=adam("critic"),
                device=device, dtype=cfg.model.dtype, data_count=DATA_COUNT)


def parameter_counts(tree: Any) -> int:
    """Number of entries of every array in `tree`."""
    return sum(x.size for x in jax.tree.leaves(tree))


def bench_step(args, name: str, torch_ver: str | None, notes: list[str]) -> dict[str, Any]:
    """One step's steps/s (engine, PyTorch eager, torch.compile; interleaved), XLA memory, FLOPs, compile seconds."""
    cfg = step_config(name, args.dtype, args.channels)
    size = cfg.data.image_size
    progress(f"{name}: compiling the engine step")
    bench = engine_bench(cfg, 1, source=synthetic_images(DATA_COUNT, size, CHANNELS))
    params = (parameter_counts(bench.state.generator_params), parameter_counts(bench.state.critic_params))
    result = dict(cfg=cfg, gflop=bench.jaxpr_gflop, memory=bench.memory, compile_s={ENGINE: bench.compile_s},
                  params=params)
    runners = [engine_runner(bench, ENGINE)]
    worker = None
    if torch_ver:
        budget = None if args.skip_compile else args.compile_budget_s
        progress(f"{name}: PyTorch on {args.torch_device}"
                 + ("" if budget is None else f", torch.compile (time box {budget:.0f} s)"))
        spec = torch_spec(cfg, args.torch_device)
        worker, timers, compile_s = torch_timers(
            lambda: TorchWorker(json.dumps(spec, separators=(",", ":")), args.threads,
                                module="benchmarks.torch_image_nets"),
            (EAGER, COMPILED), budget, notes, f"for {name}")
        runners += [Runner(n, 1, run) for n, run in timers.items()]
        result["compile_s"].update(compile_s)
    progress(f"{name}: timing {', '.join(r.name for r in runners)}")
    result["rates"] = measure(runners, args.repeats, args.block_s)
    result["load"] = os.getloadavg()[0]
    if worker:
        worker.close()
    return result


def render(args, header: list[str], results: dict[str, dict[str, Any]], notes: list[str], seconds: float) -> str:
    """The markdown report: steps/s, ratios and XLA memory per step, the speed goal, notes."""
    lines = [*header, "", f"## Generator steps/s (median [min–max] of {args.repeats} interleaved blocks of "
             f"≈ {args.block_s:g} s; ratios per repeat)", ""]
    rows = []
    for name, r in results.items():
        cfg, rates, m = r["cfg"], r["rates"], r["memory"]
        ratio = lambda impl: report.median_spread(report.paired_ratio(rates[ENGINE], rates.get(impl, [])))  # noqa: E731
        rows.append([f"{name} (batch {cfg.data.batch_size}, n_critic {cfg.loss.n_critic})",
                     f"{r['params'][0]:,} / {r['params'][1]:,}", f"{r['gflop']:.3g}",
                     *[report.median_spread(rates.get(n, [])) for n in (ENGINE, EAGER, COMPILED)],
                     ratio(EAGER), ratio(COMPILED),
                     f"{m.temp:.1f} + {m.argument:.1f} + {m.output:.1f} = {m.total:.1f}", f"{r['load']:.1f}"])
    lines += report.table(["step", "parameters G / D", "GFLOP/step", ENGINE, EAGER, COMPILED, "engine / eager",
                           "engine / compile", "XLA memory MiB: temp + args + out", "load (1 min)"], rows)
    goals = [report.goal_row(f"engine ≥ 1.0× PyTorch eager, {name}",
                             report.paired_ratio(r["rates"][ENGINE], r["rates"].get(EAGER, [])), 1.0)
             for name, r in results.items()]
    lines += ["", "## Goals", "", *report.table(["goal", "target", "measured (median [min–max])", "status"], goals)]
    compile_rows = [f"{n} {name}: {s:.1f} s" for name, r in results.items() for n, s in r["compile_s"].items()]
    achieved = [f"{name} {r['gflop'] * statistics.median(r['rates'][ENGINE]):.3g}" for name, r in results.items()]
    aliased = [f"{name} {r['memory'].alias:.1f} MiB" for name, r in results.items()]
    lines += ["", "## Notes", "",
              "- GFLOP/step: the engine's jaxpr with every dot_general and convolution counted (taps on padding and "
              "on transposed-convolution holes skipped; benchmarks/flops.py); one step = n_critic critic updates + "
              f"one generator update. The engine's achieved GFLOP/s (median): {'; '.join(achieved)}.",
              "- XLA memory: `compiled.memory_analysis()` of the engine's jitted step; arguments are the train state "
              "(parameters, Adam moments, batch-norm running averages, spectral-norm vectors) and the "
              f"{DATA_COUNT} synthetic images; the state is donated, so outputs reuse argument buffers "
              f"(aliased: {'; '.join(aliased)}).",
              f"- Data: {DATA_COUNT} uniform random uint8 images of the step's size ({CHANNELS} channels) on the "
              "device, each side its own; the engine draws batches with gan_jax.data.images.batch and maps them "
              "with images.to_model_input (the device pipeline a prepared dataset gets); PyTorch indexes random rows.",
              "- PyTorch: the same layers (benchmarks/torch_image_nets.py; parameter counts equal, checked by "
              "tests/test_benchmarks.py), NCHW, Adam(fused=True), spectral norm by "
              "torch.nn.utils.parametrizations.spectral_norm (one power iteration per training forward), the critic "
              "in eval mode and frozen for the generator update as in the engine; the linear learning-rate decay "
              "of the SNGAN config is left out (one scalar per update); on CUDA with cudnn.benchmark on. "
              "torch.compile wraps both networks (forward and backward compiled, Adam eager).",
              "- Timing: compile excluded; each block ends with `jax.block_until_ready` (JAX) or after the worker's "
              "steps return (CUDA synchronised); the engine's metrics stay on the device.",
              f"- trace + compile seconds: {'; '.join(compile_rows)}.",
              *[f"- {n}" for n in notes],
              f"- load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; total run time "
              f"{seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's flags, with --quick applied."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"channel multiplier {QUICK_CHANNELS}, 2 repeats of 0.5 s, no torch.compile (minutes)")
    p.add_argument("--steps", default=",".join(STEPS), help=f"which steps, of {', '.join(STEPS)}")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per implementation")
    p.add_argument("--block_s", type=float, default=5.0, help="seconds per timed block (at least one step)")
    p.add_argument("--channels", type=int, default=0,
                   help="channel multiplier of both networks (0: the configs' widths; the published ones)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype: the engine's model.dtype, PyTorch's torch.autocast (parameters float32)")
    p.add_argument("--torch_device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="PyTorch's device (auto: cuda when JAX runs on a GPU, else cpu)")
    p.add_argument("--no_torch", action="store_true", help="skip the PyTorch columns")
    p.add_argument("--skip_compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile_budget_s", type=float, default=420.0,
                   help="time box for torch.compile's build and first step, per step (then skipped)")
    p.add_argument("--out", default=str(REPO / "results" / "image_speed.md"), help="markdown report path")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.block_s, args.skip_compile = 2, 0.5, True
        args.channels = args.channels or QUICK_CHANNELS
    unknown = set(args.steps.split(",")) - set(STEPS)
    if unknown:
        p.error(f"unknown --steps {', '.join(sorted(unknown))}; valid: {', '.join(STEPS)}")
    if args.torch_device == "auto":
        args.torch_device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    args.threads = os.cpu_count() or 1
    return args


def main(argv: list[str] | None = None) -> None:
    """Runs the steps the flags ask for, prints the report and writes it to --out."""
    args = parse_args(argv)
    started = time.perf_counter()
    torch_ver = None if args.no_torch else torch_version()
    command = " ".join(["python benchmarks/image_speed.py", *(sys.argv[1:] if argv is None else argv)])
    device = jax.devices()[0]
    widths = ("the configs' (published) widths" if not args.channels else
              f"**reduced**: channel multiplier {args.channels} in both networks (the configs': 64), so not the "
              "published networks' speed")
    header = ["# Image-scale GAN steps (benchmarks/image_speed.py)", "", *report.machine_lines(torch_ver, args.threads),
              f"- command: `{command}`",
              f"- JAX backend: {jax.default_backend()} ({device.device_kind}); PyTorch device: {args.torch_device}",
              f"- compute dtype: {args.dtype} (engine model.dtype; PyTorch "
              f"{'torch.autocast bfloat16' if args.dtype == 'bfloat16' else 'float32'}; parameters float32)",
              f"- widths: {widths}"]
    notes: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.steps.split(","):  # the report is rewritten after each step: a stopped run keeps its steps
        results[name] = bench_step(args, name, torch_ver, notes)
        text = render(args, header, results, notes, time.perf_counter() - started)
        out.write_text(text)
    print(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
