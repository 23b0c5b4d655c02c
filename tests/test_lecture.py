"""The lecture scripts (experiments/lecture/) reproduce their claims: each run(quick=True) is checked on its numbers.

References are hand-worked values (log 2, log 100, moment matching of the mixture, |θ|, 1/(2n²), 1/n) and
a float64 NumPy evaluation of the JSD for the optimal-discriminator identity.
"""

import math

import numpy as np
import pytest

from experiments.lecture import (
    convergence_hierarchy,
    disjoint_supports,
    likelihood_vs_samples,
    mode_covering_seeking,
    optimal_discriminator,
    run_all,
)

LOG2 = math.log(2.0)


@pytest.fixture(scope="module")
def likelihood(run_lecture_quick):
    return run_lecture_quick(likelihood_vs_samples)


@pytest.fixture(scope="module")
def discriminator(run_lecture_quick):
    return run_lecture_quick(optimal_discriminator)


@pytest.fixture(scope="module")
def covering(run_lecture_quick):
    return run_lecture_quick(mode_covering_seeking)


@pytest.fixture(scope="module")
def disjoint(run_lecture_quick):
    return run_lecture_quick(disjoint_supports)


@pytest.fixture(scope="module")
def hierarchy(run_lecture_quick):
    return run_lecture_quick(convergence_hierarchy)


# Claim 1 ----------------------------------------------------------------------------------------------


def test_mixture_has_good_likelihood_and_bad_samples(likelihood):
    mixture = likelihood["models"]["0.01·p + 0.99·noise"]
    log100 = math.log(100.0)
    # log(0.01 p + 0.99 n) ≥ log p − log 100 on every point, hence on average.
    assert mixture["min_pointwise_gap"] >= -log100 - 1e-4
    assert likelihood["truth_test_ll"] - mixture["test_ll"] <= log100 + 1e-4
    assert mixture["hq_percent"] < 5.0


def test_tiny_bandwidth_kde_has_great_samples_and_terrible_likelihood(likelihood):
    kde = likelihood["models"]["KDE h=0.0001"]
    truth = likelihood["models"]["truth p"]
    assert kde["hq_percent"] > 90.0 and kde["modes"] == 8
    assert kde["test_ll"] < likelihood["truth_test_ll"] - 100.0  # far below the truth on held-out data
    assert kde["train_ll"] > truth["train_ll"] + 3.0  # memorised: better than the truth on its training set
    assert truth["hq_percent"] > 95.0 and truth["gap"] == 0.0


# Claim 3 ----------------------------------------------------------------------------------------------


def _jsd_float64() -> float:
    """JSD(½N(−2, 0.5²) + ½N(2, 0.5²), N(0, 1.5²)) by a float64 Riemann sum on [−12, 12]."""
    x = np.linspace(-12.0, 12.0, 240_001)
    normal = lambda m, s: np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))  # noqa: E731
    p = 0.5 * normal(-2.0, 0.5) + 0.5 * normal(2.0, 0.5)
    q = normal(0.0, 1.5)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / m), 0.0) + np.where(q > 0, q * np.log(q / m), 0.0)
    return 0.5 * float(np.sum(terms) * (x[1] - x[0]))


def test_value_at_optimal_discriminator_is_two_jsd_minus_two_log2(discriminator):
    assert discriminator["all_finite"]
    assert abs(discriminator["v_star_minus_identity"]) < 1e-5
    jsd = _jsd_float64()
    np.testing.assert_allclose(discriminator["jsd"], jsd, atol=1e-5)
    np.testing.assert_allclose(discriminator["v_star"], 2 * jsd - 2 * LOG2, atol=2e-5)


def test_trained_discriminator_is_close_to_optimal(discriminator):
    assert discriminator["d_mean_abs_error"] < 0.05
    assert discriminator["d_mass_weighted_abs_error"] < 0.03
    assert discriminator["v_trained"] <= discriminator["v_star"] + 1e-6  # D* maximises V(G, ·)
    assert discriminator["v_trained"] > discriminator["v_star"] - 0.02


# Claim 4 ----------------------------------------------------------------------------------------------


def test_forward_kl_covers_both_modes(covering):
    mu, sigma = covering["moment_matching"]
    assert mu == pytest.approx(0.0, abs=1e-12)
    assert sigma == pytest.approx(math.sqrt(0.5**2 + 2.0**2), rel=1e-9)  # Var = σ² + E μ_k² − (E μ_k)²
    for fit in covering["fits"]["kl"][:2]:  # inits (±0.5, 1)
        assert abs(fit["mu"]) < 0.3 and fit["sigma"] > 1.5
        np.testing.assert_allclose([fit["mu"], fit["sigma"]], [0.0, math.sqrt(4.25)], atol=0.02)


def test_reverse_kl_locks_onto_one_mode(covering):
    first, second, _ = covering["fits"]["reverse_kl"]
    for fit, mode in ((first, 2.0), (second, -2.0)):  # inits μ0 = 0.5 and −0.5
        assert abs(fit["mu"] - mode) < 0.2
        assert abs(fit["sigma"] - 0.5) < 0.1
        # q ≈ one component, p ≈ ½ q there: KL(q‖p) ≈ log 2.
        assert fit["reverse KL(q‖p)"] == pytest.approx(LOG2, abs=0.01)
        assert fit["forward KL(p‖q)"] > 5.0


# Claim 5 ----------------------------------------------------------------------------------------------


def test_disjoint_supports_table(disjoint):
    for theta, row in disjoint["table"].items():
        if theta == 0.0:
            assert row["kl"] == 0.0 and row["js"] == 0.0 and row["tv"] == 0.0 and row["w1"] == 0.0
        else:
            assert row["kl"] == math.inf
            assert row["js"] == pytest.approx(LOG2, abs=1e-6)
            assert row["tv"] == pytest.approx(1.0, abs=1e-6)
            assert row["w1"] == pytest.approx(abs(theta), abs=1e-5)
    assert disjoint["w1_half_sampler"] == pytest.approx(0.5, abs=1e-5)


def test_disjoint_supports_curves(disjoint):
    theta, dense = disjoint["dense_theta"], disjoint["dense"]
    off = theta != 0.0
    assert off.sum() == len(theta) - 1
    assert np.all(np.isinf(dense["kl"][off])) and np.all(dense["kl"][~off] == 0.0)
    np.testing.assert_allclose(dense["js"][off], LOG2, atol=1e-6)
    np.testing.assert_allclose(dense["w1"], np.abs(theta), atol=1e-5)
    np.testing.assert_allclose(disjoint["cell_mass_q"], 1.0, atol=1e-5)


# Claim 7 ----------------------------------------------------------------------------------------------


def test_overlapping_sequence_converges_in_everything(hierarchy):
    n, a = hierarchy["n"], hierarchy["overlapping"]
    np.testing.assert_allclose(a["kl"], 1.0 / (2 * n**2), rtol=1e-3)
    np.testing.assert_allclose(a["kl_closed"], 1.0 / (2 * n**2), rtol=1e-5)
    np.testing.assert_allclose(a["w1"], 1.0 / n, rtol=1e-3)
    np.testing.assert_allclose(a["w2_closed"], 1.0 / n, rtol=1e-4)
    assert np.all(a["js"] <= 0.5 / (2 * n**2) + 1e-7)  # JSD ≤ ¼(KL + reverse KL)
    assert np.all(a["tv"] <= np.sqrt(1.0 / (4 * n**2)) + 1e-6)  # Pinsker
    # Small shifts δ: JSD ≈ δ²/8 (Fisher information of N(μ, 1) is 1).
    np.testing.assert_allclose(a["js"][-1], 1.0 / (8 * n[-1] ** 2), rtol=0.02)
    assert np.all(np.diff(a["js"]) < 0)


def test_disjoint_sequence_converges_only_in_w(hierarchy):
    n, b = hierarchy["n"], hierarchy["disjoint"]
    assert np.all(np.isinf(b["kl"]))
    np.testing.assert_allclose(b["js"], LOG2, atol=1e-6)
    np.testing.assert_allclose(b["tv"], 1.0, atol=1e-6)
    np.testing.assert_allclose(b["w1"], 1.0 / n, rtol=1e-6)


# run_all ----------------------------------------------------------------------------------------------


def test_run_all_writes_summary(tmp_path, capsys):
    claims = (run_all.Claim(7, "hierarchy", "convergence_hierarchy"),)
    outdir = str(tmp_path / "lecture")
    results = run_all.run_all(outdir, quick=True, claims=claims)
    assert results["convergence_hierarchy"]["markdown"]
    with open(tmp_path / "lecture.md", encoding="utf-8") as f:
        summary = f.read()
    assert "## Claim 7: hierarchy" in summary
    assert "](lecture/convergence_hierarchy.png)" in summary
    assert results["convergence_hierarchy"]["markdown"].strip() in summary
    assert "Ran 1 lecture scripts" in capsys.readouterr().out


def test_run_all_fails_on_a_missing_script_before_running_any(tmp_path):
    """Every registered script is imported first: a wrong name stops run_all before the scripts before it run."""
    claims = (
        run_all.Claim(7, "hierarchy", "convergence_hierarchy"),
        run_all.Claim(99, "not written", "no_such_lecture_script"),
    )
    with pytest.raises(ModuleNotFoundError, match="no_such_lecture_script"):
        run_all.run_all(str(tmp_path / "lecture"), quick=True, claims=claims)
    assert not (tmp_path / "lecture").exists() and not (tmp_path / "lecture.md").exists()
