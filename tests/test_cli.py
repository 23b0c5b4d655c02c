"""End-to-end tests of `python -m experiments.train` in a subprocess: a smoke run, preemption, bad flags."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import train as train_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "ring8_wgan_gp.py")


def _command(workdir, *overrides, config=CONFIG + ":smoke"):
    return [sys.executable, "-m", "experiments.train", f"--config={config}", f"--workdir={workdir}", *overrides]


def _run(workdir, *overrides, env=None, **kwargs):
    return subprocess.run(_command(workdir, *overrides, **kwargs), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_smoke_run_writes_its_outputs_and_reports_them(tmp_path):
    result = _run(tmp_path, "--config.train.steps=10")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step"] == 10
    assert 0 <= summary["modes_captured"] <= 8 and 0.0 <= summary["high_quality"] <= 1.0
    assert os.path.getsize(summary["figure"]) > 1000
    assert f"samples {summary['figure']}" in result.stdout
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5, 10]
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tb"))


@pytest.mark.parametrize("override, message", [
    ("--config.loss.name=wgan", "unknown adversarial loss 'wgan'"),
    ("--config.train.steps=-5", "config.train.steps=-5 is invalid"),
    ("--config.data.name=ring9", "unknown dataset 'ring9'"),
    ("--config.data.batch_size=18", "batch_size=18 is not divisible by the 4 devices"),
])
def test_bad_config_is_one_clear_error_and_leaves_no_workdir(tmp_path, override, message):
    workdir = tmp_path / "run"
    result = _run(workdir, override)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("gan_jax: error:")]
    assert len(errors) == 1 and message.lower() in errors[0].lower(), result.stderr
    assert not workdir.exists()


def test_sigterm_saves_the_current_step_and_resume_is_bitwise(tmp_path):
    workdir = tmp_path / "preempted"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.Popen(_command(workdir, "--config.train.steps=100000", "--config.train.checkpoint_every=100000",
                                     "--config.train.sample_every=0"),
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "rerun the same command to resume" in stderr
    saved = int(json.loads((workdir / "config.json").read_text())["train"]["steps"])
    assert saved == 100000
    step = train_cli.restore_state(str(workdir)).step
    assert int(step) >= 10 and int(step) % 5 == 0, "a checkpoint at the step where it stopped"

    target = int(step) + 10
    resumed = _run(workdir, f"--config.train.steps={target}", "--config.train.checkpoint_every=100000",
                   "--config.train.sample_every=0", env=env)
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    uninterrupted = _run(reference, f"--config.train.steps={target}", "--config.train.checkpoint_every=100000",
                         "--config.train.sample_every=0", env=env)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    as_numpy = lambda x: np.asarray(
        jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
    for a, b in zip(jax.tree.leaves(train_cli.restore_state(str(reference))),
                    jax.tree.leaves(train_cli.restore_state(str(workdir)))):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))
