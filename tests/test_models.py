"""Tests for gan_jax.models: shapes, hand-counted parameters, numpy forward references, normalisations, errors.

Most tests fill the variables with numpy draws of the shapes ``jax.eval_shape(module.init, ...)`` reports:
on CPU every new parameter shape costs an XLA compile of a random draw (about a second each), so ``init``
itself is run only where it is what the test is about.
"""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import numpy.testing as npt
import pytest

from gan_jax import models

KEY = jax.random.key(0)
N, LATENT = 4, 3  # batch and latent sizes shared by the tests


def normal(seed: int, shape) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=jnp.float32)


def variable_shapes(module, sample_shape):
    return jax.eval_shape(module.init, KEY, jax.ShapeDtypeStruct(sample_shape, jnp.float32))


def n_params(module, sample_shape) -> int:
    params = variable_shapes(module, sample_shape)["params"]
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


def random_variables(module, sample_shape, seed: int = 0):
    """Kernels ~ N(0, 1/fan_in), other params ~ N(0, 0.1²) (+1 for BN scale); state at flax's initial values."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if "kernel" in name and "/" not in name:
            value = rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif path[0].key == "params":
            value = (name == "['scale']") + 0.1 * rng.standard_normal(leaf.shape)
        elif name.endswith("/u']"):
            value = rng.standard_normal(leaf.shape)
        else:  # batch-norm mean 0 / var 1, spectral-norm sigma 1
            value = np.ones(leaf.shape) if name.endswith(("var']", "sigma']")) else np.zeros(leaf.shape)
        return jnp.asarray(value, dtype=leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, variable_shapes(module, sample_shape))


MLP_GEN = models.MLPGenerator(output_dim=2, width=8, depth=2)
MLP_CRITIC = models.MLPCritic(width=8, depth=2)
CONV_GEN = models.ConvGenerator(8, base_width=4)
CONV_CRITIC = models.ConvCritic(8, base_width=4)


# ----------------------------------------------------------------------------------------------- activations


@pytest.mark.parametrize(
    "name, reference",
    [
        ("relu", lambda x: np.maximum(x, 0.0)),
        ("leaky_relu", lambda x: np.where(x > 0, x, 0.2 * x)),
        ("elu", lambda x: np.where(x > 0, x, np.expm1(x))),
        ("tanh", np.tanh),
        ("swish", lambda x: x / (1.0 + np.exp(-x))),
    ],
)
def test_activation_registry_matches_formulas(name, reference):
    x = np.linspace(-3.0, 3.0, 13, dtype=np.float32)
    npt.assert_allclose(models.ACTIVATIONS.get(name)(jnp.asarray(x)), reference(x), rtol=1e-6, atol=1e-6)
    assert name in models.ACTIVATIONS.names()


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'; valid names: relu, .*swish"):
        models.ACTIVATIONS.get("gelu")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        models.MLPCritic(activation="gelu")
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        models.MLPGenerator(activation="gelu")


# ----------------------------------------------------------------------------------------------- MLPs


def test_mlp_param_counts_by_hand_default_size():
    latent, d, w = 2, 2, 512  # defaults: width 512, depth 3
    # input layer + (depth − 1) hidden-to-hidden layers + output layer, each kernel + bias
    gen_count = (latent * w + w) + 2 * (w * w + w) + (w * 2 + 2)
    critic_count = (d * w + w) + 2 * (w * w + w) + (w * 1 + 1)
    assert gen_count == 1536 + 525312 + 1026
    assert n_params(models.MLPGenerator(output_dim=2), (1, latent)) == gen_count
    assert n_params(models.MLPCritic(), (1, d)) == critic_count


def test_mlp_forward_matches_numpy():
    gen = models.MLPGenerator(output_dim=2, width=8, depth=2, activation="tanh")
    critic = models.MLPCritic(width=8, depth=2, activation="elu")
    z, x = normal(1, (N, LATENT)), normal(2, (N, 2))
    pg = random_variables(gen, z.shape, seed=1)["params"]
    pc = random_variables(critic, x.shape, seed=2)["params"]

    def dense(p, h):
        return np.asarray(h) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])

    def elu(h):
        return np.where(h > 0, h, np.expm1(h))

    g_ref = dense(pg["output"], np.tanh(dense(pg["hidden_1"], np.tanh(dense(pg["hidden_0"], z)))))
    c_ref = dense(pc["logit"], elu(dense(pc["hidden_1"], elu(dense(pc["hidden_0"], x)))))[:, 0]
    npt.assert_allclose(gen.apply({"params": pg}, z), g_ref, rtol=1e-5, atol=1e-5)
    out = critic.apply({"params": pc}, x)
    assert out.shape == (N,)
    npt.assert_allclose(out, c_ref, rtol=1e-5, atol=1e-5)


def test_mlp_classifier_forward_matches_numpy():
    classifier = models.MLPClassifier(num_classes=3, hidden=(8, 5))
    x = normal(3, (N, 2, 2, 1))  # flattened to (N, 4)
    p = jax.tree.map(np.asarray, random_variables(classifier, x.shape, seed=3)["params"])
    hidden_0 = np.maximum(np.asarray(x).reshape(N, 4) @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"], 0)
    h_ref = np.maximum(hidden_0 @ p["hidden_1"]["kernel"] + p["hidden_1"]["bias"], 0)
    logits, features = classifier.apply({"params": p}, x)
    assert logits.shape == (N, 3) and features.shape == (N, 5)
    npt.assert_allclose(features, h_ref, rtol=1e-5, atol=1e-5)
    npt.assert_allclose(logits, h_ref @ p["output"]["kernel"] + p["output"]["bias"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"hidden must be a non-empty tuple of positive widths, got \(\)"):
        models.MLPClassifier(num_classes=3, hidden=())
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        models.MLPClassifier(num_classes=0)


def test_mlp_depth_zero_is_affine():
    critic = models.MLPCritic(width=8, depth=0)
    x = normal(3, (N, 2))
    p = random_variables(critic, x.shape)["params"]
    assert set(p) == {"logit"}
    ref = np.asarray(x) @ np.asarray(p["logit"]["kernel"])[:, 0] + np.asarray(p["logit"]["bias"])[0]
    npt.assert_allclose(critic.apply({"params": p}, x), ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------- conv pair


@pytest.mark.parametrize("size, channels", [(8, 1), (16, 3), (28, 1), (32, 3)])
def test_conv_output_shapes(size, channels):
    gen = models.ConvGenerator(size, channels=channels, base_width=4)
    critic = models.ConvCritic(size, base_width=4)
    z = jax.ShapeDtypeStruct((N, LATENT), jnp.float32)
    images = jax.eval_shape(gen.apply, variable_shapes(gen, z.shape), z)
    assert images.shape == (N, size, size, channels)
    logits = jax.eval_shape(critic.apply, variable_shapes(critic, images.shape), images)
    assert logits.shape == (N,)


def test_conv_forward_runs_and_generator_range_is_tanh_bounded():
    z = 30.0 * normal(4, (N, LATENT))  # large inputs drive tanh into saturation
    images = CONV_GEN.apply(random_variables(CONV_GEN, z.shape), z)
    assert images.shape == (N, 8, 8, 1)
    assert float(jnp.max(jnp.abs(images))) <= 1.0
    assert float(jnp.max(jnp.abs(images))) > 0.9  # saturated, so the bound above is tight, not vacuous
    logits = CONV_CRITIC.apply(random_variables(CONV_CRITIC, images.shape), images)
    assert logits.shape == (N,) and bool(jnp.all(jnp.isfinite(logits)))


def test_conv_param_counts_by_hand():
    latent, b = LATENT, 4
    # 8×8: Dense to 4×4×2b, ConvT 4×4 (2b → b), Conv 3×3 (b → 1)
    gen8 = (latent * 4 * 4 * 2 * b + 4 * 4 * 2 * b) + (4 * 4 * 2 * b * b + b) + (3 * 3 * b * 1 + 1)
    # 8×8 critic: Conv 4×4 (1 → b) to 4×4, Dense 4·4·b → 1
    critic8 = (4 * 4 * 1 * b + b) + (4 * 4 * b + 1)
    # 28×28 critic: Conv (1 → b) to 14×14, Conv (b → 2b) to 7×7, Dense 7·7·2b → 1
    critic28 = (4 * 4 * 1 * b + b) + (4 * 4 * b * 2 * b + 2 * b) + (7 * 7 * 2 * b + 1)
    assert n_params(models.ConvGenerator(8, base_width=b), (1, latent)) == gen8
    assert n_params(models.ConvCritic(8, base_width=b), (1, 8, 8, 1)) == critic8
    assert n_params(models.ConvCritic(28, base_width=b), (1, 28, 28, 1)) == critic28


def test_conv_kernel_init_has_lecun_scale():
    # lecun_normal: Var W = 1/fan_in, fan_in = kh·kw·cin; a normal truncated to ±2 and divided by its std
    # 0.87962566 (jax.nn.initializers.variance_scaling), so |W| ≤ 2/(0.87962566·√fan_in).
    variables = models.ConvCritic(8, base_width=64).init(KEY, jnp.zeros((1, 8, 8, 4)))
    kernel = np.asarray(variables["params"]["down_0"]["kernel"])
    fan_in = 4 * 4 * 4
    assert kernel.shape == (4, 4, 4, 64)
    npt.assert_allclose(kernel.std(), 1.0 / np.sqrt(fan_in), rtol=0.05)
    assert np.abs(kernel).max() <= 2.0 / (0.87962566 * np.sqrt(fan_in)) + 1e-6


def test_unsupported_image_size_lists_supported():
    for make in (models.ConvGenerator, models.ConvCritic):
        with pytest.raises(ValueError, match=r"image_size 20 is not supported.*\(8, 16, 28, 32, 64\)"):
            make(20)


def test_wrong_input_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(n, 8, 8, C\).*\(2, 16, 16, 1\)"):
        CONV_CRITIC.init(KEY, jnp.zeros((2, 16, 16, 1)))
    with pytest.raises(ValueError, match=r"\(n, 8, 8, C\).*\(8, 8, 1\)"):
        CONV_CRITIC.init(KEY, jnp.zeros((8, 8, 1)))
    with pytest.raises(ValueError, match=r"MLPCritic expects input of shape \(n, d\), got shape \(2, 8, 8, 1\)"):
        MLP_CRITIC.init(KEY, jnp.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"\(n, latent_dim\), got shape \(4,\)"):
        CONV_GEN.init(KEY, jnp.zeros((4,)))
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        models.MLPCritic(width=0)


# ----------------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("gen, critic, shape", [(MLP_GEN, MLP_CRITIC, (2,)), (CONV_GEN, CONV_CRITIC, (8, 8, 1))])
def test_jit_and_vmap_over_extra_batch_axis(gen, critic, shape):
    z = normal(5, (3, N, LATENT))  # (extra, n, latent)
    vg = random_variables(gen, z.shape[1:])
    fake = jax.vmap(lambda zi: gen.apply(vg, zi))(z)
    assert fake.shape == (3, N, *shape)
    vc = random_variables(critic, fake.shape[1:])
    logits = jax.jit(jax.vmap(lambda xi: critic.apply(vc, xi)))(fake)
    assert logits.shape == (3, N)
    for i in range(3):
        npt.assert_allclose(fake[i], gen.apply(vg, z[i]), rtol=1e-5, atol=1e-6)
        npt.assert_allclose(logits[i], critic.apply(vc, fake[i]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "critic, shape", [(models.MLPCritic(width=8, depth=2, activation="swish"), (2,)), (CONV_CRITIC, (8, 8, 1))]
)
def test_critic_input_gradient_matches_finite_differences(critic, shape):
    x = normal(6, (N, *shape))
    variables = random_variables(critic, x.shape)
    f = jax.jit(lambda x: jnp.sum(critic.apply(variables, x)))
    grad = jax.grad(f)(x)
    assert bool(jnp.all(jnp.isfinite(grad)))
    # Central differences along random directions; a small step keeps clear of the activations' kinks.
    eps = 1e-3
    for seed in range(3):
        v = normal(100 + seed, x.shape)
        finite_difference = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
        npt.assert_allclose(jnp.vdot(grad, v), finite_difference, rtol=1e-2, atol=1e-3)


def test_pmap_over_two_devices():
    x = normal(7, (2, N, 2))
    variables = random_variables(MLP_CRITIC, x.shape[1:])
    out = jax.pmap(lambda xi: MLP_CRITIC.apply(variables, xi), devices=jax.devices()[:2])(x)
    assert out.shape == (2, N)
    for i in range(2):
        npt.assert_allclose(out[i], MLP_CRITIC.apply(variables, x[i]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "module, sample_shape",
    [(MLP_GEN, (N, LATENT)), (models.MLPCritic(width=8, depth=2, spectral_norm=True), (N, 2))],
)
def test_init_is_deterministic_for_a_fixed_key_and_gives_plain_dicts(module, sample_shape):
    x = normal(8, sample_shape)
    init = module.init
    v1, v2, v3 = init(KEY, x), init(KEY, x), init(jax.random.key(1), x)
    chex.assert_trees_all_equal(v1, v2)
    assert not np.allclose(v1["params"]["hidden_0"]["kernel"], v3["params"]["hidden_0"]["kernel"])

    def all_plain_dicts(tree):
        return type(tree) is dict and all(all_plain_dicts(v) for v in tree.values() if not hasattr(v, "shape"))

    assert all_plain_dicts(v1)


# ----------------------------------------------------------------------------------------------- spectral norm


def test_spectral_norm_bounds_largest_singular_value_and_is_used_in_forward():
    critic = models.ConvCritic(16, base_width=4, spectral_norm=True)
    x = normal(9, (N, 16, 16, 1))
    variables = random_variables(critic, x.shape)
    power_step = jax.jit(lambda v: {**v, **critic.apply(v, x, train=True, mutable=["batch_stats"])[1]})
    for _ in range(50):
        variables = power_step(variables)
    params, stats = variables["params"], variables["batch_stats"]
    assert set(params) == {"down_0", "down_1", "logit"}
    normalised = {}
    for layer, p in params.items():
        kernel = np.asarray(p["kernel"])
        sigma = float(stats[f"{layer}_sn"][f"{layer}/kernel/sigma"])
        # flax flattens a conv kernel (kh, kw, cin, cout) to (kh·kw·cin, cout) before power iteration
        matrix = kernel.reshape(-1, kernel.shape[-1])
        top = np.linalg.svd(matrix / sigma, compute_uv=False)[0]
        assert abs(top - 1.0) <= 1e-2, (layer, top)
        normalised[layer] = {"kernel": kernel / np.linalg.svd(matrix, compute_uv=False)[0], "bias": p["bias"]}
    # Reference: the same architecture without spectral norm, kernels divided by their SVD top singular value.
    plain = models.ConvCritic(16, base_width=4)
    npt.assert_allclose(
        critic.apply(variables, x, train=False), plain.apply({"params": normalised}, x), rtol=1e-3, atol=1e-4
    )


def test_spectral_norm_linear_critic_is_unit_norm_projection():
    critic = models.MLPCritic(width=8, depth=0, spectral_norm=True)
    x = normal(10, (N, 2))
    variables = random_variables(critic, x.shape)
    w = np.asarray(variables["params"]["logit"]["kernel"])[:, 0]
    b = float(variables["params"]["logit"]["bias"][0])
    ref = np.asarray(x) @ (w / np.linalg.norm(w)) + b
    npt.assert_allclose(critic.apply(variables, x, train=False), ref, rtol=1e-5, atol=1e-6)


def test_spectral_norm_state_changes_only_when_training():
    critic = models.MLPCritic(width=8, depth=2, spectral_norm=True)
    x = normal(11, (N, 2))
    variables = critic.init(KEY, x)  # the real init: u is drawn from the "params" rng
    u_before = variables["batch_stats"]["hidden_1_sn"]["hidden_1/kernel/u"]
    assert u_before.shape == (1, 8)
    _, updates = critic.apply(variables, x, train=False, mutable=["batch_stats"])
    chex.assert_trees_all_equal(updates["batch_stats"], variables["batch_stats"])
    _, updates = critic.apply(variables, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(updates["batch_stats"]["hidden_1_sn"]["hidden_1/kernel/u"], u_before)
    with pytest.raises(Exception, match="batch_stats"):  # train=True without mutable: flax refuses to write
        critic.apply(variables, x, train=True)


def test_stateless_critic_accepts_the_uniform_training_call():
    x = normal(12, (N, 2))
    variables = random_variables(MLP_CRITIC, x.shape)
    logits, updates = MLP_CRITIC.apply(variables, x, train=True, mutable=["batch_stats"])
    assert updates == {}
    npt.assert_allclose(logits, MLP_CRITIC.apply(variables, x, train=False))


# ----------------------------------------------------------------------------------------------- batch norm


def test_batch_norm_running_mean_and_batch_coupling():
    critic = models.MLPCritic(width=8, depth=1, batch_norm=True)
    x = normal(13, (N, 2))
    variables = random_variables(critic, x.shape)
    p = variables["params"]["hidden_0"]
    _, updates = critic.apply(variables, x, train=True, mutable=["batch_stats"])
    pre = np.asarray(x) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    # flax BatchNorm: running ← 0.99·running + 0.01·batch mean (momentum 0.99), starting from 0
    running_mean = updates["batch_stats"]["hidden_0_bn"]["mean"]
    npt.assert_allclose(running_mean, 0.01 * pre.mean(axis=0), rtol=1e-4, atol=1e-6)

    other = x.at[1:].set(normal(14, (N - 1, 2)))  # same first example, different rest of the batch
    train = lambda xs: critic.apply(variables, xs, train=True, mutable=["batch_stats"])[0]  # noqa: E731
    evaluate = lambda xs: critic.apply(variables, xs, train=False)  # noqa: E731
    assert abs(float(train(x)[0] - train(other)[0])) > 1e-4  # training mode couples examples
    npt.assert_allclose(evaluate(x)[0], evaluate(other)[0], rtol=1e-6)  # running averages do not


def test_conv_critic_batch_norm_and_spectral_norm_share_batch_stats():
    critic = models.ConvCritic(16, base_width=4, spectral_norm=True, batch_norm=True)
    x = normal(15, (N, 16, 16, 1))
    variables = random_variables(critic, x.shape)
    assert set(variables["batch_stats"]) == {"down_0_sn", "down_0_bn", "down_1_sn", "down_1_bn", "logit_sn"}
    logits, updates = critic.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (N,) and bool(jnp.all(jnp.isfinite(logits)))
    assert not np.allclose(updates["batch_stats"]["down_1_bn"]["mean"], 0.0)  # running mean moved


# ----------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("penalty", ["gp", "gp_one_sided", "r1", "r2"])
def test_check_critic_compatible_rejects_batch_norm_with_gradient_penalties(penalty):
    cfg = ml_collections.ConfigDict({"kind": "conv", "batch_norm": True, "spectral_norm": False})
    with pytest.raises(ValueError, match=rf"batch_norm=True.*'{penalty}'.*batch_norm=False.*spectral_norm=True"):
        models.check_critic_compatible(cfg, penalty)
    with pytest.raises(ValueError, match="batch_norm"):
        models.check_critic_compatible(models.ConvCritic(8, batch_norm=True), penalty)


def test_check_critic_compatible_accepts_valid_combinations():
    models.check_critic_compatible(ml_collections.ConfigDict({"batch_norm": True}), "none")
    models.check_critic_compatible(ml_collections.ConfigDict({"batch_norm": False, "spectral_norm": True}), "gp")
    models.check_critic_compatible(ml_collections.ConfigDict({"kind": "mlp"}), "gp")


def test_build_mlp_from_config():
    cfg = ml_collections.ConfigDict(
        {"kind": "mlp", "width": 16, "depth": 2, "activation": "tanh", "latent_dim": 3, "base_width": 8,
         "spectral_norm": False, "batch_norm": True}
    )
    gen, critic = models.build(cfg, (2,))
    assert (gen.output_dim, gen.width, gen.depth, gen.activation) == (2, 16, 2, "tanh")
    assert (critic.width, critic.depth, critic.activation, critic.batch_norm) == (16, 2, "tanh", True)
    assert n_params(gen, (N, cfg.latent_dim)) == (3 * 16 + 16) + (16 * 16 + 16) + (16 * 2 + 2)
    z = jax.ShapeDtypeStruct((N, cfg.latent_dim), jnp.float32)
    assert jax.eval_shape(gen.apply, variable_shapes(gen, z.shape), z).shape == (N, 2)
    gen1, critic1 = models.build(ml_collections.ConfigDict({"kind": "mlp", "width": 4}), (1,))
    assert (gen1.output_dim, gen1.depth, critic1.width, critic1.spectral_norm) == (1, 3, 4, False)  # defaults kept


def test_build_conv_from_config():
    cfg = ml_collections.ConfigDict(
        {"kind": "conv", "width": 16, "depth": 2, "activation": "relu", "latent_dim": 3, "base_width": 4,
         "spectral_norm": True, "batch_norm": False}
    )
    gen, critic = models.build(cfg, (16, 16, 3))
    assert (gen.image_size, gen.channels, gen.base_width) == (16, 3, 4)
    assert (critic.image_size, critic.base_width, critic.spectral_norm, critic.batch_norm) == (16, 4, True, False)
    z = jax.ShapeDtypeStruct((N, cfg.latent_dim), jnp.float32)
    images = jax.eval_shape(gen.apply, variable_shapes(gen, z.shape), z)
    assert images.shape == (N, 16, 16, 3)
    assert "batch_stats" in variable_shapes(critic, images.shape)  # spectral norm's power-iteration state


def test_build_errors_name_the_problem():
    def cfg(**kw):
        return ml_collections.ConfigDict(kw)

    with pytest.raises(ValueError, match=r"unknown model kind 'resnt'; valid names: mlp, conv, dcgan, resnet, biggan"):
        models.build(cfg(kind="resnt"), (2,))
    with pytest.raises(ValueError, match=r"unknown model kind None"):
        models.build(cfg(width=3), (2,))
    with pytest.raises(ValueError, match=r"kind='conv' needs a square image data_shape.*\(2,\)"):
        models.build(cfg(kind="conv"), (2,))
    with pytest.raises(ValueError, match=r"kind='conv'.*\(8, 16, 1\)"):
        models.build(cfg(kind="conv"), (8, 16, 1))
    with pytest.raises(ValueError, match=r"kind='mlp' needs a flat.*\(8, 8, 1\).*kind='conv'"):
        models.build(cfg(kind="mlp"), (8, 8, 1))
    with pytest.raises(ValueError, match=r"image_size 20 is not supported"):
        models.build(cfg(kind="conv"), (20, 20, 1))
    with pytest.raises(ValueError, match="unknown activation 'sigmoidish'"):
        models.build(cfg(kind="mlp", activation="sigmoidish"), (2,))
