"""Speed and accuracy of gan_jax.transport next to POT (NumPy backend), on 2-D point clouds.

For n points per cloud (x ~ N(0, I), y ~ N((1, −½), diag(2, ½))), times each jitted function (compiled
first, then block_until_ready, median of repeats) and the POT function computing the same quantity on
the same float32 data, and reports the relative difference of the values:

  wasserstein_1d (p = 1, first coordinates)   vs ot.wasserstein_1d
  sliced_wasserstein (50 directions, p = 2)   vs ot.sliced_wasserstein_distance with the same directions
  sinkhorn (ε = 5e-2·median C)                 vs ot.sinkhorn2(method="sinkhorn_log") (n = 256) and ot.emd2
  sinkhorn (ε = 5e-4·median C, ω = 1.8)        vs ot.emd2 (POT's log-domain Sinkhorn does not converge
                                               there in 5000 iterations: 74 s at n = 256, 4 % off ot.emd2)
  emd (squared Euclidean cost)                 vs ot.emd2

Usage:
  python benchmarks/transport.py [--sizes 256 1024 4096] [--repeats 5] [--out results/transport_benchmark.md]
Prints a markdown table and writes it to --out.
"""

import argparse
import datetime
import os
import platform
import statistics
import time

import jax
import numpy as np
import ot

from gan_jax import transport

EPS_RELATIVE = 5e-4  # Sinkhorn ε as a fraction of the median cost
OMEGA = 1.8  # Sinkhorn over-relaxation at the target ε
SINKHORN_TOL = 5e-4  # L1 row-marginal tolerance: about the float32 floor at this ε (see sinkhorn's docstring)
N_PROJECTIONS = 50
EMD_MAX_N = 1024  # gan_jax's network simplex: ≈ 3–10 s at n = 1024 on 2 cores, O(n²–n³) beyond
POT_EPS_RELATIVE = 5e-2  # the ε at which Sinkhorn is also compared with POT
POT_SINKHORN_MAX_N = 256  # POT's log-domain Sinkhorn: 199 s for 2000 iterations at n = 1024, ε = 1e-2·median C


def median_seconds(fn, repeats, min_total_s=0.0):
    """Median wall time of fn() over at least `repeats` calls, more (up to 2000) until `min_total_s` is spent.

    fn must block until its result is ready. Sub-millisecond functions get hundreds of calls, so one
    scheduler hiccup on a shared machine does not move the median.
    """
    times = []
    while len(times) < repeats or (sum(times) < min_total_s and len(times) < 2000):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled(fn, *args):
    """fn jitted and compiled for args (the warm-up), as a call that blocks until the result is ready.

    The inputs are put on the device once, as in a training or evaluation loop; the time is the function's.
    """
    args = jax.device_put(args)
    executable = jax.jit(fn).lower(*args).compile()
    return lambda: jax.block_until_ready(executable(*args))


def relative(value, reference):
    return abs(float(value) - float(reference)) / abs(float(reference))


def iterations(result):
    """The solver's own report: "n_iter = …, converged" or "… NOT converged" (a transport result's flags)."""
    return f"n_iter = {int(result.n_iter)}, {'converged' if bool(result.converged) else 'NOT converged'}"


def clouds(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(n, 2)) * np.sqrt([2.0, 0.5]) + [1.0, -0.5]
    return x.astype(np.float32), y.astype(np.float32)


def bench_size(n, repeats, log):
    x, y = clouds(n)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    rows = []

    def row(name, ours_s, pot_s, err_pot, err_emd="–", note=""):
        speedup = f"{pot_s / ours_s:.1f}×" if None not in (pot_s, ours_s) else "–"
        ours_ms = f"{ours_s * 1e3:.2f}" if ours_s is not None else "not run"
        pot_ms = f"{pot_s * 1e3:.2f}" if pot_s is not None else "not run"
        err = f"{err_pot:.1e}" if isinstance(err_pot, float) else err_pot
        err_emd = f"{err_emd:.1e}" if isinstance(err_emd, float) else err_emd
        rows.append(f"| {n} | {name} | {ours_ms} | {pot_ms} | {speedup} | {err} | {err_emd} | {note} |")
        log(rows[-1])

    # 1-D: first coordinates.
    run = compiled(lambda u, v: transport.wasserstein_1d(u, v, 1), x[:, 0], y[:, 0])
    ours, ours_s = run(), median_seconds(run, repeats, min_total_s=0.5)
    def pot_1d():
        return ot.wasserstein_1d(x64[:, 0], y64[:, 0], p=1)

    ref, pot_s = pot_1d(), median_seconds(pot_1d, repeats, min_total_s=0.5)
    row("wasserstein_1d (p=1)", ours_s, pot_s, relative(ours, ref))

    # Sliced: POT gets the directions gan_jax draws from the key.
    key = jax.random.key(0)
    z = np.asarray(jax.random.normal(key, (N_PROJECTIONS, 2)), np.float64)
    directions = (z / np.linalg.norm(z, axis=1, keepdims=True)).T
    run = compiled(lambda u, v, k: transport.sliced_wasserstein(u, v, k, N_PROJECTIONS, 2), x, y, key)
    ours, ours_s = run(), median_seconds(run, repeats, min_total_s=0.5)

    def pot_sliced():
        return ot.sliced_wasserstein_distance(x64, y64, n_projections=N_PROJECTIONS, p=2, projections=directions)

    ref, pot_s = pot_sliced(), median_seconds(pot_sliced, repeats, min_total_s=0.5)
    row(f"sliced_wasserstein (L={N_PROJECTIONS}, p=2)", ours_s, pot_s, relative(ours, ref))

    # Exact OT on the squared Euclidean cost, the reference for Sinkhorn's bias.
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1).astype(np.float32)
    cost64, w, w64 = cost.astype(np.float64), np.full(n, 1.0 / n, np.float32), np.full(n, 1.0 / n)
    start = time.perf_counter()
    exact = ot.emd2(w64, w64, cost64, numItermax=10**8)
    emd_pot_s = time.perf_counter() - start
    log(f"  ot.emd2 = {exact:.6f} ({emd_pot_s:.2f} s, one run)")

    # Sinkhorn next to POT at a moderate ε, where POT's log-domain solver converges in reasonable time.
    if n <= POT_SINKHORN_MAX_N:
        eps = POT_EPS_RELATIVE * float(np.median(cost))
        run = compiled(lambda c: transport.sinkhorn(w, w, c, eps, tol=1e-6, max_iter=20_000), cost)
        result, ours_s = run(), median_seconds(run, repeats)

        def pot_sinkhorn():
            return ot.sinkhorn2(w64, w64, cost64, eps, method="sinkhorn_log", numItermax=10_000, stopThr=1e-6)

        ref, pot_s = pot_sinkhorn(), median_seconds(pot_sinkhorn, 1)
        note = f"ε = {POT_EPS_RELATIVE:g}·median C, ω = 1, tol = 1e-6: {iterations(result)}; POT: 1 run"
        row("sinkhorn", ours_s, pot_s, relative(result.value, ref), relative(result.value, exact), note)

    # Sinkhorn at the recommended ε, against the exact cost.
    eps = EPS_RELATIVE * float(np.median(cost))
    sinkhorn_repeats = 1 if n > 1024 else repeats
    run = compiled(
        lambda c: transport.sinkhorn(w, w, c, eps, tol=SINKHORN_TOL, max_iter=5000, overrelaxation=OMEGA), cost
    )
    result, ours_s = run(), median_seconds(run, sinkhorn_repeats)
    marginal = float(np.abs(np.asarray(result.plan, np.float64).sum(1) - w).sum())
    note = (
        f"ε = {EPS_RELATIVE:g}·median C = {eps:.1e}, ω = {OMEGA}, tol = {SINKHORN_TOL:g}: ‖γ1 − a‖₁ = {marginal:.0e}, "
        f"{iterations(result)}; {sinkhorn_repeats} timed run(s)"
    )
    row("sinkhorn", ours_s, None, "–", relative(result.value, exact), note)

    if n <= EMD_MAX_N:
        emd_repeats = max(1, min(repeats, 3))
        run = compiled(lambda c: transport.emd(w, w, c), cost)
        result, ours_s = run(), median_seconds(run, emd_repeats)
        pot_s = median_seconds(lambda: ot.emd2(w64, w64, cost64, numItermax=10**8), emd_repeats)
        plan = np.asarray(result.plan, np.float64)
        marginal = max(np.abs(plan.sum(1) - w).max(), np.abs(plan.sum(0) - w).max())
        note = f"max marginal error {marginal:.0e}, {iterations(result)}; {emd_repeats} runs"
        row("emd", ours_s, pot_s, relative(result.value, exact), "–", note)
    else:
        row("emd", None, emd_pot_s, "–", "–", "gan_jax not run: network simplex too slow at this n; POT: 1 run")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join("results", "transport_benchmark.md"))
    args = parser.parse_args()

    header = [
        "# gan_jax.transport vs POT (NumPy backend)",
        "",
        f"{datetime.datetime.now():%Y-%m-%d %H:%M} · {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f} · jax {jax.__version__} "
        f"({jax.devices()[0].platform}), POT {ot.__version__}, float32 data (POT gets the same values in float64).",
        f"Times: median of {args.repeats} runs after compilation (fewer where noted; 1-D and sliced: as many "
        "runs as fill 0.5 s, at least that many). gan_jax's inputs are device arrays, POT's NumPy arrays. "
        "Speed-up = POT time / gan_jax time. Errors are relative differences of the values.",
        "",
        "| n | function | gan_jax (ms) | POT (ms) | POT / gan_jax | rel. diff vs POT | rel. diff vs ot.emd2 | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for line in header:
        print(line, flush=True)
    rows = []
    for n in args.sizes:
        rows += bench_size(n, args.repeats, lambda line: print(line, flush=True))
    footer = [
        "",
        f"Load average at the end: {os.getloadavg()[0]:.1f}. gan_jax's emd is run up to n = {EMD_MAX_N}; POT's "
        f"log-domain Sinkhorn at ε = {POT_EPS_RELATIVE:g}·median C up to n = {POT_SINKHORN_MAX_N} (minutes beyond); "
        f"at ε = {EPS_RELATIVE:g}·median C it does not converge in 5000 iterations (74 s at n = 256, 4 % off "
        "ot.emd2), so that row compares with ot.emd2 only.",
    ]
    table = header + rows + footer
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(footer))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
