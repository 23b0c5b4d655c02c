"""The markdown report of benchmarks/train_speed.py: machine header, steps/s and ratio tables, GFLOP/s against
the matmul peak, FLOP counts, the digits and multi-device sections, the speed goals and notes; `publish`, how every
benchmark ends (print the report, write its file)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import flax
import jax
import optax

from benchmarks.flops import MATMUL, MATMUL_GFLOP
from benchmarks.ring8 import N_CRITIC
from benchmarks.torch_worker import OMP_WAIT_POLICY

DEFAULT_MATMULS = "engine K=1, XLA default matmuls"


def publish(text: str, out: str | os.PathLike, where: str = "") -> None:
    """Prints the report, writes it to `out` (its folder created) and says on stderr where it went (and `where`)."""
    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}{where}", file=sys.stderr)


def impl_names(k: int) -> list[str]:
    """The ring8 implementations' names, in the order of the report's columns (k: the fused engine's K)."""
    return ["engine K=1", f"engine K={k}", "hand-written JAX", "PyTorch eager", "torch.compile", DEFAULT_MATMULS]


def median_spread(values: list[float]) -> str:
    """'median [min–max]' with 3 significant digits."""
    if not values:
        return "–"
    return f"{_sig(statistics.median(values))} [{_sig(min(values))}–{_sig(max(values))}]"


def paired_ratio(a: list[float], b: list[float]) -> list[float]:
    """Per-repeat ratios a_i / b_i: blocks of one repeat ran close in time, so drift cancels."""
    return [x / y for x, y in zip(a, b)] if a and b else []


def _sig(x: float) -> str:
    """`x` with 3 significant digits, or as a whole number from 1000 on."""
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def machine_lines(torch_ver: str | None, threads: int) -> list[str]:
    """The header's bullet lines: date, machine, versions, PyTorch threads, load average."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: `uname -m` = {platform.machine()}, CPU: {cpu}, cores: {os.cpu_count()}",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
        f"optax {optax.__version__}, torch {torch_ver or 'not installed (pip install torch==2.13.0)'}",
        f"- PyTorch threads: torch.set_num_threads({threads}) (= cores)" if torch_ver else "- PyTorch: skipped",
        f"- load average (1, 5, 15 min) at start: {load}",
    ]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table as lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def goal_row(goal: str, ratios: list[float], target: float, unit: str = "×") -> list[str]:
    """A row of the goals table: the goal, its target, the median [min–max] of `ratios`, met / not met."""
    if not ratios:
        return [goal, f"≥ {target:g}{unit}", "–", "not measured"]
    med = statistics.median(ratios)
    return [goal, f"≥ {target:g}{unit}", f"{med:.2f}{unit} [{min(ratios):.2f}–{max(ratios):.2f}]",
            "met" if med >= target else "**not met**"]


def render(args, header: list[str], results: dict[int, dict[str, Any]], digits: dict[str, Any] | None,
           scaling: dict[str, list[float]] | str | None, peaks: tuple[float, float], notes: list[str],
           seconds: float) -> str:
    """The markdown report of a run.

    `args` are its flags, `header` the report's first lines, `results` the ring8 numbers per width, `digits` and
    `scaling` those of the digits step and of the simulated devices (None: not run; a str: why it failed),
    `peaks` the matmul peak at start and end, `notes` lines for the notes section, `seconds` the run's duration.
    """
    peak = max(*peaks, *[MATMUL_GFLOP * max(r["rates"][MATMUL]) for r in results.values()])
    lines = [*header, *_steps_and_ratios(args, results), *_achieved(args, results, peak)]
    if digits:
        lines += _digits(digits, peak)
    if scaling is not None:
        lines += _scaling(args, scaling)
    lines += _goals(args, results, peak)
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


def _steps_and_ratios(args, results: dict[int, dict[str, Any]]) -> list[str]:
    """The ring8 steps/s table and the table of paired ratios between implementations."""
    k, names = args.fused_k, impl_names(args.fused_k)
    lines = ["", "## ring8 WGAN-GP: generator steps/s (median [min–max] of "
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
    return lines + ["", "The engine (and the hand-written step, compiled with the same options) runs CPU matmuls "
                    "through XLA's own dots (`train.cpu_matmuls = \"eigen\"`, gan_jax.parallel.CPU_MATMULS); the "
                    "last column sets that against this jaxlib's default (YNNPACK fusions in jax 0.10)."]


def _achieved(args, results: dict[int, dict[str, Any]], peak: float) -> list[str]:
    """Achieved GFLOP/s of the JAX implementations against the matmul peak, and the FLOP counts per step."""
    names = impl_names(args.fused_k)[:3]
    lines = ["", f"## Achieved GFLOP/s against the matmul peak ({peak:.1f} GFLOP/s: best 2048×2048 float32 "
             "`jnp.dot` of the run)", ""]
    rows = []
    for w, r in results.items():
        f, matmul = r["flops"], r["rates"][MATMUL]
        cells = []
        for n in names:
            achieved = f["pieces"] * statistics.median(r["rates"][n])
            paired = [100 * f["pieces"] * x / (MATMUL_GFLOP * m) for x, m in zip(r["rates"][n], matmul)]
            cells.append(f"{achieved:.3g} ({100 * achieved / peak:.0f} % · {statistics.median(paired):.0f} %)")
        rows.append([str(w), *cells, f"{MATMUL_GFLOP * statistics.median(matmul):.3g}"])
    lines += table(["width", *[f"{n}: GFLOP/s (% best peak · % same-time matmul)" for n in names],
                    "same-time matmul GFLOP/s"], rows)
    lines += ["", "'% best peak': of the best 2048² matmul of the run. '% same-time matmul': median over repeats of "
              "the step's GFLOP/s over the GFLOP/s of the 2048² matmul timed in the same interleaved repeat, so a "
              "busy machine slows both sides alike.", ""]
    rows = [[str(w), f"{r['flops']['critic']:.3g}", f"{r['flops']['generator']:.3g}", f"{r['flops']['pieces']:.3g}",
             f"{r['jaxpr_engine']:.3g}", f"{r['flops']['analytic']:.3g}", f"{r['scanned_engine']:.3g}"]
            for w, r in results.items()]
    lines += table(["width", "critic update", "generator update", f"step = {N_CRITIC}×critic + gen",
                    "jaxpr count (engine)", "analytic 120·2Bw²", "XLA on scanned step"], rows)
    return lines + ["", "FLOPs per generator step, GFLOP. The step count used for GFLOP/s is XLA's `cost_analysis()` "
                    "of the hand-written critic update and generator update compiled separately "
                    f"({N_CRITIC} × critic + generator). Cross-checks: the engine's own jaxpr with every dot_general "
                    "counted (scan bodies × their length); and the analytic count of the width² matmuls only "
                    "(a critic update runs 22 batch-256 width×width matmul passes: 2 to generate the fakes, 4 "
                    "forward and 8 backward on real+fake, 2 + 2 + 4 for the penalty's forward, input gradient and "
                    "its parameter gradient — ReLU masks carry no gradient — and a generator update 10). "
                    "'XLA on scanned step' is cost_analysis of the whole step, which counts the n_critic scan body "
                    "once and so undercounts."]


def _digits(digits: dict[str, Any], peak: float) -> list[str]:
    """The digits conv WGAN-GP section: its sizes, FLOP count and its check, steps/s and GFLOP/s."""
    cfg = digits["cfg"]
    lines = ["", "## digits conv WGAN-GP (experiments/configs/common.images('digits', 'wgan_gp'))", "",
             f"8×8×1 images, DCGAN-style conv pair base width {cfg.model.base_width}, latent "
             f"{cfg.model.latent_dim}, batch {cfg.data.batch_size}, n_critic {cfg.loss.n_critic}, "
             f"λ = {cfg.loss.penalty_weight:g}. GFLOP/step = {digits['gflop']:.3g}: the engine's jaxpr "
             "with every dot_general and convolution counted (taps on padding and on transposed-convolution "
             "holes skipped). Check against XLA where its count is exact (n_critic = 1, no repeated scan "
             f"body): jaxpr {digits['check'][0]:.3g} vs XLA {digits['check'][1]:.3g} GFLOP. XLA on the "
             f"n_critic = 5 step says {digits['scanned']:.3g} (scan body counted once).", ""]
    rows = [[n, median_spread(v), f"{digits['gflop'] * statistics.median(v):.3g} "
             f"({100 * digits['gflop'] * statistics.median(v) / peak:.0f} %)"] for n, v in digits["rates"].items()]
    return lines + table(["engine", "generator steps/s", "GFLOP/s (% peak)"], rows)


def _scaling(args, scaling: dict[str, list[float]] | str) -> list[str]:
    """The simulated-devices section: steps/s per device count and speed-up, or why it was skipped."""
    counts = [int(c) for c in args.devices.split(",")]
    cores = os.cpu_count()
    lines = ["", f"## Data-parallel engine step on simulated CPU devices (width 128, K={args.fused_k})", "",
             f"`XLA_FLAGS=--xla_force_host_platform_device_count={max(counts)}` in a subprocess; mesh of the "
             f"first n devices, batch 256 split over them. The simulated devices share the machine's {cores} "
             f"cores, so no speed-up is expected beyond {cores} devices: this measures the cost of the "
             "sharded code path, not real scaling.", ""]
    if isinstance(scaling, str):
        return lines + [f"skipped: {scaling}"]
    base = scaling[str(counts[0])]
    rows = [[c, median_spread(v), median_spread(paired_ratio(v, base))] for c, v in scaling.items()]
    return lines + table(["devices", "generator steps/s", f"speed-up vs {counts[0]}"], rows)


def _goals(args, results: dict[int, dict[str, Any]], peak: float) -> list[str]:
    """The project's speed goals, each met / not met / not measured."""
    k, names = args.fused_k, impl_names(args.fused_k)
    ratio = lambda w, a, b: paired_ratio(results[w]["rates"].get(a, []), results[w]["rates"].get(b, []))  # noqa: E731
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
    return ["", "## Goals", "", *table(["goal", "target", "measured (median [min–max])", "status"], rows)]
