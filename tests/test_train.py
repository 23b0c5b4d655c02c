"""Tests for the train step: its update equals a hand-composed update, devices, fusing, NaN guard, methods;
generator EMA against its closed form, PacGAN packing against hand-concatenated packs, learning-rate schedules
against their closed forms, optimizers against optax built with the keywords they take."""

import functools
import json
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments.configs import common
from gan_jax import critic_wrappers, losses, optimizers, parallel, penalties, step_inputs
from gan_jax import engine as engine_lib
from gan_jax.checkpoint import Checkpointer
from gan_jax.data import Batch, make_source
from gan_jax.registry import Registry


def _config(method="wgan_gp", **changes):
    cfg = common.toy("ring8", method, "smoke")
    cfg.data.batch_size = 16
    cfg.model.width = 16
    cfg.model.depth = 2
    cfg.train.steps_per_call = 1
    for role in ("generator", "critic"):
        if changes.get("sgd"):  # SGD reads no betas: they go back to their defaults (else an error)
            cfg.optim[role].update(name="sgd", learning_rate=0.05, b1=0.5, b2=0.9)
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


def _hand_pack(x, m):
    """Packs by hand: pack i is the concatenation of samples m·i, …, m·i+m−1 along the feature axis."""
    return jnp.concatenate([x[j::m] for j in range(m)], axis=-1)


@pytest.mark.parametrize("pack", [1, 2])
def test_one_step_equals_hand_composed_sgd_update(pack):
    # n_critic = 1, SGD: critic ← c − η∇_c[L_D(c; x, G(z)) + λ·GP]; generator ← g − η∇_g L_G(c'; G_g(z')).
    # With packing the critic scores hand-concatenated packs; the GP interpolates packs with one u per pack.
    cfg = _config("wgan_gp", sgd=True, loss__n_critic=1, loss__pack=pack)
    source, engine, state, step = _setup(cfg)
    before = _numpy_tree(state)
    inputs = step_inputs.draw_step_inputs(cfg, source, state, source.arrays)
    new_state, metrics = step(state, source.arrays)

    gen = lambda g, z: engine.generator.apply({"params": g}, z)
    critic = lambda c, x: engine.critic.apply({"params": c}, x)
    wasserstein, gp = losses.get("wasserstein"), penalties.get("gp")

    def critic_loss(c):
        real, fake = inputs.real[0], gen(before.generator_params, inputs.critic_noise[0])
        real, fake = _hand_pack(real, pack), _hand_pack(fake, pack)
        d = wasserstein.critic(critic(c, real), critic(c, fake))
        keys = inputs.penalty_keys[0][::pack]
        return d + cfg.loss.penalty_weight * gp(functools.partial(critic, c), real, fake, keys)

    eta = cfg.optim.critic.learning_rate
    grads = jax.grad(critic_loss)(before.critic_params)
    expected_c = jax.tree.map(lambda p, g: p - eta * g, before.critic_params, grads)
    g_grads = jax.grad(lambda g: wasserstein.generator(critic(expected_c, _hand_pack(gen(g, inputs.generator_noise),
                                                                                     pack))))(
        before.generator_params)
    expected_g = jax.tree.map(lambda p, g: p - eta * g, before.generator_params, g_grads)

    got = _numpy_tree(new_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got.critic_params, expected_c)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got.generator_params,
                 expected_g)
    assert int(new_state.step) == 1
    np.testing.assert_allclose(metrics["critic_loss"][0], critic_loss(before.critic_params)
                               - cfg.loss.penalty_weight * metrics["penalty"][0], rtol=1e-5)


@pytest.mark.parametrize("method, pack", [("wgan_gp", 1), ("unrolled", 1), ("wgan_gp", 2)])
def test_four_devices_equal_one_device_on_the_same_global_batch(method, pack):
    cfg = _config(method, sgd=True, loss__pack=pack)
    results = []
    for n in (1, 4):
        source, _, state, step = _setup(cfg, num_devices=n)
        for _ in range(3):
            state, metrics = step(state, source.arrays)
        results.append((_numpy_tree(state), jax.device_get(metrics)))
    (one, m1), (four, m4) = results
    for name in ("generator_params", "critic_params"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), getattr(one, name), getattr(four, name))
    for name in ("critic_loss", "generator_loss", "penalty"):
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
        singles.append(float(m["critic_loss"][0]))
    state5, m5 = fused(state5, source.arrays)
    assert m5["critic_loss"].shape == (5,)
    np.testing.assert_allclose(m5["critic_loss"], singles, rtol=1e-5)
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
    np.testing.assert_allclose(m_unrolled["critic_loss"], m_looped["critic_loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 _numpy_tree(unrolled.critic_params), _numpy_tree(looped.critic_params))


def test_nonfinite_batch_freezes_the_state_and_is_reported():
    cfg = _config()
    cfg.train.steps_per_call = 4
    ring = make_source(cfg.data)
    updates = cfg.loss.n_critic + cfg.loss.unroll_steps

    def poisoned(arrays, key, index, n):  # real data turn to NaN from generator step 2 on
        x = ring.sample(arrays, key, index, n).x
        return Batch(jnp.where(index >= 2 * updates, jnp.nan, x))

    source = ring._replace(sample=poisoned)
    _, _, state, step = _setup(cfg, source=source)
    state, metrics = step(state, ())
    np.testing.assert_array_equal(metrics["nonfinite"], [False, False, True, True])
    assert int(state.step) == 2
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(_numpy_tree(state.generator_params)))


def test_all_finite_judges_the_floating_leaves_on_host_and_under_jit():
    # The train step's NaN guard and the checkpoint restore's check are this one function.
    tree = {"w": jnp.ones(3), "step": jnp.int32(2), "key": jax.random.key(0), "u": np.arange(4, dtype=np.uint32)}
    for check in (engine_lib.all_finite, jax.jit(engine_lib.all_finite)):
        assert bool(check(tree)) and bool(check({}))
        assert not bool(check({**tree, "w": jnp.array([1.0, jnp.inf, 0.0])}))
        assert not bool(check({**tree, "m": jnp.float32(jnp.nan)}))


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


def _compiled_and_one_step(cfg):
    """(the compiled step's HLO text, the state after one step as numpy, that step's metrics) of `cfg`."""
    source, _, state, step = _setup(cfg)
    text = step.lower(state, source.arrays).compile().as_text()
    state, metrics = step(state, source.arrays)
    return text, _numpy_tree(state), jax.device_get(metrics)


def _ynn_fused_opcodes(text: str) -> set[str]:
    """The HLO opcodes inside the computations that the compiled module's YNNPACK fusions call."""
    opcodes = set()
    for name in re.findall(r"kind=kCustom, calls=%([\w.-]+).*__ynn_fusion", text):
        body = re.search(r"^%" + re.escape(name) + r" .*?\{\n(.*?)\n\}", text, re.S | re.M).group(1)
        opcodes |= set(re.findall(r"= \S+ ([a-z][\w-]*)\(", body))
    return opcodes


def test_eigen_cpu_matmuls_compile_without_ynnpack_and_compute_the_same_step():
    """train.cpu_matmuls only picks XLA:CPU's matmul kernels: the step's math is the same either way."""
    (eigen_text, eigen, m_eigen), (_, default, m_default) = (
        _compiled_and_one_step(_config(loss__n_critic=2, model__width=64, train__cpu_matmuls=choice))
        for choice in ("eigen", "xla_default"))
    assert "ynn_fusion" not in eigen_text, "cpu_matmuls='eigen' must compile without YNNPACK fusions"
    np.testing.assert_allclose(m_eigen["critic_loss"], m_default["critic_loss"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 eigen.critic_params, default.critic_params)


def test_image_configs_take_batch_norm_reductions_to_ynnpack_and_compute_the_same_step():
    """The image-scale configs compile with "eigen_ynn_reductions": YNNPACK fusions hold the reductions (batch
    norm's statistics) and no dot or convolution, and the step equals the "eigen" step to rounding."""
    from experiments.configs import celeba64_dcgan

    cfg = celeba64_dcgan.get_config("smoke")  # DCGAN with batch norm in both networks
    assert cfg.train.cpu_matmuls == "eigen_ynn_reductions"
    ynn_text, ynn, _ = _compiled_and_one_step(cfg)
    cfg.train.cpu_matmuls = "eigen"
    eigen_text, eigen, _ = _compiled_and_one_step(cfg)
    fused = _ynn_fused_opcodes(ynn_text)
    assert "reduce" in fused and not fused & {"dot", "convolution"}, fused
    assert "ynn_fusion" not in eigen_text
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ynn.critic_params,
                 eigen.critic_params)


def test_compiler_options_name_errors_skip_unknown_options_and_other_platforms(monkeypatch):
    mesh = parallel.make_mesh(1)
    with pytest.raises(ValueError, match=r"unknown CPU matmul mode 'mkl'; valid names: eigen, eigen_ynn_reductions, xla_default$"):
        parallel.compiler_options(mesh, "mkl")
    assert parallel.compiler_options(mesh, "xla_default") == {}
    monkeypatch.setattr(parallel, "CPU_MATMULS", Registry("CPU matmul mode", {
        "eigen": {"xla_cpu_no_such_option_in_any_jaxlib": ""}}))
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
    with pytest.raises(ValueError, match=r"config.train.cpu_matmuls: unknown CPU matmul mode 'mkl'; valid names: "
                                         r"eigen, eigen_ynn_reductions, xla_default"):
        validate(cfg)


# ---------------------------------------------------------------------------------------------------------
# Generator EMA (train.ema_decay).


def test_generator_ema_equals_its_closed_form_over_the_raw_parameters():
    # ē_K = Σ_{t=1..K} (1−β)β^{K−t} θ_t / (1−β^K), θ_t the raw generator parameters after step t.
    beta, steps = 0.8, 4
    cfg = _config("gan", train__ema_decay=beta)
    source, _, state, step = _setup(cfg)
    jax.tree.map(np.testing.assert_array_equal, _numpy_tree(engine_lib.sampling_params(state)),
                 _numpy_tree(state.generator_params))  # step 0: the initial parameters
    raw = []
    for _ in range(steps):
        state, _ = step(state, source.arrays)
        raw.append(_numpy_tree(state.generator_params))
    weights = np.array([(1 - beta) * beta ** (steps - t) for t in range(1, steps + 1)]) / (1 - beta ** steps)
    expected = jax.tree.map(lambda *thetas: np.tensordot(weights, np.stack(thetas), axes=1), *raw)
    got = _numpy_tree(engine_lib.sampling_params(state))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, expected)
    assert got is not raw[-1] and not np.allclose(jax.tree.leaves(got)[0], jax.tree.leaves(raw[-1])[0])


def test_ema_off_keeps_no_average_and_ema_on_leaves_the_training_bitwise_unchanged():
    results = []
    for decay in (0.0, 0.99):
        cfg = _config("wgan_gp", train__ema_decay=decay, train__steps_per_call=3)
        source, _, state, step = _setup(cfg, steps_per_call=3)
        state, metrics = step(state, source.arrays)
        results.append((state, _numpy_tree(state.replace(generator_ema_params=None)), jax.device_get(metrics)))
    (off, off_tree, off_metrics), (on, on_tree, on_metrics) = results
    assert off.generator_ema_params is None and engine_lib.sampling_params(off) is off.generator_params
    assert on.generator_ema_params is not None
    for a, b in zip(jax.tree.leaves(off_tree), jax.tree.leaves(on_tree)):
        np.testing.assert_array_equal(a, b)
    for name in ("critic_loss", "generator_loss", "penalty"):
        np.testing.assert_array_equal(off_metrics[name], on_metrics[name])


def test_ema_state_is_checkpointed_and_resumes_bitwise(tmp_path):
    cfg = _config("gan", train__ema_decay=0.9)
    source, engine, state, step = _setup(cfg)
    for _ in range(2):
        state, _ = step(state, source.arrays)
    checkpointer = Checkpointer(str(tmp_path), cfg)
    checkpointer.save(state)
    checkpointer.wait()
    fresh = engine_lib.create_state(cfg, engine, source.shape)
    restored = parallel.replicate(checkpointer.restore_latest(fresh), parallel.make_mesh(1))
    checkpointer.close()
    for a, b in zip(jax.tree.leaves(_numpy_tree(restored)), jax.tree.leaves(_numpy_tree(state))):
        np.testing.assert_array_equal(a, b)
    continued, _ = step(state, source.arrays)
    resumed, _ = step(restored, source.arrays)
    for a, b in zip(jax.tree.leaves(_numpy_tree(resumed)), jax.tree.leaves(_numpy_tree(continued))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_ema_decay_outside_zero_one_is_a_clear_error(decay):
    with pytest.raises(ValueError, match=r"config.train.ema_decay=.* must be in \[0, 1\)"):
        engine_lib.make_engine(_config(train__ema_decay=decay), (2,))


# ---------------------------------------------------------------------------------------------------------
# PacGAN packing (loss.pack).


def test_pack_samples_hand_worked():
    flat = jnp.arange(12.0).reshape(6, 2)  # samples [0,1], [2,3], …, [10,11]
    np.testing.assert_array_equal(critic_wrappers.pack_samples(flat, 3),
                                  [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    images = jnp.arange(8.0).reshape(2, 2, 2, 1)  # two 2×2 one-channel images: [[0,1],[2,3]] and [[4,5],[6,7]]
    np.testing.assert_array_equal(critic_wrappers.pack_samples(images, 2),
                                  [[[[0, 4], [1, 5]], [[2, 6], [3, 7]]]])  # pixel-wise channel concatenation
    assert critic_wrappers.pack_samples(flat, 1) is flat
    assert critic_wrappers.packed_shape((2,), 4) == (8,) and critic_wrappers.packed_shape((8, 8, 3), 2) == (8, 8, 6)


@pytest.mark.parametrize("kind, data_shape", [("mlp", (2,)), ("conv", (8, 8, 1))])
def test_packed_critic_is_built_for_packs_and_scores_hand_concatenated_inputs(kind, data_shape):
    cfg = _config("gan", loss__pack=3, data__batch_size=6, model__kind=kind, model__base_width=4)
    engine = engine_lib.make_engine(cfg, data_shape)
    state = engine_lib.create_state(cfg, engine, data_shape)
    x = jax.random.normal(jax.random.key(0), (6, *data_shape))
    logits, _ = engine_lib._apply_critic(engine, state.critic_params, state.critic_state, x, False)
    hand = engine.critic.apply({"params": state.critic_params}, _hand_pack(x, 3), train=False)
    assert logits.shape == (2,)
    np.testing.assert_array_equal(logits, hand)
    in_features = {leaf.shape[-2] for leaf in jax.tree.leaves(state.critic_params) if leaf.ndim >= 2}
    assert 3 * data_shape[-1] in in_features  # the first layer takes m·d features / m·C channels


def test_pack_not_dividing_the_batch_or_the_per_device_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"config.data.batch_size=18 is not divisible by config.loss.pack=4"):
        engine_lib.make_engine(_config(loss__pack=4, data__batch_size=18), (2,))
    with pytest.raises(ValueError, match=r"config.loss.pack=0 is invalid: must be an integer >= 1"):
        engine_lib.make_engine(_config(loss__pack=0), (2,))
    cfg = _config(loss__pack=8, data__batch_size=16)  # 16 = 2 packs, but 4 per device on 4 devices
    with pytest.raises(ValueError, match=r"batch_size=16 over 4 devices is 4 per device, not divisible by "
                                         r"config.loss.pack=8"):
        _setup(cfg, num_devices=4)


# ---------------------------------------------------------------------------------------------------------
# Learning-rate schedules (optim.<role>.schedule) and the optimizer's fields.


def _opt_config(**fields):
    opt = common.toy("ring8", "gan", "smoke").optim.generator
    opt.update(name="sgd", learning_rate=0.1, b1=0.5, b2=0.9)
    opt.update(fields)
    return opt


@pytest.mark.parametrize("fields, expected", [
    (dict(schedule="constant"), lambda t: 0.1),
    (dict(schedule="step", boundaries=(3, 5), decay_factor=0.5), lambda t: 0.1 * 0.5 ** ((t >= 3) + (t >= 5))),
    (dict(schedule="cosine", decay_steps=4, alpha=0.2),
     lambda t: 0.1 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * min(t, 4) / 4)))),
])
def test_sgd_on_a_linear_loss_steps_by_the_schedule_in_generator_steps(fields, expected):
    # L(p) = g·p: SGD's update at optimizer count c is −η(c)·g. The critic (3 updates per generator step)
    # uses η(⌊c/3⌋): the rate of its generator step.
    opt_cfg = _opt_config(**fields)
    schedule = optimizers.learning_rate_schedule(opt_cfg)
    np.testing.assert_allclose([float(schedule(t)) for t in range(7)], [expected(t) for t in range(7)], rtol=1e-6)
    g = jnp.array([1.5, -2.0])
    for per_step in (1, 3):
        opt = optimizers.make_optimizer(opt_cfg, updates_per_step=per_step)
        params, opt_state = jnp.zeros(2), opt.init(jnp.zeros(2))
        for count in range(7 * per_step):
            updates, opt_state = opt.update(g, opt_state, params)
            np.testing.assert_allclose(updates, -expected(count // per_step) * g, rtol=1e-6,
                                       err_msg=f"count {count}, {per_step} updates per generator step")
            params = optax.apply_updates(params, updates)


def test_engine_schedules_count_generator_steps_for_both_roles():
    # SGD with the rate dropping to 0 at generator step 2: steps 0 and 1 are the constant-rate steps, step 2
    # changes nothing — for the critic too, although it has made 3·2 = 6 updates by then (n_critic = 3).
    runs = []
    for stepped in (False, True):
        cfg = _config("wgan_gp", sgd=True, loss__n_critic=3)
        for role in ("generator", "critic"):
            if stepped:
                cfg.optim[role].update(schedule="step", boundaries=(2,), decay_factor=0.0)
        source, _, state, step = _setup(cfg)
        trajectory = []
        for _ in range(3):
            state, _ = step(state, source.arrays)
            trajectory.append(_numpy_tree((state.generator_params, state.critic_params)))
        runs.append(trajectory)
    constant, stepped = runs
    for t in (0, 1):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), stepped[t], constant[t])
    jax.tree.map(np.testing.assert_array_equal, stepped[2], stepped[1])
    assert not np.allclose(jax.tree.leaves(constant[2])[0], jax.tree.leaves(constant[1])[0])


def test_a_scheduled_penalty_weight_is_the_run_whose_constant_weight_changes_at_the_boundary():
    # λ(t) = 0.1 before generator step 2, 0.1·0.05 from it on: the same trajectory as training 2 steps at a
    # constant λ = 0.1, then on at a constant λ = 0.005 (two engines of one state, each config's compiled step);
    # not the constant run.
    cfg = _config("wgan_gp", loss__n_critic=2)
    scheduled = cfg.copy_and_resolve_references()
    scheduled.loss.penalty_schedule.update(schedule="step", boundaries=(2,), decay_factor=0.05)
    np.testing.assert_allclose([float(optimizers.penalty_weight_schedule(scheduled.loss)(t)) for t in range(4)],
                               [0.1, 0.1, 0.005, 0.005], rtol=1e-6)
    later = cfg.copy_and_resolve_references()
    later.loss.penalty_weight = 0.005
    source, engine, state, step = _setup(scheduled)
    mesh = parallel.make_mesh(1)
    early, late = (engine_lib.make_train_step(c, engine_lib.make_engine(c, source.shape), source, mesh)
                   for c in (cfg, later))
    runs = {"scheduled": [step] * 4, "composed": [early, early, late, late], "constant": [early] * 4}
    finals = {}
    for name, calls in runs.items():
        s = jax.tree.map(jnp.copy, state)  # each run donates its own copy
        for call in calls:
            s, _ = call(s, source.arrays)
        finals[name] = _numpy_tree((s.generator_params, s.critic_params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), finals["scheduled"],
                 finals["composed"])
    assert not np.allclose(jax.tree.leaves(finals["scheduled"])[0], jax.tree.leaves(finals["constant"])[0])


@pytest.mark.parametrize("fields, message", [
    (dict(schedule="warmup"), r"config.loss.penalty_schedule.schedule: unknown schedule 'warmup'"),
    (dict(schedule="step"), r"config.loss.penalty_schedule.boundaries=\(\) is invalid for schedule='step'"),
    (dict(decay_steps=100),
     r"config.loss.penalty_schedule.decay_steps=100 is not used by schedule 'constant'.*leave it at its default 0"),
    (dict(boundary=5), r"config.loss.penalty_schedule.boundary=5 is not used by schedule 'constant'.*; remove it"),
])
def test_penalty_schedule_fields_it_cannot_use_are_clear_errors(fields, message):
    cfg = _config("wgan_gp")
    cfg.loss.penalty_schedule.update(fields)
    with pytest.raises(ValueError, match=message):
        engine_lib.make_engine(cfg, (2,))


def test_schedule_config_survives_the_json_round_trip_of_a_resume():
    cfg = _config("gan")
    cfg.optim.critic.update(schedule="step", boundaries=(10, 20))
    loaded = ml_collections.ConfigDict(json.loads(cfg.to_json()))  # how experiments/train.py reads config.json
    assert loaded.optim.critic.boundaries == [10, 20] and loaded.optim.generator.boundaries == []
    engine_lib.make_engine(loaded, (2,))


@pytest.mark.parametrize("fields, message", [
    (dict(schedule="linear_warmup"), r"config.optim.critic.schedule: unknown schedule 'linear_warmup'; "
                                     r"valid names: constant, step, cosine, linear$"),
    (dict(schedule="step"), r"config.optim.critic.boundaries=\(\) is invalid for schedule='step'"),
    (dict(schedule="step", boundaries=(5, 3)), r"boundaries=\(5, 3\) is invalid .* increasing"),
    (dict(schedule="cosine"), r"config.optim.critic.decay_steps=0 is invalid for schedule='cosine'"),
    (dict(schedule="cosine", decay_steps=10, alpha=1.5), r"config.optim.critic.alpha=1.5 is invalid"),
    (dict(boundaries=(5,)), r"config.optim.critic.boundaries=\(5,\) is not used by optimizer 'adam' with "
                            r"schedule 'constant'"),
    (dict(name="rmsprop", b1=0.9), r"config.optim.critic.b1=0.9 is not used by optimizer 'rmsprop' .* "
                                   r"leave it at its default 0.5"),
    (dict(name="sgd", b2=0.999), r"config.optim.critic.b2=0.999 is not used by optimizer 'sgd'"),
])
def test_optimizer_fields_it_cannot_use_are_clear_errors(fields, message):
    cfg = _config("wgan_gp")
    cfg.optim.critic.update(fields)
    with pytest.raises(ValueError, match=message):
        engine_lib.make_engine(cfg, (2,))


def test_optimizers_take_the_keywords_of_their_optax_signature():
    assert {"b1", "b2", "eps"} <= set(optimizers.keywords_taken("adam"))
    assert not {"b1", "b2"} & set(optimizers.keywords_taken("rmsprop"))
    assert not {"b1", "b2"} & set(optimizers.keywords_taken("sgd"))
    for name in optimizers.OPTIMIZERS:  # set from `differentiable`, never from the config
        assert not {"learning_rate", "eps_root", "eps_in_sqrt"} & set(optimizers.keywords_taken(name))


@pytest.mark.parametrize("name, field, value, advice", [
    ("sgd", "b1", 0.9, "leave it at its default 0.5"),
    ("rmsprop", "b2", 0.999, "leave it at its default 0.9"),
    ("sgd", "weight_decay", 1e-4, "remove it"),  # a field of no optimizer here and not in the base config
])
def test_a_keyword_the_optimizer_does_not_take_is_an_error_naming_it_and_what_it_takes(name, field, value, advice):
    opt_cfg = _opt_config(name=name)
    opt_cfg[field] = value
    takes = ", ".join(("learning_rate", *optimizers.keywords_taken(name)))
    with pytest.raises(ValueError, match=rf"^config\.optim\.{field}={value!r} is not used by optimizer '{name}' "
                                         rf"with schedule 'constant' \(optax\.{name} takes: {re.escape(takes)}; "
                                         rf".*\); {advice}$"):
        optimizers.make_optimizer(opt_cfg)


def _updates(opt, grads, params):
    """The updates of `opt` for the gradient sequence `grads`, parameters moved by each."""
    state, out = opt.init(params), []
    for g in grads:
        u, state = opt.update(g, state, params)
        params = optax.apply_updates(params, u)
        out.append(np.asarray(u))
    return out


_GRADS = [jnp.array([1.5, -2.0, 0.25]), jnp.array([-0.5, 1.0, 4.0]), jnp.array([2.0, 0.0, -1.0])]


@pytest.mark.parametrize("differentiable", [False, True])
def test_keywords_the_optimizer_takes_are_passed_to_optax(differentiable):
    params = jnp.array([0.3, -1.0, 2.0])
    eps_root = 1e-8 if differentiable else 0.0
    opt_cfg = _opt_config(name="adam", learning_rate=0.01, b1=0.5, b2=0.99)
    got = _updates(optimizers.make_optimizer(opt_cfg, differentiable=differentiable), _GRADS, params)
    want = _updates(optax.adam(0.01, b1=0.5, b2=0.99, eps_root=eps_root), _GRADS, params)
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    default_b1 = _updates(optax.adam(0.01, b2=0.99, eps_root=eps_root), _GRADS, params)
    assert not np.allclose(got[-1], default_b1[-1]), "b1 = 0.5 changes the second and later updates"
    opt_cfg.eps = 1e-3  # a keyword optax.adam takes that the base config does not have: passed through too
    got = _updates(optimizers.make_optimizer(opt_cfg, differentiable=differentiable), _GRADS, params)
    want = _updates(optax.adam(0.01, b1=0.5, b2=0.99, eps=1e-3, eps_root=eps_root), _GRADS, params)
    np.testing.assert_array_equal(np.stack(got), np.stack(want))


def test_rmsprop_keeps_its_epsilon_outside_the_root_unless_differentiated():
    params = jnp.zeros(3)
    for differentiable in (False, True):
        opt = optimizers.make_optimizer(_opt_config(name="rmsprop", learning_rate=0.01), differentiable=differentiable)
        want = optax.rmsprop(0.01, eps_in_sqrt=differentiable)
        np.testing.assert_array_equal(np.stack(_updates(opt, _GRADS, params)), np.stack(_updates(want, _GRADS, params)))
        d = jax.grad(lambda g: jnp.sum(opt.update(g, opt.init(params), params)[0]))(jnp.zeros(3))
        assert np.all(np.isfinite(d)) == differentiable, "differentiable updates have a finite derivative at g = 0"


def test_a_keyword_the_engine_sets_cannot_come_from_the_config():
    opt_cfg = _opt_config(name="adam")
    opt_cfg.eps_root = 1e-3
    with pytest.raises(ValueError, match=r"config.optim.eps_root cannot be set: the engine sets it"):
        optimizers.make_optimizer(opt_cfg)


def test_an_optimizer_added_to_the_registry_gets_its_own_keywords(monkeypatch):
    monkeypatch.setattr(optimizers, "OPTIMIZERS", Registry("optimizer", {**optimizers.OPTIMIZERS, "adamw": optax.adamw}))
    opt_cfg = _opt_config(name="adamw", learning_rate=0.01, b1=0.5)
    opt_cfg.weight_decay = 0.1
    params = jnp.array([0.3, -1.0, 2.0])
    np.testing.assert_array_equal(np.stack(_updates(optimizers.make_optimizer(opt_cfg), _GRADS, params)),
                                  np.stack(_updates(optax.adamw(0.01, b1=0.5, b2=0.9, weight_decay=0.1), _GRADS, params)))


def test_every_preset_builds_its_optimizers():
    for method in common.METHODS:
        engine_lib.make_engine(common.toy("ring8", method, "smoke"), (2,))
