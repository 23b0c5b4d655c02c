"""config.validate: every bad value is one ValueError naming the field, the value and what is allowed."""

import importlib
import math
import pkgutil
import re

import pytest

from experiments import configs as configs_pkg
from experiments.configs import common
from gan_jax import config as config_lib

NAN, INF = float("nan"), float("inf")


def _set(cfg, dotted, value):
    *parents, leaf = dotted.split(".")
    node = cfg
    for name in parents:
        node = node[name]
    node[leaf] = value


def _toy():
    return common.toy("ring8", "wgan_gp", "smoke")


def _images():
    return common.images("digits", "wgan_gp", "smoke")


_CONFIG_MODULES = sorted(m.name for m in pkgutil.iter_modules(configs_pkg.__path__) if m.name != "common")


@pytest.mark.parametrize("variant", ["", "smoke"])
@pytest.mark.parametrize("module", _CONFIG_MODULES)
def test_every_shipped_config_is_valid(module, variant):
    cfg = importlib.import_module(f"experiments.configs.{module}").get_config(variant)
    config_lib.validate(cfg)


@pytest.mark.parametrize("field,value,allowed", [
    ("optim.generator.learning_rate", NAN, "finite number > 0"),
    ("optim.critic.learning_rate", INF, "finite number > 0"),
    ("optim.critic.learning_rate", -INF, "finite number > 0"),
    ("optim.generator.learning_rate", 0.0, "finite number > 0"),
    ("loss.penalty_weight", NAN, "finite number >= 0"),
    ("loss.penalty_weight", INF, "finite number >= 0"),
    ("loss.penalty_weight", -1.0, "finite number >= 0"),
    ("loss.clip_value", NAN, "finite number >= 0"),
    ("loss.clip_value", INF, "finite number >= 0"),
    ("optim.generator.b1", 1.0, r"\[0, 1\)"),
    ("optim.generator.b1", -0.1, r"\[0, 1\)"),
    ("optim.generator.b2", 1.5, r"\[0, 1\)"),
    ("optim.critic.b1", NAN, r"\[0, 1\)"),
    ("optim.critic.b2", 1.0, r"\[0, 1\)"),
    ("optim.critic.b2", INF, r"\[0, 1\)"),
    ("train.eval_samples", 0, r"\[2, 10,000,000\]"),
    ("train.eval_samples", -5, r"\[2, 10,000,000\]"),
    ("train.eval_samples", 10_000_001, r"\[2, 10,000,000\]"),
    ("eval.knn_samples", 1, "must be an integer >= 2"),
    ("train.steps", 2**31 - 1, "int32"),
    ("train.steps", 2**40, "int32"),
    ("data.kwargs.std", NAN, "not NaN"),
    ("seed", 0, None),  # a valid control: nothing raised
])
def test_bad_value_is_refused_naming_field_value_and_rule(field, value, allowed):
    cfg = _toy()
    if field == "data.kwargs.std":
        cfg.data.kwargs.std = value  # kwargs is open: a NaN there is caught by the NaN sweep
    else:
        _set(cfg, field, value)
    if allowed is None:
        config_lib.validate(cfg)
        return
    shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
    with pytest.raises(ValueError, match=rf"config\.{re.escape(field)}={re.escape(shown)} is invalid: .*{allowed}"):
        config_lib.validate(cfg)


@pytest.mark.parametrize("method", ["wgan_clip", "gan", "gan_gp"])
@pytest.mark.parametrize("beta,value", [("b1", 1.0), ("b2", NAN)])
def test_betas_are_checked_for_every_optimizer(method, beta, value):
    cfg = common.toy("ring8", method, "smoke")
    config_lib.validate(cfg)  # the method's own betas (b1 = 0 for gan_gp) are valid
    cfg.optim.critic[beta] = value
    with pytest.raises(ValueError, match=rf"optim\.critic\.{beta}=.* must be in \[0, 1\)"):
        config_lib.validate(cfg)


@pytest.mark.parametrize("value,ok", [(1, False), (2, True), (50_000, True), (10_000_000, True), (10_000_001, False)])
def test_eval_samples_are_streamed_and_need_two_for_a_covariance(value, ok):
    for cfg in (_images(), _toy()):
        cfg.train.eval_samples = value
        if ok:
            config_lib.validate(cfg)
        else:
            with pytest.raises(ValueError, match=r"train\.eval_samples=.*\[2, 10,000,000\]"):
                config_lib.validate(cfg)


def test_eval_names_are_checked_against_their_registries():
    cfg = _toy()
    cfg.eval.metrics = "fid,kdi"
    with pytest.raises(ValueError, match=r"config\.eval\.metrics: unknown evaluation metric 'kdi'; valid names: fid, kid"):
        config_lib.validate(cfg)
    cfg.eval.metrics, cfg.eval.extractor = "", "vgg"
    with pytest.raises(ValueError, match=r"config\.eval\.extractor: unknown feature extractor 'vgg'"):
        config_lib.validate(cfg)


def test_nan_anywhere_is_refused_by_name():
    cfg = _toy()
    cfg.data.kwargs.radius = NAN
    with pytest.raises(ValueError, match=r"config\.data\.kwargs\.radius=nan is invalid: must be a number, not NaN"):
        config_lib.validate(cfg)


def test_methods_and_variants_are_named_tables():
    with pytest.raises(ValueError, match=r"^unknown method 'wgan'; valid names: gan, gan_minimax, unrolled, "):
        common.toy("ring8", "wgan")
    with pytest.raises(ValueError, match=r"^unknown config variant 'smok'; valid names: full, smoke$"):
        common.images("digits", "wgan_gp", "smok")
    assert common.toy("ring8", "gan", "full").to_json() == common.toy("ring8", "gan").to_json()
    assert set(common.METHODS.names()) == {"gan", "gan_minimax", "unrolled", "wgan_clip", "wgan_gp", "gan_gp",
                                           "gan_fast", "dcgan", "sngan", "biggan"}
