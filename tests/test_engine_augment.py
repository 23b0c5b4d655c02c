"""The engine with augmentation (gan_jax.augment) and the ACGAN loss option: one step equals a hand-composed update
(the critic sees augmented reals and fakes, the penalty augmented images, the generator augmented fakes; ACGAN's
cross-entropies), ADA's p follows its formula on the logged signs, is checkpointed and resumes bit for bit, does
not depend on the device count, and gates the ops (p = 1 is the policy always on, p = 0 no augmentation); the
ACGAN head reads the critic's features; old checkpoints restore; bad settings are one clear error."""

import functools
import os
import subprocess
import sys

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import common
from gan_jax import augment, critic_wrappers, losses, models, parallel, penalties, step_inputs
from gan_jax import checkpoint as ckpt
from gan_jax import config as config_lib
from gan_jax import engine as engine_lib
from gan_jax.data import make_source
from gan_jax.errors import GanJaxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    """One offline digits dataset for the module's runs."""
    monkeypatch.setenv("GAN_JAX_DATA_DIR", str(tmp_path_factory.getbasetemp() / "tfds"))


def _digits(**changes):
    """A tiny conv run on the 8×8 digits: batch 8, one critic update, SGD (so updates are easy to compose)."""
    cfg = common.images("digits", "wgan_gp", "smoke")
    cfg.data.batch_size = 8
    cfg.model.base_width = 4
    cfg.model.latent_dim = 8
    cfg.loss.n_critic = 1
    for role in ("generator", "critic"):
        cfg.optim[role].update(name="sgd", learning_rate=0.05)
    for key, value in changes.items():
        section, field = key.split("__")
        cfg[section][field] = value
    config_lib.validate(cfg)
    return cfg


def _setup(cfg, num_devices=1):
    source = make_source(cfg.data)
    engine = engine_lib.make_engine(cfg, source.shape)
    mesh = parallel.make_mesh(num_devices)
    state = parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh)
    return source, engine, mesh, state, engine_lib.make_train_step(cfg, engine, source, mesh, steps_per_call=1)


def _leaves(tree):
    as_numpy = lambda x: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                                    else x)
    return [as_numpy(leaf) for leaf in jax.tree.leaves(tree)]


def _run(state, step, source, n):
    metrics = []
    for _ in range(n):
        state, m = step(state, source.arrays)
        metrics.append({k: float(v[0]) for k, v in jax.device_get(m).items()})
    return state, metrics


# ------------------------------------------------------------------------------------------------------------
# One step, composed by hand.


def test_one_step_with_diffaugment_gp_and_acgan_equals_the_hand_composed_update():
    # Critic:    c ← c − η∇_c[W(f(T(x)), f(T(G(z)))) + λ_gp·GP(f; T(x), T(G(z)))
    #                        + λ_ac·(CE(h(T(x)), y) + CE(h(T(G(z))), y'))]
    # Generator: g ← g − η∇_g[−E f'(T(G(z''))) + λ_ac·CE(h'(T(G(z''))), y'')], with the updated critic (f', h').
    cfg = _digits(model__num_classes=10, augment__policy=augment.DIFFAUGMENT, loss__acgan_weight=0.5)
    source, engine, _, state, step = _setup(cfg)
    before = jax.device_get(state)
    inputs = jax.jit(lambda state: step_inputs.draw_step_inputs(cfg, source, state, source.arrays))(state)
    new_state, metrics = step(state, source.arrays)
    policy, eta, lam_gp, lam_ac = augment.DIFFAUGMENT, 0.05, cfg.loss.penalty_weight, 0.5
    see = lambda keys, x: augment.apply(keys, x, policy)
    gen = lambda g, z, y: engine.generator.apply({"params": g}, z, y)
    critic = lambda c, x, y: engine.critic.apply({"params": c}, x, y, train=False)  # (logits, class logits)
    wasserstein, gp, ce = losses.get("wasserstein"), penalties.get("gp"), losses.auxiliary_classifier_loss

    @jax.jit  # one compilation for the whole hand-made step
    def by_hand(before, inputs):
        y_real, y_fake, keys = inputs.real_labels[0], inputs.critic_fake_labels[0], inputs.critic_augment_keys[0]
        real = see(keys[:, 0], inputs.real[0])
        fake = see(keys[:, 1], gen(before.generator_params, inputs.critic_noise[0], y_fake))

        def critic_terms(c):
            (real_logits, real_classes), (fake_logits, fake_classes) = critic(c, real, y_real), critic(c, fake, y_fake)
            penalty = gp(lambda x, y: critic(c, x, y)[0], real, fake, inputs.penalty_keys[0], (y_real, y_fake))
            classification = ce(real_classes, y_real) + ce(fake_classes, y_fake)
            adversarial = wasserstein.critic(real_logits, fake_logits)
            return adversarial + lam_gp * penalty + lam_ac * classification, dict(
                critic_loss=adversarial, penalty=penalty, acgan_critic_loss=classification)

        grads, terms = jax.grad(critic_terms, has_aux=True)(before.critic_params)
        critic_params = jax.tree.map(lambda p, g: p - eta * g, before.critic_params, grads)
        y_gen = inputs.generator_labels

        def generator_terms(g):
            logits, classes = critic(critic_params, see(inputs.generator_augment_keys, gen(g, inputs.generator_noise,
                                                                                             y_gen)), y_gen)
            return wasserstein.generator(logits) + lam_ac * ce(classes, y_gen), ce(classes, y_gen)

        g_grads, terms["acgan_generator_loss"] = jax.grad(generator_terms, has_aux=True)(before.generator_params)
        return critic_params, jax.tree.map(lambda p, g: p - eta * g, before.generator_params, g_grads), terms

    critic_params, generator_params, terms = by_hand(before, inputs)
    close = functools.partial(np.testing.assert_allclose, rtol=2e-5, atol=2e-6)
    jax.tree.map(close, jax.device_get(new_state.critic_params), critic_params)
    jax.tree.map(close, jax.device_get(new_state.generator_params), generator_params)
    assert set(new_state.critic_params) == {"critic", "classifier"}
    for name, value in terms.items():
        np.testing.assert_allclose(metrics[name][0], value, rtol=2e-5, err_msg=name)
    assert float(terms["penalty"]) > 0 and float(terms["acgan_critic_loss"]) > 0


def test_the_acgan_head_is_a_dense_layer_on_the_critics_features():
    # MLPCritic: φ = relu(W₂ relu(W₁x + b₁) + b₂) is the input of its output layer "logit"; the head is Wφ + b.
    critic = models.MLPCritic(width=6, depth=2, num_classes=3)
    head = critic_wrappers.AuxiliaryClassifierCritic(critic, 3)
    x, y = jax.random.normal(jax.random.key(0), (5, 4)), jnp.array([0, 1, 2, 1, 0])
    variables = head.init(jax.random.key(1), x, y, train=False)
    logits, classes = head.apply(variables, x, y, train=False)
    p = variables["params"]
    np.testing.assert_allclose(logits, critic.apply({"params": p["critic"]}, x, y, train=False), rtol=1e-6)
    phi = np.asarray(x)
    for layer in ("hidden_0", "hidden_1"):
        phi = np.maximum(phi @ np.asarray(p["critic"][layer]["kernel"]) + np.asarray(p["critic"][layer]["bias"]), 0)
    expected = phi @ np.asarray(p["classifier"]["kernel"]) + np.asarray(p["classifier"]["bias"])
    np.testing.assert_allclose(classes, expected, rtol=1e-5, atol=1e-6)
    assert classes.shape == (5, 3) and classes.dtype == jnp.float32


def test_the_acgan_head_needs_a_critic_with_a_logit_layer():
    class Scorer(nn.Module):  # a critic whose output layer has another name
        @nn.compact
        def __call__(self, x, y=None, train=True):
            return nn.Dense(1, name="score")(x)[:, 0]

    with pytest.raises(GanJaxError, match="needs a critic whose output layer is a submodule named 'logit'; Scorer"):
        critic_wrappers.AuxiliaryClassifierCritic(Scorer(), 3).init(jax.random.key(0), jnp.zeros((2, 4)))


# ------------------------------------------------------------------------------------------------------------
# ADA: p in the state.


def _ada(**changes):
    # 8 real images per step, p moved every 2 steps by ±16/(0.16·1000) = ±0.1, from 0.5.
    ada = dict(augment__policy="xflip,translation,brightness", augment__ada=True, augment__ada_p=0.5,
               augment__ada_interval=2, augment__ada_kimg=0.16)
    return _digits(**{**ada, **changes})


@pytest.fixture(scope="module")
def ada_run(tmp_path_factory):
    """Six ADA steps; the same six from a fresh state; two + a checkpoint restored + four more; 4 devices."""
    with pytest.MonkeyPatch.context() as patch:  # the data-dir fixture is function-scoped: the same folder here
        patch.setenv("GAN_JAX_DATA_DIR", str(tmp_path_factory.getbasetemp() / "tfds"))
        return _ada_runs(str(tmp_path_factory.mktemp("ada")))


def _ada_runs(workdir):
    cfg = _ada()
    source, engine, mesh, fresh, step = _setup(cfg)
    like = jax.eval_shape(lambda: engine_lib.create_state(cfg, engine, source.shape))
    final, metrics = _run(fresh, step, source, 6)
    again, _ = _run(parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh), step, source, 6)
    first, _ = _run(parallel.replicate(engine_lib.create_state(cfg, engine, source.shape), mesh), step, source, 3)
    saver = ckpt.Checkpointer(workdir, cfg)
    saver.save(first)
    saver.close()
    restored = ckpt.Checkpointer(workdir, cfg).restore_latest(like)
    resumed, _ = _run(parallel.replicate(restored, mesh), step, source, 3)
    four_source, _, _, four_state, four_step = _setup(cfg, num_devices=4)
    four, four_metrics = _run(four_state, four_step, four_source, 6)
    zero = engine_lib.create_state(cfg, engine, source.shape)
    zero = zero.replace(augment_state={**zero.augment_state, "p": jnp.float32(0.0)})
    p_zero, zero_metrics = _run(parallel.replicate(zero, mesh), step, source, 2)
    plain_source, _, _, plain_state, plain_step = _setup(_digits())
    plain, plain_metrics = _run(plain_state, plain_step, plain_source, 2)
    params = lambda state: jax.device_get((state.generator_params, state.critic_params))
    return dict(cfg=cfg, final=final, metrics=metrics, again=again, first=first, restored=restored,
                resumed=resumed, four=four, four_metrics=four_metrics, p_zero=(params(p_zero), zero_metrics),
                plain=(params(plain), plain_metrics))


def test_ada_p_follows_its_formula_on_the_logged_signs(ada_run):
    metrics, final = ada_run["metrics"], ada_run["final"]
    p, expected = 0.5, []
    for t, m in enumerate(metrics):
        expected.append(p)
        if (t + 1) % 2 == 0:  # the interval's r_t: both steps see 8 real logits
            r = (metrics[t - 1]["ada_real_sign"] + m["ada_real_sign"]) / 2
            p = min(max(p + np.sign(r - 0.6) * 16 / 160, 0.0), 1.0)
    np.testing.assert_allclose([m["augment_p"] for m in metrics], expected, atol=1e-6)
    np.testing.assert_allclose(final.augment_state["p"], p, atol=1e-6)
    assert float(final.augment_state["real_signs"]) == 0.0  # six steps: the last interval just ended
    assert len(set(expected)) > 1, "r_t = k/16 is never the target 0.6: p moved"
    for m in metrics:
        assert all(np.isfinite(v) for v in m.values()) and m["ada_real_sign"] * 8 == round(m["ada_real_sign"] * 8)


def test_ada_runs_are_bitwise_reproducible_and_resume_bitwise_from_a_checkpoint(ada_run):
    final = _leaves(ada_run["final"])
    for other in (ada_run["again"], ada_run["resumed"]):
        assert all(np.array_equal(a, b) for a, b in zip(final, _leaves(other)))
    # The checkpoint of step 3 lies inside an interval: the sum of signs so far is saved and restored with p.
    assert set(ada_run["restored"].augment_state) == {"p", "real_signs"}
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(ada_run["first"]), _leaves(ada_run["restored"])))


def test_ada_on_four_devices_equals_one_device(ada_run):
    one, four = ada_run["final"], ada_run["four"]
    # Per-example draws and a psum of integer-valued signs: p and the signs are exact, the parameters close.
    assert [m["augment_p"] for m in ada_run["metrics"]] == [m["augment_p"] for m in ada_run["four_metrics"]]
    assert [m["ada_real_sign"] for m in ada_run["metrics"]] == [m["ada_real_sign"] for m in ada_run["four_metrics"]]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 jax.device_get((one.generator_params, one.critic_params)),
                 jax.device_get((four.generator_params, four.critic_params)))


def test_the_state_p_gates_the_ops_p_zero_trains_as_without_augmentation(ada_run):
    # Two steps of the ADA run's compiled step from p = 0 (the first p update comes after step 2) against the
    # run without a policy: the critic saw the images unchanged (where(False, T(x), x) = x).
    off, plain = ada_run["p_zero"], ada_run["plain"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), off[0], plain[0])
    np.testing.assert_allclose([m["critic_loss"] for m in off[1]], [m["critic_loss"] for m in plain[1]], rtol=1e-6,
                               atol=1e-6)  # a difference of two means: absolute rounding
    assert [m["augment_p"] for m in off[1]] == [0.0, 0.0]
    assert not np.allclose(ada_run["metrics"][0]["critic_loss"], plain[1][0]["critic_loss"])  # p = 0.5 differs


def test_a_checkpoint_written_before_augment_state_existed_restores_with_it_empty(tmp_path):
    @flax.struct.dataclass
    class PreviousTrainState:  # TrainState's fields before augment_state was added
        step: jax.Array
        generator_params: dict
        critic_params: dict
        critic_state: dict
        generator_state: dict
        generator_opt_state: tuple
        critic_opt_state: tuple
        key: jax.Array
        generator_ema_params: dict = None

    fields = dict(step=jnp.int32(7), generator_params={"w": jnp.arange(4.0)}, critic_params={"v": jnp.ones((2, 2))},
                  critic_state={}, generator_state={}, generator_opt_state=(), critic_opt_state=(),
                  key=jax.random.key(7))
    cfg = config_lib.base_config()
    saver = ckpt.Checkpointer(str(tmp_path), cfg)
    saver.save(PreviousTrainState(**fields))
    saver.close()
    like = engine_lib.TrainState(**{**fields, "step": jnp.int32(0)})
    restored = ckpt.Checkpointer(str(tmp_path), cfg).restore_latest(like)
    assert isinstance(restored, engine_lib.TrainState) and restored.augment_state == {}
    assert int(restored.step) == 7 and np.array_equal(restored.generator_params["w"], np.arange(4.0))


# ------------------------------------------------------------------------------------------------------------
# Bad settings.


def test_augmenting_data_that_are_not_images_is_a_clear_error():
    cfg = common.toy("ring8", "wgan_gp", "smoke")
    cfg.augment.policy = "translation"
    with pytest.raises(GanJaxError, match=r"config.augment.policy: .* needs images \(H, W, C\); the data's "
                                          r"examples have shape \(2,\)"):
        engine_lib.make_engine(cfg, (2,))


@pytest.mark.parametrize("weight, message", [
    (1.0, r"config.loss.acgan_weight=1.0 needs a class-conditional model: .* Set model.num_classes"),
    (-1.0, r"config.loss.acgan_weight=-1.0 is invalid: must be a finite number >= 0"),
])
def test_acgan_without_labels_or_with_a_negative_weight_is_a_clear_error(weight, message):
    cfg = common.images("digits", "wgan_gp", "smoke")
    cfg.loss.acgan_weight = weight
    with pytest.raises(GanJaxError, match=message):
        config_lib.validate(cfg)
        engine_lib.make_engine(cfg, (8, 8, 1))


def test_an_unknown_augmentation_on_the_command_line_is_one_error_line_and_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "experiments.train", "--config=experiments/configs/digits_wgan_gp.py:smoke",
               f"--workdir={workdir}", "--config.augment.policy=color,cutuot"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("gan_jax: error:")]
    assert errors == ["gan_jax: error: config.augment.policy: unknown augmentation 'cutuot' in policy "
                      "'color,cutuot'; valid names: " + ", ".join(augment.names())], result.stderr[-2000:]
    assert not workdir.exists()


def test_the_cifar10_biggan_diffaug_variant_is_the_full_run_with_the_authors_biggan_policy():
    from experiments.configs import cifar10_biggan

    full, diffaug = cifar10_biggan.get_config(), cifar10_biggan.get_config("diffaug")
    config_lib.validate(diffaug)
    flat_full, flat_diffaug = config_lib.flatten(full.to_dict()), config_lib.flatten(diffaug.to_dict())
    assert {k for k in flat_full if flat_full[k] != flat_diffaug[k]} == {"augment.policy"}
    assert diffaug.augment.policy == "translation,cutout" and not diffaug.augment.ada
    engine = engine_lib.make_engine(diffaug, (32, 32, 3))  # the policy suits CIFAR-10's images
    assert engine.augmentation.policy == "translation,cutout"
