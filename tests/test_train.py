"""Tests for the train step: its update equals a hand-composed update, devices, fusing, NaN guard, methods."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import common
from gan_jax import losses, parallel, penalties
from gan_jax import train as engine_lib
from gan_jax.data import DataSource, make_source


def _config(method="wgan_gp", **changes):
    cfg = common.toy("ring8", method, "smoke")
    cfg.data.batch_size = 16
    cfg.model.width = 16
    cfg.model.depth = 2
    cfg.train.steps_per_call = 1
    for role in ("generator", "critic"):
        if changes.get("sgd"):
            cfg.optim[role].name = "sgd"
            cfg.optim[role].learning_rate = 0.05
    for key, value in changes.items():
        if key != "sgd":
            section, field = key.split("__")
            cfg[section][field] = value
    return cfg


def _setup(cfg, num_devices=1, source=None, steps_per_call=None):
    source = source or make_source(cfg.data)
    engine = engine_lib.make_engine(cfg, source.shape)
    mesh = parallel.make_mesh(num_devices)
    state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
    step = engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=steps_per_call)
    return source, engine, state, step


def _numpy_tree(tree):
    as_numpy = lambda x: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
    return jax.tree.map(as_numpy, tree)


def test_one_step_equals_hand_composed_sgd_update():
    # n_critic = 1, SGD: critic ← c − η∇_c[L_D(c; x, G(z)) + λ·GP]; generator ← g − η∇_g L_G(c'; G_g(z')).
    cfg = _config("wgan_gp", sgd=True, loss__n_critic=1)
    source, engine, state, step = _setup(cfg)
    before = _numpy_tree(state)
    inputs = engine_lib.draw_step_inputs(cfg, source, state, source.arrays)
    new_state, metrics = step(state, source.arrays)

    gen = lambda g, z: engine.generator.apply({"params": g}, z)
    critic = lambda c, x: engine.critic.apply({"params": c}, x)
    wasserstein, gp = losses.get("wasserstein"), penalties.get("gp")

    def critic_loss(c):
        real, fake = inputs.real[0], gen(before.generator_params, inputs.critic_noise[0])
        d = wasserstein.discriminator(critic(c, real), critic(c, fake))
        return d + cfg.loss.penalty_weight * gp(functools.partial(critic, c), real, fake, inputs.penalty_keys[0])

    eta = cfg.optim.critic.learning_rate
    grads = jax.grad(critic_loss)(before.critic_params)
    expected_c = jax.tree.map(lambda p, g: p - eta * g, before.critic_params, grads)
    g_grads = jax.grad(lambda g: wasserstein.generator(critic(expected_c, gen(g, inputs.generator_noise))))(
        before.generator_params)
    expected_g = jax.tree.map(lambda p, g: p - eta * g, before.generator_params, g_grads)

    got = _numpy_tree(new_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got.critic_params, expected_c)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got.generator_params,
                 expected_g)
    assert int(new_state.step) == 1
    np.testing.assert_allclose(metrics["d_loss"][0], critic_loss(before.critic_params)
                               - cfg.loss.penalty_weight * metrics["penalty"][0], rtol=1e-5)


@pytest.mark.parametrize("method", ["wgan_gp", "unrolled"])
def test_four_devices_equal_one_device_on_the_same_global_batch(method):
    cfg = _config(method, sgd=True)
    results = []
    for n in (1, 4):
        source, _, state, step = _setup(cfg, num_devices=n)
        for _ in range(3):
            state, metrics = step(state, source.arrays)
        results.append((_numpy_tree(state), jax.device_get(metrics)))
    (one, m1), (four, m4) = results
    for name in ("generator_params", "critic_params"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), getattr(one, name), getattr(four, name))
    for name in ("d_loss", "g_loss", "penalty"):
        np.testing.assert_allclose(m1[name], m4[name], rtol=1e-5, atol=1e-6)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    cfg = _config()
    cfg.data.batch_size = 18
    with pytest.raises(ValueError, match=r"batch_size=18 is not divisible by the 4 devices"):
        _setup(cfg, num_devices=4)


def test_fused_steps_match_single_steps():
    cfg = _config()
    source, _, state1, single = _setup(cfg)
    _, _, state5, fused = _setup(cfg, steps_per_call=5)
    singles = []
    for _ in range(5):
        state1, m = single(state1, source.arrays)
        singles.append(float(m["d_loss"][0]))
    state5, m5 = fused(state5, source.arrays)
    assert m5["d_loss"].shape == (5,)
    np.testing.assert_allclose(m5["d_loss"], singles, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 _numpy_tree(state1.generator_params), _numpy_tree(state5.generator_params))


@pytest.mark.parametrize("method", ["wgan_gp", "unrolled"])
def test_unrolled_loops_compute_the_same_steps(method):
    """train.unroll_loops only changes how the n_critic / unrolled-GAN loops are compiled, not the math."""
    source, _, looped, looped_step = _setup(_config(method, loss__n_critic=3), steps_per_call=2)
    _, _, unrolled, unrolled_step = _setup(_config(method, loss__n_critic=3, train__unroll_loops=True),
                                           steps_per_call=2)
    looped, m_looped = looped_step(looped, source.arrays)
    unrolled, m_unrolled = unrolled_step(unrolled, source.arrays)
    np.testing.assert_allclose(m_unrolled["d_loss"], m_looped["d_loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 _numpy_tree(unrolled.critic_params), _numpy_tree(looped.critic_params))


def test_nonfinite_batch_freezes_the_state_and_is_reported():
    cfg = _config()
    cfg.train.steps_per_call = 4
    ring = make_source(cfg.data)
    updates = cfg.loss.n_critic + cfg.loss.unroll_steps

    def poisoned(arrays, key, index, n):  # real data turn to NaN from generator step 2 on
        x = ring.sample(arrays, key, index, n)
        return jnp.where(index >= 2 * updates, jnp.nan, x)

    source = ring._replace(sample=poisoned)
    _, _, state, step = _setup(cfg, source=source)
    state, metrics = step(state, ())
    np.testing.assert_array_equal(metrics["nonfinite"], [False, False, True, True])
    assert int(state.step) == 2
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(_numpy_tree(state.generator_params)))


def test_weight_clipping_bounds_every_critic_parameter():
    cfg = _config("wgan_clip")
    source, _, state, step = _setup(cfg)
    for _ in range(3):
        state, _ = step(state, source.arrays)
    leaves = jax.tree.leaves(_numpy_tree(state.critic_params))
    assert max(np.max(np.abs(leaf)) for leaf in leaves) <= cfg.loss.clip_value + 1e-7


def test_unrolling_through_a_frozen_critic_is_the_plain_gan():
    # With a critic learning rate ~0 the k unrolled updates leave the critic unchanged: same generator step.
    states = []
    for unroll in (0, 3):
        cfg = _config("gan", sgd=True, loss__unroll_steps=unroll)
        cfg.optim.critic.learning_rate = 1e-20
        source, _, state, step = _setup(cfg)
        state, metrics = step(state, source.arrays)
        states.append(_numpy_tree(state.generator_params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), *states)
    # ... and with a learning critic the unrolled generator step differs.
    cfg = _config("gan", sgd=True, loss__unroll_steps=3)
    source, _, state, step = _setup(cfg)
    state, metrics = step(state, source.arrays)
    diff = jax.tree.map(lambda a, b: np.max(np.abs(a - b)), _numpy_tree(state.generator_params), states[0])
    assert max(jax.tree.leaves(diff)) > 1e-6
    assert not metrics["nonfinite"].any()


@pytest.mark.parametrize("loss_name, penalty", [("minimax", "none"), ("least_squares", "r1"), ("hinge", "r2")])
def test_every_loss_and_penalty_trains_finitely(loss_name, penalty):
    cfg = _config("gan", loss__name=loss_name, loss__penalty=penalty, loss__penalty_weight=1.0)
    source, _, state, step = _setup(cfg)
    state, metrics = step(state, source.arrays)
    assert not metrics["nonfinite"].any()
    assert int(state.step) == 1


def test_unknown_optimizer_and_batch_norm_with_gp_are_clear_errors():
    cfg = _config()
    cfg.optim.critic.name = "adamw2"
    with pytest.raises(ValueError, match="unknown optimizer 'adamw2'"):
        engine_lib.make_engine(cfg, (2,))
    cfg = _config()
    cfg.model.batch_norm = True
    with pytest.raises(ValueError, match="batch_norm=True cannot be used with the 'gp' penalty"):
        engine_lib.make_engine(cfg, (2,))


def test_spectral_norm_critic_state_is_carried_in_the_train_state():
    cfg = _config("gan")
    cfg.model.spectral_norm = True
    source, _, state, step = _setup(cfg)
    assert jax.tree.leaves(state.critic_state), "spectral norm keeps its power-iteration vectors"
    before = _numpy_tree(state.critic_state)
    state, metrics = step(state, source.arrays)
    after = _numpy_tree(state.critic_state)
    assert not metrics["nonfinite"].any()
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def _compiled_text(step, state, arrays):
    return step.lower(state, arrays).compile().as_text()


def test_eigen_cpu_matmuls_compile_without_ynnpack_and_compute_the_same_step():
    """train.cpu_matmuls only picks XLA:CPU's matmul kernels: the step's math is the same either way."""
    results = []
    for choice in ("eigen", "xla_default"):
        cfg = _config(loss__n_critic=2, model__width=64, train__cpu_matmuls=choice)
        source, _, state, step = _setup(cfg)
        text = _compiled_text(step, state, source.arrays)
        state, metrics = step(state, source.arrays)
        results.append((text, _numpy_tree(state), jax.device_get(metrics)))
    (eigen_text, eigen, m_eigen), (_, default, m_default) = results
    assert "ynn_fusion" not in eigen_text, "cpu_matmuls='eigen' must compile without YNNPACK fusions"
    np.testing.assert_allclose(m_eigen["d_loss"], m_default["d_loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 eigen.critic_params, default.critic_params)


def test_compiler_options_name_errors_skip_unknown_options_and_other_platforms(monkeypatch):
    mesh = parallel.make_mesh(1)
    with pytest.raises(ValueError, match=r"unknown cpu_matmuls 'mkl'; valid names: \['eigen', 'xla_default'\]"):
        parallel.compiler_options(mesh, "mkl")
    assert parallel.compiler_options(mesh, "xla_default") == {}
    monkeypatch.setitem(parallel.CPU_MATMULS, "eigen", {"xla_cpu_no_such_option_in_any_jaxlib": ""})
    assert parallel.compiler_options(mesh, "eigen") == {}, "an option this jaxlib rejects is left out"

    class Device:
        platform = "gpu"

    class GpuMesh:
        devices = np.array([Device()], dtype=object)

    monkeypatch.undo()
    assert parallel.compiler_options(GpuMesh(), "eigen") == {}


def test_unknown_cpu_matmuls_in_the_config_is_a_clear_error():
    from gan_jax.config import validate

    cfg = _config(train__cpu_matmuls="mkl")
    with pytest.raises(ValueError, match=r"config.train.cpu_matmuls='mkl' is invalid: must be one of"):
        validate(cfg)
