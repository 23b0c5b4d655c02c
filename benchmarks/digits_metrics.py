"""The digits run's FD/KID/IS/precision/recall/density/coverage over seeds, with the real-vs-real floor computed in
the same feature extractor.

1. Runs: experiments/configs/digits_wgan_gp.py (eval.extractor = classifier), `config.seed = s` for each seed, trained
   through `gan_jax.trainer.train_and_evaluate` in <workdir_root>/seed<s>. A finished workdir is resumed: nothing is
   trained and only the final evaluation runs again. Each run's values are read from its summary.json: the library's
   own final evaluation, train.eval_samples (1000) generated samples against all 1,797 digits.
2. One extractor: every run trains its classifier with the same key (`run_samples.CLASSIFIER_SEED`, not the run's
   seed), so every seed scores in one feature space. The floors use that classifier, trained once more into
   <workdir_root>/classifier; after each run the workdir's classifier file is checked byte for byte against it.
3. Floor: in that classifier's features, a random permutation of the 1,797 digits is cut into disjoint "samples"
   and "reference" rows, and the samples are scored against the reference by `scoring.feature_metrics`, the function
   that scores the runs. Counts: the floor's samples are as many reals as a run's samples (1000), so IS (10 splits
   of 100) and the means over samples (precision, density) average over equal counts. Its reference is the
   remaining 797 reals, not all 1,797 as for the runs. Halves (898 vs 899) are a second floor row. Each floor is
   mean ± std over --splits random splits.

    python benchmarks/digits_metrics.py           # 5 seeds × 4000 steps -> results/digits_metrics.md
    python benchmarks/digits_metrics.py --quick   # 2 seeds × 100 steps, 2 splits
"""

from __future__ import annotations

import argparse
import datetime
import filecmp
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/digits_metrics.py` from anywhere
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import ml_collections  # noqa: E402

from benchmarks import report  # noqa: E402
from experiments.configs import digits_wgan_gp  # noqa: E402
from gan_jax import evaluation, metrics as metrics_lib, run_samples, scoring, trainer  # noqa: E402
from gan_jax.data import make_source  # noqa: E402

EXTRACTOR = "classifier"
# (column, summary key under EXTRACTOR/)
COLUMNS = (("FD", "fd"), ("KID", "kid"), ("IS", "is"), ("precision", "precision"), ("recall", "recall"),
           ("density", "density"), ("coverage", "coverage"))
QUICK = dict(seeds=2, steps=100, splits=2)


def run_config(seed: int, steps: int | None = None) -> ml_collections.ConfigDict:
    """digits_wgan_gp's config: config.seed = seed, train.steps = steps (None: the config's), classifier features."""
    cfg = digits_wgan_gp.get_config()
    cfg.seed = seed
    if steps is not None:
        cfg.train.steps = steps
    cfg.eval.extractor = EXTRACTOR  # not inception, even where $GAN_JAX_INCEPTION_WEIGHTS is set
    return cfg


def train_run(cfg: ml_collections.ConfigDict, workdir: Path, classifier_file: Path) -> dict[str, Any]:
    """summary.json of cfg's run in `workdir`, trained, resumed or re-evaluated; SystemExit if the run ended at
    another step or its classifier is not the one in `classifier_file`."""
    summary = trainer.train_and_evaluate(cfg, str(workdir))
    if summary["step"] != cfg.train.steps:
        raise SystemExit(f"{workdir} holds a run of {summary['step']} steps, not {cfg.train.steps}: "
                         "give another --workdir_root or --steps")
    if not filecmp.cmp(classifier_file, workdir / metrics_lib.CLASSIFIER_FILE, shallow=False):
        raise SystemExit(f"the run in {workdir} trained another classifier than {classifier_file}")
    return summary


def split(n: int, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(samples, reference): a random permutation of range(n) cut after n_samples (disjoint, each index once)."""
    if not 0 < n_samples < n:
        raise ValueError(f"n_samples={n_samples} must be in [1, {n - 1}] to leave a reference of {n} rows")
    order = rng.permutation(n)
    return order[:n_samples], order[n_samples:]


def subset(features: scoring.FeatureSet, rows: np.ndarray) -> scoring.FeatureSet:
    """The FeatureSet of `rows` of `features`."""
    logits = None if features.logits is None else features.logits[rows]
    return scoring.FeatureSet(features.features[rows], logits)


def score_rows(real: scoring.FeatureSet, samples: np.ndarray, reference: np.ndarray, names: tuple[str, ...],
               cfg: ml_collections.ConfigDict) -> dict[str, float]:
    """{classifier/metric: value} of real rows `samples` scored as generated samples against real rows `reference`,
    by scoring.feature_metrics as a run is scored."""
    return scoring.feature_metrics(names, subset(real, reference), subset(real, samples), EXTRACTOR, cfg)


def real_vs_real(real: scoring.FeatureSet, n_samples: int, splits: int, names: tuple[str, ...],
                 cfg: ml_collections.ConfigDict) -> list[dict[str, float]]:
    """score_rows of each of `splits` random splits (split i: numpy default_rng(i)) into n_samples samples and the
    rest as reference."""
    return [score_rows(real, *split(len(real.features), n_samples, np.random.default_rng(i)), names, cfg)
            for i in range(splits)]


def mean_std(values: Sequence[float]) -> str:
    """'mean ± std' (std with ddof 1) of the values, 3 significant digits; the value alone for one."""
    x = np.asarray(values, np.float64)
    return f"{x[0]:.3g}" if len(x) == 1 else f"{x.mean():.3g} ± {x.std(ddof=1):.3g}"


def table(runs: Sequence[tuple[int, dict[str, Any], float]], run_counts: str,
          floors: Sequence[tuple[str, str, list[dict[str, float]]]]) -> list[str]:
    """The markdown table: one row per run (seed, summary, seconds), their mean ± std over seeds, and one row per
    floor (name, counts, values of each split)."""
    header = ["", "samples vs reference", *(c[0] for c in COLUMNS), "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(name: str, counts: str, values: Sequence[dict[str, Any]], seconds: str) -> str:
        cells = [mean_std([v[f"{EXTRACTOR}/{key}"] for v in values]) for _, key in COLUMNS]
        return "| " + " | ".join([name, counts, *cells, seconds]) + " |"

    lines += [row(f"seed {seed}", run_counts, [summary], f"{seconds:.0f}") for seed, summary, seconds in runs]
    if len(runs) > 1:
        lines.append(row(f"**mean ± std, {len(runs)} seeds**", run_counts, [s for _, s, _ in runs], "–"))
    lines += [row(name, counts, values, "–") for name, counts, values in floors]
    return lines


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        return platform.processor() or platform.machine()


def load() -> str:
    """The 1, 5 and 15 min load averages."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags; --quick sets QUICK's seeds, steps and splits."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="runs, config.seed = 0 .. seeds − 1")
    p.add_argument("--steps", type=int, default=None, help="generator steps of each run (default: the config's)")
    p.add_argument("--splits", type=int, default=5, help="random real-vs-real splits of each floor")
    p.add_argument("--workdir_root", default=None,
                   help="folder of the runs' workdirs and the shared classifier (default runs/digits_metrics, "
                        "runs/digits_metrics_quick with --quick); finished workdirs are reused")
    p.add_argument("--out", default=str(REPO / "results" / "digits_metrics.md"), help="markdown report path")
    p.add_argument("--quick", action="store_true", help="2 seeds × 100 steps, 2 splits")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.splits = QUICK["seeds"], QUICK["steps"], QUICK["splits"]
    if args.workdir_root is None:
        args.workdir_root = str(REPO / "runs" / ("digits_metrics_quick" if args.quick else "digits_metrics"))
    return args


def notes(n: int, n_fake: int, dim: int, trace: float, kid_subsets: int) -> list[str]:
    """The notes under the table: n reals, n_fake samples per run, `dim` features, tr Σ of the reals' features."""
    n_ref = n - n_fake
    mean_term = {counts: trace * (1 / counts[0] + 1 / counts[1]) for counts in ((n_fake, n_ref), (n_fake, n))}
    return [
        "- Comparable with published FID: none of these numbers. They are computed in the `classifier` extractor's "
        f"{dim} features (an MLP trained on the digits), so FD is `classifier/fd`, not FID, and every column "
        "compares runs on these digits only (README, Evaluation).",
        f"- Runs: summary.json's `classifier/*` values, {n_fake} generated samples (train.eval_samples) against all "
        f"{n} digits. Seed rows show one value. The mean row and the floors show mean ± std (ddof 1) over seeds "
        f"or splits. KID is the mean over {kid_subsets} subsets, unscaled: these features are large (tr Σ = "
        f"{trace:.3g}), so KID is not small and ×10³ would not read better. Seconds: train_and_evaluate's wall "
        "time, including compilation; a reused workdir only re-evaluates.",
        f"- Floors: disjoint random splits of the {n} digits, the samples scored against the reference by "
        f"`scoring.feature_metrics`, as the runs are. The first floor's samples match the runs' {n_fake}; its "
        f"reference is the remaining {n_ref} reals, not {n}. FD's upward bias grows with 1/n_samples + "
        f"1/n_reference: its mean term alone, tr Σ·(1/n_samples + 1/n_reference) with tr Σ = {trace:.3g}, is "
        f"{mean_term[n_fake, n_ref]:.3g} for the floor against {mean_term[n_fake, n]:.3g} at the runs' "
        f"{n_fake} vs {n}, so the floor's FD is above what {n_fake} vs {n} would give. KID is unbiased; its "
        f"subsets are min(1000, both counts) = {min(1000, n_ref)} reals. The k-NN metrics take their radii from "
        f"a {n_ref}-point reference: larger balls than {n} points give. The halves row shows how much the floor "
        "moves with the counts.",
        "- Every run trains its classifier with the same key (`run_samples.CLASSIFIER_SEED`), whatever its seed; each "
        "run's classifier file is checked byte for byte against the one the floors use.",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Trains or reuses the runs, computes the floors, prints the report and writes it to --out."""
    args = parse_args(argv)
    command = " ".join(["python benchmarks/digits_metrics.py", *(sys.argv[1:] if argv is None else argv)])
    started, load_at_start = time.perf_counter(), load()
    root = Path(args.workdir_root)
    base = run_config(0, args.steps)
    source = make_source(base.data)
    classifier = run_samples.run_classifier(base, source, str(root / "classifier"))
    classifier_file = root / "classifier" / metrics_lib.CLASSIFIER_FILE
    extractor = scoring.make_extractor(base, source, classifier)

    runs = []
    for seed in range(args.seeds):
        print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] seed {seed}: {root / f'seed{seed}'}",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        summary = train_run(run_config(seed, args.steps), root / f"seed{seed}", classifier_file)
        runs.append((seed, summary, time.perf_counter() - t0))

    real, _ = scoring.reference_features(base, source, extractor, jax.random.key(0), 0, cache_dir=None,
                                         write_cache=False)
    n, n_fake = len(real.features), int(base.train.eval_samples)
    names = scoring.metric_names(base, extractor)
    floors = [(f"real vs real, {args.splits} splits", f"{n_fake} vs {n - n_fake}",
               real_vs_real(real, n_fake, args.splits, names, base)),
              (f"real vs real, halves, {args.splits} splits", f"{n // 2} vs {n - n // 2}",
               real_vs_real(real, n // 2, args.splits, names, base))]
    trace = float(np.trace(evaluation.mean_cov(evaluation.feature_stats(real.features))[1]))
    seconds = time.perf_counter() - started

    lines = ["# Digits WGAN-GP: evaluation over seeds and the real-vs-real floor (benchmarks/digits_metrics.py)", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"- machine: {cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__} ({jax.default_backend()})",
             f"- load average (1, 5, 15 min) at start: {load_at_start}; at the end: {load()}",
             f"- command: `{command}`; {seconds:.0f} s in all",
             f"- runs: experiments/configs/digits_wgan_gp.py, {base.train.steps} steps, seeds 0–{args.seeds - 1}, "
             f"workdirs {root}/seed<s>; extractor: the runs' classifier (key {run_samples.CLASSIFIER_SEED}) "
             f"({classifier_file}, identity {extractor.identity[:12]}), shared by every run and the floors", "",
             *table(runs, f"{n_fake} vs {n}", floors), "",
             *notes(n, n_fake, extractor.dim, trace, int(base.eval.kid_subsets)), ""]
    text = "\n".join(lines)
    report.publish(text, args.out, f"; runs in {root}")


if __name__ == "__main__":
    main()
