"""End-to-end tests of `python -m experiments.train` in a subprocess: a smoke run, preemption, bad flags."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gan_jax import trainer

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


def _tree_hash(root):
    """{relative path: sha256} of every file under `root`."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _one_error(result, message):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("gan_jax: error:")]
    assert len(errors) == 1 and message.lower() in errors[0].lower(), result.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("override, message", [
    ("--config.loss.name=wgan", "unknown adversarial loss 'wgan'"),
    ("--config.train.steps=-5", "config.train.steps=-5 is invalid"),
    ("--config.data.name=ring9", "unknown dataset 'ring9'"),
    ("--config.data.batch_size=18", "batch_size=18 is not divisible by the 4 devices"),
    ("--config.model.widht=3", 'did you mean "width" instead of "widht"'),
    ("--config.model.width=abc", "--config.model.width=abc"),
    ("--config.optim.critic.learning_rate=nan", "optim.critic.learning_rate=nan"),
    ("--config.optim.generator.learning_rate=inf", "optim.generator.learning_rate=inf"),
    ("--config.loss.penalty_weight=nan", "loss.penalty_weight=nan"),
    ("--config.optim.critic.b1=2.0", "optim.critic.b1=2.0"),
    ("--config.train.eval_samples=0", "train.eval_samples=0"),
    (f"--config.train.steps={2**31}", f"train.steps={2**31}"),
    ("--config.model.dtype=fp8", "unknown model dtype 'fp8'"),
    ("--config.parallel.num_processes=2", "missing: coordinator_address, process_id"),
    ("--unknown_flag=1", "unknown command line flag 'unknown_flag'"),
    ("--config.train.ema_decay=1.5", "config.train.ema_decay=1.5 is invalid: must be in [0, 1)"),
    ("--config.loss.pack=0", "config.loss.pack=0 is invalid"),
    ("--config.loss.pack=3", "batch_size=64 is not divisible by config.loss.pack=3"),
])
def test_bad_config_is_one_clear_error_and_leaves_no_workdir(tmp_path, override, message):
    workdir = tmp_path / "run"
    result = _run(workdir, override)
    _one_error(result, message)
    assert not workdir.exists()


@pytest.mark.parametrize("config, message", [
    (os.path.join(REPO, "experiments", "configs", "nope.py"), "config file"),
    (CONFIG + ":smok", "unknown config variant 'smok'"),
])
def test_bad_config_file_is_one_clear_error(tmp_path, config, message):
    _one_error(_run(tmp_path / "run", config=config), message)
    assert not (tmp_path / "run").exists()


def test_a_foreign_folder_and_a_checkpoints_file_are_refused_untouched(tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / "samples").mkdir(parents=True)
    for name in ("metrics.jsonl", "config.json", "summary.json", "samples/final.png"):
        (foreign / name).write_text(f"another experiment's {name}\n")
    before = _tree_hash(foreign)
    _one_error(_run(foreign), "not created by gan_jax")
    assert _tree_hash(foreign) == before

    ours = tmp_path / "ours"
    assert _run(ours, "--config.train.steps=5").returncode == 0
    shutil.rmtree(ours / "checkpoints")
    (ours / "checkpoints").write_text("not a folder")
    before = _tree_hash(ours)
    _one_error(_run(ours), "checkpoints")
    assert _tree_hash(ours) == before


def test_a_second_run_on_a_live_workdir_is_refused_and_a_reader_beside_it_is_harmless(tmp_path):
    workdir = tmp_path / "live"
    # A save at every fused call, so the reader below meets unfinished orbax folders.
    live = subprocess.Popen(_command(workdir, "--config.train.steps=100000", "--config.train.checkpoint_every=5",
                                        "--config.train.max_to_keep=2", "--config.train.sample_every=0"),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    committed = lambda: (workdir / "checkpoints").is_dir() and any(
        name.isdigit() for name in os.listdir(workdir / "checkpoints"))
    while not committed():
        assert live.poll() is None and time.monotonic() < deadline, live.communicate()
        time.sleep(0.1)
    line = _one_error(_run(workdir, "--config.train.steps=60"), "is in use by another gan_jax run")
    assert f"pid {live.pid}" in line
    steps_read = [int(trainer.restore_state(str(workdir)).step) for _ in range(20)]
    assert steps_read == sorted(steps_read) and steps_read[0] >= 5
    assert live.poll() is None, "the reader did not disturb the run"
    live.send_signal(signal.SIGTERM)
    _, stderr = live.communicate(timeout=300)
    assert live.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, steps[-1] + 5, 5)), "one writer: every step logged once"


def test_resume_from_an_odd_step_keeps_the_schedule_and_lists_changed_settings(tmp_path):
    first = _run(tmp_path, "--config.train.steps=23", "--config.train.sample_every=10")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run(tmp_path, "--config.train.steps=50", "--config.train.sample_every=10",
                  "--config.loss.penalty_weight=0.2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "loss.penalty_weight: 0.1 -> 0.2" in second.stderr and "train.steps: 23 -> 50" in second.stderr
    assert "no longer bit for bit" in second.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 23, 25, 30, 35, 40, 45, 50]
    assert sorted(map(int, os.listdir(tmp_path / "checkpoints"))) == [30, 40, 50]  # max_to_keep = 3
    assert {"step_0000030.png", "step_0000040.png"} <= set(os.listdir(tmp_path / "samples"))
    history = sorted(os.listdir(tmp_path / "config_history"))
    assert history == ["0.json", "23.json"]
    assert json.loads((tmp_path / "config_history" / "0.json").read_text())["loss"]["penalty_weight"] == 0.1
    assert json.loads((tmp_path / "config.json").read_text())["loss"]["penalty_weight"] == 0.2

    past = _run(tmp_path, "--config.train.steps=40")
    assert past.returncode == 0 and "nothing will train" in past.stderr


def test_all_checkpoints_corrupt_stops_and_keeps_the_metrics(tmp_path):
    assert _run(tmp_path, "--config.train.steps=10", "--config.train.sample_every=0").returncode == 0
    metrics = (tmp_path / "metrics.jsonl").read_text()
    for folder, _, files in os.walk(tmp_path / "checkpoints" / "10" / "state"):
        for name in files:
            if os.path.basename(folder) == "d":
                with open(os.path.join(folder, name), "r+b") as f:
                    f.truncate(8)
    _one_error(_run(tmp_path, "--config.train.steps=20"), ".corrupt")
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    assert os.listdir(tmp_path / "checkpoints") == ["10.corrupt"]


def test_a_damaged_metrics_file_is_named_and_nothing_is_written(tmp_path):
    assert _run(tmp_path, "--config.train.steps=10", "--config.train.sample_every=0").returncode == 0
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    before = _tree_hash(tmp_path)
    line = _one_error(_run(tmp_path, "--config.train.steps=20"), "metrics.jsonl line 3")
    assert "nothing was written" in line.lower()
    assert _tree_hash(tmp_path) == before

DIGITS_STREAMED = dict(config=os.path.join(REPO, "experiments", "configs", "digits_wgan_gp.py") + ":smoke",
                       extra=("--config.data.pipeline=streamed", "--config.train.eval_samples=100"))


@pytest.mark.parametrize("data", [dict(config=CONFIG + ":smoke", extra=()), DIGITS_STREAMED],
                         ids=["ring8_device", "digits_streamed"])
def test_sigterm_saves_the_current_step_and_resume_is_bitwise(tmp_path, data):
    workdir = tmp_path / "preempted"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    run = lambda path, *flags, **kw: _run(path, *flags, *data["extra"], config=data["config"], **kw)
    proc = subprocess.Popen(_command(workdir, "--config.train.steps=100000", "--config.train.checkpoint_every=100000",
                                     "--config.train.sample_every=0", *data["extra"], config=data["config"]),
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
    step = trainer.restore_state(str(workdir)).step
    assert int(step) >= 10 and int(step) % 5 == 0, "a checkpoint at the step where it stopped"

    target = int(step) + 10
    resumed = run(workdir, f"--config.train.steps={target}", "--config.train.checkpoint_every=100000",
                  "--config.train.sample_every=0", env=env)
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    uninterrupted = run(reference, f"--config.train.steps={target}", "--config.train.checkpoint_every=100000",
                        "--config.train.sample_every=0", env=env)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    as_numpy = lambda x: np.asarray(
        jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
    for a, b in zip(jax.tree.leaves(trainer.restore_state(str(reference))),
                    jax.tree.leaves(trainer.restore_state(str(workdir)))):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))
