"""Tests for gan_jax.penalties against closed forms for linear and quadratic critics and TF-GAN's values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import penalties
from gan_jax.registry import Registry
from gan_jax.critic_wrappers import pack_samples

KEY = jax.random.PRNGKey(0)


def _linear(w):
    """f(x) = w·x per example, for x of shape (n, *w.shape); ∇f = w everywhere."""
    return lambda x: jnp.sum(x * w, axis=tuple(range(1, x.ndim)))


def _batches(shape, seed=1):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return 3.0 * jax.random.normal(k1, shape), jax.random.normal(k2, shape) - 1.0


def test_names_and_unknown_name():
    assert set(penalties.names()) == {"none", "gp", "gp_one_sided", "r1", "r2"}
    with pytest.raises(ValueError, match="unknown penalty 'wgan_gp'; valid names: none, gp, gp_one_sided, r1, r2"):
        penalties.get("wgan_gp")
    assert isinstance(penalties.PENALTIES, Registry) and penalties.PENALTIES["gp"] is penalties.gradient_penalty


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_gp_of_linear_critic_is_closed_form(scale):
    w = scale * jnp.array([0.6, -0.8, 0.0])  # ‖w‖ = scale
    real, fake = _batches((16, 3))
    gp = penalties.gradient_penalty(_linear(w), real, fake, KEY)
    np.testing.assert_allclose(gp, (scale - 1.0) ** 2, rtol=1e-5, atol=1e-6)
    gp_by_name = penalties.get("gp")(_linear(w), real, fake, KEY)
    np.testing.assert_allclose(gp_by_name, (scale - 1.0) ** 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale, expected", [(0.5, 0.0), (3.0, 4.0)])
def test_one_sided_gp_of_linear_critic(scale, expected):
    w = jnp.array([scale, 0.0])
    real, fake = _batches((8, 2))
    gp = penalties.get("gp_one_sided")(_linear(w), real, fake, KEY)
    np.testing.assert_allclose(gp, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        penalties.gradient_penalty(_linear(w), real, fake, KEY, one_sided=True), expected, rtol=1e-6, atol=1e-7
    )


def test_gp_on_image_shaped_data_uses_full_per_example_norm():
    w = jax.random.normal(jax.random.PRNGKey(3), (4, 4, 1))
    real, fake = _batches((6, 4, 4, 1))
    expected = (np.linalg.norm(np.asarray(w).ravel()) - 1.0) ** 2
    np.testing.assert_allclose(penalties.gradient_penalty(_linear(w), real, fake, KEY), expected, rtol=1e-5)


def test_tfgan_published_gradient_penalty_values():
    # tensorflow/gan: tensorflow_gan/python/losses/losses_impl_test.py, GradientPenaltyTest: critic 2·x on
    # real [[-12.3, 23.2, 16.3, -43.2]], generated [[3.1, 2.3, -12.3, 32.1]]: expected 9.0 (two-sided and
    # one-sided) and 1.0 with target=2.0. TF-GAN differentiates the sum of the critic's per-element outputs,
    # so its critic is ours f(x) = 2·Σⱼ xⱼ per example (‖∇f‖ = 2·√4 = 4); TF-GAN penalises (‖∇f‖/target − 1)².
    critic = lambda x: 2.0 * jnp.sum(x, axis=1)
    real = jnp.array([[-12.3, 23.2, 16.3, -43.2]])
    fake = jnp.array([[3.1, 2.3, -12.3, 32.1]])
    np.testing.assert_allclose(penalties.gradient_penalty(critic, real, fake, KEY), 9.0, atol=1e-5)
    one_sided = penalties.gradient_penalty(critic, real, fake, KEY, one_sided=True)
    np.testing.assert_allclose(one_sided, 9.0, atol=1e-5)
    np.testing.assert_allclose(penalties.gradient_penalty(critic, real, fake, KEY, target=2.0), 1.0, atol=1e-5)


def _quadratic(a):
    """f(x) = ½ xᵀAx per example; ∇f = Ax for symmetric A."""
    return lambda x: 0.5 * jnp.einsum("ni,ij,nj->n", x, a, x)


def _symmetric(seed, d=3):
    m = np.random.default_rng(seed).normal(size=(d, d))
    return (m + m.T).astype(np.float32)


def test_r1_and_r2_of_quadratic_critic():
    a = _symmetric(0)
    real, fake = _batches((10, 3))
    r1_expected = 0.5 * np.mean(np.sum((np.asarray(real) @ a) ** 2, axis=1))
    r2_expected = 0.5 * np.mean(np.sum((np.asarray(fake) @ a) ** 2, axis=1))
    np.testing.assert_allclose(penalties.r1_penalty(_quadratic(a), real, fake, KEY), r1_expected, rtol=1e-5)
    np.testing.assert_allclose(penalties.get("r1")(_quadratic(a), real, fake, KEY), r1_expected, rtol=1e-5)
    np.testing.assert_allclose(penalties.r2_penalty(_quadratic(a), real, fake, KEY), r2_expected, rtol=1e-5)
    np.testing.assert_allclose(penalties.get("r2")(_quadratic(a), real, fake, KEY), r2_expected, rtol=1e-5)


def test_none_is_zero():
    real, fake = _batches((4, 2))
    assert penalties.get("none")(_linear(jnp.ones(2)), real, fake, KEY) == 0.0


def test_gp_is_deterministic_in_key_and_depends_on_it():
    critic = _quadratic(_symmetric(1))  # ‖∇f(x̂)‖ depends on x̂, so on the interpolation weights
    real, fake = _batches((8, 3))
    first = penalties.gradient_penalty(critic, real, fake, jax.random.PRNGKey(7))
    again = penalties.gradient_penalty(critic, real, fake, jax.random.PRNGKey(7))
    other = penalties.gradient_penalty(critic, real, fake, jax.random.PRNGKey(8))
    assert first == again
    assert first != other
    typed = penalties.gradient_penalty(critic, real, fake, jax.random.key(7))
    assert np.isfinite(typed)


def test_gp_per_example_keys_split_across_shards_match_the_whole_batch():
    # The sum over examples of a quadratic critic's GP terms, computed on two halves with their own keys,
    # must equal the whole batch's GP: what a data-parallel step relies on.
    critic = _quadratic(_symmetric(1))
    real, fake = _batches((8, 3))
    keys = jax.random.split(jax.random.key(3), 8)
    whole = penalties.gradient_penalty(critic, real, fake, keys)
    halves = [penalties.gradient_penalty(critic, real[s], fake[s], keys[s]) for s in (slice(0, 4), slice(4, 8))]
    np.testing.assert_allclose(whole, np.mean(halves), rtol=1e-6)
    np.testing.assert_allclose(whole, penalties.gradient_penalty(critic, real, fake, jax.random.key(3)), rtol=1e-6)
    with pytest.raises(ValueError, match="3 per-example keys for a batch of 8"):
        penalties.gradient_penalty(critic, real, fake, keys[:3])


def test_gp_on_packs_interpolates_the_samples_with_one_weight_per_pack():
    # PacGAN (gan_jax.engine): the GP of the packed critic is taken on packed real/fake with the key of each
    # pack's first sample. Reference: interpolate the unpacked samples with u shared within each pack, pack
    # by hand, and take ‖∇f‖ of the quadratic packed critic f(p) = ½pᵀAp, ∇f = Ap, over all m·d inputs.
    m, d, n = 2, 3, 8
    a = _symmetric(2, d=m * d)
    real, fake = _batches((n, d))
    keys = jax.random.split(jax.random.key(5), n)
    got = penalties.gradient_penalty(_quadratic(a), pack_samples(real, m), pack_samples(fake, m), keys[::m])
    u = np.repeat([float(jax.random.uniform(k)) for k in keys[::m]], m)[:, None]
    mixed = u * np.asarray(real) + (1 - u) * np.asarray(fake)
    packs = np.concatenate([mixed[j::m] for j in range(m)], axis=1)  # (n/m, m·d)
    expected = np.mean((np.linalg.norm(packs @ a, axis=1) - 1.0) ** 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_jit_and_grad_through_gp_wrt_critic_params():
    # GP of f = w·x is (‖w‖ − 1)², whose gradient in w is 2(‖w‖ − 1)·w/‖w‖.
    real, fake = _batches((8, 3))
    gp_of_w = jax.jit(lambda w: penalties.gradient_penalty(_linear(w), real, fake, KEY))
    w = jnp.array([1.0, 2.0, 2.0])  # ‖w‖ = 3
    np.testing.assert_allclose(gp_of_w(w), 4.0, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(gp_of_w)(w), 2 * 2.0 * np.array([1.0, 2.0, 2.0]) / 3.0, rtol=1e-5)


def test_grad_through_gp_of_relu_mlp_is_finite():
    # A ReLU critic with a dead unit layout can have ∇ₓf = 0 exactly; the norm must not give NaN gradients.
    k1, k2 = jax.random.split(jax.random.PRNGKey(4))
    params = {"w1": jax.random.normal(k1, (2, 16)), "b1": jnp.zeros(16), "w2": jax.random.normal(k2, (16,))}
    params_dead = jax.tree_util.tree_map(jnp.zeros_like, params)
    mlp = lambda p: lambda x: jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"]
    real, fake = _batches((8, 2))
    for name in ("gp", "gp_one_sided", "r1", "r2"):
        pen = penalties.get(name)
        grad_fn = jax.jit(jax.grad(lambda q: pen(mlp(q), real, fake, KEY)))
        for p in (params, params_dead):
            grads = grad_fn(p)
            for leaf in jax.tree_util.tree_leaves(grads):
                assert np.all(np.isfinite(leaf)), name


def test_vmap_and_pmap_of_gp():
    w = jnp.array([2.0, 0.0, 0.0])
    real, fake = _batches((2, 4, 3))
    keys = jax.random.split(KEY, 2)
    gp = lambda r, f, k: penalties.gradient_penalty(_linear(w), r, f, k)
    np.testing.assert_allclose(jax.vmap(gp)(real, fake, keys), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(jax.pmap(gp, devices=jax.devices()[:2])(real, fake, keys), [1.0, 1.0], rtol=1e-5)


def test_shape_mismatch_names_both_shapes():
    critic = _linear(jnp.ones(3))
    for name in penalties.names():
        with pytest.raises(ValueError, match=r"real has shape \(4, 3\) and fake has shape \(5, 3\)"):
            penalties.get(name)(critic, jnp.zeros((4, 3)), jnp.zeros((5, 3)), KEY)


def test_clip_weights_bounds_params_after_adam_on_a_real_gradient():
    clip = 0.01
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    params = {
        "dense": {"w": jax.random.normal(k1, (3, 8)), "b": 0.001 * jnp.ones(8)},
        "out": jax.random.normal(k2, (8,)),
    }
    x = jax.random.normal(k3, (32, 3))

    def loss(p):  # the mean critic output on a batch: a real, non-trivial gradient
        return jnp.mean(jnp.tanh(x @ p["dense"]["w"] + p["dense"]["b"]) @ p["out"])

    opt = optax.chain(optax.adam(1e-3), penalties.clip_weights(clip))
    adam = optax.adam(1e-3)

    @jax.jit
    def step(params, state, adam_state):
        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        adam_updates, adam_state = adam.update(grads, adam_state, params)
        return optax.apply_updates(params, updates), optax.apply_updates(params, adam_updates), state, adam_state

    state, adam_state = opt.init(params), adam.init(params)
    for _ in range(3):
        new_params, unclipped, state, adam_state = step(params, state, adam_state)
        for new, free in zip(jax.tree_util.tree_leaves(new_params), jax.tree_util.tree_leaves(unclipped)):
            # In [−c, c] up to the float32 rounding of params + updates (params start at |p| ~ 3).
            assert np.all(np.abs(new) <= clip + 1e-6)
            # Where Adam's step already stays inside the box, clipping changes nothing.
            inside = np.abs(free) < clip
            np.testing.assert_allclose(np.asarray(new)[inside], np.asarray(free)[inside], atol=1e-7)
        params = new_params
    # After the first step, the weights that Adam pushed outside sit on the boundary.
    assert np.any(np.isclose(np.abs(np.asarray(params["out"])), clip))


def test_clip_weights_errors():
    with pytest.raises(ValueError, match="clip_value must be > 0, got -0.1"):
        penalties.clip_weights(-0.1)
    t = penalties.clip_weights(0.01)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="needs the current params"):
        t.update(params, t.init(params))


def test_every_registered_penalty_is_a_documented_function():
    for name in penalties.names():
        entry = penalties.get(name)
        assert entry.__doc__ and entry.__doc__.split("\n")[0].strip(), name
    assert penalties.get("gp_one_sided") is penalties.one_sided_gradient_penalty
