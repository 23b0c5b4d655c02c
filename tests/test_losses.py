"""Tests for gan_jax.losses against hand-worked values, naive float64 formulas and TF-GAN's published values."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import losses
from gan_jax.registry import Registry

ALL = ("minimax", "non_saturating", "wasserstein", "hinge", "least_squares")
FGAN = ("fgan_kl", "fgan_reverse_kl", "fgan_js", "fgan_pearson", "fgan_squared_hellinger")


def _d(logits):
    """D = sigmoid(logit), naive float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


# Naive float64 transcriptions of the contract's formulas: (discriminator(real, fake), generator(fake)).
REFERENCE = {
    "minimax": (
        lambda r, f: -np.mean(np.log(_d(r))) - np.mean(np.log(1 - _d(f))),
        lambda f: np.mean(np.log(1 - _d(f))),
    ),
    "non_saturating": (
        lambda r, f: -np.mean(np.log(_d(r))) - np.mean(np.log(1 - _d(f))),
        lambda f: -np.mean(np.log(_d(f))),
    ),
    "wasserstein": (lambda r, f: np.mean(f) - np.mean(r), lambda f: -np.mean(f)),
    "hinge": (
        lambda r, f: np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f)),
        lambda f: -np.mean(f),
    ),
    "least_squares": (
        lambda r, f: 0.5 * np.mean((r - 1) ** 2) + 0.5 * np.mean(f**2),
        lambda f: 0.5 * np.mean((f - 1) ** 2),
    ),
}

REAL = np.array([1.3, -0.4, 2.2, 0.7], np.float32)
FAKE = np.array([-1.1, 0.5, -2.5, 0.0, 3.0], np.float32)


def test_names_and_registry():
    assert set(losses.names()) == set(ALL + FGAN)
    for name in ALL + FGAN:
        loss = losses.get(name)
        assert isinstance(loss, losses.AdversarialLoss)
        assert loss.name == name


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown adversarial loss 'vanilla'; valid names: minimax, non_saturating, "
                       "wasserstein, hinge, least_squares, fgan_kl"):
        losses.get("vanilla")
    assert isinstance(losses.LOSSES, Registry) and losses.names() == tuple(losses.LOSSES)


def test_bce_discriminator_is_shared():
    assert losses.get("minimax").critic is losses.get("non_saturating").critic
    assert losses.non_saturating_critic_loss is losses.minimax_critic_loss
    assert losses.hinge_generator_loss is losses.wasserstein_generator_loss


@pytest.mark.parametrize("name", ALL)
def test_registry_entries_are_the_public_functions(name):
    loss = losses.get(name)
    assert loss.critic is getattr(losses, f"{name}_critic_loss")
    assert loss.generator is getattr(losses, f"{name}_generator_loss")


def test_docstring_examples_pass():
    result = doctest.testmod(losses, raise_on_error=False)
    assert result.failed == 0 and result.attempted > 0
    # Every public loss function shows a hand-computed example.
    public = {name: fn for name, fn in vars(losses).items() if name.endswith("_loss") and not name.startswith("_")}
    assert len(public) == 13
    for name, fn in public.items():
        assert any(test.examples for test in doctest.DocTestFinder().find(fn, name)), name


def test_every_registry_entry_is_documented_by_a_formula():
    assert losses.get("hinge").critic.__doc__ == losses.hinge_critic_loss.__doc__
    for name in losses.names():
        loss = losses.get(name)
        for fn, role in ((loss.critic, "L_C = "), (loss.generator, "L_G = ")):
            assert fn.__doc__ and fn.__doc__.startswith(role), (name, fn.__doc__)
    for div in losses.F_DIVERGENCES:
        loss = losses.get(f"fgan_{div.name}")
        assert f"g(v) = {div.activation_formula}, f*(t) = {div.conjugate}." in loss.critic.__doc__
        assert f"divergence={div.name!r}" in loss.generator.__doc__


@pytest.mark.parametrize("name", ALL)
def test_matches_naive_float64_formulas(name):
    loss = losses.get(name)
    d_ref, g_ref = REFERENCE[name]
    np.testing.assert_allclose(loss.critic(REAL, FAKE), d_ref(REAL, FAKE), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loss.generator(FAKE), g_ref(FAKE), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "name, real, fake, d_expected, g_expected",
    [
        # D = ½ everywhere: BCE = 2·log 2; saturating log(1 − ½) = −log 2; non-saturating −log ½ = log 2.
        ("minimax", [0.0, 0.0], [0.0, 0.0], 2 * np.log(2), -np.log(2)),
        ("non_saturating", [0.0, 0.0], [0.0, 0.0], 2 * np.log(2), np.log(2)),
        # mean f(fake) − mean f(real) = −1 − 2 = −3; generator −(−1) = 1.
        ("wasserstein", [1.0, 3.0], [0.0, -2.0], -3.0, 1.0),
        # real: (relu(0.5) + relu(−1))/2 = 0.25; fake: (relu(−1) + relu(1))/2 = 0.5; generator −(−1) = 1.
        ("hinge", [0.5, 2.0], [-2.0, 0.0], 0.75, 1.0),
        # real: (0 + ½·4)/2 = 1; fake: (0 + ½·4)/2 = 1; generator (½·1 + ½·9)/2 = 2.5.
        ("least_squares", [1.0, 3.0], [0.0, -2.0], 2.0, 2.5),
    ],
)
def test_hand_values(name, real, fake, d_expected, g_expected):
    loss = losses.get(name)
    np.testing.assert_allclose(loss.critic(jnp.array(real), jnp.array(fake)), d_expected, rtol=1e-6)
    np.testing.assert_allclose(loss.generator(jnp.array(fake)), g_expected, rtol=1e-6)
    # The public functions by their own names.
    critic, generator = getattr(losses, f"{name}_critic_loss"), getattr(losses, f"{name}_generator_loss")
    np.testing.assert_allclose(critic(jnp.array(real), jnp.array(fake)), d_expected, rtol=1e-6)
    np.testing.assert_allclose(generator(jnp.array(fake)), g_expected, rtol=1e-6)


# Published values from TF-GAN's tests, tensorflow/gan: tensorflow_gan/python/losses/losses_impl_test.py
# (_LossesTest.init_constants and the expected values of LeastSquaresLossTest, ModifiedLossTest,
# MinimaxLossTest, WassersteinLossTest, HingeWassersteinLossTest). TF-GAN reduces with
# SUM_BY_NONZERO_WEIGHTS, which with unit weights is the mean, like ours.
TFGAN_REAL = np.array([-5.0, 1.4, 12.5, 2.7], np.float32)
TFGAN_FAKE = np.array([10.0, 4.4, -5.5, 3.6], np.float32)


@pytest.mark.parametrize(
    "name, tfgan_d, tfgan_g",
    [
        ("least_squares", 41.73375, 17.69625),  # same convention (real_label=1, fake_label=0, ½ squares)
        ("wasserstein", 0.22500, -3.12500),  # same convention
        ("hinge", 6.7500, -3.12500),  # same convention (real_hinge = generated_hinge = 1)
    ],
)
def test_tfgan_published_values_same_convention(name, tfgan_d, tfgan_g):
    loss = losses.get(name)
    np.testing.assert_allclose(loss.critic(TFGAN_REAL, TFGAN_FAKE), tfgan_d, atol=1e-5)
    np.testing.assert_allclose(loss.generator(TFGAN_FAKE), tfgan_g, atol=1e-5)


def test_tfgan_published_non_saturating_generator():
    # ModifiedLossTest: modified_generator_loss = mean −log σ(l), label_smoothing 0 by default: same as ours.
    np.testing.assert_allclose(losses.get("non_saturating").generator(TFGAN_FAKE), 1.38582, atol=1e-5)


def test_tfgan_published_bce_discriminator_converted_from_label_smoothing():
    # Minimax/ModifiedLossTest expect 6.19637 with TF-GAN's default label_smoothing = 0.25 on real data:
    # real label 1 − 0.25 + 0.25·½ = 0.875, so the real term is 0.875·softplus(−l) + 0.125·softplus(l)
    # = softplus(−l) + 0.125·l (softplus(l) − softplus(−l) = l). Without smoothing (ours) the loss is
    # 6.19637 − 0.125·mean(real) = 6.19637 − 0.125·2.9.
    ours = 6.19637 - 0.125 * np.mean(TFGAN_REAL)
    for name in ("minimax", "non_saturating"):
        np.testing.assert_allclose(losses.get(name).critic(TFGAN_REAL, TFGAN_FAKE), ours, atol=1e-5)


def test_tfgan_published_minimax_generator_converted():
    # MinimaxLossTest expects −4.82408: TF-GAN's minimax_generator_loss is −minimax_discriminator_loss(
    # ones, fake, label_smoothing=0) = −[−log σ(1)] − mean(−log(1 − σ(l))) = log σ(1) + mean log(1 − σ(l)),
    # i.e. ours plus the constant log σ(1) = −softplus(−1). So ours = −4.82408 + softplus(−1).
    ours = -4.82408 + np.log1p(np.exp(-1.0))
    np.testing.assert_allclose(losses.get("minimax").generator(TFGAN_FAKE), ours, atol=1e-5)


def test_weight_scale_invariance_differs_from_tfgan_on_purpose():
    # TF-GAN's tests expect loss·2.3 for a scalar weight 2.3 (sum(w·l) / count_nonzero(w)); our weighted
    # mean is sum(w·l) / sum(w), so a scalar weight leaves the loss unchanged.
    loss = losses.get("least_squares")
    np.testing.assert_allclose(loss.generator(TFGAN_FAKE, 2.3), 17.69625, atol=1e-5)
    np.testing.assert_allclose(loss.critic(TFGAN_REAL, TFGAN_FAKE, 2.3, 2.3), 41.73375, atol=1e-4)


def test_vanishing_gradient_of_saturating_generator():
    # Per example, saturating: d/dl log(1 − σ(l)) = −σ(l); non-saturating: d/dl −log σ(l) = −(1 − σ(l)).
    # Ratio |non-saturating| / |saturating| = (1 − σ(l)) / σ(l) = e^(−l) = e^10 ≈ 22026.47 at l = −10.
    fake = jnp.array([-10.0])
    g_sat = jax.grad(losses.get("minimax").generator)(fake)[0]
    g_ns = jax.grad(losses.get("non_saturating").generator)(fake)[0]
    sigma = 1.0 / (1.0 + np.exp(10.0))
    np.testing.assert_allclose(g_sat, -sigma, rtol=1e-5)
    np.testing.assert_allclose(g_ns, -(1.0 - sigma), rtol=1e-6)
    np.testing.assert_allclose(abs(g_ns) / abs(g_sat), np.exp(10.0), rtol=1e-5)


def test_stable_at_extreme_logits():
    # Naive log(sigmoid) overflows to −inf in float32 here; the stable forms give the exact limits.
    big = jnp.array([100.0, -100.0])
    np.testing.assert_allclose(losses.get("minimax").generator(jnp.array([100.0])), -100.0, rtol=1e-6)
    np.testing.assert_allclose(losses.get("non_saturating").generator(jnp.array([-100.0])), 100.0, rtol=1e-6)
    np.testing.assert_allclose(
        losses.get("minimax").critic(jnp.array([-100.0]), jnp.array([100.0])), 200.0, rtol=1e-6
    )
    for name in ALL:
        loss = losses.get(name)
        d_grads = jax.grad(loss.critic, argnums=(0, 1))(big, big)
        g_grad = jax.grad(loss.generator)(big)
        for g in (*d_grads, g_grad):
            assert np.all(np.isfinite(g)), (name, g)


@pytest.mark.parametrize("name", ALL)
def test_jit_and_column_logits(name):
    loss = losses.get(name)
    d_ref, g_ref = REFERENCE[name]
    d = jax.jit(loss.critic)(REAL[:, None], FAKE[:, None])
    g = jax.jit(loss.generator)(FAKE[:, None])
    np.testing.assert_allclose(d, d_ref(REAL, FAKE), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g, g_ref(FAKE), rtol=1e-6, atol=1e-6)


def test_vmap_over_stacked_batches():
    loss = losses.get("non_saturating")
    real = np.stack([REAL, REAL[::-1] * 2, -REAL])
    fake = np.stack([FAKE[:4], FAKE[1:] - 1, FAKE[:4] * 0.5])
    d_ref, g_ref = REFERENCE["non_saturating"]
    np.testing.assert_allclose(
        jax.vmap(loss.critic)(real, fake), [d_ref(r, f) for r, f in zip(real, fake)], rtol=1e-6
    )
    np.testing.assert_allclose(jax.vmap(loss.generator)(fake), [g_ref(f) for f in fake], rtol=1e-6)


def test_pmap_over_two_devices():
    loss = losses.get("hinge")
    real = np.stack([REAL, REAL - 1])
    fake = np.stack([FAKE[:4], FAKE[1:] + 1])
    weights = np.array([[1.0, 2.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
    d_ref, g_ref = REFERENCE["hinge"]
    devices = jax.devices()[:2]
    d = jax.pmap(loss.critic, devices=devices)(real, fake)
    g = jax.pmap(loss.generator, devices=devices)(fake, weights)
    np.testing.assert_allclose(d, [d_ref(r, f) for r, f in zip(real, fake)], rtol=1e-6)
    # Device 0: −(1·(−1.1) + 2·0.5 + 0·(−2.5) + 1·0) / 4 = 0.025; device 1: unweighted.
    np.testing.assert_allclose(g, [0.025, g_ref(fake[1])], rtol=1e-5)


def test_weighted_mean_hand_values():
    ws = losses.get("wasserstein")
    # −(1·1 + 0·2 + 3·3) / (1 + 0 + 3) = −2.5
    np.testing.assert_allclose(ws.generator(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 0.0, 3.0])), -2.5)
    ls = losses.get("least_squares")
    # real [1, 3] weighted [3, 1]: (3·0 + 1·½·4) / 4 = 0.5; fake [0, −2] unweighted: (0 + ½·4) / 2 = 1.
    real_weights = jnp.array([[3.0], [1.0]])
    d = ls.critic(jnp.array([1.0, 3.0]), jnp.array([0.0, -2.0]), real_weights=real_weights)
    np.testing.assert_allclose(d, 1.5)


@pytest.mark.parametrize("name", ALL)
def test_zero_weight_removes_example(name):
    loss = losses.get(name)
    real_w = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
    fake_w = np.array([0.0, 1.0, 1.0, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(
        loss.critic(REAL, FAKE, real_w, fake_w),
        loss.critic(REAL[real_w > 0], FAKE[fake_w > 0]),
        rtol=1e-6,
    )
    np.testing.assert_allclose(loss.generator(FAKE, fake_w), loss.generator(FAKE[fake_w > 0]), rtol=1e-6)
    # A removed example gets no gradient.
    assert jax.grad(loss.generator)(jnp.asarray(FAKE), fake_w)[0] == 0.0


def test_all_zero_weights_give_zero_loss_and_finite_gradient():
    loss = losses.get("non_saturating")
    zeros = jnp.zeros(3)
    assert loss.generator(jnp.ones(3), zeros) == 0.0
    grad = jax.grad(loss.generator)(jnp.ones(3), zeros)
    np.testing.assert_array_equal(grad, np.zeros(3))


def test_bad_logit_shape_names_shape():
    loss = losses.get("minimax")
    with pytest.raises(ValueError, match=r"real_logits has shape \(4, 2\).*\(n,\) or \(n, 1\)"):
        loss.critic(jnp.zeros((4, 2)), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"fake_logits has shape \(\)"):
        loss.generator(jnp.zeros(()))


def test_mismatched_weights_name_both_shapes():
    loss = losses.get("wasserstein")
    with pytest.raises(ValueError, match=r"real_weights has shape \(3,\) but real_logits has shape \(4,\)"):
        loss.critic(jnp.zeros(4), jnp.zeros(5), real_weights=jnp.ones(3))
    with pytest.raises(ValueError, match=r"fake_weights has shape \(4,\) but fake_logits has shape \(5, 1\)"):
        loss.critic(jnp.zeros(4), jnp.zeros((5, 1)), fake_weights=jnp.ones(4))
    with pytest.raises(ValueError, match=r"weights has shape \(2, 2\) but fake_logits has shape \(4,\)"):
        jax.jit(loss.generator)(jnp.zeros(4), jnp.ones((2, 2)))


# --------------------------------------------------------------------------------------------------
# f-GAN (Nowozin et al. 2016). Hand transcriptions of Table 2 in float64 numpy, independent of the module:
# output activation g(v), conjugate f*(t), optimal critic T* = f′(u) at u = p/q and its preimage v* = g⁻¹(T*).
FGAN_TABLE = {
    "fgan_kl": dict(
        g=lambda v: v,
        conj=lambda t: np.exp(t - 1),
        t_star=lambda p, q: 1 + np.log(p / q),
        v_star=lambda p, q: 1 + np.log(p / q),
    ),
    "fgan_reverse_kl": dict(
        g=lambda v: -np.exp(-v),
        conj=lambda t: -1 - np.log(-t),
        t_star=lambda p, q: -q / p,
        v_star=lambda p, q: np.log(p / q),
    ),
    "fgan_js": dict(
        g=lambda v: np.log(2) - np.log1p(np.exp(-v)),
        conj=lambda t: -np.log(2 - np.exp(t)),
        t_star=lambda p, q: np.log(2 * p / (p + q)),
        v_star=lambda p, q: np.log(p / q),
    ),
    "fgan_pearson": dict(
        g=lambda v: v,
        conj=lambda t: t**2 / 4 + t,
        t_star=lambda p, q: 2 * (p / q - 1),
        v_star=lambda p, q: 2 * (p / q - 1),
    ),
    "fgan_squared_hellinger": dict(
        g=lambda v: 1 - np.exp(-v),
        conj=lambda t: t / (1 - t),
        t_star=lambda p, q: 1 - np.sqrt(q / p),
        v_star=lambda p, q: 0.5 * np.log(p / q),
    ),
}


def _f_divergence(name, p, q):
    """D_f(p‖q) from independent references: divergences.kl / reverse_kl / js, or by hand in numpy."""
    from gan_jax import divergences

    return {
        "fgan_kl": lambda: float(divergences.kl(p, q)),
        "fgan_reverse_kl": lambda: float(divergences.reverse_kl(p, q)),
        "fgan_js": lambda: 2 * float(divergences.js(p, q)),
        "fgan_pearson": lambda: np.sum((p - q) ** 2 / q),
        "fgan_squared_hellinger": lambda: np.sum((np.sqrt(p) - np.sqrt(q)) ** 2),
    }[name]()


def _fgan_reference(name):
    """Naive float64 (discriminator(real, fake), generator(fake)) of the contract."""
    g, conj = FGAN_TABLE[name]["g"], FGAN_TABLE[name]["conj"]

    def d_ref(r, f):
        r, f = np.asarray(r, np.float64), np.asarray(f, np.float64)
        return -(np.mean(g(r)) - np.mean(conj(g(f))))

    return d_ref, lambda f: -np.mean(g(np.asarray(f, np.float64)))


def _two_distributions(seed, k=5):
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.full(k, 4.0), size=2)
    assert np.all(p > 0) and np.all(q > 0)
    return p, q


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", FGAN)
def test_fgan_known_optimum_is_minus_divergence(name, seed):
    # At v* = g⁻¹(f′(p/q)) the critic loss with real weights p and fake weights q on shared points equals
    # −D_f(p‖q), its gradient vanishes, and (convex in v) every perturbation increases it.
    p, q = _two_distributions(seed)
    loss = losses.get(name)
    with jax.enable_x64(True):
        objective = jax.jit(lambda v: loss.critic(v, v, real_weights=p, fake_weights=q))
        v_star = FGAN_TABLE[name]["v_star"](p, q)
        value = float(objective(v_star))
        np.testing.assert_allclose(value, -_f_divergence(name, p, q), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(jax.grad(objective)(v_star), 0.0, atol=1e-10)
        rng = np.random.default_rng(100 + seed)
        for scale in (1e-3, 1e-1, 1.0):
            perturbed = jax.vmap(objective)(v_star + scale * rng.standard_normal((20, 5)))
            assert np.all(perturbed > value), (scale, perturbed.min(), value)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", FGAN)
def test_fgan_minimised_critic_recovers_divergence_and_optimal_critic(name, seed):
    # Minimise over the raw logits with scipy (BFGS, float64 loss and JAX gradient) from v = 0.
    scipy_optimize = pytest.importorskip("scipy.optimize")
    p, q = _two_distributions(seed)
    loss = losses.get(name)
    with jax.enable_x64(True):
        value_and_grad = jax.jit(jax.value_and_grad(lambda v: loss.critic(v, v, p, q)))

        def fun(v):
            value, grad = value_and_grad(v)
            return float(value), np.asarray(grad, np.float64)

        result = scipy_optimize.minimize(fun, np.zeros(5), jac=True, method="BFGS", options={"gtol": 1e-10})
        np.testing.assert_allclose(result.fun, -_f_divergence(name, p, q), rtol=1e-7, atol=1e-9)
    t_star = FGAN_TABLE[name]["t_star"](p, q)
    np.testing.assert_allclose(FGAN_TABLE[name]["g"](result.x), t_star, rtol=1e-4, atol=1e-5)


def test_fgan_divergences_are_distinct_at_the_optimum():
    # Guards against two table rows accidentally sharing a formula: the five optimal values all differ.
    p, q = _two_distributions(7)
    values = [_f_divergence(name, p, q) for name in FGAN]
    assert len(set(np.round(values, 6))) == len(FGAN)
    assert all(v > 0 for v in values)


@pytest.mark.parametrize("name", FGAN)
def test_fgan_matches_naive_float64_formulas(name):
    loss = losses.get(name)
    d_ref, g_ref = _fgan_reference(name)
    np.testing.assert_allclose(loss.critic(REAL, FAKE), d_ref(REAL, FAKE), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss.generator(FAKE), g_ref(FAKE), rtol=1e-5, atol=1e-5)


def test_fgan_table_conjugate_of_activation_is_the_composition():
    v = np.linspace(-4.0, 4.0, 17)
    for div in losses.F_DIVERGENCES:
        ref = FGAN_TABLE[f"fgan_{div.name}"]
        np.testing.assert_allclose(div.activation(v), ref["g"](v), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(div.conjugate_of_activation(v), ref["conj"](ref["g"](v)), rtol=1e-5, atol=1e-5)
        for text in (div.f, div.conjugate, div.activation_formula, div.optimal_critic):
            assert isinstance(text, str) and text


def test_fgan_js_is_the_gan_loss_shifted_by_log_2():
    # −g(v) = softplus(−v) − log 2 and f*(g(v)) = softplus(v) − log 2: BCE − 2·log 2; generator: the
    # non-saturating loss − log 2.
    fgan, ns = losses.get("fgan_js"), losses.get("non_saturating")
    np.testing.assert_allclose(fgan.critic(REAL, FAKE), ns.critic(REAL, FAKE) - 2 * np.log(2), rtol=1e-6)
    np.testing.assert_allclose(fgan.generator(FAKE), ns.generator(FAKE) - np.log(2), rtol=1e-6)


def test_fgan_stable_at_large_logits():
    # The JS conjugate composed naively, −log(2 − exp(g(v))), is inf at v = 30 in float32 (2·sigmoid(30) = 2).
    big = jnp.array([100.0, -100.0])
    js = losses.get("fgan_js")
    np.testing.assert_allclose(js.critic(big, big), (100 + 100 - 4 * np.log(2)) / 2, rtol=1e-6)
    moderate = jnp.array([30.0, -30.0])
    for name in FGAN:
        loss = losses.get(name)
        values = (loss.critic(moderate, moderate), loss.generator(moderate))
        grads = (*jax.grad(loss.critic, argnums=(0, 1))(moderate, moderate), jax.grad(loss.generator)(moderate))
        for x in (*values, *grads):
            assert np.all(np.isfinite(x)), (name, x)


@pytest.mark.parametrize("name", FGAN)
def test_fgan_jit_grad_vmap(name):
    loss = losses.get(name)
    d_ref, g_ref = _fgan_reference(name)
    # jit, column logits.
    np.testing.assert_allclose(jax.jit(loss.critic)(REAL[:, None], FAKE[:, None]), d_ref(REAL, FAKE), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(loss.generator)(FAKE[:, None]), g_ref(FAKE), rtol=1e-5)
    # grad against central differences of the naive float64 formulas.
    eps = 1e-5
    for arg, (fn, args) in enumerate([(d_ref, (REAL, FAKE)), (d_ref, (REAL, FAKE))]):
        x = np.asarray(args[arg], np.float64)
        num = np.array(
            [
                (fn(*[(x + eps * e) if i == arg else a for i, a in enumerate(args)])
                 - fn(*[(x - eps * e) if i == arg else a for i, a in enumerate(args)])) / (2 * eps)
                for e in np.eye(x.size)
            ]
        )
        grad = jax.jit(jax.grad(loss.critic, argnums=arg))(REAL, FAKE)
        np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-6)
    x = np.asarray(FAKE, np.float64)
    num = np.array([(g_ref(x + eps * e) - g_ref(x - eps * e)) / (2 * eps) for e in np.eye(x.size)])
    np.testing.assert_allclose(jax.grad(loss.generator)(FAKE), num, rtol=1e-4, atol=1e-6)
    # vmap over stacked batches.
    real = np.stack([REAL, REAL[::-1] * 0.5, -REAL])
    fake = np.stack([FAKE[:4], FAKE[1:] - 1, FAKE[:4] * 0.5])
    np.testing.assert_allclose(
        jax.vmap(loss.critic)(real, fake), [d_ref(r, f) for r, f in zip(real, fake)], rtol=1e-5
    )
    np.testing.assert_allclose(jax.vmap(loss.generator)(fake), [g_ref(f) for f in fake], rtol=1e-5)


def test_unknown_name_lists_fgan_names():
    with pytest.raises(ValueError, match="'fgan_tv'.*valid names: .*" + r".*".join(FGAN)):
        losses.get("fgan_tv")


@pytest.mark.parametrize("div", losses.F_DIVERGENCES, ids=lambda d: d.name)
def test_fgan_functions_take_the_divergence_by_name_or_table_row(div):
    # fgan_critic_loss / fgan_generator_loss are the registry entries' functions, the divergence given either way.
    entry = losses.get(f"fgan_{div.name}")
    d_ref, g_ref = _fgan_reference(entry.name)
    real_w, fake_w = np.array([1.0, 2.0, 0.0, 1.0], np.float32), np.array([0.5, 1.0, 1.0, 0.0, 2.0], np.float32)
    for divergence in (div.name, div):
        critic = losses.fgan_critic_loss(REAL, FAKE, divergence=divergence)
        np.testing.assert_allclose(critic, d_ref(REAL, FAKE), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(critic, entry.critic(REAL, FAKE), rtol=1e-6)
        weighted = losses.fgan_critic_loss(REAL, FAKE, real_w, fake_w, divergence=divergence)
        np.testing.assert_allclose(weighted, entry.critic(REAL, FAKE, real_w, fake_w), rtol=1e-6)
        generator = losses.fgan_generator_loss(FAKE, fake_w, divergence=divergence)
        np.testing.assert_allclose(generator, entry.generator(FAKE, fake_w), rtol=1e-6)
        np.testing.assert_allclose(losses.fgan_generator_loss(FAKE, divergence=divergence), g_ref(FAKE), rtol=1e-5)


def test_fgan_hand_values_and_unknown_divergence():
    # kl: −g(2) + f*(g(1)) = −2 + exp(1 − 1) = −1; pearson: −2 + (2²/4 + 2) = 1; generator −g(3) = −3.
    np.testing.assert_allclose(losses.fgan_critic_loss(jnp.array([2.0]), jnp.array([1.0]), divergence="kl"), -1.0)
    np.testing.assert_allclose(losses.fgan_critic_loss(jnp.array([2.0]), jnp.array([2.0]), divergence="pearson"), 1.0)
    np.testing.assert_allclose(losses.fgan_generator_loss(jnp.array([3.0]), divergence="kl"), -3.0)
    with pytest.raises(ValueError, match="unknown f-divergence 'tv'; valid names: kl, reverse_kl, js, pearson, "
                       "squared_hellinger"):
        losses.fgan_critic_loss(REAL, FAKE, divergence="tv")
