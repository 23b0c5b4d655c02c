r"""Claim 2: a classifier told data from generator samples drops toward 50 % accuracy as the generator learns.

One GAN run on the ring of 8 (gan_jax.data.toy "ring8": radius 2, std 0.02) is stopped every `EVERY`
generator steps; at each checkpoint `N` samples of the generator and `N` of the data go to
gan_jax.metrics.two_sample_accuracy: a fresh MLP is trained on half of each set and scored on the other
half, so 0.5 means the two samples cannot be told apart and 1.0 means they are separable. The sliced
Wasserstein-1 distance (gan_jax.metrics.sliced_w1) and the high-quality fraction (3σ, VEEGAN convention)
of the same samples are shown beside it. Reference rows: the same numbers for a second sample of the
data itself (what a perfect generator would score).

The run uses claim 6's training protocol (experiments/lecture/training.py, `train_and_sample`): MLP width 64,
latent 2, the last quarter of the steps at a tenth of the learning rates.

    python -m experiments.lecture.two_sample_classifier --outdir=results/lecture [--quick]
"""

from __future__ import annotations

import jax
import numpy as np

from experiments.configs import common as configs
from experiments.lecture import common
from experiments.lecture.training import DECAY_FRACTION, train_and_sample
from gan_jax import metrics, plotting
from gan_jax.data import toy

NAME = "two_sample_classifier"
METHOD = "gan_gp"  # experiments/configs/common.py METHODS
DATASET = "ring8"
STEPS, EVERY = 3000, 250
WIDTH, BATCH = 64, 256
N = 2000  # samples of each kind per checkpoint: the classifier trains on N/2 + N/2 and is scored on the rest
CLASSIFIER_STEPS = 500
QUICK = dict(steps=800, every=200, width=32, batch=64, n=512, classifier_steps=200)


def run(outdir: str, quick: bool = False) -> dict:
    """Trains one run, scores its checkpoints with the two-sample test; returns the numbers, "markdown", "png"."""
    q = QUICK if quick else {}
    steps, every = q.get("steps", STEPS), q.get("every", EVERY)
    n, classifier_steps = q.get("n", N), q.get("classifier_steps", CLASSIFIER_STEPS)
    cfg = configs.toy(DATASET, METHOD)
    cfg.model.width, cfg.model.latent_dim = q.get("width", WIDTH), 2
    cfg.data.batch_size = q.get("batch", BATCH)
    cfg.train.steps, cfg.train.steps_per_call = steps, every
    at_steps = list(range(0, steps + 1, every))
    decay_from = steps - int(round(DECAY_FRACTION * steps / every)) * every
    fakes, skipped = train_and_sample(cfg, [cfg.seed], at_steps, n, decay_from)
    fakes = fakes[0]

    dist = toy.get(DATASET)
    real_key, reference_key, test_key = jax.random.split(jax.random.key(1234), 3)
    real = dist.sample(real_key, n)
    second_real = dist.sample(reference_key, n)

    def score(sample: np.ndarray, key: jax.Array) -> dict[str, float]:
        acc_key, w_key = jax.random.split(key)
        cover = metrics.mode_coverage(sample, dist.centers(), dist.std)
        return {
            "accuracy": float(metrics.two_sample_accuracy(real, sample, acc_key, steps=classifier_steps)),
            "sliced_w1": float(metrics.sliced_w1(sample, real, w_key)),
            "high_quality": float(cover.high_quality_fraction),
            "modes": int(cover.modes_captured),
        }

    keys = jax.random.split(test_key, len(at_steps) + 1)
    rows = [{"step": s, **score(f, k)} for s, f, k in zip(at_steps, fakes, keys)]
    reference = score(np.asarray(second_real), keys[-1])

    table_rows = [[r["step"], f"{r['accuracy']:.3f}", f"{r['sliced_w1']:.4f}", f"{100 * r['high_quality']:.1f}",
                   r["modes"]] for r in rows]
    table_rows.append(["data vs data", f"{reference['accuracy']:.3f}", f"{reference['sliced_w1']:.4f}",
                       f"{100 * reference['high_quality']:.1f}", reference["modes"]])
    markdown = "\n".join([
        f"One `{METHOD}` run on `{DATASET}` (radius 2, std 0.02; MLP width {cfg.model.width}, latent 2, batch "
        f"{cfg.data.batch_size}, {steps} generator steps, steps {decay_from}–{steps} at a tenth of the learning "
        f"rates; {int(skipped[0])} non-finite steps skipped). At each checkpoint a fresh MLP (64, 64) is "
        f"trained for {classifier_steps} Adam steps on {n // 2} data + {n // 2} generator samples and scored on "
        f"{n - n // 2} + {n - n // 2} held-out ones (0.5 = indistinguishable). Sliced W₁ and HQ % (3σ) on "
        "the same samples; the last row scores a second sample of the data itself.",
        "",
        common.table(["step", "two-sample accuracy", "sliced W₁ to data", "HQ %", "modes (/8)"], table_rows),
    ])
    common.write_markdown(outdir, NAME, markdown)
    x = np.asarray(at_steps, dtype=np.float64)
    png = plotting.curves(
        common.png_path(outdir, NAME), x,
        {"two-sample accuracy": [r["accuracy"] for r in rows],
         "data vs data": np.full_like(x, reference["accuracy"]),
         "chance (0.5)": np.full_like(x, 0.5)},
        xlabel="generator step", ylabel="held-out accuracy",
        title=f"Real-vs-generated classifier during a {METHOD} run on {DATASET}")
    return {"rows": rows, "reference": reference, "skipped": int(skipped[0]), "markdown": markdown, "png": png}


if __name__ == "__main__":
    common.main(run, NAME)
