"""Tests for the benchmark configs of the image-scale networks (experiments/configs/cifar10_sngan.py,
cifar10_biggan.py, celeba64_dcgan.py, folder_resnet.py) and their CPU-sized runs on the digits (digits32_resnet.py,
digits32_biggan.py): their protocols, their networks' parameter counts, the
linear learning-rate decay, the missing-dataset message, and each `:smoke` through the CLI with a SIGTERM and a
bitwise resume.
"""

import importlib
import json
import math
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from gan_jax import config as config_lib
from gan_jax import models, optimizers, trainer
from test_cli import REPO, _command, _run
from test_image_models import MIMICRY, PYTORCH_DCGAN_64, STUDIOGAN, n_params

CONFIGS = ("cifar10_sngan", "cifar10_biggan", "celeba64_dcgan", "folder_resnet")
# The conditional nets on the built-in digits at 32×32, each with the benchmark config whose protocol it shrinks.
DIGITS32 = {"digits32_resnet": "cifar10_sngan", "digits32_biggan": "cifar10_biggan"}


def _config(name, arg=None):
    return importlib.import_module(f"experiments.configs.{name}").get_config(arg)


def _path(name):
    return os.path.join(REPO, "experiments", "configs", f"{name}.py")


def _protocol(cfg):
    opt = cfg.optim.generator
    return (cfg.data.name, cfg.data.image_size, cfg.data.batch_size, cfg.model.kind, cfg.model.latent_dim,
            cfg.model.num_classes, cfg.loss.name, cfg.loss.penalty, cfg.loss.n_critic, opt.name, opt.learning_rate,
            opt.b1, opt.b2, opt.schedule, cfg.train.steps, cfg.train.ema_decay)


def test_full_configs_follow_their_published_protocols():
    # Mimicry's CIFAR-10 SNGAN: hinge, n_dis 5, Adam(2e-4, 0, 0.9), batch 64, 100k steps, linear decay.
    assert _protocol(_config("cifar10_sngan")) == (
        "cifar10", 32, 64, "resnet", 128, 0, "hinge", "none", 5, "adam", 2e-4, 0.0, 0.9, "linear", 100_000, 0.0)
    # StudioGAN's CIFAR-10 BigGAN: conditional, z 80, hinge, 5 D steps, Adam(2e-4, 0.5, 0.999), EMA 0.9999.
    assert _protocol(_config("cifar10_biggan")) == (
        "cifar10", 32, 64, "biggan", 80, 10, "hinge", "none", 5, "adam", 2e-4, 0.5, 0.999, "constant", 100_000,
        0.9999)
    # Radford et al.'s DCGAN as PyTorch's tutorial trains it on CelebA: batch 128, Adam(2e-4, 0.5), z 100.
    assert _protocol(_config("celeba64_dcgan")) == (
        "celeb_a", 64, 128, "dcgan", 100, 0, "non_saturating", "none", 1, "adam", 2e-4, 0.5, 0.999, "constant",
        8_000, 0.0)
    assert _protocol(_config("folder_resnet"))[3:] == _protocol(_config("cifar10_sngan"))[3:]
    for name in CONFIGS:
        cfg = _config(name)
        config_lib.validate(cfg)
        assert cfg.optim.critic.to_dict() == cfg.optim.generator.to_dict(), name
    assert _config("cifar10_sngan").optim.critic.decay_steps == 100_000
    assert _config("celeba64_dcgan").model.batch_norm and not _config("celeba64_dcgan").model.spectral_norm


def test_full_config_networks_have_the_reference_parameter_counts():
    def counts(name, channels=3, size=None):
        cfg = _config(name)
        size = size or cfg.data.image_size
        gen, critic = models.build(cfg.model, (size, size, channels))
        labels = (jax.ShapeDtypeStruct((2,), np.int32),) if cfg.model.num_classes else ()
        return (n_params(gen, jax.ShapeDtypeStruct((2, cfg.model.latent_dim), np.float32), *labels),
                n_params(critic, jax.ShapeDtypeStruct((2, size, size, channels), np.float32), *labels))

    assert counts("cifar10_sngan") == MIMICRY[32]
    assert counts("cifar10_biggan") == STUDIOGAN[32, 80, 16, 10]
    assert counts("celeba64_dcgan") == PYTORCH_DCGAN_64
    assert _config("folder_resnet").data.image_size == 0  # the size the folder was prepared at, e.g. 64:
    assert counts("folder_resnet", size=64) == MIMICRY[64]


@pytest.mark.parametrize("name,benchmark", DIGITS32.items())
def test_digits32_runs_keep_their_benchmark_protocol_at_cpu_size(name, benchmark):
    cfg, ref = _config(name), _config(benchmark)
    config_lib.validate(cfg)
    loss = lambda c: (c.loss.name, c.loss.penalty, c.model.kind, c.model.latent_dim, c.model.spectral_norm,
                      c.model.shared_embedding_dim, c.model.hierarchical_latent)
    optimizer = lambda c: {k: v for k, v in c.optim.generator.to_dict().items() if k != "decay_steps"}
    assert loss(cfg) == loss(ref) and optimizer(cfg) == optimizer(ref)
    assert cfg.optim.critic.to_dict() == cfg.optim.generator.to_dict()
    assert (cfg.data.name, cfg.data.image_size, cfg.model.num_classes) == ("digits", 32, 10)
    # the CPU size: a quarter of the channels, half the batch, 2 critic updates, a decay (if any) over the run
    assert (cfg.model.g_channels, cfg.model.d_channels, cfg.data.batch_size, cfg.loss.n_critic) == (16, 16, 32, 2)
    assert cfg.optim.generator.decay_steps == (cfg.train.steps if ref.optim.generator.schedule == "linear" else 0)


def test_a_misspelt_field_of_a_preset_is_refused():
    from experiments.configs import common
    with pytest.raises(ValueError, match=r"config overrides \['loss.n_critics'\]: the config has no such field"):
        common.image_gan("digits", "resnet", "sngan", image_size=32, latent_dim=8, batch_size=8, steps=1,
                         fields={"loss.n_critics": 2})


@pytest.mark.parametrize("name", CONFIGS + tuple(DIGITS32))
def test_smoke_variants_are_tiny_copies_on_the_built_in_digits(name):
    full, smoke = _config(name), _config(name, "smoke")
    config_lib.validate(smoke)
    assert (smoke.data.name, smoke.data.image_size) == ("digits", full.data.image_size or 32)
    assert (smoke.model.kind, smoke.model.g_channels, smoke.model.d_channels) == (full.model.kind, 4, 4)
    assert (smoke.loss.name, smoke.loss.n_critic, smoke.model.num_classes) == (
        full.loss.name, full.loss.n_critic, full.model.num_classes)
    assert smoke.train.steps <= 10
    with pytest.raises(ValueError, match="unknown config variant 'smok'"):
        _config(name, "smok")


def test_linear_schedule_decays_to_alpha_over_decay_steps():
    opt = _config("cifar10_sngan").optim.generator
    opt.update(decay_steps=8, alpha=0.25)
    schedule = optimizers.learning_rate_schedule(opt)
    expected = [2e-4 * (1 - 0.75 * min(t, 8) / 8) for t in range(12)]
    np.testing.assert_allclose([float(schedule(t)) for t in range(12)], expected, rtol=1e-6)
    opt.update(decay_steps=0)
    with pytest.raises(ValueError, match=r"decay_steps=0 is invalid for schedule='linear'"):
        optimizers.learning_rate_schedule(opt)


def test_a_missing_dataset_is_one_line_with_the_prepare_command(tmp_path):
    workdir = tmp_path / "run"
    result = _run(workdir, f"--config.data.data_dir={tmp_path / 'empty'}", config=_path("cifar10_sngan"))
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("gan_jax: error:")]
    assert len(errors) == 1 and "'cifar10' is not prepared" in errors[0], result.stderr[-3000:]
    assert "download_and_prepare(file_format='array_record')" in errors[0]
    assert not workdir.exists()


def test_an_unprepared_folder_is_one_line_with_the_prepare_images_command(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "empty"
    result = _run(workdir, f"--config.data.data_dir={data_dir}", config=_path("folder_resnet"))
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("gan_jax: error:")]
    assert len(errors) == 1 and f"unknown dataset 'my_images': {data_dir} holds no image folder" in errors[0]
    assert "python -m experiments.prepare_images --src=<folder> --name=my_images" in errors[0]
    assert not workdir.exists()


def _as_numpy(x):
    return np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)


def test_the_folder_smoke_variant_is_the_cifar10_sngan_smoke_run():
    """folder_resnet:smoke trains exactly cifar10_sngan:smoke (both on the digits at 32×32), so the CLI test
    below runs it once."""
    flat = lambda name: config_lib.flatten(_config(name, "smoke").to_dict())
    assert flat("folder_resnet") == flat("cifar10_sngan")


@pytest.mark.slow  # three CLI runs per config; the first of each network compiles cold (about 70 s of CPU)
@pytest.mark.parametrize("name", [name for name in CONFIGS if name != "folder_resnet"])
def test_smoke_trains_through_the_cli_and_resumes_bitwise_after_sigterm(tmp_path, name):
    config = _path(name) + ":smoke"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    quick = ("--config.train.log_every=1", "--config.train.checkpoint_every=100000", "--config.train.sample_every=0",
             "--config.train.eval_samples=16", "--config.eval.metrics=none")
    workdir = tmp_path / "preempted"
    proc = subprocess.Popen(_command(workdir, "--config.train.steps=100000", *quick, config=config), cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):  # two steps trained
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    step = int(trainer.restore_state(str(workdir)).step)
    assert step >= 2, "a checkpoint at the step where it stopped"

    target = step + 2
    resumed = _run(workdir, f"--config.train.steps={target}", *quick, config=config, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = tmp_path / "reference"
    uninterrupted = _run(reference, f"--config.train.steps={target}", *quick, config=config, env=env)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, target + 1))
    for record in records:
        assert all(math.isfinite(record[k]) for k in ("critic_loss", "generator_loss")), record
    for a, b in zip(jax.tree.leaves(trainer.restore_state(str(reference))),
                    jax.tree.leaves(trainer.restore_state(str(workdir)))):
        np.testing.assert_array_equal(_as_numpy(a), _as_numpy(b))
