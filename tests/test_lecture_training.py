"""The lecture scripts that train GANs (claims 2, 4 by training, and 6), at their quick sizes, and their shared
training helper (experiments/lecture/training.py).

References: two samples of one distribution are indistinguishable (two-sample accuracy 0.5 up to sampling
noise); an untrained generator's samples near the origin are separable from a ring of radius 2 (accuracy
≈ 1); the 3σ high-quality fraction of 2-D Gaussian data is P(χ²₂ ≤ 9) = 1 − e^{−4.5}; the helper's samples
must equal those of the engine's own training path (gan_jax.trainer.train_and_evaluate + restore_state); the
forward-KL optimum over Gaussians of ½N(−2, 0.5²) + ½N(2, 0.5²) is moment matching, μ = 0, σ = √(0.5² + 2²), and
the reverse-KL optimum near a mode is that mode's component, μ = ±2, σ = 0.5 (claim 4).
"""

import math
import os
import shutil

import jax
import numpy as np
import pytest

from gan_jax import optimizers, trainer
from experiments.configs import common as configs
from experiments.configs import ring8_cover
from experiments.lecture import fgan_covering_seeking, mode_collapse, training, two_sample_classifier
from gan_jax import engine as engine_lib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_sample(run_lecture_quick):
    return run_lecture_quick(two_sample_classifier)


@pytest.fixture(scope="module")
def collapse(run_lecture_quick):
    return run_lecture_quick(mode_collapse)


@pytest.fixture(scope="module")
def fgan(run_lecture_quick):
    return run_lecture_quick(fgan_covering_seeking)


def test_two_sample_accuracy_falls_toward_chance(two_sample):
    q = two_sample_classifier.QUICK
    rows = two_sample["rows"]
    assert [r["step"] for r in rows] == list(range(0, q["steps"] + 1, q["every"]))
    accuracy = np.array([r["accuracy"] for r in rows])
    assert np.all((accuracy >= 0.0) & (accuracy <= 1.0))
    assert accuracy[0] > 0.95  # G(z) of the initial generator sits near 0, far from the ring of radius 2
    assert accuracy[-1] < accuracy[0] - 0.1
    assert accuracy[-1] < 0.75  # most of the way from separable (1.0) to indistinguishable (0.5)
    assert rows[-1]["sliced_w1"] < rows[0]["sliced_w1"]
    # Data vs data: 256 held-out points per class, so the accuracy's standard error is about 0.022.
    assert abs(two_sample["reference"]["accuracy"] - 0.5) < 0.1
    assert two_sample["skipped"] == 0


def test_mode_collapse_table_covers_every_method(collapse):
    results = collapse["results"]
    assert set(results) == {"ring8", "grid25"}
    for dataset, n_modes in (("ring8", 8), ("grid25", 25)):
        assert set(results[dataset]) == {"data", *mode_collapse.METHODS}
        for method in mode_collapse.METHODS:
            (run,) = results[dataset][method]["runs"]  # quick: one seed
            assert 0 <= run["modes"] <= n_modes
            assert 0.0 <= run["hq"] <= 1.0
            assert math.isnan(run["reverse_kl"]) or 0.0 <= run["reverse_kl"] <= math.log(n_modes) + 1e-6
            assert f"| {method} |" in collapse["markdown"]
        # The data itself: every mode, and the 2-D 3σ fraction 1 − e^{−4.5} (500 samples: std error 0.005).
        (data,) = results[dataset]["data"]["runs"]
        assert data["modes"] == n_modes
        np.testing.assert_allclose(data["hq"], 1.0 - math.exp(-4.5), atol=0.025)
        # Against fresh samples of itself the data is the ceiling of the k-NN metrics: near 1 (500 points each).
        assert min(data["precision"], data["recall"], data["coverage"]) > 0.9, data
        assert 0.85 < data["density"] < 1.15, data
        for method in mode_collapse.METHODS:
            (run,) = results[dataset][method]["runs"]
            assert all(0.0 <= run[key] <= 1.0 for key in ("precision", "recall", "coverage")), run
            assert 0.0 <= run["density"] <= 1.0 / mode_collapse.DC_K * 500, run  # at most every ball, k at a time
    steps = mode_collapse.QUICK["steps"]  # quick: one step count for both datasets, no decay
    assert "constant learning rates" in collapse["markdown"]
    assert f"| {steps} / {steps} |" in collapse["markdown"]
    for source in ("VEEGAN Table 1", "PacGAN Table 1", "GDPP Table 1"):
        assert source in collapse["markdown"]
    assert "| 99.3 |" in collapse["markdown"] and "| 0.45 |" in collapse["markdown"]
    assert collapse["stale"] == []
    for figure in collapse["figures"]:
        with open(figure, "rb") as f:
            assert f.read(8) == PNG_MAGIC


@pytest.mark.parametrize("dataset", ["ring8", "grid25"])
def test_samples_on_the_centres_score_every_mode_and_no_recall(dataset):
    """Every sample on a mode centre: all modes, 100 % HQ, reverse KL 0, precision 1; recall 0 (a sample's k-th
    neighbour is a copy of it at distance 0, so no data point lies inside a sample's ball), coverage below the
    data's 0.96: what over-concentration looks like, and what modes/HQ/reverse KL cannot see."""
    dist = mode_collapse.toy.get(dataset, **mode_collapse.DATASETS[dataset])
    reference = np.asarray(dist.sample(jax.random.key(mode_collapse.REFERENCE_SEED), 1000))
    centres = np.repeat(np.asarray(dist.means), 40, axis=0)
    scores = mode_collapse._scores(centres, dist, reference)
    assert scores["modes"] == len(dist.means) and scores["hq"] == 1.0 and abs(scores["reverse_kl"]) < 1e-5  # float32
    assert scores["precision"] == 1.0 and scores["recall"] == 0.0
    assert scores["coverage"] < 0.9, scores


def test_spread_takes_a_tenth_of_the_grid_penalty_with_the_learning_rate_decay():
    """spread on the grid: λ = 0.1 for the first 9000 of 12000 steps, then 0.01, where the learning rates drop
    to 0.1×; on the ring λ = 0.001 throughout."""
    spread = mode_collapse.METHODS["spread"]
    grid = mode_collapse.make_config("grid25", spread, 12000, mode_collapse.MODEL)
    assert tuple(grid.optim.generator.boundaries) == (9000,) == tuple(grid.loss.penalty_schedule.boundaries)
    weight = optimizers.penalty_weight_schedule(grid.loss)
    np.testing.assert_allclose([float(weight(t)) for t in (0, 8999, 9000, 11999)], [0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    ring = mode_collapse.make_config("ring8", spread, 8000, mode_collapse.MODEL)
    assert ring.loss.penalty_schedule.schedule == "constant" and ring.loss.penalty_weight == 0.001


def test_cover_slows_the_ring_generator_and_decays_half_the_steps_and_keeps_spread_on_the_grid():
    """cover on the ring (and experiments/configs/ring8_cover.py): the generator at 1.5e-3 against the critic's
    3e-3, both × 0.1 from step 4000 of 8000; on the grid exactly spread's config."""
    cover, spread = mode_collapse.METHODS["cover"], mode_collapse.METHODS["spread"]
    ring = mode_collapse.make_config("ring8", cover, 8000, mode_collapse.MODEL)
    g_rate, c_rate = (optimizers.learning_rate_schedule(ring.optim[role]) for role in ("generator", "critic"))
    np.testing.assert_allclose([float(g_rate(t)) for t in (0, 3999, 4000, 7999)], [1.5e-3, 1.5e-3, 1.5e-4, 1.5e-4],
                               rtol=1e-6)
    np.testing.assert_allclose([float(c_rate(t)) for t in (0, 3999, 4000, 7999)], [3e-3, 3e-3, 3e-4, 3e-4], rtol=1e-6)
    assert ring.loss.penalty_weight == 0.001 and ring.model.latent_dim == 8 and ring.train.ema_decay == 0.99
    grid = [mode_collapse.make_config("grid25", m, 12000, mode_collapse.MODEL).to_dict() for m in (cover, spread)]
    assert grid[0] == grid[1]
    assert ring8_cover.get_config().to_dict() == ring.to_dict()  # the CLI's config of the recipe


def test_train_and_sample_matches_the_engine_cli(tmp_path):
    """The helper (two phases at the same learning rate) reproduces the CLI's run step for step."""
    cfg = configs.toy("ring8", "gan_gp", "smoke")
    cfg.model.width, cfg.model.depth = 8, 1
    cfg.train.steps, cfg.train.steps_per_call = 20, 10
    cfg.train.checkpoint_every, cfg.train.log_every, cfg.train.sample_every = 10, 10, 0
    cfg.train.eval_samples = 64
    cfg.seed = 3
    cfg.parallel.num_devices = 1  # the helper runs on one device; same reduction order, same numbers
    samples, skipped = training.train_and_sample(cfg, [3], [10, 20], 64, decay_from=10, decay_factor=1.0)
    assert samples.shape == (1, 2, 64, 2) and skipped.tolist() == [0]

    trainer.train_and_evaluate(cfg, str(tmp_path), progress=False)
    state = trainer.restore_state(str(tmp_path))
    engine = engine_lib.make_engine(cfg, (2,))
    z = jax.random.normal(jax.random.key(cfg.seed + 1), (64, cfg.model.latent_dim))
    expected = engine_lib.make_sampler(engine)(state.generator_params, z)
    np.testing.assert_allclose(samples[0, -1], np.asarray(expected), rtol=1e-5, atol=1e-6)
    assert not np.allclose(samples[0, 0], samples[0, 1])


def test_train_and_sample_rejects_unordered_steps():
    cfg = configs.toy("ring8", "gan", "smoke")
    with pytest.raises(ValueError, match="at_steps must be non-negative and increasing"):
        training.train_and_sample(cfg, [0], [20, 10], 8)


def test_mean_std_counts_undefined_runs_apart():
    """Reverse KL is NaN for a run with no high-quality sample: the mean is over the other runs, and says so."""
    assert mode_collapse._mean_std([1.0, 2.0, 3.0]) == "2.00 ± 0.82"  # population std of 1, 2, 3: √(2/3)
    assert mode_collapse._mean_std([math.nan, 0.5, 0.7], digits=3) == "0.600 ± 0.100 (1 of 3 runs undefined)"
    assert mode_collapse._mean_std([math.nan, math.nan]) == "undefined"


def test_mode_collapse_critic_samplers_report_their_statistics(collapse):
    """DRS keeps a fraction of its proposals (≥ 1/proposals, else it raises); each MH chain accepts ≤ K − 1 proposals."""
    k = mode_collapse.QUICK["proposals"]
    for dataset in ("ring8", "grid25"):
        (accepted,) = collapse["results"][dataset]["best+drs"]["statistic"]
        assert 1.0 / k <= accepted <= 1.0
        (per_chain,) = collapse["results"][dataset]["best+mh"]["statistic"]
        assert 0.0 <= per_chain <= k - 1
        assert collapse["results"][dataset]["best"]["statistic"] == []


def test_mode_collapse_reruns_some_methods_and_keeps_or_flags_the_others(collapse, tmp_path):
    """A run of some methods updates their rows, keeps the others' when the settings match, flags them when not."""
    outdir = str(tmp_path / "out")
    shutil.copytree(os.path.dirname(collapse["png"]), outdir)
    again = mode_collapse.run(outdir, quick=True, methods=["gan"], seeds=2)
    assert again["stale"] == []
    assert len(again["results"]["ring8"]["gan"]["runs"]) == 2
    assert again["results"]["grid25"]["wgan_gp"] == collapse["results"]["grid25"]["wgan_gp"]
    assert "| gan | 2 |" in again["markdown"]

    other = mode_collapse.run(outdir, quick=True, methods=["gan"], steps=20)  # other settings: the rest is stale
    assert set(other["results"]["ring8"]) == {"data", "gan"}
    assert "ring8/wgan_gp" in other["stale"] and "ring8/gan" not in other["stale"]
    with pytest.raises(ValueError, match="unknown mode-collapse method 'no_such_method'; valid names: gan, gan_fast"):
        mode_collapse.run(outdir, quick=True, methods=["no_such_method"])


def test_fgan_saddle_forms_cover_or_seek_as_their_divergence(fgan):
    fits = fgan["fits"]
    starts = [r["init"] for r in fits[("fgan_reverse_kl", "saddle")]]
    assert len(starts) >= 3
    # Reverse KL (saddle form): every run locks onto the mode on the side it started from, N(±2, 0.5²).
    for r, (mu0, _) in zip(fits[("fgan_reverse_kl", "saddle")], starts):
        assert abs(r["mu"] - 2.0 * np.sign(mu0)) < 0.3 and abs(r["sigma"] - 0.5) < 0.25, r
    # Forward KL (saddle form) spreads towards the moment-matching fit σ = 2.06; reverse KL stays narrow.
    sigma_forward = np.mean([r["sigma"] for r in fits[("fgan_kl", "saddle")]])
    sigma_reverse = np.mean([r["sigma"] for r in fits[("fgan_reverse_kl", "saddle")]])
    assert sigma_forward > sigma_reverse + 0.4
    # The library's (alternative) generator loss turns the KL f-GAN into a mode seeker: every run near ±2.
    for r in fits[("fgan_kl", "alternative")]:
        assert abs(abs(r["mu"]) - 2.0) < 0.3 and r["sigma"] < 0.8, r


def test_fgan_gradient_descent_references_match_claim_4(fgan):
    """Exact gradient descent on forward KL reaches the moment-matching closed form from every start."""
    mu, sigma = fgan["moment_matching"]
    assert mu == pytest.approx(0.0, abs=1e-12) and sigma == pytest.approx(math.sqrt(0.5**2 + 2.0**2))
    for r in fgan["fits"][("fgan_kl", "saddle")]:
        np.testing.assert_allclose(r["reference"], (mu, sigma), atol=0.01)
    for r in fgan["fits"][("fgan_reverse_kl", "saddle")]:
        np.testing.assert_allclose(np.abs(r["reference"]), (2.0, 0.5), atol=0.01)
    assert "| KL(Q‖P) | `fgan_reverse_kl` | saddle" in fgan["markdown"]
