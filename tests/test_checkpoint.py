"""Checkpoint tests through the real training loop: exact resume, corrupt checkpoints, incompatible configs."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import train as train_cli
from experiments.configs import common
from gan_jax.checkpoint import IncompatibleCheckpointError


def _config(steps):
    cfg = common.toy("ring8", "wgan_gp", "smoke")
    cfg.data.batch_size = 32
    cfg.model.width = 16
    cfg.model.depth = 2
    cfg.loss.n_critic = 2
    cfg.train.steps = steps
    cfg.train.sample_every = 0
    cfg.train.eval_samples = 64
    return cfg


def _leaves(state):
    to_numpy = lambda x: np.asarray(
        jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
    return [to_numpy(leaf) for leaf in jax.tree.leaves(state)]


def _metric_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in row.items() if k != "steps_per_sec"} for row in rows]


def _snapshot(directory):
    return sorted((os.path.relpath(os.path.join(root, name), directory), os.path.getmtime(os.path.join(root, name)))
                  for root, _, files in os.walk(directory) for name in files)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """20 steps in one go: the reference trajectory."""
    workdir = str(tmp_path_factory.mktemp("full"))
    train_cli.train_and_evaluate(_config(20), workdir, progress=False)
    return workdir


def test_stop_and_resume_is_bitwise_identical(uninterrupted, tmp_path):
    workdir = str(tmp_path)
    train_cli.train_and_evaluate(_config(10), workdir, progress=False)
    summary = train_cli.train_and_evaluate(_config(20), workdir, progress=False)
    assert summary["step"] == 20
    for a, b in zip(_leaves(train_cli.restore_state(uninterrupted)), _leaves(train_cli.restore_state(workdir))):
        np.testing.assert_array_equal(a, b)
    assert _metric_lines(workdir) == _metric_lines(uninterrupted)


def test_corrupt_newest_checkpoint_is_skipped_and_kept(uninterrupted, tmp_path, caplog):
    workdir = str(tmp_path / "run")
    train_cli.train_and_evaluate(_config(10), workdir, progress=False)  # checkpoints at 10 (every 10)
    cfg = _config(20)
    cfg.train.checkpoint_every = 5
    train_cli.train_and_evaluate(cfg, workdir, progress=False)  # + 15, 20
    newest = os.path.join(workdir, "checkpoints", "20")
    for root, _, files in os.walk(os.path.join(newest, "state")):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(max(0, os.path.getsize(f.name) // 3))
    state = train_cli.restore_state(workdir)
    assert int(state.step) == 15
    assert os.path.isdir(newest + ".corrupt"), "the corrupt step is kept aside, not deleted"
    assert "checkpoint step 20 could not be restored" in caplog.text
    # Resuming from 15 reproduces the uninterrupted run's step 20 exactly.
    train_cli.train_and_evaluate(cfg, workdir, progress=False)
    for a, b in zip(_leaves(train_cli.restore_state(uninterrupted)), _leaves(train_cli.restore_state(workdir))):
        np.testing.assert_array_equal(a, b)


def test_changed_model_width_is_refused_and_nothing_is_overwritten(uninterrupted):
    before = _snapshot(uninterrupted)
    cfg = _config(30)
    cfg.model.width = 24
    with pytest.raises(IncompatibleCheckpointError, match=r"model\.width: 16 -> 24"):
        train_cli.train_and_evaluate(cfg, uninterrupted, progress=False)
    assert _snapshot(uninterrupted) == before


def test_nonfinite_step_stops_with_the_last_good_checkpoint(tmp_path):
    cfg = _config(20)
    cfg.optim.critic.learning_rate = 1e30  # the critic explodes within a few steps
    cfg.optim.critic.name = "sgd"
    cfg.loss.penalty = "none"
    cfg.loss.penalty_weight = 0.0
    with pytest.raises(train_cli.NonFiniteLossError, match=r"non-finite loss or parameters at step \d+.*Last good"):
        train_cli.train_and_evaluate(cfg, str(tmp_path), progress=False)
    assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()], "no NaN state was saved"
